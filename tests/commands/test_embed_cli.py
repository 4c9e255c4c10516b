"""``napari-seal embed`` on a synthetic pyramidal TIFF and on a real her2st section."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_seal.cli import main


@pytest.fixture(scope="module")
def tiff(tmp_path_factory):
    from napari_seal.testing import write_synthetic_slide

    return write_synthetic_slide(
        tmp_path_factory.mktemp("slide") / "s.tif",
        width_px=1600,
        height_px=1200,
        mpp=0.5,
    )


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    """test-vit weights in a file, so two CLI runs use the same network."""
    from safetensors.torch import save_file

    from napari_seal.models.factory import create_encoder

    path = tmp_path_factory.mktemp("weights") / "test-vit.safetensors"
    enc = create_encoder("test-vit")
    save_file({k: v.contiguous() for k, v in enc.module.state_dict().items()}, path)
    return path


def test_cli_embed_resume_and_mismatch(tiff, vit_weights, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    args = [
        "embed",
        str(tiff),
        "--out",
        str(out),
        "--encoder",
        "test-vit",
        "--weights",
        str(vit_weights),
        "--batch-size",
        "8",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "tiles/s" in err
    assert "wrote" in err
    g = zarr.open_group(out, mode="r")
    n = g["embeddings"].shape[0]
    assert n > 0
    assert bool(np.all(g["done"][:]))
    assert np.isfinite(g["embeddings"][:]).all()
    sig = g.attrs["signature"]
    assert sig["slide"]["path"] == str(tiff.resolve())
    assert len(sig["encoder"]["weights_sha256"]) == 64  # sha256 of the file
    assert main(args) == 0  # finished store: nothing to do
    capsys.readouterr()
    assert main([*args, "--stride-px", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "tiling.stride_px" in err
    assert "Traceback" not in err


def test_cli_embed_bad_input(tiff, tmp_path, capsys):
    assert (
        main(
            [
                "embed",
                str(tiff),
                "--out",
                str(tmp_path / "a.zarr"),
                "--encoder",
                "test-vit",
                "--batch-size",
                "0",
            ]
        )
        == 2
    )
    assert "--batch-size" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                str(tmp_path / "missing.tif"),
                "--out",
                str(tmp_path / "b.zarr"),
                "--encoder",
                "test-vit",
            ]
        )
        == 2
    )
    assert "missing.tif" in capsys.readouterr().err
    assert (
        main(
            [
                "embed",
                str(tiff),
                "--out",
                str(tmp_path / "c.zarr"),
                "--encoder",
                "test-vit",
                "--scheduler",
                "tcp://127.0.0.1:9",
                "--scheduler-timeout",
                "2",
            ]
        )
        == 2
    )
    assert "did not answer" in capsys.readouterr().err


def test_cli_embed_real_her2st_sample_folder(tmp_path):
    """The bundled real her2st section C2 (HEST folder; mpp from its metadata)."""
    from napari_seal.io.hest import bundled_sample_path, load_sample

    sample_dir = bundled_sample_path()
    out = tmp_path / "c2.zarr"
    args = f"embed {sample_dir} --out {out} --encoder test-vit --max-tiles 40"
    assert main([*args.split(), "--device", "cpu"]) == 0
    g = zarr.open_group(out, mode="r")
    emb = g["embeddings"][:]
    assert emb.shape[0] == 40
    assert np.isfinite(emb).all()
    sample = load_sample(sample_dir)
    assert g.attrs["grid"]["slide_mpp"] == pytest.approx(sample.mpp)
    assert g.attrs["signature"]["slide"]["width_px"] == sample.slide.width_px
    # tiles are tissue, not glass: their embeddings differ
    assert np.std(emb, axis=0).mean() > 1e-3


@pytest.mark.slow
def test_cli_embed_real_her2st_jpeg(her2st_dir, tmp_path):
    """A real legacy-ST H&E JPEG (no pixel size in the file: --mpp), tile budget."""
    jpg = her2st_dir / "ST-imgs" / "C" / "C2" / "5714_HE_BT_C2.jpg"
    out = tmp_path / "c2.zarr"
    args = f"embed {jpg} --out {out} --encoder test-vit --mpp 0.689 --max-tiles 40"
    assert main([*args.split(), "--device", "cpu"]) == 0
    g = zarr.open_group(out, mode="r")
    assert g["embeddings"].shape[0] == 40
    assert np.isfinite(g["embeddings"][:]).all()
    assert g.attrs["grid"]["slide_mpp"] == pytest.approx(0.689)
    assert g.attrs["signature"]["slide"]["width_px"] == 9274


def test_cli_embed_precision_flag_is_recorded(tiff, vit_weights, tmp_path, capsys):
    """--precision fp32 / bf16 land in the store's signature and inference attrs."""
    base = (
        f"embed {tiff} --encoder test-vit --weights {vit_weights} --batch-size 8 "
        "--max-tiles 16 --device cpu"
    ).split()
    stores = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.zarr"
        assert main([*base, "--out", str(out), "--precision", precision]) == 0
        err = capsys.readouterr().err
        assert f"({precision}, contiguous)" in err  # a ViT: no channels_last
        g = zarr.open_group(out, mode="r")
        assert g.attrs["precision"] == precision
        assert g.attrs["signature"]["encoder"]["precision"] == precision
        info = g.attrs["inference"]
        assert info["precision"] == precision
        assert info["memory_format"] == "contiguous"
        assert info["compile"] is False
        assert info["warmup_s"] > 0
        stores[precision] = g["embeddings"][:]
    a, b = stores["fp32"], stores["bf16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.mean() > 0.99
    assert not np.array_equal(a, b)  # bf16 really ran
    # resuming a store in another precision is refused, naming the key
    assert (
        main([*base, "--out", str(tmp_path / "fp32.zarr"), "--precision", "bf16"]) == 2
    )
    err = capsys.readouterr().err
    assert "encoder.precision" in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--precision", "fp8"], "--precision must be one of"),
        (["--compile", "--scheduler", "tcp://127.0.0.1:9"], "--compile runs locally"),
    ],
)
def test_cli_embed_bad_precision_flags(tiff, tmp_path, capsys, extra, needle):
    args = ["embed", str(tiff), "--out", str(tmp_path / "x.zarr"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1
    assert not (tmp_path / "x.zarr").exists()
