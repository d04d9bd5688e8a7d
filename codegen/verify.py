"""Verification: the int8 reference against both oracles (bit-exact), and float vs int8 top-1 accuracy."""
from __future__ import annotations

import numpy as np
import torch
from .progress import progress as bar

from . import dataset
from .export import export_tflite
from .graph import QuantGraph
from .oracles import run_tflite_ref, run_tflm
from .quantize import normalize
from .reference import quantize_input, run_int8
from .train import to_tensor


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Element-wise comparison of two int8 arrays of equal shape."""
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return {"mismatches": int((d != 0).sum()), "max_abs_diff": int(d.max()) if d.size else 0, "elements": int(d.size)}


def quantize_images(graph: QuantGraph, images: np.ndarray) -> np.ndarray:
    """uint8 pixels (N, H, W, 3) -> the model's int8 input (normalize, then quantize)."""
    q = graph.qparams[graph.input]
    return quantize_input(normalize(images, graph.info), q.scale, q.zero_point)


def verification_inputs(graph: QuantGraph, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`samples` uniformly random int8 inputs and `samples` test-split images of the synthetic dataset."""
    shape = graph.shapes[graph.input]
    rand = np.random.default_rng(seed).integers(-128, 128, (samples, *shape), dtype=np.int64).astype(np.int8)
    images, _ = dataset.make_split("test", samples, graph.info.resolution, seed)
    return rand, quantize_images(graph, images)


def verify_oracles(graph: QuantGraph, inputs: np.ndarray, progress: bool = False) -> dict:
    model = export_tflite(graph)
    ref = np.concatenate([run_int8(graph, inputs[i:i + 16]) for i in
                          bar(range(0, len(inputs), 16), "reference", progress)])
    out = {"reference_vs_tflm": compare(ref, run_tflm(model, inputs))}
    out["reference_vs_tflite"] = compare(ref, run_tflite_ref(model, inputs))
    return out


def accuracy(model: torch.nn.Module, graph: QuantGraph, images: np.ndarray, labels: np.ndarray,
             progress: bool = False, batch: int = 50) -> dict:
    """Top-1 (percent) of the float PyTorch model and of the int8 reference on the same images."""
    float_ok = int8_ok = 0
    model.eval()
    for i in bar(range(0, len(images), batch), "accuracy", progress):
        x, y = images[i:i + batch], labels[i:i + batch]
        with torch.no_grad():
            float_ok += int((model(to_tensor(x, graph.info)).argmax(1).numpy() == y).sum())
        int8_ok += int((run_int8(graph, quantize_images(graph, x)).argmax(1) == y).sum())
    n = max(1, len(images))
    return {"float_top1": round(100.0 * float_ok / n, 2), "int8_top1": round(100.0 * int8_ok / n, 2),
            "top1_samples": int(len(images))}
