"""Gene query parsing and validation: every accepted form and every bad input."""

from __future__ import annotations

import pytest

from napari_seal.errors import GeneQueryError
from napari_seal.retrieval.gene_signatures import (
    ALIASES,
    near_genes,
    parse_query,
    read_signature,
    resolve_gene,
)

PANEL = [
    "ERBB2",
    "GRB7",
    "KRT19",
    "KRT18",
    "CD74",
    "MKI67",
    "PTPRC",
    "ACTA2",
    "NKX2-1",
    "HLA-DRA",
]


def test_single_several_and_repeated():
    assert parse_query("ERBB2", panel=PANEL).genes == ("ERBB2",)
    q = parse_query("ERBB2,GRB7", panel=PANEL)
    assert q.genes == ("ERBB2", "GRB7")
    assert q.weights == (1.0, 1.0)
    q = parse_query(["ERBB2", "grb7", "KRT19"], panel=PANEL)  # repeated --gene
    assert q.genes == ("ERBB2", "GRB7", "KRT19")
    assert q.requested == ("ERBB2", "grb7", "KRT19")
    assert q.label == "ERBB2+GRB7+KRT19"


def test_inline_weights_and_mapping():
    q = parse_query("ERBB2:1.5, GRB7:-0.5", panel=PANEL)
    assert q.genes == ("ERBB2", "GRB7")
    assert q.weights == (1.5, -0.5)
    assert q.label == "ERBB2:1.5,GRB7:-0.5"
    assert parse_query({"cd74": 2}, panel=PANEL).weights == (2.0,)
    assert parse_query("KRT19=3", panel=PANEL).weights == (3.0,)


def test_case_aliases_and_punctuation():
    q = parse_query(
        ["her2", "Ki-67", "cd45", "SMA", "CK19", "TTF1", "nkx21", "HLA-DR"], panel=PANEL
    )
    # TTF1 and nkx21 both resolve to NKX2-1 (same weight: listed once)
    assert q.genes == ("ERBB2", "MKI67", "PTPRC", "ACTA2", "KRT19", "NKX2-1", "HLA-DRA")
    assert q.requested[5] == "TTF1"
    assert ALIASES["HER2"] == "ERBB2"
    assert ALIASES["KI67"] == "MKI67"
    assert resolve_gene("pecam", ["PECAM1"]) == "PECAM1"
    assert resolve_gene("FOO", PANEL) is None


def test_signature_files(tmp_path):
    tsv = tmp_path / "sig.tsv"
    tsv.write_text("gene\tweight\n# a comment\nERBB2\t2\n\nGRB7\t0.5  # inline\nCD74\n")
    q = parse_query(signature=tsv, panel=PANEL)
    assert q.genes == ("ERBB2", "GRB7", "CD74")
    assert q.weights == (2.0, 0.5, 1.0)
    csv = tmp_path / "sig.csv"
    csv.write_text("her2,1\nki67,-1\n")  # no header, aliases
    assert parse_query(signature=csv, panel=PANEL).genes == ("ERBB2", "MKI67")
    ws = tmp_path / "sig.txt"
    ws.write_text("symbol score\nKRT19   3\n")
    assert read_signature(ws) == [("KRT19", 3.0)]
    # --gene and --signature together
    q = parse_query("PTPRC", signature=csv, panel=PANEL)
    assert q.genes == ("PTPRC", "ERBB2", "MKI67")


def test_no_panel_only_parses():
    q = parse_query("FOO:2,BAR")
    assert q.genes == ("FOO", "BAR")
    assert q.weights == (2.0, 1.0)


@pytest.mark.parametrize("genes", [None, "", " , ", []])
def test_empty_query(genes):
    with pytest.raises(
        GeneQueryError, match="names no gene.*--gene ERBB2.*--signature"
    ):
        parse_query(genes, panel=PANEL)


def test_empty_signature_file(tmp_path):
    f = tmp_path / "empty.tsv"
    f.write_text("gene\tweight\n# nothing\n")
    with pytest.raises(GeneQueryError, match="lists no gene"):
        parse_query(signature=f, panel=PANEL)
    with pytest.raises(GeneQueryError, match="cannot read the signature file"):
        parse_query(signature=tmp_path / "missing.tsv", panel=PANEL)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ERBB2:abc", r"weight 'abc' for gene ERBB2 .*is not a number.*ERBB2:1.5"),
        ("ERBB2:nan", r"weight 'nan' for gene ERBB2 .*is not finite"),
        ("ERBB2:inf", r"weight 'inf' .*is not finite"),
        ("ERBB2:-inf", r"is not finite"),
        (":2", r"has a weight but no gene; write GENE:WEIGHT"),
    ],
)
def test_bad_weights(text, match):
    with pytest.raises(GeneQueryError, match=match):
        parse_query(text, panel=PANEL)


def test_bad_weight_in_file_names_the_line(tmp_path):
    f = tmp_path / "sig.tsv"
    f.write_text("gene\tweight\nERBB2\t1\nGRB7\tlots\n")
    with pytest.raises(GeneQueryError, match=r"line 3 of sig.tsv.*not a number"):
        parse_query(signature=f, panel=PANEL)


def test_all_zero_and_conflicting_duplicates():
    with pytest.raises(GeneQueryError, match="every weight in the query is 0"):
        parse_query("ERBB2:0,GRB7:0", panel=PANEL)
    with pytest.raises(GeneQueryError, match="ERBB2 appears twice.*different weights"):
        parse_query("HER2:1,ERBB2:2", panel=PANEL)
    assert parse_query("HER2,ERBB2", panel=PANEL).genes == ("ERBB2",)  # same weight


def test_gene_outside_panel_suggests_and_says_how_to_retrain():
    with pytest.raises(GeneQueryError) as err:
        parse_query("KRT8", panel=PANEL, known_genes=PANEL + ["KRT8", "ESR1"])
    msg = str(err.value)
    assert "'KRT8' is not in the run's 10-gene panel" in msg
    assert "KRT18" in msg
    assert "KRT19" in msg
    assert "napari-seal train" in msg
    assert "--include-genes KRT8" in msg


def test_alias_outside_panel_names_the_symbol():
    with pytest.raises(GeneQueryError, match=r"'ER' \(= ESR1\).*--include-genes ESR1"):
        parse_query("ER", panel=PANEL, known_genes=["ESR1", *PANEL])


def test_unknown_gene_is_not_offered_retraining():
    with pytest.raises(GeneQueryError) as err:
        parse_query(["ERBB2", "ERBB9X"], panel=PANEL, known_genes=PANEL)
    msg = str(err.value)
    assert "'ERBB9X' is not a gene of this run or data" in msg
    assert "ERBB2" in msg.split("nearest panel genes:")[1]
    assert "--include-genes" not in msg
    assert "Check the spelling" in msg


def test_several_missing_reported_together():
    with pytest.raises(GeneQueryError, match="'FOO1'.*'BAR2'"):
        parse_query("FOO1,ERBB2,BAR2", panel=PANEL)


def test_near_genes():
    assert set(near_genes("KRT1", PANEL)[:2]) == {"KRT18", "KRT19"}
    assert near_genes("HER3", PANEL) == ["ERBB2"]  # HER3 = ERBB3, one letter off ERBB2
    assert near_genes("ZZZZZ", PANEL) == []
