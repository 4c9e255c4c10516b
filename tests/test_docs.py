"""Docs that are generated stay in sync with the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cli_doc_is_current(tmp_path):
    env = {**os.environ, "COLUMNS": "100"}
    fresh = tmp_path / "cli.md"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_cli_doc.py"),
                    str(fresh)], check=True, env=env)
    assert fresh.read_text() == (REPO / "docs" / "cli.md").read_text(), (
        "docs/cli.md is stale: run `COLUMNS=100 python scripts/make_cli_doc.py`")


def test_readme_has_exactly_two_commands():
    text = (REPO / "README.md").read_text()
    block = text.split("## Two commands", 1)[1]
    block = block.split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in block.splitlines() if ln.strip()]
    assert [c.split("#")[0].strip() for c in commands] == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci
