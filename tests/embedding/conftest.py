"""Tests of embedding/: Whole-slide embedding into the zarr store, resume,
dask.distributed."""
