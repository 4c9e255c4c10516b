"""Tests of commands/: The `napari-seal` sub-commands, run as a user runs them."""
