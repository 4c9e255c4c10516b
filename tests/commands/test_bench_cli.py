"""``napari-seal bench``: flags, exit codes, one-line errors, the JSON written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import napari_seal.evaluate.benchmark as evaluate
from napari_seal import cli
from napari_seal.io.sample import SpatialSample

GENES = [f"G{i:03d}" for i in range(80)]


def _sample(name, seed, genes=GENES):
    import anndata as ad

    rng = np.random.default_rng(seed)
    n = 60
    depth = rng.uniform(0.3, 3.0, size=(n, 1))
    counts = rng.poisson(depth * rng.uniform(0.5, 5, size=(1, len(genes))))
    adata = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)))
    adata.var_names = list(genes)
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    return SpatialSample(
        slide=None, adata=adata, mpp=1.0, spot_diameter_um=55.0, name=name
    )


@pytest.fixture
def fake_samples(monkeypatch, tmp_path):
    """Sample folders whose loading is replaced by synthetic samples (no slide)."""
    made = {
        "A": _sample("A", 0),
        "B": _sample("B", 1),
        "C": _sample("C", 2),
        "ENS": _sample("ENS", 3, genes=[f"ENSG{i:011d}" for i in range(80)]),
    }
    paths = {}
    for key in made:
        (tmp_path / key).mkdir()
        paths[key] = str(tmp_path / key)

    def fake_load(path, **_):
        from pathlib import Path

        return made[Path(path).name]

    import napari_seal.io.hest as hest

    monkeypatch.setattr(hest, "load_sample", fake_load)
    return paths


def _run(capsys, *argv):
    code = cli.main(["bench", *argv])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--train", "A", "--json", "o.json"], "--train needs --test"),
        (["--test", "A", "--json", "o.json"], "--test needs --train"),
        (["--json", "o.json"], "--loso"),
        (["--loso", "A", "--json", "o.json"], "at least 2 samples"),
        (["--loso", "A", "B", "--train", "C", "--json", "o.json"], "replaces"),
        (["--loso", "A", "B", "--save-head", "h", "--json", "o.json"], "--save-head"),
        (
            [
                "--train",
                "A",
                "--test",
                "B",
                "--run",
                "R",
                "--weights",
                "w",
                "--json",
                "o",
            ],
            "--weights goes with --encoder",
        ),
        (
            ["--train", "A", "--test", "B", "--batch-size", "0", "--json", "o"],
            "--batch-size",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, match):
    code, err = _run(capsys, "--device", "cpu", *argv)
    assert code == 2
    assert match in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unknown_encoder_lists_names(capsys, tmp_path):
    pytest.importorskip("napari_seal.models.registry")
    code, err = _run(
        capsys,
        "--train",
        "A",
        "--test",
        "B",
        "--encoder",
        "no-such-net",
        "--device",
        "cpu",
        "--json",
        str(tmp_path / "o.json"),
    )
    assert code == 2
    assert "no-such-net" in err
    assert "default" in err  # the valid names are listed
    assert "color-stats" in err
    assert not (tmp_path / "o.json").exists()


def test_argparse_rejects_bad_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--loso", "A", "B", "--targets", "raw", "--json", "o"])
    assert exc.value.code == 2


def test_missing_sample_folder(capsys, tmp_path):
    code, err = _run(
        capsys,
        "--loso",
        str(tmp_path / "nope"),
        str(tmp_path / "nope2"),
        "--encoder",
        "depth",
        "--device",
        "cpu",
        "--json",
        str(tmp_path / "o.json"),
    )
    assert code == 2
    assert "does not exist" in err


def test_loso_writes_the_report(capsys, fake_samples, tmp_path):
    out = tmp_path / "bench.json"
    code, err = _run(
        capsys,
        "--loso",
        fake_samples["A"],
        fake_samples["B"],
        fake_samples["C"],
        "--encoder",
        "depth",
        "--targets",
        "hest",
        "--device",
        "cpu",
        "--json",
        str(out),
    )
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["encoder"] == "depth"
    assert [f["test"] for f in res["folds"]] == ["A", "B", "C"]
    assert res["pearson_mean"] == pytest.approx(
        np.mean([f["pearson_mean"] for f in res["folds"]])
    )
    # depth drives every gene here, so the oracle must find it
    assert res["pearson_mean"] > 0.5
    assert "mean Pearson" in err


def test_sample_with_other_gene_ids_exits_2(capsys, fake_samples, tmp_path):
    out = tmp_path / "bench.json"
    code, err = _run(
        capsys,
        "--train",
        fake_samples["A"],
        fake_samples["B"],
        "--test",
        fake_samples["ENS"],
        "--encoder",
        "depth",
        "--device",
        "cpu",
        "--json",
        str(out),
    )
    assert code == 2
    assert "gene identifiers" in err
    assert not out.exists()


def test_train_test_alpha_cv_and_head(capsys, fake_samples, tmp_path, monkeypatch):
    # an image encoder stand-in so that a head can be saved (depth has no image)
    from types import SimpleNamespace

    enc = SimpleNamespace(name="stand-in", tile_px=8, mpp=1.0, weights=None)

    def fake_features(sample, encoder, *, batch_size=64, device=None):
        yield from ()
        x = sample.adata.X.toarray()
        return np.log1p(x[:, :40]).astype(np.float32)

    monkeypatch.setattr(evaluate, "spot_features", fake_features)
    import napari_seal.models.factory as registry

    monkeypatch.setattr(registry, "create_encoder", lambda *a, **k: enc)
    out, head = tmp_path / "bench.json", tmp_path / "head.safetensors"
    code, err = _run(
        capsys,
        "--train",
        fake_samples["A"],
        fake_samples["B"],
        "--test",
        fake_samples["C"],
        "--encoder",
        "whatever",
        "--alpha",
        "cv",
        "--targets",
        "normalized",
        "--save-head",
        str(head),
        "--device",
        "cpu",
        "--json",
        str(out),
    )
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["alpha"] == "cv"
    assert res["targets"] == "normalized"
    assert res["folds"][0]["train"] == ["A", "B"]
    loaded = evaluate.load_head(head)
    assert loaded.genes == res["genes"]
    assert loaded.meta["targets"] == "normalized"
