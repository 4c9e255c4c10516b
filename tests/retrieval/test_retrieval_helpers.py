"""Helpers of the gene-query tests: tiny hand-built runs, slides, samples and stores.

No tests here (imported by ``test_retrieval*.py``, ``test_query*.py`` and
``test_lookup*.py``).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

GENES = [
    "ERBB2",
    "GRB7",
    "KRT19",
    "CD74",
    "MKI67",
    "PTPRC",
    "ACTA2",
    "COL1A1",
    "ESR1",
    "PECAM1",
    "VIM",
    "EPCAM",
]


def toy_run(
    *,
    genes=GENES,
    embed_dim=64,
    seed=0,
    encoder=None,
    omics=True,
    decoder=True,
    path=None,
):
    """A run-like object with the parts a gene query uses (panel, omics, decoder)."""
    import torch

    from napari_seal.models.decoder import ImgEmbDecoder
    from napari_seal.models.omics import GeneVAE
    from napari_seal.training.preprocess import GenePanel

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    g = len(genes)
    panel = GenePanel(
        tuple(genes),
        rng.uniform(0.5, 2.0, g),
        rng.uniform(0.2, 1.0, g),
        preprocessing={"smooth": False, "target_sum": 1e4},
    )
    vae = GeneVAE(g, embed_dim, hidden=(32, 16)) if omics else None
    if vae is not None:
        with torch.no_grad():  # non-trivial BatchNorm statistics
            for m in vae.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        vae.eval()
    dec = ImgEmbDecoder(embed_dim, g, hidden=16).eval() if decoder else None
    return SimpleNamespace(
        panel=panel, omics=vae, decoder=dec, encoder=encoder, path=path, config={}
    )


def he_image(height_px=360, width_px=384, *, seed=0):
    """A white image with two textured pink/purple tissue blobs (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height_px, 0:width_px]
    tissue = (yy - 0.4 * height_px) ** 2 + (xx - 0.35 * width_px) ** 2 < (
        0.3 * height_px
    ) ** 2
    tissue |= (yy - 0.65 * height_px) ** 2 + (xx - 0.7 * width_px) ** 2 < (
        0.28 * height_px
    ) ** 2
    img = np.full((height_px, width_px, 3), 245, np.uint8)
    mix = rng.random((height_px, width_px, 1))
    col = (
        np.array([225, 140, 185]) * (1 - mix)
        + np.array([110, 50, 150]) * mix
        + rng.normal(0, 12, (height_px, width_px, 3))
    )
    img[tissue] = np.clip(col[tissue], 0, 255).astype(np.uint8)
    return img


def toy_sample(*, genes=GENES, mpp=1.75, n_side=6, seed=0, name="toy"):
    """A small ST sample on :func:`he_image` (spots every 100 um, Poisson counts)."""
    import anndata as ad
    import scipy.sparse as sp

    from napari_seal.io.sample import SpatialSample
    from napari_seal.io.slide.core import Slide

    rng = np.random.default_rng(seed)
    img = he_image(seed=seed)
    step = 100.0 / mpp
    xs = 40 + step * np.arange(n_side)
    ys = 30 + step * np.arange(n_side)
    xy = np.array([(x, y) for y in ys for x in xs], dtype=np.float64)
    counts = rng.poisson(rng.uniform(1, 20, size=(len(xy), len(genes)))).astype(
        np.float32
    )
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = list(genes)
    adata.obs_names = [f"{int(x // 10)}x{int(y // 10)}" for x, y in xy]
    adata.obsm["spatial"] = xy
    slide = Slide.from_array(img, mpp=mpp)
    return SpatialSample(
        slide=slide,
        adata=adata,
        mpp=mpp,
        spot_diameter_um=55.0,
        name=name,
        inter_spot_dist_um=100.0,
    )


def write_store(path: Path, grid, embeddings, *, source="synthetic", chunk_tiles=16):
    """Write a complete embedding store (the embed.py layout) with given embeddings."""
    from napari_seal.embedding.store import open_or_create_store

    emb = np.asarray(embeddings, np.float32)
    signature = {
        "format": "napari-seal.embeddings/1",
        "slide": {"path": None},
        "encoder": {"name": source, "source": source, "embed_dim": int(emb.shape[1])},
    }
    writer = open_or_create_store(
        path,
        signature=signature,
        grid=grid,
        embed_dim=emb.shape[1],
        chunk_tiles=chunk_tiles,
        dtype="float32",
        precision="float32",
    )
    for chunk in range(writer.n_chunks):
        c0, c1 = writer.chunk_range(chunk)
        writer.write_chunk(chunk, emb[c0:c1])
    return path


def hand_grid(n_rows=7, n_cols=9, *, tile_px=64, mpp=1.75, slide_mpp=1.75, keep=None):
    """A TileGrid with chosen tissue tiles (``keep``: bool (n_rows, n_cols))."""
    from napari_seal.tiling.grid import TileGrid

    if keep is None:
        keep = np.ones((n_rows, n_cols), bool)
    ids = np.flatnonzero(keep.ravel()).astype(np.int64)
    grid = TileGrid(
        tile_px=tile_px,
        mpp=mpp,
        stride_px=tile_px,
        slide_mpp=slide_mpp,
        n_rows=n_rows,
        n_cols=n_cols,
        tile_ids=ids,
        coords=np.zeros((ids.size, 2), np.int64),
        width_px=int(n_cols * tile_px * mpp / slide_mpp),
        height_px=int(n_rows * tile_px * mpp / slide_mpp),
    )
    grid.coords = np.round(grid.origins_xy()).astype(np.int64)
    return grid


def her2st_sample(shared_data: Path, section: str = "C2"):
    """A real her2st section as a SpatialSample (legacy ST reader)."""
    from napari_seal.io.assemble import sample_from_st
    from napari_seal.io.st.legacy import read_legacy_st

    d = shared_data / "her2st" / "data"
    images = {
        "C2": "C/C2/5714_HE_BT_C2.jpg",
        "C3": "C/C3/5714_HE_BT_D1.jpg",
        "C4": "C/C4/5714_HE_BT_D2.jpg",
        "C5": "C/C5/5714_HE_BT_E1.jpg",
        "C6": "C/C6/5714_HE_BT_E2.jpg",
    }
    st = read_legacy_st(
        d / "ST-cnts" / f"{section}.tsv.gz",
        d / "ST-spotfiles" / f"{section}_selection.tsv",
        image=d / "ST-imgs" / images[section],
        sample_id=section,
    )
    return sample_from_st(st)
