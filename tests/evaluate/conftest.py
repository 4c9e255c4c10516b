"""Tests of evaluate/: The HEST-style benchmark and retrieval metrics."""
