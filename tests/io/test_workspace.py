"""The per-user workspace: one root, keyed paths, never the package or the inputs."""

from __future__ import annotations

import builtins
from pathlib import Path

from napari_seal.io import workspace


def test_root_env_override_platformdirs_and_xdg_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(tmp_path / "ws"))
    assert workspace.workspace_root() == tmp_path / "ws"
    monkeypatch.delenv("NAPARI_SEAL_CACHE")
    from platformdirs import user_cache_dir

    assert workspace.workspace_root() == Path(user_cache_dir("napari-seal", False))
    real_import = builtins.__import__

    def no_platformdirs(name, *args, **kwargs):
        if name == "platformdirs":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_platformdirs)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert workspace.workspace_root() == tmp_path / "xdg" / "napari-seal"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert workspace.workspace_root() == tmp_path / "home" / ".cache" / "napari-seal"


def test_workspace_path_is_keyed_and_stays_under_the_root(tmp_path):
    key = {"slide": {"path": "/data/a b.tif", "size": 3}, "encoder": "default"}
    p = workspace.workspace_path(
        "stores", name="../a b", key=key, suffix=".zarr", root=tmp_path
    )
    assert p.parent == tmp_path / "stores"  # no escape through the name
    assert p.name.endswith(".zarr")
    assert ".." not in p.name
    assert " " not in p.name
    same = workspace.workspace_path(
        "stores", name="../a b", key=dict(reversed(key.items())), suffix=".zarr",
        root=tmp_path,
    )
    assert same == p  # key order does not matter
    other = workspace.workspace_path(
        "stores", name="../a b", key={**key, "encoder": "run:x"}, suffix=".zarr",
        root=tmp_path,
    )
    assert other != p  # another model, another store


def test_slide_cache_and_hash_cache_live_in_the_workspace(monkeypatch, tmp_path):
    from napari_seal.embedding.store import sha256_file
    from napari_seal.io.slide.flat import default_cache_dir

    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(tmp_path / "ws"))
    assert default_cache_dir() == tmp_path / "ws" / "slides"
    f = tmp_path / "in" / "w.bin"
    f.parent.mkdir()
    f.write_bytes(b"weights")
    sha256_file(f)
    assert (tmp_path / "ws" / "sha256.json").is_file()
    assert sorted(p.name for p in f.parent.iterdir()) == ["w.bin"]
