"""The frozen graph data passed between stages: FloatGraph (frontend) and QuantGraph (quantize).

Layout contract (both graphs): activations are NHWC without the batch axis, i.e. (H, W, C); the final logits
are (K,). Weights: conv `[O, kh, kw, I]`, depthwise `[kh, kw, C]`, fully connected `[O, I]`.
Padding is explicit `(top, bottom, left, right)`: PyTorch's `padding=1` on a stride-2 conv over an even input is
`(1, 1, 1, 1)` here, which is not TFLite's SAME; the exporter decides how to express it.
Ops are listed in execution order; every tensor is produced by exactly one op (or is the graph input).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

Activation = Literal["none", "relu", "relu6"]
Padding = tuple[int, int, int, int]


def frozen_array(a: np.ndarray, dtype) -> np.ndarray:
    """A read-only contiguous copy, so frozen dataclasses really are immutable."""
    out = np.ascontiguousarray(np.array(a, dtype=dtype, copy=True))
    out.setflags(write=False)
    return out


def conv_out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - kernel) // stride + 1


# --------------------------------------------------------------------------------------------------- float graph
@dataclass(frozen=True)
class FConv:
    """2-D convolution (groups=1) with folded BatchNorm; `weight` [O,kh,kw,I] float32, `bias` [O]."""
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: Padding
    activation: Activation
    kind: str = field(default="conv", init=False)


@dataclass(frozen=True)
class FDepthwise:
    """Depthwise convolution (depth multiplier 1) with folded BatchNorm; `weight` [kh,kw,C], `bias` [C]."""
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: Padding
    activation: Activation
    kind: str = field(default="depthwise", init=False)


@dataclass(frozen=True)
class FAdd:
    """Residual addition `output = a + b`, no activation."""
    name: str
    inputs: tuple[str, str]
    output: str
    kind: str = field(default="add", init=False)


@dataclass(frozen=True)
class FAvgPool:
    """Global average pool over H and W: (H, W, C) -> (C,)."""
    name: str
    input: str
    output: str
    kind: str = field(default="avgpool", init=False)


@dataclass(frozen=True)
class FDense:
    """Fully connected classifier; `weight` [O,I], `bias` [O]; no activation."""
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    kind: str = field(default="dense", init=False)


FloatOp = Union[FConv, FDepthwise, FAdd, FAvgPool, FDense]


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about its model beyond the weights."""
    alpha: float
    resolution: tuple[int, int]  # (height, width)
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]  # input normalization, applied to pixels scaled to [0, 1]
    std: tuple[float, float, float]
    activation: str = "relu6"
    linear_bottleneck: bool = True
    residual: bool = True
    expansion: int = 6


@dataclass(frozen=True)
class FloatGraph:
    info: ModelInfo
    input: str
    output: str
    shapes: dict  # tensor name -> shape tuple
    ops: tuple  # tuple[FloatOp, ...]
    blocks: tuple  # tuple[tuple[str, tuple[str, ...]], ...]: (block name, op names), for reports


# --------------------------------------------------------------------------------------------------- quant graph
@dataclass(frozen=True)
class QParams:
    """Per-tensor affine int8 quantization: real = scale * (q - zero_point). `scale` is a float32 value."""
    scale: float
    zero_point: int


@dataclass(frozen=True)
class QConv:
    """Int8 conv, per-output-channel weights. `weight` int8 [O,kh,kw,I]; `bias` int32 [O];
    `weight_scale` float32 [O]; `multiplier` int32 [O] (Q31) and `shift` int32 [O] (left shift, may be negative);
    output clamped to [act_min, act_max]."""
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    weight_scale: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    stride: int
    padding: Padding
    activation: Activation
    act_min: int
    act_max: int
    kind: str = field(default="conv", init=False)


@dataclass(frozen=True)
class QDepthwise:
    """Int8 depthwise conv, per-channel. `weight` int8 [kh,kw,C]; other fields as QConv."""
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    weight_scale: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    stride: int
    padding: Padding
    activation: Activation
    act_min: int
    act_max: int
    kind: str = field(default="depthwise", init=False)


@dataclass(frozen=True)
class QAdd:
    """Int8 ADD in TFLite's form: inputs rescaled to twice the larger input scale with `left_shift` 20."""
    name: str
    inputs: tuple[str, str]
    output: str
    left_shift: int
    input_multipliers: tuple[int, int]
    input_shifts: tuple[int, int]
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int
    kind: str = field(default="add", init=False)


@dataclass(frozen=True)
class QAvgPool:
    """Int8 global average pool (TFLite AVERAGE_POOL_2D); output shares the input's scale and zero point."""
    name: str
    input: str
    output: str
    act_min: int
    act_max: int
    kind: str = field(default="avgpool", init=False)


@dataclass(frozen=True)
class QDense:
    """Int8 fully connected, per-tensor weights: `weight` int8 [O,I], `bias` int32 [O], one multiplier/shift."""
    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    weight_scale: float
    multiplier: int
    shift: int
    act_min: int
    act_max: int
    kind: str = field(default="dense", init=False)


QuantOp = Union[QConv, QDepthwise, QAdd, QAvgPool, QDense]


@dataclass(frozen=True)
class QuantGraph:
    info: ModelInfo
    input: str
    output: str
    shapes: dict  # tensor name -> shape tuple
    qparams: dict  # tensor name -> QParams
    ops: tuple  # tuple[QuantOp, ...]
    blocks: tuple
    calibration: str  # how activation ranges were chosen, e.g. "minmax" or "percentile:99.99"


# --------------------------------------------------------------------------------------------------- queries
def op_inputs(op) -> tuple[str, ...]:
    return tuple(op.inputs) if op.kind == "add" else (op.input,)


def freed_after(graph) -> dict:
    """{op name: tensors whose last reader is that op}; the graph output is never freed."""
    last = {}
    for op in graph.ops:
        for name in op_inputs(op):
            last[name] = op.name
    last.pop(graph.output, None)
    freed: dict = {op.name: [] for op in graph.ops}
    for name, op_name in last.items():
        freed[op_name].append(name)
    return {k: tuple(v) for k, v in freed.items()}
