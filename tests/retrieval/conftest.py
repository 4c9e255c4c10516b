"""Tests of retrieval/: Gene queries, signatures, scoring, highlight, lookup."""
