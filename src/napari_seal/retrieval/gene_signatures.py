"""Gene queries: parse one gene, several genes or a weighted signature, and resolve
them against a run's gene panel.

A query is written the way users type it:

- one gene: ``"ERBB2"``;
- several genes: ``"ERBB2,GRB7"`` or a list ``["ERBB2", "GRB7"]`` (repeated ``--gene``);
- a weighted signature: ``"ERBB2:1,GRB7:0.5,ESR1:-1"`` inline, or a file of gene/weight
  pairs (TSV, CSV or whitespace separated, header line optional, ``#`` comments).

Names are matched to the panel case-insensitively, then through a small offline alias
table of common pathology markers (:data:`ALIASES`: ``HER2 -> ERBB2``,
``Ki-67 -> MKI67``, ``CD45 -> PTPRC``...). Names that do not resolve raise
:class:`~napari_seal.errors.GeneQueryError` with the panel genes nearest to them and
how to retrain a run that includes them. This module is pure Python (no torch).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_seal.errors import GeneQueryError

__all__ = [
    "ALIASES",
    "GeneQuery",
    "near_genes",
    "parse_query",
    "read_signature",
    "resolve_gene",
]

# Common names of pathology markers -> HGNC symbols. Keys are normalised with
# ``_alias_key`` (upper case, no '-', '_', ' ', '.', greek alpha spelled out).
_ALIAS_PAIRS: dict[str, tuple[str, ...]] = {
    "ERBB2": ("HER2", "HER-2", "HER2/NEU", "NEU", "CD340"),
    "ERBB3": ("HER3",),
    "EGFR": ("HER1", "ERBB1"),
    "MKI67": ("KI67", "KI-67", "MIB1", "MIB-1"),
    "PTPRC": ("CD45", "LCA"),
    "PECAM1": ("PECAM", "CD31"),
    "ACTA2": ("SMA", "ASMA", "ALPHA-SMA", "α-SMA", "αSMA"),
    "ESR1": ("ER", "ERA", "ER-ALPHA", "ESR"),
    "PGR": ("PR", "PGR1"),
    "KRT19": ("CK19",),
    "KRT18": ("CK18",),
    "KRT8": ("CK8",),
    "KRT7": ("CK7",),
    "KRT5": ("CK5",),
    "KRT14": ("CK14",),
    "KRT20": ("CK20",),
    "EPCAM": ("ESA", "TROP1", "CD326"),
    "CD3E": ("CD3",),
    "CD8A": ("CD8",),
    "MS4A1": ("CD20",),
    "CD274": ("PD-L1", "PDL1", "B7-H1"),
    "PDCD1": ("PD-1", "PD1"),
    "NCAM1": ("CD56",),
    "CDH1": ("E-CADHERIN", "ECAD", "CD324"),
    "VIM": ("VIMENTIN",),
    "COL1A1": ("COLLAGEN1", "COL1"),
    "TP53": ("P53",),
    "MUC1": ("EMA", "CD227"),
    "CEACAM5": ("CEA",),
    "KLK3": ("PSA",),
    "NKX2-1": ("TTF1", "TTF-1"),
    "HLA-DRA": ("HLA-DR",),
    "ITGAX": ("CD11C",),
    "ITGAM": ("CD11B",),
    "FCGR3A": ("CD16",),
    "CD68": ("KP1",),
    "TPSAB1": ("TRYPTASE",),
    "MYH11": ("SMMHC",),
    "FAP": ("FAPALPHA", "FAP-ALPHA"),
}


def _alias_key(name: str) -> str:
    key = name.strip().upper().replace("Α", "ALPHA")
    return re.sub(r"[-_ ./]", "", key)


#: normalised alias -> HGNC symbol (see the module docstring and docs/queries.md)
ALIASES: dict[str, str] = {
    _alias_key(alias): symbol
    for symbol, aliases in _ALIAS_PAIRS.items()
    for alias in aliases
}

_HEADER_WORDS = {"gene", "genes", "symbol", "name", "gene_symbol", "id", "gene_id"}


@dataclass(frozen=True)
class GeneQuery:
    """A parsed gene query: panel gene names and their weights.

    Parameters
    ----------
    genes
        Gene names, as the panel spells them once resolved (as typed before).
    weights
        One finite, non-zero-sum weight per gene (1.0 when not given).
    requested
        The names as the user typed them (same order as ``genes``).
    """

    genes: tuple[str, ...]
    weights: tuple[float, ...]
    requested: tuple[str, ...]

    @property
    def label(self) -> str:
        """A short human label (``"ERBB2+GRB7"``, ``"ERBB2:1,ESR1:-1"``)."""
        if all(w == 1.0 for w in self.weights):
            return "+".join(self.genes)
        return ",".join(
            f"{g}:{w:g}" for g, w in zip(self.genes, self.weights, strict=False)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored in query outputs)."""
        return {
            "genes": list(self.genes),
            "weights": list(self.weights),
            "requested": list(self.requested),
            "label": self.label,
        }


