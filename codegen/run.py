"""Running generated code on the host: the simulator program, and the shared library through ctypes."""
from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError


def run_host_program(variant: Path, x: np.ndarray) -> tuple[np.ndarray, str]:
    """int8 inputs (N, H, W, C) or one (H, W, C) through `mnv2_host` in one process; returns (int8 logits (N, K) or
    (K,), the program's stdout)."""
    exe = Path(variant) / "mnv2_host"
    x = np.asarray(x)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "input.raw", Path(tmp) / "output.raw"
        src.write_bytes(np.ascontiguousarray(x, dtype=np.int8).tobytes())
        p = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise UserError(f"{exe} failed with exit code {p.returncode}: {(p.stderr or p.stdout).strip()[:300]}")
        out = np.frombuffer(dst.read_bytes(), dtype=np.int8).copy()
        return (out.reshape(len(x), -1) if x.ndim == 4 else out), p.stdout.strip()


class CModel:
    """The generated model as a Python object: `predict(x)` runs int8 inputs (N, H, W, C) -> int8 logits (N, K)
    through the shared library built from the same sources as the firmware."""

    def __init__(self, variant: Path, input_shape: tuple, num_outputs: int):
        lib_path = Path(variant) / "libmnv2.so"
        if not lib_path.is_file():
            raise UserError(f"{lib_path} is missing: build the project first")
        self._lib = ctypes.CDLL(str(lib_path.resolve()))
        self._lib.mnv2_invoke.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._lib.mnv2_invoke.restype = None
        self._lib.mnv2_check_guards.restype = ctypes.c_int
        self.input_shape = tuple(input_shape)
        self.num_outputs = num_outputs

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.int8)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"input must be (N, {self.input_shape}), got {x.shape}")
        out = np.zeros((len(x), self.num_outputs), dtype=np.int8)
        for i in range(len(x)):
            self._lib.mnv2_invoke(x[i].ctypes.data, out[i].ctypes.data)
            if self._lib.mnv2_check_guards() != 0:
                raise RuntimeError("arena guard bytes overwritten")
        return out
