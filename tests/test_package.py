"""Packaging: light import, npe2 manifest exposed in editable installs and wheels."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_does_not_pull_torch_or_napari():
    code = (
        "import sys, napari_seal, napari_seal.io.slide, napari_seal.sample, "
        "napari_seal.tiling, napari_seal.cli, napari_seal._reader\n"
        "bad = [m for m in ('torch', 'timm', 'peft', 'napari', 'qtpy', 'PyQt6') "
        "if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_manifest_is_the_repository_root_file():
    from importlib.resources import files

    packaged = files("napari_seal") / "napari.yaml"
    assert packaged.read_text() == (REPO / "napari.yaml").read_text()


def test_npe2_finds_and_validates_the_installed_manifest():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-seal")
    assert manifest.contributions.readers
    assert manifest.contributions.sample_data
    assert len(manifest.contributions.widgets) >= 5


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "napari_seal.cli", "--help"],
                         capture_output=True, text=True, check=True)
    for cmd in ("info", "import"):
        assert cmd in out.stdout


@pytest.mark.timeout(600)
def test_built_wheel_contains_manifest_and_validates(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
         str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_seal-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_seal/napari.yaml" in names
        manifest = zf.read("napari_seal/napari.yaml").decode()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari.manifest" in zf.read(entry).decode()
    assert manifest == (REPO / "napari.yaml").read_text()
    yaml_path = tmp_path / "napari.yaml"
    yaml_path.write_text(manifest)
    val = subprocess.run([sys.executable, "-m", "npe2", "validate", str(yaml_path)],
                         capture_output=True, text=True)
    assert val.returncode == 0, val.stdout + val.stderr
