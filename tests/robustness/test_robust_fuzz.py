"""Property-based robustness tests (issue 7): random text, random bytes and random
damage to tiny valid files never make the gene-query parser or the readers raise
anything but a :class:`~napari_seal.errors.SealError` (the napari reader and the CLI:
``test_robust_fuzz_entry.py``).

Examples are few (``ROBUST``/``FEW`` in ``robust_helpers``: 40/25 each, derandomised so
CI is reproducible) and every file is tiny, so the module runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image
from robust_helpers import FEW, ROBUST, only_seal_errors, writable_copy

from napari_seal.errors import GeneQueryError
from napari_seal.testing import synthetic_he_image

# -- (a) gene-query parser ----------------------------------------------------

_HEADER = {"gene", "genes", "symbol", "name", "gene_symbol", "id", "gene_id"}
gene_names = st.from_regex(r"[A-Z][A-Z0-9\-]{0,8}", fullmatch=True).filter(
    lambda g: g.lower() not in _HEADER
)
weights = st.floats(allow_nan=False, allow_infinity=False, width=64)


@ROBUST
@given(
    genes=st.one_of(
        st.none(),
        st.text(max_size=40),
        st.lists(st.text(max_size=12), max_size=4),
        st.dictionaries(
            st.text(max_size=8),
            st.one_of(st.floats(), st.text(max_size=5), st.integers()),
            max_size=4,
        ),
    ),
    panel=st.sampled_from([None, ["ERBB2", "ESR1", "MKI67", "NKX2-1"]]),
)
def test_parse_query_raises_only_gene_query_errors(genes, panel):
    from napari_seal.retrieval.gene_signatures import GeneQuery, parse_query

    try:
        q = parse_query(genes, panel=panel, known_genes=["ERBB2", "GRB7"])
    except GeneQueryError as err:
        message = str(err)
        assert message  # a message, never empty
        return
    assert isinstance(q, GeneQuery)
    assert len(q.genes) == len(q.weights) >= 1
    assert all(np.isfinite(q.weights))
    assert any(w != 0 for w in q.weights)
    if panel is not None:
        assert set(q.genes) <= set(panel)


@ROBUST
@given(
    pairs=st.lists(
        st.tuples(gene_names, weights),
        min_size=1,
        max_size=6,
        unique_by=lambda p: p[0].upper(),
    ),
    sep=st.sampled_from([",", ", ", ";", " ", "\t"]),
    as_list=st.booleans(),
)
def test_valid_inline_queries_round_trip(pairs, sep, as_list):
    from napari_seal.retrieval.gene_signatures import parse_query

    assume(any(w != 0 for _, w in pairs))
    items = [f"{g}:{w!r}" for g, w in pairs]
    query = items if as_list else sep.join(items)
    genes = [g for g, _ in pairs]
    for panel in (None, genes):
        q = parse_query(query, panel=panel)
        assert q.genes == tuple(genes)
        assert q.weights == tuple(w for _, w in pairs)
        assert (
            parse_query(dict(zip(q.genes, q.weights, strict=True))).weights == q.weights
        )


@ROBUST
@given(
    pairs=st.lists(st.tuples(gene_names, weights), min_size=1, max_size=6),
    noise=st.lists(st.sampled_from(["", "   ", "# comment", "\t"]), max_size=4),
    delim=st.sampled_from(["\t", ",", ";", " "]),
)
def test_signature_files_round_trip(tmp_path, pairs, noise, delim):
    from napari_seal.retrieval.gene_signatures import read_signature

    lines = [f"{g}{delim}{w!r}" for g, w in pairs]
    for i, extra in enumerate(noise):
        lines.insert(i * 2 % (len(lines) + 1), extra)
    path = tmp_path / "sig.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_signature(path) == list(pairs)


@ROBUST
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_signature_files_with_arbitrary_bytes(tmp_path, data):
    from napari_seal.retrieval.gene_signatures import parse_query, read_signature

    path = tmp_path / "sig.txt"
    path.write_bytes(data)
    try:
        pairs = read_signature(path)
    except GeneQueryError:
        return
    assert pairs
    assert all(isinstance(g, str) and np.isfinite(w) for g, w in pairs)
    with contextlib.suppress(GeneQueryError):
        parse_query(signature=path, panel=["ERBB2"])


@ROBUST
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_include_genes_file_with_arbitrary_bytes(tmp_path, data):
    from napari_seal.training.expression import parse_gene_list

    path = tmp_path / "genes.txt"
    path.write_bytes(data)
    out = only_seal_errors(lambda: parse_gene_list(str(path)))
    assert out is None or all(isinstance(g, str) and g for g in out)


# -- (b) readers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, bytes]:
    """Bytes of tiny valid files: a pyramidal TIFF, a JPEG, a PNG and an h5ad."""
    import anndata as ad

    from napari_seal.io.slide.writer import write_pyramidal_tiff

    folder = tmp_path_factory.mktemp("templates")
    rgb = synthetic_he_image(64, 96, seed=5)
    tif = write_pyramidal_tiff(folder / "t.tif", rgb, mpp=0.5, tile_px=32)
    out = {".tif": tif.read_bytes()}
    for suffix, fmt in ((".jpg", "JPEG"), (".png", "PNG")):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        out[suffix] = buf.getvalue()
    a = ad.AnnData(X=np.ones((4, 3), np.float32))
    a.obsm["spatial"] = np.array([[5.0, 5.0], [20, 20], [40, 30], [60, 40]])
    a.write_h5ad(folder / "a.h5ad")
    out[".h5ad"] = (folder / "a.h5ad").read_bytes()
    return out


def _open_and_read(path: Path, cache: Path):
    from napari_seal.io.open import open_path
    from napari_seal.io.slide.core import Slide

    obj = open_path(path) if path.suffix == ".h5ad" else None
    if obj is None:
        from napari_seal.io.slide.core import open_slide

        obj = open_slide(path, cache_dir=cache)
    if isinstance(obj, Slide):
        obj.read_region(0, 0, obj.width_px, obj.height_px)
        obj.thumbnail(max_px=16)
    return obj


@ROBUST
@given(
    suffix=st.sampled_from([".tif", ".svs", ".ndpi", ".jpg", ".png", ".h5ad"]),
    magic=st.sampled_from(
        [
            b"",
            b"II*\x00",
            b"MM\x00*",
            b"II+\x00",
            b"\xff\xd8\xff",
            b"\x89PNG\r\n\x1a\n",
            b"\x89HDF\r\n\x1a\n",
        ]
    ),
    body=st.binary(max_size=1500),
)
def test_readers_on_random_bytes(tmp_path, suffix, magic, body):
    from napari_seal.io.open import open_path
    from napari_seal.io.sniff import sniff

    path = tmp_path / f"x{suffix}"
    path.write_bytes(magic + body)
    assert sniff(path) in (None, "slide", "h5ad")
    only_seal_errors(lambda: open_path(path))
    only_seal_errors(lambda: _open_and_read(path, tmp_path / "cache"))


@ROBUST
@given(
    suffix=st.sampled_from([".tif", ".jpg", ".png", ".h5ad"]),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
)
def test_readers_on_truncated_or_bit_flipped_files(
    tmp_path, templates, suffix, cut, flips
):
    """Random damage to tiny valid files: cut anywhere and/or overwrite bytes."""
    data = bytearray(templates[suffix])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    data = bytes(data[: max(0, int(cut * len(data)))] if cut < 1 else data)
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(data)
    only_seal_errors(lambda: _open_and_read(path, tmp_path / "cache"))
    if suffix == ".h5ad":
        from napari_seal.io.st.read import read_st

        only_seal_errors(lambda: read_st("h5ad", path, image=path))


@FEW
@given(
    counts=st.one_of(st.text(max_size=200), st.binary(max_size=200)),
    spots=st.one_of(st.text(max_size=200), st.binary(max_size=200)),
    gz=st.booleans(),
)
def test_legacy_st_reader_on_arbitrary_tables(tmp_path, counts, spots, gz):
    from napari_seal.io.st.read import read_st

    raw_c = (
        counts.encode("utf-8", "surrogatepass") if isinstance(counts, str) else counts
    )
    raw_s = spots.encode("utf-8", "surrogatepass") if isinstance(spots, str) else spots
    if gz:
        raw_c = gzip.compress(raw_c)[: max(1, len(raw_c) // 2)] if raw_c else raw_c
    c, s = tmp_path / "counts.tsv.gz", tmp_path / "spots.tsv"
    c.write_bytes(raw_c)
    s.write_bytes(raw_s)
    only_seal_errors(lambda: read_st("legacy-st", counts=c, spots=s))


@FEW
@given(
    cells=st.lists(
        st.one_of(st.integers(-5, 10**6), st.floats(), st.text(max_size=4)),
        min_size=4,
        max_size=4,
    ),
    pixel=st.one_of(st.floats(), st.integers(-(10**9), 10**9), st.text(max_size=4)),
    dup=st.booleans(),
)
def test_legacy_st_reader_on_odd_values(tmp_path, cells, pixel, dup):
    """Wrong dtypes, NaN/inf, huge numbers, duplicated ids in otherwise valid tables."""
    from napari_seal.io.st.read import read_st

    ids = ["3x4", "3x5", "4x4", "4x5"]
    counts = pd.DataFrame({"G1": cells, "G2": 1}, index=ids)
    if dup:
        counts = pd.concat([counts, counts.iloc[:1]])
    spots = pd.DataFrame(
        {
            "x": [3, 3, 4, 4],
            "y": [4, 5, 4, 5],
            "pixel_x": [pixel, 30.0, 40.0, 40.0],
            "pixel_y": [40.0, 50.0, 40.0, 50.0],
        }
    )
    c, s = tmp_path / "c.tsv", tmp_path / "s.tsv"
    counts.to_csv(c, sep="\t")
    spots.to_csv(s, sep="\t", index=False)
    st_ = only_seal_errors(lambda: read_st("legacy-st", counts=c, spots=s))
    if st_ is not None:
        x = st_.adata.X
        assert np.isfinite(x.data).all()
        assert (x.data >= 0).all()


@pytest.fixture(scope="module")
def spaceranger(shared_data, tmp_path_factory) -> Path:
    return writable_copy(
        shared_data / "visium_scanpy_tiny", tmp_path_factory.mktemp("sr") / "outs"
    )


@FEW
@given(
    which=st.sampled_from(["tissue_positions_list.csv", "scalefactors_json.json"]),
    content=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    keep=st.floats(0, 1),
)
def test_spaceranger_reader_on_damaged_files(spaceranger, which, content, keep):
    from napari_seal.io.open import open_path

    target = spaceranger / "spatial" / which
    original = target.read_bytes()
    try:
        target.write_bytes(original[: int(keep * len(original))] + content)
        only_seal_errors(lambda: open_path(spaceranger))
    finally:
        target.write_bytes(original)


@pytest.fixture(scope="module")
def tiny_hest(tmp_path_factory) -> Path:
    """A tiny HEST sample made by our importer (legacy tables + an 800 px PNG)."""
    from napari_seal.io.convert import import_sample

    folder = tmp_path_factory.mktemp("hest")
    ids = [(x, y) for x in range(2, 6) for y in range(2, 6)]
    pd.DataFrame(
        np.ones((len(ids), 3), int),
        columns=["A", "B", "C"],
        index=[f"{x}x{y}" for x, y in ids],
    ).to_csv(folder / "c.tsv", sep="\t")
    pd.DataFrame(
        {
            "x": [i[0] for i in ids],
            "y": [i[1] for i in ids],
            "pixel_x": [i[0] * 100.0 for i in ids],
            "pixel_y": [i[1] * 100.0 for i in ids],
        }
    ).to_csv(folder / "s.tsv", sep="\t", index=False)
    Image.fromarray(synthetic_he_image(800, 800, seed=2)).save(folder / "img.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_sample(
            "legacy-st",
            [],
            counts=folder / "c.tsv",
            spots=folder / "s.tsv",
            image=folder / "img.png",
            out=folder / "sample",
        )


@FEW
@given(
    meta=st.one_of(
        st.text(max_size=200),
        st.binary(max_size=100),
        st.dictionaries(
            st.sampled_from(
                [
                    "pixel_size_um_estimated",
                    "pixel_size_um_embedded",
                    "spot_diameter",
                    "inter_spot_dist",
                    "st_technology",
                ]
            ),
            st.one_of(st.floats(), st.text(max_size=5), st.none()),
            max_size=4,
        ).map(lambda d: __import__("json").dumps(d)),
    ),
    cut_st=st.floats(0, 1),
)
def test_hest_reader_on_damaged_samples(tiny_hest, meta, cut_st):
    from napari_seal.io.open import open_path

    meta_file = next((tiny_hest / "metadata").glob("*.json"))
    st_file = next((tiny_hest / "st").glob("*.h5ad"))
    originals = {meta_file: meta_file.read_bytes(), st_file: st_file.read_bytes()}
    try:
        meta_file.write_bytes(
            meta if isinstance(meta, bytes) else meta.encode("utf-8", "surrogatepass")
        )
        if cut_st < 0.9:
            st_file.write_bytes(
                originals[st_file][: int(cut_st * len(originals[st_file]))]
            )
        only_seal_errors(lambda: open_path(tiny_hest))
    finally:
        for f, data in originals.items():
            f.write_bytes(data)


@ROBUST
@given(name=st.text(max_size=30))
def test_sniff_and_open_path_on_arbitrary_names(tmp_path, name):
    from napari_seal.io.open import open_path
    from napari_seal.io.sniff import sniff

    path = tmp_path / name if name not in ("", ".", "..") else tmp_path
    assert sniff(path) in (None, "slide", "h5ad", "hest", "visium")
    only_seal_errors(lambda: open_path(path))
