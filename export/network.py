"""The whole tile computation as one exportable module, and the graph fixes export needs.

:class:`TileModel` takes uint8 (N, H, W, 3) RGB and returns uint8 (N, 1, H, W) tumour
probability: /255, minus mean, over std (*Image value standardisation*), the network, softmax
over classes, the tumour channel x 255, clamp to [0, 255], floor (*Method application*) — so the
runtime re-implements nothing and results agree.

:func:`prepare_network` fixes the two things that break export (both measured, docs/training.md):

* timm's ``ScaledStdConv2d`` standardises its weight with ``F.batch_norm(training=True)`` on
  every call, which exports as training-mode BatchNormalization nodes (rejected by ONNX
  Runtime's CUDA provider). It is replaced by a plain ``nn.Conv2d`` holding the standardised
  weight, computed once with the same call (bit-exact in FP32).
* timm's ``AvgPool2dSame`` computes its padding from the input size, which a traced graph
  freezes at the traced size (up to 89 of 255 levels wrong at other sizes). It is replaced by a
  fixed padding: for stride 1 the "same" padding is ``(k - 1)`` split as ``(k - 1) // 2`` before
  and the rest after, whatever the size; for stride s > 1 it is ``max(k - s, 0)`` on inputs
  divisible by s, which tile sides padded to the model's divisor always are.

For ``fp16=True`` the network is cast to half precision except GroupNorm and the modules that
reduce over the whole image (ECA and squeeze-excitation gates, adaptive pooling), which run in
FP32 islands; standardisation and softmax also stay in FP32, and the uint8 I/O is unchanged.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FixedPadAvgPool2d(nn.Module):
    """``F.pad`` with constant padding, then ``F.avg_pool2d`` (replaces AvgPool2dSame)."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], ceil_mode: bool,
                 count_include_pad: bool) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        pads = []
        for k, s in zip(self.kernel, self.stride):
            total = k - 1 if s == 1 else max(k - s, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        self.padding = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding)
        return F.avg_pool2d(x, self.kernel, self.stride, 0, self.ceil_mode, self.count_include_pad)


@torch.no_grad()
def fold_scaled_std_conv(conv: nn.Module) -> nn.Conv2d:
    """A plain Conv2d with the standardised weight ScaledStdConv2d would compute (same call)."""
    weight = F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None,
                          weight=(conv.gain * conv.scale).view(-1), training=True, momentum=0.0,
                          eps=conv.eps).reshape_as(conv.weight)
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    plain.weight.copy_(weight)
    if conv.bias is not None:
        plain.bias.copy_(conv.bias)
    return plain


class Fp32Island(nn.Module):
    """Runs the wrapped module in FP32 and casts the result back to the input's dtype."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float()).to(x.dtype)


def _fp32_island_types() -> tuple[type, ...]:
    import timm.layers as layers

    types: list[type] = [nn.GroupNorm, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d]
    for name in ("EcaModule", "CecaModule", "SEModule", "SqueezeExcite", "EffectiveSEModule", "GatherExcite"):
        if hasattr(layers, name):
            types.append(getattr(layers, name))
    try:
        from timm.models._efficientnet_blocks import SqueezeExcite as EfficientNetSE

        types.append(EfficientNetSE)
    except ImportError:  # pragma: no cover - older timm
        pass
    return tuple(types)


def _replace(module: nn.Module, fp16: bool, island_types: tuple[type, ...]) -> dict[str, int]:
    from timm.layers import AvgPool2dSame, ScaledStdConv2d

    counts = {"scaled_std_conv": 0, "avg_pool_same": 0, "fp32_islands": 0}
    for name, child in module.named_children():
        if isinstance(child, ScaledStdConv2d):
            setattr(module, name, fold_scaled_std_conv(child))
            counts["scaled_std_conv"] += 1
        elif isinstance(child, AvgPool2dSame):
            setattr(module, name, FixedPadAvgPool2d(child.kernel_size, child.stride, child.ceil_mode,
                                                    child.count_include_pad))
            counts["avg_pool_same"] += 1
        elif fp16 and isinstance(child, island_types):
            inner = _replace(child, False, island_types)
            for k, v in inner.items():
                counts[k] += v
            setattr(module, name, Fp32Island(child))
            counts["fp32_islands"] += 1
        else:
            for k, v in _replace(child, fp16, island_types).items():
                counts[k] += v
    return counts


def prepare_network(network: nn.Module, fp16: bool = False) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``network`` with the export fixes applied (eval mode); returns it and counts."""
    net = copy.deepcopy(network).eval()
    counts = _replace(net, fp16, _fp32_island_types() if fp16 else ())
    if fp16:
        islands = [m for m in net.modules() if isinstance(m, Fp32Island)]
        net.half()
        for island in islands:
            island.module.float()
    return net, counts


class TileModel(nn.Module):
    """uint8 NHWC RGB -> uint8 N1HW tumour probability x 255 (floored), all inside the graph."""

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float], tumour_index: int,
                 fp16: bool = False) -> None:
        super().__init__()
        self.network = network
        self.tumour_index = int(tumour_index)
        self.fp16 = fp16
        self.register_buffer("mean", torch.tensor([float(v) * 255.0 for v in mean], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) * 255.0 for v in std], dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT's ONNX parser accepts a uint8 network input only when every consumer
        # is a Cast (no Transpose/Shape/Reshape on uint8), and a uint8 output only from a Cast
        # (onnx-tensorrt ModelImporter.cpp; NVIDIA/TensorRT#3985, #4278). Same values either way.
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        x = (x - self.mean) / self.std
        if self.fp16:
            x = x.to(torch.float16)
        logits = self.network(x).to(torch.float32)
        p = tumour_softmax(logits, self.tumour_index)
        return torch.floor(torch.clamp(p * 255.0, 0.0, 255.0)).to(torch.uint8)


def tumour_softmax(logits: torch.Tensor, index: int) -> torch.Tensor:
    """The softmax's tumour channel, ``1 / (1 + sum_{j != t} exp(l_j - l_t))`` (N, 1, H, W).

    Mathematically the softmax over classes, taken at class ``t``; written element-wise because
    ONNX Runtime's Softmax over the channel axis of an NCHW tensor is slow (measured on the CPU:
    a third of a small model's time at 2048²). Large differences overflow to inf and give the
    correct limit 0; the result is never NaN for finite logits.
    """
    lt = logits[:, index : index + 1]
    denominator = torch.ones_like(lt)
    for j in range(logits.shape[1]):
        if j != index:
            denominator = denominator + torch.exp(logits[:, j : j + 1] - lt)
    return 1.0 / denominator
