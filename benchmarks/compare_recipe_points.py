"""Recipe points of the gene-query search side by side, on the genes both evaluated.

``bench_gene_query_her2st.py`` scores each fold on the 50 panel genes most variable in
the held-out section; a recipe with another panel size has another panel, so its 50
genes differ and its mean AUROC is not comparable as is. This script reads the JSON of
a base recipe and of each point (``--json`` of that benchmark) and prints, per fold,
the mean AUROC of a method over the genes evaluated in both, the difference, and the
markers, so a panel-size point is judged on the same genes.

Usage::

    python benchmarks/compare_recipe_points.py BASE.json POINT.json [POINT.json ...]
        [--method omics-exemplar] [--method decoder]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MARKERS = ("ERBB2", "GRB7", "KRT19", "CD74")


def _folds(path: Path) -> dict[str, dict]:
    data = json.loads(path.read_text())
    return {f["held_out"]: f["gene_query"]["methods"] for f in data["folds"]}


def compare(base: Path, point: Path, method: str) -> dict:
    """Per fold: mean AUROC of ``method`` over the genes both evaluated, both runs."""
    a, b = _folds(base), _folds(point)
    rows = {}
    for held in sorted(set(a) & set(b)):
        ga, gb = a[held][method]["per_gene"], b[held][method]["per_gene"]
        common = sorted(set(ga) & set(gb))
        rows[held] = {
            "genes": len(common),
            "base": float(np.mean([ga[g] for g in common])),
            "point": float(np.mean([gb[g] for g in common])),
        }
    markers = {
        g: (
            float(np.mean([a[h][method]["markers"].get(g, np.nan) for h in rows])),
            float(np.mean([b[h][method]["markers"].get(g, np.nan) for h in rows])),
        )
        for g in MARKERS
    }
    return {"folds": rows, "markers": markers}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("points", type=Path, nargs="+")
    ap.add_argument("--method", action="append", default=None)
    args = ap.parse_args(argv)
    for method in args.method or ["omics-exemplar", "decoder"]:
        print(f"\n{method}: mean AUROC over the genes both evaluated (base -> point)")
        for point in args.points:
            res = compare(args.base, point, method)
            folds = res["folds"]
            d = [r["point"] - r["base"] for r in folds.values()]
            per = " / ".join(
                f"{h} {r['base']:.3f}->{r['point']:.3f} ({r['genes']})"
                for h, r in folds.items()
            )
            mk = ", ".join(f"{g} {x:.3f}->{y:.3f}" for g, (x, y) in
                           res["markers"].items())
            up = sum(x > 0 for x in d)
            print(f"{point.stem}: {per}; mean diff {np.mean(d):+.4f}, "
                  f"{up} of {len(d)} folds up; {mk}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
