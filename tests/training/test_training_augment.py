"""Seeded torch augmentation: none / soft / hard."""

from __future__ import annotations

import pytest
import torch

from napari_seal.training import augment as A


def _img(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_none_is_identity_and_bad_mode_raises():
    x = _img()
    assert torch.equal(
        A.augment_batch(x, mode="none", generator=_gen(0)), x.float() / 255
    )
    with pytest.raises(ValueError, match="hard"):
        A.augment_batch(x, mode="strong", generator=_gen(0))


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_seeded_reproducible_and_in_range(mode):
    x = _img()
    a = A.augment_batch(x, mode=mode, generator=_gen(1))
    b = A.augment_batch(x, mode=mode, generator=_gen(1))
    c = A.augment_batch(x, mode=mode, generator=_gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (4, 3, 32, 32)
    assert a.dtype == torch.float32
    assert float(a.min()) >= 0.0
    assert float(a.max()) <= 1.0
    assert (a - x.float() / 255).abs().mean() > 0.01  # it does change the images


def test_dihedral_output_is_a_symmetry_of_the_input():
    x = torch.rand(16, 3, 8, 8)
    y = A._dihedral(x, _gen(3))
    for i in range(16):
        variants = [torch.rot90(x[i], k, dims=(1, 2)) for k in range(4)]
        variants += [v.flip(2) for v in variants]
        assert any(torch.equal(y[i], v) for v in variants)


def test_colour_and_stain_jitter_are_identity_at_zero_strength():
    x = torch.rand(3, 3, 16, 16) * 0.98 + 0.01
    same = A._hed_jitter(x, _gen(0), sigma=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=1e-5)
    same = A._colour_jitter(x, _gen(0), strength=0.0, saturation_hue=False)
    torch.testing.assert_close(same, x)


def test_hed_jitter_acts_per_stain():
    # a pure haematoxylin-coloured pixel stays on the haematoxylin axis
    hed = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    hed[0, 0] = 0.5
    od = torch.einsum("nshw,sc->nchw", hed, A._RGB_FROM_HED)
    x = torch.exp(-od).float()
    y = A._hed_jitter(x, _gen(4), sigma=0.05)
    od_y = -torch.log(y.double())
    stains = torch.einsum("nchw,cs->nshw", od_y, A._HED_FROM_RGB)
    assert abs(float(stains[0, 0]) - 0.5) < 0.08
    assert abs(float(stains[0, 1])) <= 0.05 + 1e-3  # eosin only gets the shift


def test_resized_crop_keeps_size_and_zooms_in():
    x = torch.zeros(1, 1, 64, 64)
    x[..., :, 32:] = 1.0  # left half black, right half white
    y = A._resized_crop(x.expand(8, 1, 64, 64).contiguous(), _gen(5))
    assert y.shape == (8, 1, 64, 64)
    # a crop of >= 80% area never shows only one half
    assert bool(((y.mean(dim=(1, 2, 3)) > 0.1) & (y.mean(dim=(1, 2, 3)) < 0.9)).all())


@pytest.mark.parametrize("mode", ["none", "soft", "hard"])
def test_the_callers_images_are_never_modified(mode):
    """The hard chain works in place on its own intermediates (for speed,
    benchmarks/bench_augment.py): never on the tensor it was given."""
    x = torch.rand(6, 3, 16, 16)
    keep = x.clone()
    y = A.augment_batch(x, mode=mode, generator=_gen(5))
    assert torch.equal(x, keep)
    if mode != "none":
        assert not torch.equal(y, keep)
    z = torch.rand(2, 3, 8, 8)
    keep_z = z.clone()
    A._hed_jitter(z, _gen(0))
    A._dihedral(z, _gen(0))
    assert torch.equal(z, keep_z)


def test_dihedral_is_the_drawn_rotation_then_the_drawn_flip():
    """Pins which symmetry each image gets for a seed (rotation by the drawn k, then
    a horizontal flip where drawn), so a faster rewrite keeps the same augmentations
    and a resumed run sees what the first one saw."""
    x = torch.rand(24, 3, 8, 8)
    g = _gen(7)
    ks = torch.randint(0, 4, (24,), generator=g)
    flips = torch.rand(24, generator=g) < 0.5
    y = A._dihedral(x, _gen(7))
    for i in range(24):
        want = torch.rot90(x[i], int(ks[i]), dims=(1, 2))
        want = want.flip(2) if bool(flips[i]) else want
        assert torch.equal(y[i], want), i
