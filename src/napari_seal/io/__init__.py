"""Reading and writing what users bring: slides, ST samples, the HEST-1k layout.

The bottom layer: imports nothing of napari-seal but :mod:`napari_seal.errors` and
:mod:`napari_seal.progress`.

- :mod:`~napari_seal.io.slide`: whole-slide images as lazy multiscale dask pyramids
  (tiled TIFF/SVS/OME via tifffile, JPEG/PNG through a zarr cache, OpenSlide), and the
  streaming pyramidal TIFF writer.
- :mod:`~napari_seal.io.st`: ST readers (h5ad, Space Ranger, legacy ST) behind one
  contract (:mod:`~napari_seal.io.st.contract`) and one dispatcher
  (:mod:`~napari_seal.io.st.read`); spot-grid pixel-size estimation.
- :mod:`~napari_seal.io.sample`: the :class:`SpatialSample` data model.
- :mod:`~napari_seal.io.hest`, :mod:`~napari_seal.io.convert`,
  :mod:`~napari_seal.io.open`: the HEST-1k layout, ``napari-seal import``, and the one
  "open any path" entry point the reader, widgets and commands share.
- :mod:`~napari_seal.io.atomic`, :mod:`~napari_seal.io.sniff`: atomic writes, path
  kinds.
"""

from __future__ import annotations

