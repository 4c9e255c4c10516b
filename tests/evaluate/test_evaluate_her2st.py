"""bench on real data: two her2st sections imported to the HEST layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

IMAGES = {"C2": "5714_HE_BT_C2.jpg", "C3": "5714_HE_BT_D1.jpg"}


@pytest.fixture(scope="module")
def her2st_samples(her2st_dir: Path, tmp_path_factory) -> list[Path]:
    """C2 and C3 as HEST sample folders (C2 = the bundled copy when installed)."""
    from napari_seal.io.convert import import_sample

    root = tmp_path_factory.mktemp("her2st-hest")
    out = []
    for sec, image in IMAGES.items():
        if sec == "C2":
            try:
                from napari_seal.io.hest import bundled_sample_path

                out.append(bundled_sample_path())
                continue
            except Exception:  # noqa: BLE001 - bundled copy absent: import it
                pass
        dest = root / sec
        import_sample(
            "legacy-st",
            [],
            out=dest,
            sample_id=f"her2st_{sec}",
            counts=her2st_dir / "ST-cnts" / f"{sec}.tsv.gz",
            spots=her2st_dir / "ST-spotfiles" / f"{sec}_selection.tsv",
            image=her2st_dir / "ST-imgs" / "C" / sec / image,
        )
        out.append(dest)
    return out


@pytest.fixture(scope="module")
def loaded(her2st_samples):
    """The loaded samples and a feature cache shared by the tests of this module."""
    from napari_seal.io.hest import load_sample

    return [load_sample(p) for p in her2st_samples], {}


def test_loso_color_stats_on_her2st(loaded):
    from napari_seal.evaluate.benchmark import loso_bench

    samples, cache = loaded
    hest = loso_bench(samples, encoder="color-stats", features_cache=cache)
    norm = loso_bench(
        samples, encoder="color-stats", targets="normalized", features_cache=cache
    )
    assert [f["test"] for f in hest["folds"]] == ["her2st_C2", "her2st_C3"]
    for res in (hest, norm):
        assert res["embed_dim"] == 28
        for fold in res["folds"]:
            assert len(fold["per_gene"]) == 50
            assert fold["n_pc"] == 28
            assert fold["missing_genes"] == []
            assert np.all(np.isfinite(list(fold["per_gene"].values())))
    # issue 3 calibration (5 sections: colour 0.61 raw / 0.35 normalised; depth 0.74):
    # one training section gives less, but the same order of magnitude
    assert 0.3 < hest["pearson_mean"] < 0.8
    assert 0.1 < norm["pearson_mean"] < 0.6
    assert 0.55 < hest["depth_oracle"]["pearson_mean"] < 0.9
    # removing depth makes the task harder for both the colours and the oracle
    assert norm["pearson_mean"] < hest["pearson_mean"]
    assert norm["depth_oracle"]["pearson_mean"] < hest["depth_oracle"]["pearson_mean"]
    # the her2st marker is among the most variable genes of a HER2+ tumour
    assert "ERBB2" in hest["genes"] or "ERBB2" in norm["genes"]


def test_cli_train_test_with_head_on_her2st(her2st_samples, loaded, tmp_path, capsys):
    import napari_seal.predict.probe as _probe
    from napari_seal import cli
    from napari_seal.evaluate.benchmark import apply_head, bench, load_head

    out, head = tmp_path / "bench.json", tmp_path / "head.safetensors"
    code = cli.main(
        [
            "bench",
            "--train",
            str(her2st_samples[0]),
            "--test",
            str(her2st_samples[1]),
            "--encoder",
            "color-stats",
            "--device",
            "cpu",
            "--json",
            str(out),
            "--save-head",
            str(head),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["encoder"] == "color-stats"
    assert res["folds"][0]["test"] == "her2st_C3"
    # the CLI computes what the Python call computes (features from the shared cache)
    samples, cache = loaded
    ref = bench(samples[:1], samples[1:], encoder="color-stats", features_cache=cache)
    assert res["genes"] == ref["genes"]
    np.testing.assert_allclose(res["pearson_mean"], ref["pearson_mean"], atol=1e-6)
    # the saved head reproduces the reported per-gene Pearson on the test section
    loaded_head = load_head(head)
    assert loaded_head.meta["encoder"] == "color-stats"
    assert loaded_head.meta["tile_px"] == 224
    feats = next(
        v for k, v in cache.items() if k[0][0] == "color-stats" and k[1] == "her2st_C3"
    )
    pred = apply_head(loaded_head, feats)
    test = samples[1]
    y, _ = _probe.gene_matrix(
        _probe.make_targets(_probe.raw_counts(test.adata)),
        list(test.adata.var_names),
        loaded_head.genes,
    )
    r = _probe.pearson_per_gene(pred, y)
    np.testing.assert_allclose(r, list(res["folds"][0]["per_gene"].values()), atol=1e-4)
