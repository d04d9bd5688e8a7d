"""The two reference oracles for int8 .tflite models (see docs/NUMERICS.md).

- TFLite Micro (`tflite-micro` wheel), whose reference kernels are the bit-exact contract of the generated C;
- tflite-runtime 2.14 with the BUILTIN_REF op resolver (its reference kernels; every other resolver differs by LSBs).

Both run one sample at a time with batch 1; inputs and outputs carry a leading sample axis N.
Not thread-safe: `tflm_arena_bytes` redirects the process's file descriptor 2 while TFLM prints its report.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile

import numpy as np

__all__ = [
    "OracleUnavailable", "run_tflm", "run_tflite_ref", "tflm_intermediates", "tflm_arena_bytes",
    "tflm_arena_estimate", "tensor_names",
]

_TFLM_PIN = "tflite-micro==0.dev20261023182759"
_TFLITE_PIN = "tflite-runtime==2.14.0 (with numpy<2)"


class OracleUnavailable(ImportError):
    """An oracle package is missing or unusable."""


def _tflm_runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:
        raise OracleUnavailable(f"the TFLite Micro oracle needs the 'tflite-micro' package: pip install {_TFLM_PIN} "
                                f"({exc})") from exc
    return runtime


def _schema():
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    except ImportError as exc:
        raise OracleUnavailable(f"reading .tflite files needs the 'tflite-micro' package: pip install {_TFLM_PIN} "
                                f"({exc})") from exc
    return schema


def _tflite_interpreter():
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise OracleUnavailable(f"the TFLite reference oracle needs the 'tflite-runtime' package: pip install "
                                f"{_TFLITE_PIN} ({exc})") from exc
    return Interpreter, OpResolverType


# ---------------------------------------------------------------------------------------------------- model facts
def _tensor_table(model: bytes) -> list[tuple[str, tuple[int, ...], bool, int]]:
    """(name, shape, is_constant, element_size) for every tensor of subgraph 0, in index order."""
    schema = _schema()
    m = schema.Model.GetRootAs(model, 0)
    if m.SubgraphsLength() < 1:
        raise ValueError("model has no subgraph")
    sg = m.Subgraphs(0)
    sizes = {schema.TensorType.INT8: 1, schema.TensorType.UINT8: 1, schema.TensorType.INT16: 2,
             schema.TensorType.INT32: 4, schema.TensorType.FLOAT32: 4, schema.TensorType.INT64: 8,
             schema.TensorType.FLOAT16: 2, schema.TensorType.BOOL: 1}
    out = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        name = t.Name().decode("utf-8") if t.Name() is not None else f"tensor{i}"
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        b = t.Buffer()
        const = b > 0 and b < m.BuffersLength() and m.Buffers(b).DataLength() > 0
        out.append((name, shape, const, sizes.get(t.Type(), 8)))
    return out


def tensor_names(model: bytes) -> list[str]:
    """Names of subgraph 0's tensors, by tensor index."""
    return [t[0] for t in _tensor_table(model)]


def tflm_arena_estimate(model: bytes) -> int:
    """A generous TFLM arena size for `model`: room for every non-constant tensor at once (enough even for
    kPreserveAllTensors) plus bookkeeping. TFLM crashes the process (segfault) when the arena is too small, so this
    errs far on the large side; memory on the host is cheap."""
    schema = _schema()
    m = schema.Model.GetRootAs(model, 0)
    sg = m.Subgraphs(0)
    act = 0
    quant = 0
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        q = t.Quantization()
        if q is not None:
            quant += 16 * q.ScaleLength() + 64
    for name, shape, const, esize in _tensor_table(model):
        if not const:
            act += (int(np.prod(shape, dtype=np.int64)) * esize + 15) // 16 * 16
    n_tensors = sg.TensorsLength()
    n_ops = sg.OperatorsLength()
    est = act + 2 * quant + 256 * n_tensors + 1024 * n_ops + (256 << 10)
    return (est + 15) // 16 * 16


# ---------------------------------------------------------------------------------------------------- helpers
def _batched(inputs: np.ndarray, shape, dtype, what: str) -> np.ndarray:
    """Check `inputs` against the model input `shape` (batch axis 1 included) and give [N, *shape[1:]]."""
    x = np.asarray(inputs)
    sample = tuple(int(s) for s in shape[1:])
    if x.shape == sample:
        x = x[None]
    if x.shape[1:] != sample:
        raise ValueError(f"{what}: inputs of shape {x.shape} do not fit the model input {tuple(shape)} "
                         f"(expected [N, {', '.join(map(str, sample))}])")
    if x.dtype != np.dtype(dtype):
        raise TypeError(f"{what}: inputs are {x.dtype}, the model takes {np.dtype(dtype)}")
    return np.ascontiguousarray(x)


def _tflm_interpreter(model: bytes, arena_size: int | None, preserve: bool = False):
    runtime = _tflm_runtime()
    model = bytes(model)
    size = int(arena_size) if arena_size else tflm_arena_estimate(model)
    cfg = runtime.InterpreterConfig.kPreserveAllTensors if preserve else runtime.InterpreterConfig.kAllocationRecording
    try:
        return runtime.Interpreter.from_bytes(model, arena_size=size, intrepreter_config=cfg)
    except RuntimeError as exc:
        raise RuntimeError(f"TFLite Micro could not load the model (arena {size} bytes): {exc}") from exc


