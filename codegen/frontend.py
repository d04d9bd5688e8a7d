"""PyTorch MobileNetV2 -> FloatGraph: BatchNorm folded into conv weights and biases, dropout removed."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .graph import FAdd, FAvgPool, FConv, FDense, FDepthwise, FloatGraph, ModelInfo, conv_out_size, frozen_array
from .model import MIN_RESOLUTION, ConvBNAct, InvertedResidual, MobileNetV2


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Returns (weight [O, I/groups, kh, kw], bias [O]) of conv followed by BatchNorm in eval mode, in float64."""
    w = conv.weight.detach().double().numpy()
    gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    mean, var = bn.running_mean.detach().double().numpy(), bn.running_var.detach().double().numpy()
    k = gamma / np.sqrt(var + bn.eps)
    return w * k[:, None, None, None], beta - mean * k


def _activation_of(module: nn.Module | None) -> str:
    if module is None:
        return "none"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise TypeError(f"unsupported activation module {type(module).__name__}")


class _Builder:
    def __init__(self, info: ModelInfo):
        self.ops: list = []
        self.shapes: dict = {"input": (info.resolution[0], info.resolution[1], 3)}

    def conv(self, name: str, src: str, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: str) -> str:
        w, b = _fold(conv, bn)
        h, wd, c = self.shapes[src]
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        pad = (p, p, p, p)  # PyTorch pads symmetrically; stride 2 leaves the last row/column of padding unused
        self.shapes[name] = (conv_out_size(h, k, s, p, p), conv_out_size(wd, k, s, p, p), conv.out_channels)
        if conv.groups == 1:
            self.ops.append(FConv(name, src, name, frozen_array(w.transpose(0, 2, 3, 1), np.float32),
                                  frozen_array(b, np.float32), s, pad, act))
        elif conv.groups == c == conv.out_channels:
            self.ops.append(FDepthwise(name, src, name, frozen_array(w[:, 0].transpose(1, 2, 0), np.float32),
                                       frozen_array(b, np.float32), s, pad, act))
        else:
            raise TypeError(f"{name}: grouped convolution with {conv.groups} groups is not MobileNetV2")
        return name


def to_float_graph(model: MobileNetV2, info: ModelInfo) -> FloatGraph:
    """Walk the module tree in execution order; tensor names are `stem`, `b<i>/expand|dw|project|add`, `head`,
    `pool`, `logits` (block i counted from 1 as in `features.i`)."""
    h, w = info.resolution
    if min(h, w) < MIN_RESOLUTION:
        raise UserError(f"resolution {h}x{w} is too small: MobileNetV2 needs at least {MIN_RESOLUTION}x{MIN_RESOLUTION}")
    model = model.eval()
    g = _Builder(info)
    blocks = []
    with torch.no_grad():
        feats = list(model.features)
        stem = feats[0]
        x = g.conv("stem", "input", stem[0], stem[1], _activation_of(stem[2]))
        blocks.append(("stem", ("stem",)))
        for i, blk in enumerate(feats[1:-1], start=1):
            assert isinstance(blk, InvertedResidual)
            layers = list(blk.conv)
            src, names = x, []
            if isinstance(layers[0], ConvBNAct) and layers[0][0].groups == 1:
                e = layers.pop(0)
                x = g.conv(f"b{i}/expand", x, e[0], e[1], _activation_of(e[2]))
                names.append(x)
            d = layers.pop(0)
            x = g.conv(f"b{i}/dw", x, d[0], d[1], _activation_of(d[2]))
            names.append(x)
            x = g.conv(f"b{i}/project", x, layers[0], layers[1], _activation_of(layers[2] if len(layers) > 2 else None))
            names.append(x)
            if blk.use_res_connect:
                add = f"b{i}/add"
                g.ops.append(FAdd(add, (src, x), add))
                g.shapes[add] = g.shapes[x]
                x = add
                names.append(add)
            blocks.append((f"b{i}", tuple(names)))
        last = feats[-1]
        x = g.conv("head", x, last[0], last[1], _activation_of(last[2]))
        g.ops.append(FAvgPool("pool", x, "pool"))
        g.shapes["pool"] = (g.shapes[x][2],)
        fc = model.classifier[-1]
        g.ops.append(FDense("logits", "pool", "logits", frozen_array(fc.weight.detach().numpy(), np.float32),
                            frozen_array(fc.bias.detach().numpy(), np.float32)))
        g.shapes["logits"] = (fc.out_features,)
        blocks.append(("head", ("head", "pool", "logits")))
    return FloatGraph(info=info, input="input", output="logits", shapes=dict(g.shapes), ops=tuple(g.ops),
                      blocks=tuple(blocks))
