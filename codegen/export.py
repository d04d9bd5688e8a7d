"""QuantGraph -> .tflite flatbuffer, readable by TFLite Micro and tflite-runtime (the two oracles).

The file is built with the flatbuffers object API that ships inside the tflite-micro wheel, so no TensorFlow is needed.
Layout decisions (see docs/NUMERICS.md):
- every QuantGraph tensor keeps its name; constants are named f"{op}/weight", f"{op}/bias", f"{op}/paddings";
- activations are NHWC with a batch axis of 1; the global average pool output is [1,1,1,C], the logits [1,K];
- a padding equal to TFLite's SAME becomes SAME, all-zero becomes VALID, anything else (PyTorch's stride-2
  padding=1 on an even input) becomes an explicit PAD op (output f"{op}/pad") followed by a VALID convolution;
- conv / depthwise weights are per-channel (quantized_dimension 0 / 3), dense weights per-tensor, zero points 0;
  bias scale = float32(input_scale * weight_scale), zero point 0;
- constant buffers are 16-byte aligned in the file, like the converter's output.

The output is a pure function of the graph: the same graph always gives the same bytes.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .graph import QAdd, QAvgPool, QConv, QDense, QDepthwise, QParams, QuantGraph, conv_out_size

try:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "codegen.export needs the TFLite flatbuffer schema from the 'tflite-micro' package and 'flatbuffers': "
        "pip install tflite-micro==0.dev20261023182759 flatbuffers"
    ) from exc

__all__ = ["export_tflite", "write_tflite", "tflite_padding", "OP_VERSIONS", "BUFFER_ALIGNMENT"]

BUFFER_ALIGNMENT = 16

_OP = schema.BuiltinOperator
# Operator versions as the TFLite converter writes them for int8 models.
OP_VERSIONS = {
    _OP.CONV_2D: 3,
    _OP.DEPTHWISE_CONV_2D: 3,
    _OP.ADD: 2,
    _OP.AVERAGE_POOL_2D: 2,
    _OP.PAD: 2,
    _OP.FULLY_CONNECTED: 4,
}

_ACTIVATION = {
    "none": schema.ActivationFunctionType.NONE,
    "relu": schema.ActivationFunctionType.RELU,
    "relu6": schema.ActivationFunctionType.RELU6,
}


class _AlignedBuilder(flatbuffers.Builder):
    """A Builder that places uint8 vectors (the constant buffers) on BUFFER_ALIGNMENT-byte boundaries.

    Alignment is taken relative to the end of the buffer; Finish pads the front to the largest alignment used, so the
    data is aligned from the start of the file as well."""

    def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers naming)
        if isinstance(x, np.ndarray) and x.dtype == np.uint8:
            self.Prep(BUFFER_ALIGNMENT, x.size)
        return super().CreateNumpyVector(x)


def tflite_padding(size_hw: tuple[int, int], kernel_hw: tuple[int, int], stride: int, padding) -> str:
    """How TFLite can express an explicit `(top, bottom, left, right)` padding: "SAME", "VALID" or "PAD"."""
    padding = tuple(int(p) for p in padding)
    same = []
    for size, kernel in zip(size_hw, kernel_hw):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        same += [total // 2, total - total // 2]
    if padding == tuple(same):
        return "SAME"
    if padding == (0, 0, 0, 0):
        return "VALID"
    return "PAD"


class _Writer:
    def __init__(self, graph: QuantGraph):
        self.graph = graph
        self.tensors: list = []
        self.tensor_index: dict[str, int] = {}
        self.buffers: list = [schema.BufferT()]  # buffer 0: the empty sentinel
        self.opcodes: list = []
        self.opcode_index: dict[tuple[int, int], int] = {}
        self.operators: list = []
        self.tflite_shapes: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------------------------------------ tensors
    @staticmethod
    def _quant(scale, zero_point, dim: int = 0):
        q = schema.QuantizationParametersT()
        q.scale = np.ascontiguousarray(np.asarray(scale, dtype=np.float32).reshape(-1))
        q.zeroPoint = np.ascontiguousarray(np.asarray(zero_point, dtype=np.int64).reshape(-1))
        q.quantizedDimension = int(dim)
        return q

    def _add_tensor(self, name: str, shape, ttype: int, quant, data: np.ndarray | None = None) -> int:
        if name in self.tensor_index:
            raise ValueError(f"tensor {name!r} defined twice")
        t = schema.TensorT()
        t.name = name
        t.shape = np.asarray([int(s) for s in shape], dtype=np.int32)
        t.type = ttype
        t.quantization = quant
        if data is None:
            t.buffer = 0
        else:
            b = schema.BufferT()
            b.data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.tensor_index[name] = len(self.tensors) - 1
        self.tflite_shapes[name] = tuple(int(s) for s in shape)
        return self.tensor_index[name]

    def _qparams(self, name: str) -> QParams:
        try:
            return self.graph.qparams[name]
        except KeyError:
            raise ValueError(f"no quantization parameters for tensor {name!r}") from None

    def _activation(self, name: str, shape, qp: QParams | None = None) -> int:
        qp = qp if qp is not None else self._qparams(name)
        _check_zero_point(name, qp.zero_point)
        if any(int(d) < 1 for d in shape):
            raise ValueError(f"tensor {name!r} has an empty shape {tuple(shape)}")
        return self._add_tensor(name, shape, schema.TensorType.INT8, self._quant([qp.scale], [qp.zero_point]))

    def _int8_const(self, name, array, scales, dim) -> int:
        a = np.asarray(array)
        if a.dtype != np.int8:
            if a.size and (a.min() < -128 or a.max() > 127):
                raise ValueError(f"{name}: weights out of int8 range")
            a = a.astype(np.int8)
        scales = np.asarray(scales, dtype=np.float32).reshape(-1)
        return self._add_tensor(name, a.shape, schema.TensorType.INT8,
                                self._quant(scales, np.zeros(scales.size, np.int64), dim), a)

    def _int32_const(self, name, array, quant=None) -> int:
        a = np.asarray(array)
        if a.dtype != np.int32:
            if a.size and (a.min() < -(1 << 31) or a.max() > (1 << 31) - 1):
                raise ValueError(f"{name}: values out of int32 range")
            a = a.astype(np.int32)
        return self._add_tensor(name, a.shape, schema.TensorType.INT32, quant, a.astype("<i4"))

    def _input_index(self, name: str) -> int:
        if name not in self.tensor_index:
            raise ValueError(f"tensor {name!r} is used before it is produced")
        return self.tensor_index[name]

    # ------------------------------------------------------------------------------------------------ operators
    def _add_op(self, code: int, inputs, outputs, options_type: int, options) -> None:
        key = (code, OP_VERSIONS[code])
        if key not in self.opcode_index:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = OP_VERSIONS[code]
            self.opcodes.append(oc)
            self.opcode_index[key] = len(self.opcodes) - 1
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode_index[key]
        op.inputs = np.asarray(inputs, dtype=np.int32)
        op.outputs = np.asarray(outputs, dtype=np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.operators.append(op)

    def _shape(self, name: str) -> tuple[int, ...]:
        try:
            return tuple(int(s) for s in self.graph.shapes[name])
        except KeyError:
            raise ValueError(f"no shape for tensor {name!r}") from None

    def _conv_like(self, op) -> None:
        depthwise = isinstance(op, QDepthwise)
        in_shape = self._shape(op.input)
        if len(in_shape) != 3:
            raise ValueError(f"{op.name}: input {op.input!r} must be (H, W, C), got {in_shape}")
        h, w, c = in_shape
        weight = np.asarray(op.weight)
        if depthwise:
            kh, kw, out_c = weight.shape
            if out_c != c:
                raise ValueError(f"{op.name}: depthwise weight has {out_c} channels, input {c}")
        else:
            out_c, kh, kw, in_c = weight.shape
            if in_c != c:
                raise ValueError(f"{op.name}: weight expects {in_c} input channels, input has {c}")
        stride = int(op.stride)
        top, bottom, left, right = (int(p) for p in op.padding)
        expect = (conv_out_size(h, kh, stride, top, bottom), conv_out_size(w, kw, stride, left, right), out_c)
        out_shape = self._shape(op.output)
        if out_shape != expect:
            raise ValueError(f"{op.name}: output shape {out_shape} != {expect} implied by the padding")

        in_qp = self._qparams(op.input)
        x = self._input_index(op.input)
        mode = tflite_padding((h, w), (kh, kw), stride, op.padding)
        if mode == "PAD":
            paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], dtype=np.int32)
            p = self._int32_const(f"{op.name}/paddings", paddings)
            padded = self._activation(f"{op.name}/pad", (1, h + top + bottom, w + left + right, c), in_qp)
            self._add_op(_OP.PAD, [x, p], [padded], schema.BuiltinOptions.PadOptions, schema.PadOptionsT())
            x, mode = padded, "VALID"

        w_scale = np.asarray(op.weight_scale, dtype=np.float32).reshape(-1)
        if w_scale.size != out_c:
            raise ValueError(f"{op.name}: {w_scale.size} weight scales for {out_c} channels")
        bias = np.asarray(op.bias).reshape(-1)
        if bias.size != out_c:
            raise ValueError(f"{op.name}: {bias.size} biases for {out_c} channels")
        if depthwise:
            wt = self._int8_const(f"{op.name}/weight", weight.reshape(1, kh, kw, out_c), w_scale, 3)
        else:
            wt = self._int8_const(f"{op.name}/weight", weight, w_scale, 0)
        bias_scale = np.float32(in_qp.scale) * w_scale  # float32 product, as the converter stores it
        b = self._int32_const(f"{op.name}/bias", bias,
                              self._quant(bias_scale, np.zeros(out_c, np.int64), 0))
        y = self._activation(op.output, (1,) + out_shape)

        try:
            act = _ACTIVATION[op.activation]
        except KeyError:
            raise ValueError(f"{op.name}: unknown activation {op.activation!r}") from None
        pad = schema.Padding.SAME if mode == "SAME" else schema.Padding.VALID
        if depthwise:
            opts = schema.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = 1
            opts_type, code = schema.BuiltinOptions.DepthwiseConv2DOptions, _OP.DEPTHWISE_CONV_2D
        else:
            opts = schema.Conv2DOptionsT()
            opts_type, code = schema.BuiltinOptions.Conv2DOptions, _OP.CONV_2D
        opts.padding = pad
        opts.strideH = opts.strideW = stride
        opts.dilationHFactor = opts.dilationWFactor = 1
        opts.fusedActivationFunction = act
        self._add_op(code, [x, wt, b], [y], opts_type, opts)

    def _add(self, op: QAdd) -> None:
        a, b = op.inputs
        sa, sb, so = self._shape(a), self._shape(b), self._shape(op.output)
        if not (sa == sb == so):
            raise ValueError(f"{op.name}: ADD shapes differ: {sa}, {sb} -> {so}")
        ia, ib = self._input_index(a), self._input_index(b)
        y = self._activation(op.output, (1,) + so)
        opts = schema.AddOptionsT()
        opts.fusedActivationFunction = schema.ActivationFunctionType.NONE
        self._add_op(_OP.ADD, [ia, ib], [y], schema.BuiltinOptions.AddOptions, opts)

    def _avgpool(self, op: QAvgPool) -> None:
        in_shape = self._shape(op.input)
        if len(in_shape) != 3:
            raise ValueError(f"{op.name}: input {op.input!r} must be (H, W, C), got {in_shape}")
        h, w, c = in_shape
        out_shape = self._shape(op.output)
        if int(np.prod(out_shape)) != c:
            raise ValueError(f"{op.name}: output shape {out_shape} for {c} channels")
        in_qp = self._qparams(op.input)
        out_qp = self.graph.qparams.get(op.output, in_qp)
        if (np.float32(out_qp.scale), int(out_qp.zero_point)) != (np.float32(in_qp.scale), int(in_qp.zero_point)):
            raise ValueError(f"{op.name}: AVERAGE_POOL_2D output must share the input's scale and zero point "
                             f"({out_qp} != {in_qp})")
        x = self._input_index(op.input)
        y = self._activation(op.output, (1, 1, 1, c), in_qp)
        opts = schema.Pool2DOptionsT()
        opts.padding = schema.Padding.VALID
        opts.strideH = opts.strideW = 1
        opts.filterHeight, opts.filterWidth = h, w
        opts.fusedActivationFunction = schema.ActivationFunctionType.NONE
        self._add_op(_OP.AVERAGE_POOL_2D, [x], [y], schema.BuiltinOptions.Pool2DOptions, opts)

    def _dense(self, op: QDense) -> None:
        weight = np.asarray(op.weight)
        out_n, in_n = weight.shape
        x = self._input_index(op.input)
        if int(np.prod(self.tflite_shapes[op.input])) != in_n:
            raise ValueError(f"{op.name}: input {op.input!r} has {self.tflite_shapes[op.input]} elements, "
                             f"weight expects {in_n}")
        out_shape = self._shape(op.output)
        if int(np.prod(out_shape)) != out_n:
            raise ValueError(f"{op.name}: output shape {out_shape} for {out_n} outputs")
        in_qp = self._qparams(op.input)
        w_scale = np.float32(op.weight_scale)
        wt = self._int8_const(f"{op.name}/weight", weight, [w_scale], 0)
        bias = np.asarray(op.bias).reshape(-1)
        if bias.size != out_n:
            raise ValueError(f"{op.name}: {bias.size} biases for {out_n} outputs")
        b = self._int32_const(f"{op.name}/bias", bias,
                              self._quant([np.float32(in_qp.scale) * w_scale], [0], 0))
        y = self._activation(op.output, (1, out_n))
        opts = schema.FullyConnectedOptionsT()
        opts.fusedActivationFunction = schema.ActivationFunctionType.NONE
        opts.weightsFormat = schema.FullyConnectedOptionsWeightsFormat.DEFAULT
        opts.keepNumDims = False
        self._add_op(_OP.FULLY_CONNECTED, [x, wt, b], [y], schema.BuiltinOptions.FullyConnectedOptions, opts)

    # ------------------------------------------------------------------------------------------------ model
    def build(self) -> bytes:
        g = self.graph
        in_shape = self._shape(g.input)
        x = self._activation(g.input, (1,) + in_shape)
        for op in g.ops:
            if isinstance(op, (QConv, QDepthwise)):
                self._conv_like(op)
            elif isinstance(op, QAdd):
                self._add(op)
            elif isinstance(op, QAvgPool):
                self._avgpool(op)
            elif isinstance(op, QDense):
                self._dense(op)
            else:
                raise TypeError(f"cannot export op {op!r}")
        if g.output not in self.tensor_index:
            raise ValueError(f"graph output {g.output!r} is never produced")

        sub = schema.SubGraphT()
        sub.name = "main"
        sub.tensors = self.tensors
        sub.inputs = np.asarray([x], dtype=np.int32)
        sub.outputs = np.asarray([self.tensor_index[g.output]], dtype=np.int32)
        sub.operators = self.operators

        model = schema.ModelT()
        model.version = 3
        model.description = "codegen int8 export"
        model.operatorCodes = self.opcodes
        model.subgraphs = [sub]
        model.buffers = self.buffers

        total = sum(b.data.size for b in self.buffers if b.data is not None)
        builder = _AlignedBuilder(total + 64 * len(self.tensors) + 4096)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _check_zero_point(name: str, zp) -> None:
    if not -128 <= int(zp) <= 127:
        raise ValueError(f"{name}: zero point {zp} outside int8")


def export_tflite(graph: QuantGraph) -> bytes:
    """The graph as a .tflite flatbuffer (int8 input [1,H,W,C], int8 output [1,K]); deterministic byte for byte."""
    return _Writer(graph).build()


def write_tflite(graph: QuantGraph, path) -> bytes:
    """Export `graph` and write it to `path` atomically (temporary file in the same folder, then os.replace).
    Returns the bytes written."""
    data = export_tflite(graph)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tflite.tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return data
