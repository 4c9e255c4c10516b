"""The SEAL model that ships with napari-seal: what runs when no model is given.

``seal-default-her2st``: a SEAL run for the embedded ``default`` encoder
(EfficientNet-Lite0 + LoRA adapters, omics VAE, image decoder, gene panel) trained on
her2st sections C2-C6 (Andersson et al. 2021, CC BY 4.0) by
``scripts/make_shipped_model.py``. It is an ordinary run directory (heads stored as
fp16), so :func:`napari_seal.training.runs.load_run` loads it like any other run.
Its provenance and held-out numbers are in ``PROVENANCE.md`` and ``provenance.json``
beside it, and in ``docs/models.md``.

This module is torch-free: it only locates the folder and reads its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_seal.errors import ShippedModelError

__all__ = ["SHIPPED_MODEL", "shipped_model_info", "model_summary",
           "shipped_model_summary", "shipped_run_path"]

SHIPPED_MODEL = "seal-default-her2st"
PROVENANCE_JSON = "provenance.json"
_REQUIRED = ("config.json", "panel.json", "heads.safetensors", "DONE")


def _folder() -> Path:
    from importlib.resources import files

    return Path(str(files("napari_seal") / "data" / "models" / SHIPPED_MODEL))


def shipped_run_path() -> Path:
    """The installed folder of the shipped SEAL run (pass it to ``load_run``).

    Raises
    ------
    ShippedModelError
        When the folder or one of its files is missing (a broken install).

    Examples
    --------
    >>> (shipped_run_path() / "config.json").is_file()
    True
    """
    path = _folder()
    missing = [f for f in _REQUIRED if not (path / f).is_file()]
    if missing:
        msg = (
            f"the shipped SEAL model is missing or incomplete at {path} (no "
            f"{', '.join(missing)}); reinstall napari-seal, or in a source checkout "
            "rebuild it with `python scripts/make_shipped_model.py`; or pass a model "
            "explicitly (--run RUN_DIR, or --encoder NAME --head HEAD)"
        )
        raise ShippedModelError(msg)
    return path


def shipped_model_info() -> dict[str, Any]:
    """Provenance and held-out numbers of the shipped model, for UIs and reports.

    Returns
    -------
    dict
        ``provenance.json``: ``name``, ``encoder``, ``training_data`` (sections,
        licence, attribution), ``recipe``, ``command``, ``date``, ``size_bytes``,
        ``train_seconds``, ``genes`` (panel size) and ``held_out`` (the
        leave-one-section-out numbers of this recipe: HEST-probe Pearson per fold and
        gene-query AUROC per route), plus ``path``.

    Raises
    ------
    ShippedModelError
        When the model or its provenance is missing or unreadable.
    """
    path = shipped_run_path()
    try:
        info = json.loads((path / PROVENANCE_JSON).read_text())
    except (OSError, ValueError) as err:
        msg = (
            f"the shipped model's {PROVENANCE_JSON} is unreadable ({err}); reinstall "
            "napari-seal or rebuild it with `python scripts/make_shipped_model.py`"
        )
        raise ShippedModelError(msg) from err
    if not isinstance(info, dict):
        msg = f"{path / PROVENANCE_JSON} is not a JSON object; reinstall napari-seal"
        raise ShippedModelError(msg)
    return {**info, "path": str(path)}


def shipped_model_summary(info: dict[str, Any] | None = None) -> str:
    """Three lines for a panel: what the shipped model is, its data, its held-out
    numbers (the default gene query's ERBB2 and mean AUROC, the HEST probe)."""
    info = shipped_model_info() if info is None else info
    data = info.get("training_data", {})
    held = info.get("held_out", {})
    sections = ", ".join(s.removeprefix("her2st_") for s in data.get("sections", []))
    lines = [
        f"{info.get('name', SHIPPED_MODEL)}: {info.get('encoder', '?')} encoder + "
        f"SEAL, {info.get('genes', '?')} genes",
        f"trained on {data.get('dataset', '?')} {sections} "
        f"({data.get('attribution', '')}; {data.get('licence', '')})",
    ]
    route = held.get("default_route")
    aurocs = held.get("gene_query_auroc", {})
    # the omics route's default query vectors are exemplars ("omics-exemplar")
    auroc = aurocs.get(f"{route}-exemplar") or aurocs.get(route or "", {})
    pearson = held.get("hest_probe_pearson", {})
    parts = []
    if auroc:
        erbb2 = auroc.get("markers", {}).get("ERBB2")
        parts.append(f"gene query AUROC {auroc['mean']:.3f} (50 genes)"
                     + (f", ERBB2 {erbb2:.3f}" if erbb2 is not None else ""))
    if "seal/normalized" in pearson and "frozen/normalized" in pearson:
        parts.append(f"probe r {pearson['seal/normalized']['mean']:.3f} vs frozen "
                     f"{pearson['frozen/normalized']['mean']:.3f} (normalised)")
    if parts:
        lines.append("held out (leave-one-section-out): " + "; ".join(parts))
    return "\n".join(lines)


def model_summary(run_dir: str | Path, n_genes: int) -> str:
    """A panel's model line: :func:`shipped_model_summary` for the shipped model,
    else the run folder and its panel size."""
    try:
        if Path(run_dir).resolve() == shipped_run_path().resolve():
            return shipped_model_summary()
    except ShippedModelError:
        pass
    return f"SEAL run {run_dir} ({n_genes} genes)"
