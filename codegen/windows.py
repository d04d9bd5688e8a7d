"""Sliding windows over padded (N, H, W, C) tensors: the shared indexing of conv and depthwise references."""
from __future__ import annotations

import numpy as np

from .graph import Padding


def windows(x: np.ndarray, kernel: int, stride: int, padding: Padding, pad_value) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kernel, kernel, C) view of every window, padded with `pad_value`."""
    top, bottom, left, right = padding
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    view = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(1, 2))  # (N, H', W', C, k, k)
    return view[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)


def conv_sum(x: np.ndarray, weight: np.ndarray, stride: int, padding: Padding, pad_value) -> np.ndarray:
    """Sum over windows of x * weight for weight [O, k, k, I] -> (N, OH, OW, O), in x's float dtype."""
    k = weight.shape[1]
    if k == 1 and stride == 1 and not any(padding):
        return x @ weight.reshape(weight.shape[0], -1).T.astype(x.dtype)
    patches = windows(x, k, stride, padding, pad_value)
    return np.tensordot(patches, weight.astype(x.dtype), axes=([3, 4, 5], [1, 2, 3]))


def depthwise_sum(x: np.ndarray, weight: np.ndarray, stride: int, padding: Padding, pad_value) -> np.ndarray:
    """Sum over windows of x * weight for weight [k, k, C] -> (N, OH, OW, C), in x's float dtype."""
    k = weight.shape[0]
    patches = windows(x, k, stride, padding, pad_value)
    out = np.zeros(patches.shape[:3] + patches.shape[5:], dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out += patches[:, :, :, i, j, :] * weight[i, j].astype(x.dtype)
    return out
