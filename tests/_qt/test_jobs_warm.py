"""``warm_imports`` loads everything a job would import, so the worker thread never
loads a compiled module (which holds the interpreter lock and freezes the GUI)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_seal._widgets.jobs import warm_imports
from napari_seal.errors import BadInputError

SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
from napari_seal.io.hest import bundled_sample_path
from napari_seal._widgets.jobs import iter_embed_paths, iter_finetune, warm_imports

def drain(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value

warm_imports("train")
warm_imports("query")
before = set(sys.modules)
out = Path(tempfile.mkdtemp())
run = drain(iter_finetune([bundled_sample_path()], out=out / "run", preset="cpu-smoke",
                          encoder="test-vit", max_steps=1))
drain(iter_embed_paths(bundled_sample_path(), store=out / "e.zarr", run=run))
new = sorted(set(sys.modules) - before)
ext = [n for n in new if str(getattr(sys.modules[n], "__file__", "") or "").endswith(
    (".so", ".pyd"))]
print(json.dumps({"new": new, "compiled": ext}))
"""


@pytest.mark.slow  # a fresh interpreter + a training + an embedding: 1-7 min here
def test_jobs_load_no_compiled_module_after_warm_imports(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["compiled"] == [], (
        "add these to napari_seal._widgets.jobs._HEAVY: "
        + ", ".join(report["compiled"])
    )


def test_warm_imports_is_idempotent_and_checks_kind():
    warm_imports("embed")
    assert warm_imports("embed") == []
    with pytest.raises(BadInputError, match="use one of"):
        warm_imports("nope")