# ---------------------------------------------------------------------------------------------------- oracles
def run_tflm(model: bytes, inputs: np.ndarray, arena_size: int | None = None) -> np.ndarray:
    """Run `model` in TFLite Micro on each sample of `inputs` ([N, *input_shape[1:]], the model's dtype);
    returns [N, *output_shape[1:]] (int8 [N, K] for the project's models)."""
    it = _tflm_interpreter(model, arena_size)
    det = it.get_input_details(0)
    x = _batched(inputs, det["shape"], det["dtype"], "run_tflm")
    outs = []
    for sample in x:
        it.set_input(sample[None], 0)
        it.invoke()
        outs.append(np.array(it.get_output(0), copy=True)[0])
    if not outs:
        shape = tuple(it.get_output_details(0)["shape"][1:])
        return np.zeros((0,) + shape, dtype=it.get_output_details(0)["dtype"])
    return np.stack(outs)


def run_tflite_ref(model: bytes, inputs: np.ndarray) -> np.ndarray:
    """Run `model` in tflite-runtime with the reference kernels (BUILTIN_REF) on each sample of `inputs`
    ([N, *input_shape[1:]]); returns [N, *output_shape[1:]]."""
    Interpreter, OpResolverType = _tflite_interpreter()
    it = Interpreter(model_content=bytes(model), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ind, outd = it.get_input_details()[0], it.get_output_details()[0]
    x = _batched(inputs, ind["shape"], ind["dtype"], "run_tflite_ref")
    outs = []
    for sample in x:
        it.set_tensor(ind["index"], sample[None])
        it.invoke()
        outs.append(np.array(it.get_tensor(outd["index"]), copy=True)[0])
    if not outs:
        return np.zeros((0,) + tuple(outd["shape"][1:]), dtype=outd["dtype"])
    return np.stack(outs)


def tflm_intermediates(model: bytes, x: np.ndarray, arena_size: int | None = None) -> dict[str, np.ndarray]:
    """Run one sample `x` ([H, W, C] or with a batch axis of 1) in TFLite Micro, keeping every tensor.

    Returns {tensor name: array}: activations (every non-constant tensor, input and PAD outputs included) with the
    batch axis dropped, so a global-pool output [1,1,1,C] comes back as (1, 1, C) and the logits as (K,);
    constant tensors (weights, biases, paddings) as stored in the file, unchanged."""
    table = _tensor_table(model)
    it = _tflm_interpreter(model, arena_size, preserve=True)
    det = it.get_input_details(0)
    xb = _batched(x, det["shape"], det["dtype"], "tflm_intermediates")
    if xb.shape[0] != 1:
        raise ValueError(f"tflm_intermediates takes one sample, got {xb.shape[0]}")
    it.set_input(xb, 0)
    it.invoke()
    out: dict[str, np.ndarray] = {}
    for i, (name, shape, const, _) in enumerate(table):
        t = it.GetTensor(i, 0)
        data = t.get("tensor_data") if isinstance(t, dict) else t
        if data is None:
            continue
        a = np.array(data, copy=True)
        if not const and a.ndim >= 1 and a.shape[0] == 1:
            a = a[0]
        if name in out:
            raise ValueError(f"tensor name {name!r} appears twice in the model")
        out[name] = a
    return out


_REPORT_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_REPORT_SECTION = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead "
                             r"\(requested (\d+) bytes for (\d+)[^)]*\)")


def parse_allocation_report(text: str) -> dict:
    """Parse TFLM's RecordingMicroAllocator report (PrintAllocations) into
    {"total", "head", "tail": int, "sections": {name: {"used", "requested", "count"}}}."""
    res: dict = {}
    for key, value in _REPORT_TOTAL.findall(text):
        res[key] = int(value)
    missing = {"total", "head", "tail"} - res.keys()
    if missing:
        raise RuntimeError(f"TFLM allocation report lacks {sorted(missing)}; got:\n{text}")
    res["sections"] = {name: {"used": int(u), "requested": int(r), "count": int(c)}
                       for name, u, r, c in _REPORT_SECTION.findall(text)}
    return res


def _capture_fd2(fn) -> str:
    """Call fn() with file descriptor 2 redirected to a temporary file; return what was written there."""
    try:
        sys.stderr.flush()
    except Exception:  # pragma: no cover
        pass
    libc = None
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            fn()
        finally:
            if libc is not None:
                libc.fflush(None)
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode("utf-8", errors="replace")


def tflm_arena_bytes(model: bytes, arena_size: int | None = None) -> dict:
    """TFLM's arena needs for `model`, from its RecordingMicroAllocator report:
    {"head": peak of simultaneously live activations (the planned non-persistent area),
     "tail": persistent bookkeeping (eval tensors, node structs, per-channel quantization data, ...),
     "total": head + tail, "sections": {...}, "arena_size": the arena it was measured in}.
    The plan is made when the interpreter is created and does not depend on the arena size or on invoke()."""
    it = _tflm_interpreter(model, arena_size)
    text = _capture_fd2(it.print_allocations)
    res = parse_allocation_report(text)
    res["arena_size"] = int(arena_size) if arena_size else tflm_arena_estimate(bytes(model))
    return res
