"""Sub-commands of ``napari-seal``: one module each (``add_parser`` + ``run``)."""
