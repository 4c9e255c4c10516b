"""Tests of tiling/: Tissue mask, tile grid, spot crops."""
