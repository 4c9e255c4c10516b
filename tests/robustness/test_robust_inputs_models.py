"""Bad input, systematically (issue 7), continued: weight files, SEAL checkpoints,
run directories, embedding stores, gene lists and CLI flags (rows of
``docs/robustness.md``). Every case asserts the typed error, a key phrase of its fix-it
message and that the input files are unchanged.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import digest, refused

from napari_seal.errors import (
    BadInputError,
    CheckpointError,
    GeneQueryError,
    WeightsError,
)

# -- weight files and SEAL checkpoints --------------------------------------


@pytest.fixture(scope="module")
def vit_state(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    from napari_seal.models.factory import create_encoder

    torch.manual_seed(0)
    sd = {
        k: v.contiguous()
        for k, v in create_encoder("test-vit").module.state_dict().items()
    }
    folder = tmp_path_factory.mktemp("weights")
    save_file(sd, folder / "good.safetensors")
    torch.save(sd, folder / "good.pt")
    return sd, folder


def _weights_case(name, sd, folder, tmp_path):
    import torch
    from safetensors.torch import save_file

    good = (folder / "good.safetensors").read_bytes()
    goodpt = (folder / "good.pt").read_bytes()
    k0 = next(iter(sd))
    path = tmp_path / name
    raw = {
        "random.safetensors": np.random.default_rng(4).bytes(300),
        "random.pt": np.random.default_rng(5).bytes(300),
        "random.bin": np.random.default_rng(6).bytes(300),
        "cut.safetensors": good[: len(good) // 2],
        "cut.pt": goodpt[: len(goodpt) // 2],
        "empty.safetensors": b"",
    }
    if name in raw:
        path.write_bytes(raw[name])
    elif name == "wrong_shape.safetensors":
        save_file({**sd, k0: torch.zeros(3, 3)}, path)
    elif name == "missing_key.safetensors":
        save_file({k: v for k, v in sd.items() if k != k0}, path)
    elif name == "extra_key.safetensors":
        save_file({**sd, "extra.weight": torch.zeros(1)}, path)
    elif name == "int_dtype.safetensors":
        save_file({k: v.to(torch.int32) for k, v in sd.items()}, path)
    elif name == "list.pt":
        torch.save([1, 2, 3], path)
    elif name == "dict_of_ints.pt":
        torch.save({"a": 1}, path)
    return path


_WEIGHTS = {
    "random.safetensors": "cannot read safetensors file.*download it again",
    "random.pt": "refusing to load.*could run code|cannot read.*damaged",
    "random.bin": "refusing to load.*could run code|cannot read.*damaged",
    "cut.safetensors": "cannot read safetensors file",
    "cut.pt": "cannot read.*damaged",
    "empty.safetensors": "cannot read safetensors file",
    "wrong_shape.safetensors": "do not fit encoder 'test-vit'.*shape mismatch",
    "missing_key.safetensors": "1 missing keys \\(first: cls_token\\)",
    "extra_key.safetensors": "1 unexpected keys \\(first: extra.weight\\)",
    "int_dtype.safetensors": "not floating point.*original float weights",
    "list.pt": "expected a dict of tensors.*found list",
    "dict_of_ints.pt": "not tensors.*save a plain state dict",
}


@pytest.mark.parametrize("case", sorted(_WEIGHTS))
def test_bad_weight_files(vit_state, tmp_path, case):
    from napari_seal.models.factory import create_encoder

    path = _weights_case(case, *vit_state, tmp_path)
    refused(
        lambda: create_encoder("test-vit", weights=path),
        WeightsError,
        _WEIGHTS[case],
        path,
    )


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("list.pt", "not a plain dict of tensors.*seal_<backbone>_vision.pth"),
        ("random.pt", "refusing to load"),
        ("good.pt", "holds no LoRA adapters"),
    ],
)
def test_bad_seal_checkpoints(vit_state, tmp_path, case, match):
    from napari_seal.models.seal_checkpoint import load_official_seal

    sd, folder = vit_state
    path = (
        folder / "good.pt"
        if case == "good.pt"
        else _weights_case(case, sd, folder, tmp_path)
    )
    refused(lambda: load_official_seal(path, backbone="uni"), WeightsError, match, path)


# -- run directories ---------------------------------------------------------

_RUN_BASE = {
    "config.json": '{"encoder": "test-vit"}',
    "DONE": "{}",
    "panel.json": '{"genes": ["A"], "mean": [0.0], "std": [1.0]}',
    "heads.safetensors": "xx",
}


@pytest.mark.parametrize(
    ("case", "files", "match"),
    [
        (
            "no_heads",
            {k: v for k, v in _RUN_BASE.items() if k != "heads.safetensors"},
            "lacks heads.safetensors.*retrain",
        ),
        ("no_adapter", _RUN_BASE, "lora_spec.json is missing"),
        pytest.param(
            "config_not_json",
            {**_RUN_BASE, "config.json": "{oops"},
            "config.json",
        ),
        pytest.param(
            "panel_not_json",
            {**_RUN_BASE, "panel.json": "{oops"},
            "panel.json",
        ),
    ],
)
def test_damaged_run_dirs(tmp_path, case, files, match):
    from napari_seal.training.runs import load_run

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    refused(lambda: load_run(tmp_path), CheckpointError, match, tmp_path)


# -- zarr embedding stores ---------------------------------------------------


def _drop(name):
    return lambda p: shutil.rmtree(p / name)


def _attrs(fn):
    def mutate(p):
        import zarr

        g = zarr.open_group(p, mode="r+")
        a = dict(g.attrs)
        fn(a)
        g.attrs.put(a)

    return mutate


def _replace(name, arr):
    def mutate(p):
        import zarr

        g = zarr.open_group(p, mode="r+")
        del g[name]
        g.create_array(name, data=arr)

    return mutate


def _damage_chunk(how):
    def mutate(p):
        f = next(
            x
            for x in sorted((p / "embeddings").rglob("*"))
            if x.is_file() and x.name != "zarr.json"
        )
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if how == "cut" else bytes(len(data)))

    return mutate


_STORES = {
    "no_tile_ids": (_drop("tile_ids"), "damaged.*'tile_ids' is missing"),
    "no_done": (_drop("done"), "'done' is missing"),
    "no_grid_attr": (_attrs(lambda a: a.pop("grid")), "'grid' is missing"),
    "grid_not_object": (_attrs(lambda a: a.__setitem__("grid", "x")), "JSON objects"),
    "embeddings_wrong_shape": (
        _replace("embeddings", np.ones(8, np.float32)),
        "'embeddings' has shape \\(8,\\)",
    ),
    "embeddings_int": (
        _replace("embeddings", np.ones((4, 8), np.int32)),
        "'embeddings' has shape",
    ),
    "coords_1d": (
        _replace("coords", np.arange(5, dtype=np.int64)),
        "'coords' has shape",
    ),
    "partial_chunk": (_damage_chunk("cut"), "a chunk file is damaged"),
    "zeroed_chunk": (_damage_chunk("zero"), "a chunk file is damaged"),
    "group_json_garbage": (
        lambda p: (p / "zarr.json").write_text("{oops"),
        "damaged embedding store",
    ),
    "array_json_garbage": (
        lambda p: (p / "embeddings" / "zarr.json").write_text("{"),
        "damaged embedding store",
    ),
}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from embedding.test_embed_helpers import synthetic_store

    store = tmp_path_factory.mktemp("store") / "s.zarr"
    synthetic_store(store)
    return store


@pytest.mark.parametrize("case", sorted(_STORES))
def test_damaged_embedding_stores(good_store, tmp_path, case):
    """open_store + reading the embeddings (was: KeyError, ValueError, zstd
    RuntimeError, JSONDecodeError)."""
    from napari_seal.predict.expression import open_store

    store = shutil.copytree(good_store, tmp_path / "s.zarr")
    mutate, match = _STORES[case]
    mutate(store)

    def read():
        s = open_store(store)
        s.read_embeddings()

    refused(read, BadInputError, match, store)


# -- gene lists, signature files ---------------------------------------------


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfeE\x00R\x00", "cannot read the signature file"),
        (b"# only a comment\n\n   \n", "lists no gene"),
        (b"gene\tweight\nERBB2\tinf\n", "not finite"),
        (b"ERBB2\t1\nESR1\tlots\n", "'lots'.*line 2"),
        (b"ERBB2\t1\nERBB2\t2\n", "appears twice.*different weights"),
    ],
)
def test_bad_signature_files(tmp_path, content, match):
    from napari_seal.retrieval.gene_signatures import parse_query

    path = tmp_path / "sig.tsv"
    path.write_bytes(content)
    refused(
        lambda: parse_query(signature=path, panel=["ERBB2", "ESR1"]),
        GeneQueryError,
        match,
        path,
    )


def test_signature_with_blank_lines_and_unknown_genes(tmp_path):
    from napari_seal.retrieval.gene_signatures import parse_query

    path = tmp_path / "sig.tsv"
    path.write_bytes(b"\n\n# header comment\nERBB2\t1\n\n  \nGRB7, 0.5\n")
    q = parse_query(signature=path, panel=["ERBB2", "GRB7"])
    assert q.genes == ("ERBB2", "GRB7")
    assert q.weights == (1.0, 0.5)
    path.write_bytes(b"ERBB2\nNOTAGENE1\n")
    refused(
        lambda: parse_query(
            signature=path, panel=["ERBB2", "GRB7"], known_genes=["ERBB2", "GRB7"]
        ),
        GeneQueryError,
        "'NOTAGENE1' is not a gene.*spelling",
        path,
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"\xff\xfe\x00\xd8", "cannot read the gene list file"), (None, "does not exist")],
)
def test_bad_include_genes_file(tmp_path, content, match):
    from napari_seal.training.expression import parse_gene_list

    path = tmp_path / "genes.txt"
    if content is not None:
        path.write_bytes(content)
    inputs = (path,) if content is not None else ()
    refused(lambda: parse_gene_list(str(path)), BadInputError, match, *inputs)


# -- CLI flags ---------------------------------------------------------------


# {name: (argv, key phrase)}; SAMPLE = the bundled HEST sample, RUN = an empty folder,
# NOPE = a path that does not exist, OUT = an output path that must not be created
# fmt: off
_CLI = {
    "info_missing_file": ("info NOPE.svs", "does not exist"),
    "info_mpp_negative": ("info SAMPLE --mpp -1", "--mpp must be a positive number"),
    "info_mpp_nan": ("info SAMPLE --mpp nan", "--mpp must be a positive number"),
    "info_mpp_text": ("info SAMPLE --mpp abc", "invalid float value"),
    "import_missing_files": ("import legacy-st --counts NOPE --spots NOPE --image NOPE "
                             "--out OUT", "does not exist or is not a file"),
    "import_bad_kind": ("import bogus SAMPLE --out OUT", "invalid choice"),
    "import_spot_diameter_nan": ("import hest SAMPLE --out OUT --spot-diameter-um nan",
                                 "--spot-diameter-um must be a positive number"),
    "import_unsafe_id": ("import hest SAMPLE --out OUT --id ../evil",
                         "not a plain name"),
    "import_negative_pitch": ("import legacy-st --counts SAMPLE --spots SAMPLE "
                              "--image SAMPLE --out OUT --array-pitch-um -200",
                              "--array-pitch-um must be positive"),
    "query_no_gene": ("query SAMPLE --run RUN --out OUT", "names no gene"),
    "query_not_a_run": ("query SAMPLE --run RUN --gene ERBB2 --out OUT",
                        "not a SEAL run directory"),
    "query_bad_device": ("query SAMPLE --run RUN --gene A --out OUT --device tpu",
                         "invalid choice"),
    "embed_tile_px_unknown_flag": ("embed SAMPLE --out OUT --tile-px 224",
                                   "unrecognized arguments"),
    "embed_stride_zero": ("embed SAMPLE --out OUT --stride-px 0",
                          "--stride-px must be at least 1"),
    "embed_stride_negative": ("embed SAMPLE --out OUT --stride-px -5",
                              "--stride-px must be at least 1"),
    "embed_batch_zero": ("embed SAMPLE --out OUT --batch-size 0",
                         "--batch-size must be at least 1"),
    "embed_max_tiles_negative": ("embed SAMPLE --out OUT --max-tiles -1",
                                 "--max-tiles must be"),
    "embed_scheduler_timeout_negative": (
        "embed SAMPLE --out OUT --scheduler tcp://127.0.0.1:1 --scheduler-timeout -1",
        "--scheduler-timeout must be a positive"),
    "embed_unknown_encoder": ("embed SAMPLE --out OUT --encoder nope",
                              "unknown encoder 'nope'"),
    "embed_missing_weights": ("embed SAMPLE --out OUT --encoder test-vit "
                              "--weights NOPE.safetensors",
                              "weights file .* does not exist"),
    "embed_missing_slide": ("embed NOPE.tif --out OUT --encoder color-stats",
                            "does not exist"),
    "train_zero_epochs": ("train SAMPLE --out OUT --epochs 0", "epochs=0 is invalid"),
    "train_bad_preset": ("train SAMPLE --out OUT --preset nope", "invalid choice"),
    "train_missing_gene_list": ("train SAMPLE --out OUT --include-genes NOPE.txt",
                                "gene list file .* does not exist"),
    "lookup_k_zero": ("lookup SAMPLE --run RUN --at 1,2 --reference SAMPLE "
                      "--json OUT --k 0", "--k must be at least 1"),
    "export_geojson_without_gene": ("export NOPE.zarr --format geojson --out OUT",
                                    "needs --gene"),
}
# fmt: on


def _cli_argv(case: str, tmp: Path, sample: str) -> tuple[list[str], str]:
    line, match = _CLI[case]
    names = {
        "SAMPLE": sample,
        "RUN": str(tmp / "run"),
        "NOPE": str(tmp / "nope"),
        "OUT": str(tmp / "out"),
    }
    argv = [
        re.sub(r"SAMPLE|RUN|NOPE|OUT", lambda m: names[m.group()], w)
        for w in line.split()
    ]
    return argv, match


_CLI_NAMES = sorted(_CLI)


@pytest.mark.parametrize("case", _CLI_NAMES)
def test_cli_bad_flags_exit_2_with_one_line(tmp_path, capsys, case):
    from napari_seal.cli import main
    from napari_seal.io.hest import bundled_sample_path

    sample = bundled_sample_path()
    (tmp_path / "run").mkdir()
    argv, match = _cli_argv(case, tmp_path, str(sample))
    before = digest(sample)
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        rc = exit_.code
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert rc == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("napari-seal: error:")
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in captured.err
    assert digest(sample) == before
    assert not (tmp_path / "out").exists()


def test_cli_cuda_without_cuda_exits_2(tmp_path, capsys):
    import torch

    from napari_seal.cli import main
    from napari_seal.io.hest import bundled_sample_path

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    (tmp_path / "run").mkdir()
    rc = main(
        [
            "query",
            str(bundled_sample_path()),
            "--run",
            str(tmp_path / "run"),
            "--gene",
            "A",
            "--out",
            str(tmp_path / "q.zarr"),
            "--device",
            "cuda",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert "use --device cpu" in err[0]
