"""The embedded default encoder: ImageNet EfficientNet-Lite0 weights mapped to timm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seal.errors import WeightsError
from napari_seal.models.efficientnet import (
    embedded_weights_path,
    from_efficientnet_pytorch,
)
from napari_seal.models.factory import build_module, create_encoder, imagenet_classifier
from napari_seal.models.inference import encode_images
from napari_seal.models.weights import load_state_dict_file


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def default_encoder():
    return create_encoder("default")


def test_mapping_covers_every_key_of_both_layouts():
    raw = load_state_dict_file(embedded_weights_path())
    assert len(raw) == 296
    assert "_blocks.15._project_conv.weight" in raw
    mapped = from_efficientnet_pytorch(raw)
    assert len(mapped) == len(raw)
    import timm

    with torch.device("meta"):
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {
        k: tuple(v.shape) for k, v in full.state_dict().items()
    }
    # spot checks of the documented table
    torch.testing.assert_close(
        mapped["blocks.0.0.conv_pw.weight"], raw["_blocks.0._project_conv.weight"]
    )
    torch.testing.assert_close(
        mapped["blocks.6.0.conv_pwl.weight"], raw["_blocks.15._project_conv.weight"]
    )
    torch.testing.assert_close(
        mapped["blocks.5.3.bn1.running_var"], raw["_blocks.14._bn0.running_var"]
    )
    with pytest.raises(WeightsError, match="not part of EfficientNet-Lite0"):
        from_efficientnet_pytorch({"_blocks.16._bn0.weight": torch.zeros(1)})


@pytest.mark.parametrize(("photo", "classes"), [("chelsea", CATS), ("coffee", COFFEE)])
def test_default_encoder_classifies_natural_images(default_encoder, photo, classes):
    img = getattr(data, photo)()  # uint8 RGB, not square: resized + centre-cropped
    emb = encode_images(default_encoder, img)
    assert emb.shape == (1, 1280)
    with torch.no_grad():
        logits = imagenet_classifier()(torch.from_numpy(emb))
    top1 = int(logits.argmax())
    assert top1 in classes
    probs = logits.softmax(-1)[0]
    assert float(probs[list(classes)].sum()) > 0.5


def test_default_is_embedded_deterministic_and_differs_from_random(default_encoder):
    assert default_encoder.weights is None
    assert (
        default_encoder.embed_dim,
        default_encoder.tile_px,
        default_encoder.mpp,
    ) == (1280, 224, 0.5)
    img = data.chelsea()[:224, :224]
    a = encode_images(default_encoder, img)
    b = encode_images(create_encoder("default"), img)
    np.testing.assert_array_equal(a, b)
    random = encode_images(create_encoder("default", weights="random"), img)
    assert not np.allclose(a, random, atol=1e-3)


def test_timm_layout_file_loads_and_classifier_is_ignored(tmp_path):
    """A timm tf_efficientnet_lite0 state dict (with classifier) is valid --weights."""
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "timm_lite0.pth")
    enc = create_encoder("default", weights=tmp_path / "timm_lite0.pth")
    ref = build_module("default")
    ref.load_state_dict(
        {k: v for k, v in full.state_dict().items() if not k.startswith("classifier.")}
    )
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc.module.eval()(x), ref.eval()(x))
