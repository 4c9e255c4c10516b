"""Tests of predict/: Expression heads, per-tile/per-spot predictions, exports, the HEST
probe."""
