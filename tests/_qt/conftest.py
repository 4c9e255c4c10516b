"""Tests of _qt/: Everything that needs a napari viewer (under Xvfb): reader, widgets,
demo."""
