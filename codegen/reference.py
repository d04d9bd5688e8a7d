"""The numpy int8 interpreter of a QuantGraph, written from TFLite's integer formulas (bit-exact with TFLM).

Accumulators are exact integers: products of int8 values are summed in float64 (exact below 2^53, far above any
MobileNetV2 accumulator) for BLAS speed, then carried as int64 holding int32 values.
"""
from __future__ import annotations

import numpy as np

from . import requant
from .graph import QuantGraph, freed_after
from .windows import conv_sum, depthwise_sum


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float input -> int8: round half away from zero of x / scale, plus zero point, saturated."""
    q = requant.round_half_away_array(np.asarray(x, np.float64) / np.float64(np.float32(scale))) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def _acc_to_int(acc: np.ndarray) -> np.ndarray:
    return np.rint(acc).astype(np.int64)


def run_int8(graph: QuantGraph, x: np.ndarray, keep_all: bool = False) -> np.ndarray | dict:
    """x: int8 (N, H, W, 3). Returns int8 logits (N, K), or {tensor name: int8 (N, ...)} with keep_all."""
    x = np.asarray(x)
    if x.dtype != np.int8 or x.shape[1:] != graph.shapes[graph.input]:
        raise ValueError(f"input must be int8 (N, {', '.join(map(str, graph.shapes[graph.input]))}), "
                         f"got {x.dtype} {x.shape}")
    t = {graph.input: x}
    freed = freed_after(graph)
    qp = graph.qparams
    for op in graph.ops:
        if op.kind in ("conv", "depthwise"):
            zin = qp[op.input].zero_point
            xin = t[op.input].astype(np.float64) - zin  # padding below is zero, i.e. the input zero point
            fn = conv_sum if op.kind == "conv" else depthwise_sum
            acc = _acc_to_int(fn(xin, op.weight, op.stride, op.padding, 0.0)) + op.bias
            t[op.output] = requant.requantize(acc, op.multiplier, op.shift, qp[op.output].zero_point,
                                              op.act_min, op.act_max)
        elif op.kind == "add":
            vals = []
            for name, m, s in zip(op.inputs, op.input_multipliers, op.input_shifts):
                v = (t[name].astype(np.int64) - qp[name].zero_point) * (1 << op.left_shift)
                vals.append(requant.multiply_by_quantized_multiplier_smaller_than_one(v, m, s))
            raw = requant.multiply_by_quantized_multiplier_smaller_than_one(vals[0] + vals[1], op.output_multiplier,
                                                                            op.output_shift)
            t[op.output] = np.clip(raw + qp[op.output].zero_point, op.act_min, op.act_max).astype(np.int8)
        elif op.kind == "avgpool":
            v = t[op.input]
            count = v.shape[1] * v.shape[2]
            total = v.astype(np.int64).sum(axis=(1, 2))
            t[op.output] = np.clip(requant.divide_round_half_away(total, count), op.act_min,
                                   op.act_max).astype(np.int8)
        elif op.kind == "dense":
            xin = t[op.input].astype(np.float64) - qp[op.input].zero_point
            acc = _acc_to_int(xin @ op.weight.T.astype(np.float64)) + op.bias
            t[op.output] = requant.requantize(acc, op.multiplier, op.shift, qp[op.output].zero_point,
                                              op.act_min, op.act_max)
        else:
            raise TypeError(f"unknown op kind {op.kind}")
        if not keep_all:
            for name in freed[op.name]:
                t.pop(name, None)
    return t if keep_all else t[graph.output]


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float64) - zero_point) * scale
