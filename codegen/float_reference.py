"""A numpy float interpreter of a FloatGraph (float64), returning the output or every tensor."""
from __future__ import annotations

import numpy as np

from .graph import FloatGraph, freed_after
from .windows import conv_sum, depthwise_sum


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu6":
        return np.clip(x, 0.0, 6.0)
    if activation == "relu":
        return np.maximum(x, 0.0)
    return x


def run_float(graph: FloatGraph, x: np.ndarray, keep_all: bool = False) -> np.ndarray | dict:
    """x: normalized input (N, H, W, 3) float. Returns logits (N, K), or {tensor name: (N, ...)} with keep_all."""
    t = {graph.input: np.asarray(x, dtype=np.float64)}
    freed = freed_after(graph)
    for op in graph.ops:
        if op.kind == "conv":
            y = conv_sum(t[op.input], op.weight, op.stride, op.padding, 0.0) + op.bias
            t[op.output] = _activate(y, op.activation)
        elif op.kind == "depthwise":
            y = depthwise_sum(t[op.input], op.weight, op.stride, op.padding, 0.0) + op.bias
            t[op.output] = _activate(y, op.activation)
        elif op.kind == "add":
            t[op.output] = t[op.inputs[0]] + t[op.inputs[1]]
        elif op.kind == "avgpool":
            t[op.output] = t[op.input].mean(axis=(1, 2))
        elif op.kind == "dense":
            t[op.output] = t[op.input] @ op.weight.T.astype(np.float64) + op.bias
        else:
            raise TypeError(f"unknown op kind {op.kind}")
        if not keep_all:
            for name in freed[op.name]:
                t.pop(name, None)
    return t if keep_all else t[graph.output]
