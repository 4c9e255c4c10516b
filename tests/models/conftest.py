"""Tests of models/: Encoder registry and factory, weight loading, LoRA, omics VAE,
official checkpoints."""
