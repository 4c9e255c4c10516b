"""Export: TRIDENT/CLAM h5 features and QuPath GeoJSON gene regions."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from embedding.test_embed_helpers import array_slide, synthetic_store
from matplotlib.path import Path as MplPath

from napari_seal.cli import main
from napari_seal.errors import BadInputError
from napari_seal.predict.export import export_geojson, export_trident_h5, gene_polygons
from napari_seal.predict.heads import head_from_linear


def _inside_polygons(points: np.ndarray, polygons: list) -> np.ndarray:
    """Point-in-polygon with holes (even-odd within each polygon)."""
    inside = np.zeros(len(points), bool)
    for rings in polygons:
        ext = MplPath(np.asarray(rings[0]))
        hit = ext.contains_points(points)
        for hole in rings[1:]:
            hit &= ~MplPath(np.asarray(hole)).contains_points(points)
        inside |= hit
    return inside


def test_trident_h5_layout(tmp_path):
    grid, emb = synthetic_store(tmp_path / "s.zarr")
    out = export_trident_h5(tmp_path / "s.zarr", tmp_path / "feat.h5")
    with h5py.File(out, "r") as f:
        assert f["features"].shape == emb.shape
        assert f["features"].dtype == np.float32
        np.testing.assert_allclose(f["features"][:], emb)
        assert f["coords"].dtype == np.int64
        assert f["coords"].shape == (len(emb), 2)
        np.testing.assert_array_equal(f["coords"][:], grid.coords)
        attrs = dict(f["coords"].attrs)
        assert attrs["patch_size"] == grid.tile_px
        assert attrs["patch_size_level0"] == round(grid.tile_size_l0)
        assert attrs["patch_level"] == 0
        assert attrs["level0_magnification"] == pytest.approx(10 / grid.slide_mpp)
        assert attrs["target_magnification"] == pytest.approx(10 / grid.mpp)
        assert attrs["overlap"] == 0


def test_export_refuses_unfinished_store(tmp_path):
    import zarr

    synthetic_store(tmp_path / "s.zarr")
    zarr.open_group(tmp_path / "s.zarr", mode="r+")["done"][0] = False
    with pytest.raises(BadInputError, match="rerun"):
        export_trident_h5(tmp_path / "s.zarr", tmp_path / "feat.h5")
    assert not (tmp_path / "feat.h5").exists()


@pytest.mark.parametrize("seed", range(6))
def test_gene_polygons_enclose_exactly_the_true_cells(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((14, 17)) < 0.45
    mask[5:10, 5:10] = True
    mask[7, 7] = False  # a hole
    polys = gene_polygons(mask)
    cells = np.argwhere(np.ones_like(mask))[:, ::-1].astype(float)  # (col, row)
    inside = _inside_polygons(cells, [[p[0], *p[1]] for p in polys])
    np.testing.assert_array_equal(
        inside, mask[cells[:, 1].astype(int), cells[:, 0].astype(int)]
    )
    assert any(holes for _, holes in polys)


def _gene_store(tmp_path):
    slide = array_slide(mpp=0.5)

    def emb_fn(grid):
        rows, cols = grid.tile_ids // grid.n_cols, grid.tile_ids % grid.n_cols
        return np.column_stack([np.sin(rows / 1.5) + np.cos(cols / 2.0), rows, cols])

    grid, emb = synthetic_store(tmp_path / "g.zarr", embeddings_fn=emb_fn, slide=slide)
    head = head_from_linear(lambda e: e[:, :1] * 1.0, ["MKI67"], embed_dim=3)
    return grid, emb, head


@pytest.mark.parametrize(("quantile", "value"), [(0.6, None), (None, 0.5)])
def test_geojson_polygons_enclose_the_tiles_above_threshold(tmp_path, quantile, value):
    grid, emb, head = _gene_store(tmp_path)
    out = export_geojson(
        tmp_path / "g.zarr",
        head,
        "MKI67",
        tmp_path / "r.geojson",
        quantile=quantile,
        value=value,
    )
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection"
    assert doc["features"]
    thr = doc["properties"]["threshold"]
    if value is None:
        assert thr == pytest.approx(np.quantile(emb[:, 0], quantile))
    else:
        assert thr == value
    polys = []
    for feat in doc["features"]:
        assert feat["type"] == "Feature"
        assert feat["geometry"]["type"] == "Polygon"
        assert feat["properties"]["objectType"] == "annotation"
        rings = feat["geometry"]["coordinates"]
        for ring in rings:
            assert ring[0] == ring[-1]
            assert len(ring) >= 4
        polys.append(rings)
    # level-0 pixel coordinates: tile centres decide inside/outside
    centres = grid.coords + grid.tile_size_l0 / 2.0
    inside = _inside_polygons(centres, polys)
    np.testing.assert_array_equal(inside, emb[:, 0] >= thr)
    # and no off-tissue grid position is inside
    all_rc = np.argwhere(np.ones((grid.n_rows, grid.n_cols), bool))
    ids = all_rc[:, 0] * grid.n_cols + all_rc[:, 1]
    off = ~np.isin(ids, grid.tile_ids)
    x0 = (
        centres[0]
        - np.array([grid.tile_ids[0] % grid.n_cols, grid.tile_ids[0] // grid.n_cols])
        * grid.stride_l0
    )
    off_xy = x0 + all_rc[off][:, ::-1] * grid.stride_l0
    assert not _inside_polygons(off_xy, polys).any()


def test_export_cli(tmp_path, capsys):
    from napari_seal.predict.probe import RidgeProbe
    from napari_seal.predict.saved_probe import save_probe

    synthetic_store(tmp_path / "s.zarr", embed_dim=4)
    rng = np.random.default_rng(0)
    probe = RidgeProbe(
        np.zeros(4),
        np.ones(4),
        np.zeros(4),
        np.eye(4)[:2],
        rng.normal(size=(2, 2)),
        np.zeros(2),
        1.0,
        meta={"genes": ["ERBB2", "ESR1"]},
    )
    head_path = save_probe(tmp_path / "head", probe, {"genes": ["ERBB2", "ESR1"]})
    assert (
        main(
            [
                "export",
                str(tmp_path / "s.zarr"),
                "--format",
                "trident-h5",
                "--out",
                str(tmp_path / "f.h5"),
            ]
        )
        == 0
    )
    assert (tmp_path / "f.h5").is_file()
    rc = main(
        [
            "export",
            str(tmp_path / "s.zarr"),
            "--format",
            "geojson",
            "--out",
            str(tmp_path / "r.geojson"),
            "--gene",
            "ERBB2",
            "--head",
            str(head_path.parent if head_path.name == "head.json" else head_path),
            "--threshold",
            "0.8",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "r.geojson").read_text())["features"]
    capsys.readouterr()
    rc = main(
        [
            "export",
            str(tmp_path / "s.zarr"),
            "--format",
            "geojson",
            "--out",
            str(tmp_path / "x.geojson"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "--gene" in err
    assert err.count("\n") == 1
