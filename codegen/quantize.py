"""Post-training static quantization: FloatGraph + calibration images -> QuantGraph (TFLite int8 scheme)."""
from __future__ import annotations

import numpy as np
from .progress import progress as bar

from . import requant
from .errors import UserError
from .float_reference import run_float
from .graph import (FloatGraph, QAdd, QAvgPool, QConv, QDense, QDepthwise, QParams, QuantGraph, frozen_array,
                    op_inputs)

METHODS = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.99
SAMPLE_PER_TENSOR = 65536  # values kept per tensor per image for percentile ranges (a deterministic subsample)


def normalize(images: np.ndarray, info) -> np.ndarray:
    """uint8 (N, H, W, 3) pixels -> the float input the model was trained on: (p / 255 - mean) / std."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    return (x - np.asarray(info.mean)) / np.asarray(info.std)


def input_range(info) -> tuple[float, float]:
    """The exact float range of normalized pixels, over all channels."""
    mean, std = np.asarray(info.mean), np.asarray(info.std)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    return float(lo.min()), float(hi.max())


def qparams_for_range(lo: float, hi: float) -> QParams:
    """Asymmetric int8 covering [lo, hi] extended to contain 0; scale stored as float32."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(requant.round_half_away(-128.0 - lo / scale), -128, 127))
    return QParams(scale=scale, zero_point=zp)


def calibrate(graph: FloatGraph, images: np.ndarray, method: str = "minmax", percentile: float = DEFAULT_PERCENTILE,
              batch: int = 16, progress: bool = False) -> dict:
    """{tensor name: (lo, hi)} over the calibration images (uint8 (N, H, W, 3) at the graph's resolution)."""
    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
    if len(images) == 0:
        raise UserError("no calibration images")
    h, w = graph.info.resolution
    if images.shape[1:] != (h, w, 3):
        raise UserError(f"calibration images are {images.shape[1]}x{images.shape[2]}x{images.shape[3]}, "
                        f"the model takes {h}x{w}x3")
    lo: dict = {}
    hi: dict = {}
    samples: dict = {}
    rng = np.random.default_rng(0)
    for start in bar(range(0, len(images), batch), "calibrate", progress, unit="batch"):
        t = run_float(graph, normalize(images[start:start + batch], graph.info), keep_all=True)
        for name, v in t.items():
            if name == graph.input:
                continue
            lo[name] = min(lo.get(name, np.inf), float(v.min()))
            hi[name] = max(hi.get(name, -np.inf), float(v.max()))
            if method == "percentile":
                flat = v.reshape(-1)
                if flat.size > SAMPLE_PER_TENSOR:
                    flat = flat[rng.integers(0, flat.size, SAMPLE_PER_TENSOR)]
                samples.setdefault(name, []).append(flat.astype(np.float32))
    if method == "percentile":
        for name, parts in samples.items():
            v = np.concatenate(parts)
            lo[name] = float(np.percentile(v, 100.0 - percentile))
            hi[name] = float(np.percentile(v, percentile))
    ranges = {name: (lo[name], hi[name]) for name in lo}
    ranges[graph.input] = input_range(graph.info)
    return ranges


def _weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel scales (float32): max |w| / 127 over every axis but `axis`."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    m = np.abs(w.astype(np.float64)).max(axis=other) / 127.0
    return np.where(m > 0, m, 1e-8).astype(np.float32)


def _quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    q = requant.round_half_away_array(w.astype(np.float64) / scales.astype(np.float64).reshape(shape))
    return np.clip(q, -127, 127).astype(np.int8)


def _quantize_bias(b: np.ndarray, s_in: float, s_w: np.ndarray) -> np.ndarray:
    bias_scale = np.float64(np.float32(s_in)) * s_w.astype(np.float64)
    q = requant.round_half_away_array(b.astype(np.float64) / bias_scale)
    return np.clip(q, requant.INT32_MIN, requant.INT32_MAX).astype(np.int32)


def _tensor_qparams(graph: FloatGraph, ranges: dict) -> dict:
    q = {}
    for name, (lo, hi) in ranges.items():
        q[name] = qparams_for_range(lo, hi)
    for op in graph.ops:  # activation outputs: ranges clipped to what the activation can produce
        if op.kind in ("conv", "depthwise") and op.activation != "none":
            lo, hi = ranges[op.output]
            hi = min(hi, 6.0) if op.activation == "relu6" else hi
            q[op.output] = qparams_for_range(0.0, hi)
        if op.kind == "avgpool":  # TFLite AVERAGE_POOL_2D requires equal input and output quantization
            q[op.output] = q[op.input]
    return q


def quantize(graph: FloatGraph, ranges: dict, calibration: str = "minmax") -> QuantGraph:
    """FloatGraph + {tensor: (lo, hi)} -> QuantGraph with TFLite's integer parameters; `calibration` labels how
    the ranges were found (recorded in the graph)."""
    missing = [n for n in graph.shapes if n not in ranges]
    if missing:
        raise ValueError(f"no calibration range for tensor {missing[0]}")
    qp = _tensor_qparams(graph, ranges)
    ops = []
    for op in graph.ops:
        if op.kind in ("conv", "depthwise"):
            s_in, out = qp[op.input].scale, qp[op.output]
            axis = 0 if op.kind == "conv" else 2
            s_w = _weight_scales(op.weight, axis)
            mults = [requant.conv_multiplier(s_in, s, out.scale) for s in s_w]
            lo, hi = requant.activation_range(op.activation, out.scale, out.zero_point)
            cls = QConv if op.kind == "conv" else QDepthwise
            ops.append(cls(op.name, op.input, op.output, frozen_array(_quantize_weights(op.weight, s_w, axis), np.int8),
                           frozen_array(_quantize_bias(op.bias, s_in, s_w), np.int32), frozen_array(s_w, np.float32),
                           frozen_array([m for m, _ in mults], np.int32), frozen_array([s for _, s in mults], np.int32),
                           op.stride, op.padding, op.activation, lo, hi))
        elif op.kind == "add":
            a, b = (qp[n] for n in op.inputs)
            p = requant.add_params(a.scale, b.scale, qp[op.output].scale)
            ops.append(QAdd(op.name, op.inputs, op.output, p["left_shift"], p["input_multipliers"], p["input_shifts"],
                            p["output_multiplier"], p["output_shift"], -128, 127))
        elif op.kind == "avgpool":
            ops.append(QAvgPool(op.name, op.input, op.output, -128, 127))
        elif op.kind == "dense":
            s_in, out = qp[op.input].scale, qp[op.output]
            s_w = _weight_scales(op.weight[None], 0)[0:1]  # per-tensor
            s = float(s_w[0])
            m, sh = requant.dense_multiplier(s_in, s, out.scale)
            w = _quantize_weights(op.weight, np.full(op.weight.shape[0], s, np.float32), 0)
            ops.append(QDense(op.name, op.input, op.output, frozen_array(w, np.int8),
                              frozen_array(_quantize_bias(op.bias, s_in, np.full(op.weight.shape[0], s, np.float32)),
                                           np.int32), s, m, sh, -128, 127))
        else:
            raise TypeError(f"unknown op kind {op.kind}")
    used = {n for op in graph.ops for n in op_inputs(op)} | {op.output for op in graph.ops}
    return QuantGraph(info=graph.info, input=graph.input, output=graph.output, shapes=dict(graph.shapes),
                      qparams={n: qp[n] for n in graph.shapes if n in used}, ops=tuple(ops), blocks=graph.blocks,
                      calibration=calibration)
