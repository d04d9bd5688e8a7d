"""The front half of the compiler as one call: weights -> (torch model, FloatGraph, QuantGraph)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import dataset
from .checkpoint import resolve_weights
from .frontend import to_float_graph
from .graph import FloatGraph, ModelInfo, QuantGraph
from .quantize import DEFAULT_PERCENTILE, calibrate, quantize

DEFAULT_CALIB_SAMPLES = 200


@dataclass(frozen=True)
class CalibOptions:
    directory: str | None = None  # a user's image directory; None: the synthetic calib split
    method: str = "minmax"
    samples: int = DEFAULT_CALIB_SAMPLES
    percentile: float = DEFAULT_PERCENTILE


@dataclass(frozen=True)
class Compiled:
    model: torch.nn.Module
    info: ModelInfo
    float_graph: FloatGraph
    quant_graph: QuantGraph


def calibration_images(info: ModelInfo, calib: CalibOptions) -> np.ndarray:
    if calib.directory is not None:
        return dataset.load_images(calib.directory, info.resolution, limit=calib.samples)
    return dataset.make_split("calib", calib.samples, info.resolution)[0]


def compile_front(alpha: float | None, weights: str | None, resolution: tuple[int, int] | None = None,
                  calib: CalibOptions = CalibOptions(), progress: bool = False) -> Compiled:
    model, info = resolve_weights(alpha, weights, resolution)
    fg = to_float_graph(model, info)
    ranges = calibrate(fg, calibration_images(info, calib), calib.method, calib.percentile, progress=progress)
    label = calib.method if calib.method == "minmax" else f"percentile:{calib.percentile:g}"
    return Compiled(model, info, fg, quantize(fg, ranges, label))