def _parse_weight(text: str, *, gene: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = (
            f"the weight {text!r} for gene {gene} ({where}) is not a number; "
            f"write GENE:WEIGHT with a finite number, e.g. {gene}:1.5"
        )
        raise GeneQueryError(msg) from None
    if not math.isfinite(value):
        msg = (
            f"the weight {text!r} for gene {gene} ({where}) is not finite; "
            "weights must be real numbers (use a negative weight to down-weight a gene)"
        )
        raise GeneQueryError(msg)
    return value


def _split_items(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,;\s]+", text) if item.strip()]


def _parse_inline(item: str, *, where: str) -> tuple[str, float]:
    """Parse ``GENE`` or ``GENE:WEIGHT`` (also ``GENE=WEIGHT``)."""
    for sep in (":", "="):
        if sep in item:
            gene, weight = item.rsplit(sep, 1)
            gene = gene.strip()
            if not gene:
                msg = f"{item!r} ({where}) has a weight but no gene; write GENE:WEIGHT"
                raise GeneQueryError(msg)
            return gene, _parse_weight(weight.strip(), gene=gene, where=where)
    return item, 1.0


def read_signature(path: str | Path) -> list[tuple[str, float]]:
    """Read a gene signature file.

    Parameters
    ----------
    path
        A text file with one gene per line and an optional weight, separated by a tab,
        a comma, a semicolon or spaces. A first line whose weight column is not a number
        is taken as a header (``gene<TAB>weight``). ``#`` starts a comment. A line with
        only a gene name gets weight 1.

    Returns
    -------
    ``(gene, weight)`` pairs in file order.

    Raises
    ------
    GeneQueryError
        The file cannot be read, a weight is not a finite number, or no gene is listed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        msg = (
            f"cannot read the signature file {path}: {err}; pass a text file with "
            "GENE<TAB>WEIGHT lines (CSV and header lines are fine)"
        )
        raise GeneQueryError(msg) from None
    pairs: list[tuple[str, float]] = []
    first = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [
            f.strip().strip('"').strip("'") for f in re.split(r"[\t,;]|\s+", line)
        ]
        fields = [f for f in fields if f]
        if not fields:
            continue
        where = f"line {lineno} of {path.name}"
        if first:
            first = False
            header_weight = len(fields) > 1 and not _is_number(fields[1])
            if fields[0].lower() in _HEADER_WORDS or header_weight:
                continue
        gene = fields[0]
        weight = 1.0
        if len(fields) > 1:
            weight = _parse_weight(fields[1], gene=gene, where=where)
        pairs.append((gene, weight))
    if not pairs:
        msg = (
            f"the signature file {path} lists no gene; write one GENE<TAB>WEIGHT pair "
            "per line (e.g. 'ERBB2\t1')"
        )
        raise GeneQueryError(msg)
    return pairs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def near_genes(name: str, panel: Sequence[str], *, n: int = 5) -> list[str]:
    """Return up to ``n`` panel genes whose names are close to ``name``.

    Close = difflib similarity on upper-case names, then genes sharing the name's
    first three letters (the gene family: ``KRT``, ``COL``, ``CD``...).
    """
    upper = {g.upper(): g for g in panel}
    key = name.strip().upper()
    target = ALIASES.get(_alias_key(key), key)
    found = [
        upper[m] for m in difflib.get_close_matches(target, upper, n=n, cutoff=0.6)
    ]
    prefix = target[:3] if len(target) >= 3 else target
    for g_up, g in sorted(upper.items()):
        if len(found) >= n:
            break
        if g_up.startswith(prefix) and g not in found:
            found.append(g)
    return found[:n]


def resolve_gene(name: str, panel: Sequence[str]) -> str | None:
    """Resolve one typed name to a panel gene, or ``None``.

    Order: exact, case-insensitive, alias table (:data:`ALIASES`), then the name
    without punctuation (``NKX21`` -> ``NKX2-1``).
    """
    if name in panel:
        return name
    by_upper = {g.upper(): g for g in panel}
    up = name.strip().upper()
    if up in by_upper:
        return by_upper[up]
    alias = ALIASES.get(_alias_key(name))
    if alias is not None and alias.upper() in by_upper:
        return by_upper[alias.upper()]
    by_key = {_alias_key(g): g for g in panel}
    return by_key.get(_alias_key(name))


def _collect(
    genes: str | Iterable[str] | Mapping[str, float] | None,
    signature: str | Path | None,
) -> list[tuple[str, float]]:
    items: list[tuple[str, float]] = []
    if isinstance(genes, Mapping):
        for gene, weight in genes.items():
            items.append(
                (
                    str(gene),
                    _parse_weight(str(weight), gene=str(gene), where="query mapping"),
                )
            )
    elif genes is not None:
        texts = [genes] if isinstance(genes, str) else list(genes)
        for text in texts:
            for item in _split_items(str(text)):
                items.append(_parse_inline(item, where=f"query {text!r}"))
    if signature is not None:
        items.extend(read_signature(signature))
    return items


def parse_query(
    genes: str | Iterable[str] | Mapping[str, float] | None = None,
    *,
    signature: str | Path | None = None,
    panel: Sequence[str] | None = None,
    known_genes: Iterable[str] | None = None,
) -> GeneQuery:
    """Parse and validate a gene query.

    Parameters
    ----------
    genes
        ``"ERBB2"``, ``"ERBB2,GRB7"``, ``"ERBB2:1,ESR1:-0.5"``, a list of such strings
        (one per ``--gene``), or a ``{gene: weight}`` mapping.
    signature
        A signature file (see :func:`read_signature`); its pairs are added to ``genes``.
    panel
        The run's ordered gene panel. When given, every name is resolved against it
        (:func:`resolve_gene`) and unresolved names raise. ``None`` only parses.
    known_genes
        Genes known to exist (e.g. all genes measured in the training data or the
        sample). A known gene outside the panel gets the "retrain with
        ``--include-genes``" message; other names are reported as unknown.

    Returns
    -------
    GeneQuery

    Raises
    ------
    GeneQueryError
        No gene given; a weight that is not a finite number; all weights zero; the
        same gene twice with different weights; a gene not in the panel.

    Examples
    --------
    >>> parse_query("her2, Ki-67", panel=["ERBB2", "MKI67", "ESR1"]).genes
    ('ERBB2', 'MKI67')
    """
    items = _collect(genes, signature)
    if not items:
        msg = (
            "the query names no gene: pass --gene ERBB2 (repeat it or separate genes "
            "with commas, GENE:WEIGHT for weights) or --signature FILE with one "
            "GENE<TAB>WEIGHT pair per line"
        )
        raise GeneQueryError(msg)
    resolved: list[tuple[str, float, str]] = []
    missing: list[str] = []
    for name, weight in items:
        gene = name if panel is None else resolve_gene(name, panel)
        if gene is None:
            missing.append(name)
        else:
            resolved.append((gene, weight, name))
    if missing:
        raise GeneQueryError(_missing_message(missing, panel or [], known_genes))
    genes_out: dict[str, tuple[float, str]] = {}
    for gene, weight, name in resolved:
        if gene in genes_out and genes_out[gene][0] != weight:
            msg = (
                f"gene {gene} appears twice in the query with different weights "
                f"({genes_out[gene][0]:g} as {genes_out[gene][1]!r}, {weight:g} as "
                f"{name!r}); list each gene once"
            )
            raise GeneQueryError(msg)
        genes_out.setdefault(gene, (weight, name))
    weights = [w for w, _ in genes_out.values()]
    if all(w == 0 for w in weights):
        msg = (
            "every weight in the query is 0, so it asks for nothing; give at least one "
            "gene a non-zero weight (e.g. ERBB2:1)"
        )
        raise GeneQueryError(msg)
    return GeneQuery(
        genes=tuple(genes_out),
        weights=tuple(float(w) for w in weights),
        requested=tuple(n for _, n in genes_out.values()),
    )


def _missing_message(
    missing: list[str], panel: Sequence[str], known_genes: Iterable[str] | None
) -> str:
    known_up = {g.upper() for g in known_genes} if known_genes is not None else None
    parts = []
    outside: list[str] = []
    for name in missing:
        canonical = ALIASES.get(_alias_key(name), name.strip().upper())
        near = near_genes(name, panel)
        near_txt = (
            f"nearest panel genes: {', '.join(near)}"
            if near
            else "no panel gene is near it"
        )
        alias_txt = (
            f" (= {canonical})" if canonical.upper() != name.strip().upper() else ""
        )
        if known_up is not None and canonical.upper() not in known_up:
            parts.append(
                f"{name!r}{alias_txt} is not a gene of this run or data ({near_txt})"
            )
        else:
            parts.append(
                f"{name!r}{alias_txt} is not in the run's {len(panel)}-gene panel "
                f"({near_txt})"
            )
            outside.append(canonical)
    msg = "; ".join(parts) + "."
    if outside:
        msg += (
            " To query a gene outside the panel, retrain with it included: "
            "napari-seal train SAMPLE... --out RUN_DIR --include-genes "
            f"{','.join(outside)}"
        )
    else:
        msg += " Check the spelling (HGNC symbols, e.g. ERBB2, MKI67)."
    return msg
