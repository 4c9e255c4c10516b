"""Tests of training/: Expression preprocessing, losses, the SEAL loop, run directories,
DDP."""
