"""``napari-seal predict`` on the bundled real her2st section (HEST layout)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from napari_seal.cli import main


@pytest.fixture(scope="module")
def her2st_c2():
    from napari_seal.io.hest import bundled_sample_path

    try:
        path = bundled_sample_path()
    except Exception as err:  # noqa: BLE001 - skip with the reason
        pytest.skip(f"bundled her2st sample unavailable: {err}")
    if not any((path / "wsis").glob("*")):
        pytest.skip("bundled her2st sample has no slide yet")
    return path


@pytest.fixture(scope="module")
def color_head(her2st_c2, tmp_path_factory):
    """A ridge head fitted by `bench` on the section's own spots (colour statistics)."""
    from napari_seal.evaluate.benchmark import bench

    head = tmp_path_factory.mktemp("head") / "head.safetensors"
    bench(
        [her2st_c2],
        [her2st_c2],
        encoder="color-stats",
        targets="normalized",
        save_head=head,
        device="cpu",
    )
    return head


@pytest.mark.slow
def test_cli_predict_sample_writes_spots_and_tiles(
    her2st_c2, color_head, tmp_path, capsys
):
    from napari_seal.evaluate.benchmark import load_head

    genes = load_head(color_head).genes
    assert "ERBB2" in genes or len(genes) == 50
    pick = genes[:3]
    out = tmp_path / "pred.h5ad"
    rc = main(
        [
            "predict",
            str(her2st_c2),
            "--encoder",
            "color-stats",
            "--head",
            str(color_head),
            "--out",
            str(out),
            "--genes",
            ",".join(pick),
            "--max-tiles",
            "60",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    spots = ad.read_h5ad(out)
    sample_spots = ad.read_h5ad(next((her2st_c2 / "st").glob("*.h5ad")))
    assert list(spots.obs_names) == list(sample_spots.obs_names)  # "XxY" spot ids
    assert list(spots.var_names) == pick
    assert np.isfinite(spots.X).all()
    # fitted on these very spots: predictions correlate with the measurements
    assert np.nanmean(spots.var["pearson_r"]) > 0.2
    tiles = ad.read_h5ad(tmp_path / "pred.tiles.h5ad")
    assert tiles.n_obs == 60
    assert list(tiles.var_names) == pick
    xy = tiles.obsm["spatial"]
    assert xy.shape == (60, 2)
    assert (xy[:, 0] < 9274).all()
    assert (xy[:, 1] < 9911).all()
    # the implicit store goes to the workspace, not beside the output or the input
    from napari_seal.io.workspace import workspace_root

    assert not (tmp_path / "pred.embeddings.zarr").exists()
    assert any((workspace_root() / "stores").glob("her2st_C2-*.zarr/zarr.json"))


def test_cli_predict_bad_input(her2st_c2, tmp_path, capsys):
    rc = main(
        [
            "predict",
            str(her2st_c2),
            "--encoder",
            "color-stats",
            "--out",
            str(tmp_path / "p.h5ad"),
        ]
    )
    assert rc == 2
    assert "--head" in capsys.readouterr().err


def test_cli_predict_slide_writes_tiles(tmp_path, capsys):
    """A bare slide: per-tile predictions in OUT.h5ad (fast, synthetic)."""
    from napari_seal.predict.probe import RidgeProbe
    from napari_seal.predict.saved_probe import save_probe
    from napari_seal.testing import write_synthetic_slide

    tif = write_synthetic_slide(tmp_path / "s.tif", width_px=1200, height_px=900)
    rng = np.random.default_rng(0)
    d, genes = 64, ["ERBB2", "ESR1", "MKI67"]  # test-vit embeddings are 64-d
    probe = RidgeProbe(
        np.zeros(d),
        np.ones(d),
        np.zeros(d),
        np.eye(d)[:4],
        rng.normal(size=(3, 4)),
        np.zeros(3),
        1.0,
        meta={"genes": genes},
    )
    head = save_probe(tmp_path / "head.safetensors", probe, {"genes": genes})
    out = tmp_path / "pred.h5ad"
    args = f"predict {tif} --encoder test-vit --head {head} --out {out} --genes MKI67"
    assert main([*args.split(), "--device", "cpu"]) == 0, capsys.readouterr().err
    tiles = ad.read_h5ad(out)
    assert list(tiles.var_names) == ["MKI67"]
    assert tiles.n_obs > 0
    assert np.isfinite(tiles.X).all()
    assert tiles.obsm["spatial"].shape == (tiles.n_obs, 2)
    assert not (tmp_path / "pred.tiles.h5ad").exists()
    bad = f"predict {tif} --encoder test-vit --head {head} --out {out} --genes NOPE"
    assert main(bad.split()) == 2
    assert "NOPE" in capsys.readouterr().err
