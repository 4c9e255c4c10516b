"""Helpers for rendering tests: map world coordinates onto exported figures."""

from __future__ import annotations

import numpy as np


def export_with_extent(viewer, layers_for_extent):
    """Export the figure and return (rgba image, world (min_rc, max_rc)) it spans.

    ``viewer.export_figure`` frames the extent of the visible layers; the mapping
    from world (row, col) to image pixels is linear over that extent.
    """
    img = np.asarray(viewer.export_figure(flash=False))
    mins = np.min([layer.extent.world[0][-2:] for layer in layers_for_extent], axis=0)
    maxs = np.max([layer.extent.world[1][-2:] for layer in layers_for_extent], axis=0)
    return img, (mins, maxs)


def world_to_pixel(points_rc, img, extent):
    """Map world (row, col) points to integer pixel indices of an exported figure."""
    mins, maxs = extent
    h, w = img.shape[:2]
    frac = (np.asarray(points_rc) - mins) / (maxs - mins)
    rows = np.clip((frac[:, 0] * h).astype(int), 0, h - 1)
    cols = np.clip((frac[:, 1] * w).astype(int), 0, w - 1)
    return rows, cols


def is_tissue(rgb: np.ndarray) -> np.ndarray:
    """H&E tissue pixels: not near-white background (saturation or darkness)."""
    rgb = rgb[..., :3].astype(np.float32)
    mx = rgb.max(axis=-1)
    mn = rgb.min(axis=-1)
    sat = (mx - mn) / np.maximum(mx, 1)
    return (sat > 0.12) | (mx < 200)
