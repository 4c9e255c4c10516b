"""Property-based robustness of the entry points (issue 7): the napari reader never
raises into napari, and the CLI exits 2 with one line on stderr for any bad input.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import given
from hypothesis import strategies as st
from robust_helpers import FEW, ROBUST

# -- (c) napari reader ---------------------------------------------------------


@ROBUST
@given(
    suffix=st.sampled_from([".tif", ".svs", ".jpg", ".png", ".h5ad", ".txt", ""]),
    magic=st.sampled_from([b"", b"II*\x00", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]),
    body=st.binary(max_size=800),
    as_list=st.integers(0, 3),
)
def test_napari_reader_never_raises(
    tmp_path, monkeypatch, suffix, magic, body, as_list
):
    """get_reader answers None or a reader; the reader returns layer data or
    ``[(None,)]`` after a notification, and never raises into napari."""
    from napari_seal import _reader

    notes: list[str] = []
    monkeypatch.setattr(_reader, "_notify", notes.append)
    path = tmp_path / f"g{suffix}"
    path.write_bytes(magic + body)
    arg = [str(path)] * as_list if as_list != 1 else str(path)
    reader = _reader.napari_get_reader(arg)
    if as_list in (0, 2, 3):
        assert reader is None
        return
    if reader is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = reader(arg)
    assert isinstance(layers, list)
    assert layers
    if layers == [(None,)]:
        assert len(notes) == 1
        assert path.name in notes[0]
    else:
        assert all(isinstance(layer, tuple) for layer in layers)


def test_napari_reader_on_folders_and_missing_paths(tmp_path):
    from napari_seal._reader import napari_get_reader

    (tmp_path / "st").mkdir()  # half a HEST folder
    for p in (tmp_path, tmp_path / "st", tmp_path / "missing.tif", tmp_path / "a\x00b"):
        assert napari_get_reader(str(p)) is None


# -- (d) CLI -------------------------------------------------------------------


def _run_cli(argv) -> tuple[int, list[str]]:
    from napari_seal.cli import main

    err = io.StringIO()
    out = io.StringIO()
    with redirect_stderr(err), redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as exit_:  # argparse usage errors
            rc = exit_.code
    return rc, [x for x in err.getvalue().splitlines() if x.strip()]


def _assert_bad_input(rc, lines):
    assert rc == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("napari-seal: error:")


@FEW
@given(
    suffix=st.sampled_from([".tif", ".svs", ".jpg", ".png", ".h5ad", ".txt"]),
    magic=st.sampled_from([b"", b"II*\x00", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]),
    body=st.binary(max_size=600),
    mpp=st.one_of(st.none(), st.floats(max_value=0), st.just(float("nan"))),
)
def test_cli_info_on_garbage(tmp_path, suffix, magic, body, mpp):
    path = tmp_path / f"g{suffix}"
    path.write_bytes(magic + body)
    argv = ["info", str(path), "--json"] + ([] if mpp is None else ["--mpp", str(mpp)])
    _assert_bad_input(*_run_cli(argv))


@FEW
@given(
    kind=st.sampled_from(["visium", "legacy-st", "h5ad", "hest"]),
    body=st.binary(max_size=400),
)
def test_cli_import_on_garbage(tmp_path, kind, body):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(body)
    argv = [
        "import",
        kind,
        str(bad if kind in ("h5ad",) else tmp_path),
        "--out",
        str(tmp_path / "out"),
    ]
    if kind == "legacy-st":
        argv = [
            "import",
            kind,
            "--counts",
            str(bad),
            "--spots",
            str(bad),
            "--image",
            str(bad),
            "--out",
            str(tmp_path / "out"),
        ]
    elif kind == "h5ad":
        argv += ["--image", str(bad)]
    _assert_bad_input(*_run_cli(argv))
    assert not (tmp_path / "out").exists()


@FEW
@given(genes=st.lists(st.text(max_size=15), min_size=1, max_size=3))
def test_cli_query_on_garbage(tmp_path, genes):
    from napari_seal.io.hest import bundled_sample_path

    (tmp_path / "run").mkdir(exist_ok=True)
    argv = [
        "query",
        str(bundled_sample_path()),
        "--run",
        str(tmp_path / "run"),
        "--out",
        str(tmp_path / "q.zarr"),
    ]
    for g in genes:
        argv += [f"--gene={g}"]
    _assert_bad_input(*_run_cli(argv))


def test_cli_subprocess_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "garbage.svs"
    bad.write_bytes(b"II*\x00" + bytes(200))
    out = subprocess.run(
        [sys.executable, "-m", "napari_seal.cli", "info", str(bad), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("napari-seal: error:")
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_cli_output_path_with_a_nul_character_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    """A NUL in an output name (no file can hold one; the OS call raises a bare
    ValueError) is one typed line, exit 2, for every command that writes, before it
    embeds or trains anything, and nothing is written."""
    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.models.shipped import shipped_run_path

    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(cache))
    sample = str(bundled_sample_path())
    bad = str(tmp_path / "out" / "bad\x00name")
    commands = {
        "embed": ["embed", sample, "--encoder", "test-vit", "--out", bad],
        "predict": ["predict", sample, "--out", bad + ".h5ad"],
        "query": ["query", sample, "--gene", "ERBB2", "--out", bad + ".zarr"],
        "import": ["import", "hest", sample, "--out", bad],
        "train": ["train", sample, "--encoder", "test-vit", "--preset",
                  "cpu-smoke", "--max-steps", "1", "--out", bad],
        "lookup": ["lookup", sample, "--run", str(shipped_run_path()), "--at",
                   "100,100", "--reference", sample, "--json", bad + ".json"],
        "demo": ["demo", "--out", bad, "--no-report"],
        "bench": ["bench", "--loso", sample, sample, "--encoder", "test-vit",
                  "--json", bad + ".json"],
        "bench --save-head": ["bench", "--train", sample, "--test", sample,
                              "--encoder", "test-vit", "--json",
                              str(tmp_path / "b.json"), "--save-head", bad],
    }
    for name, argv in commands.items():
        rc, lines = _run_cli(argv)
        _assert_bad_input(rc, lines)
        assert "NUL character" in lines[0], (name, lines)
    assert not (tmp_path / "out").exists()
    stores = list((cache / "stores").glob("*")) if (cache / "stores").is_dir() else []
    assert stores == [], stores
