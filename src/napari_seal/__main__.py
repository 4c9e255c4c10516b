"""``python -m napari_seal``: the same as the ``napari-seal`` command."""

from __future__ import annotations

import sys

from napari_seal.cli import main

if __name__ == "__main__":
    sys.exit(main())
