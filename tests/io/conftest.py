"""Tests of io/: Slide and ST readers, import/convert, the HEST layout (real her2st and
Visium data)."""
