"""Small random but *consistent* QuantGraphs, built by hand (no quantizer needed).

Consistent means: every multiplier/shift is what TFLite recomputes from the scales stored in a .tflite file, so a
model exported from these graphs runs in the oracles with exactly the arithmetic the graph describes.
Scales are chosen first (float32), then the multipliers derived from them:
- conv / depthwise: QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out));
- dense: QuantizeMultiplier(double(float32(s_in * s_w)) / double(s_out));
- add: TFLite's left_shift 20 scheme (see `add_params`).
The weight scales are picked so that the effective multiplier lands at about 2^-6..2^-9 (shift -5..-8), so the
outputs use the int8 range without saturating everywhere.

(The project's codegen/requant.py will own these formulas; this file keeps its own copy so the export tests do not
depend on it.)
"""
from __future__ import annotations

import math

import numpy as np

from codegen.graph import (
    ModelInfo, QAdd, QAvgPool, QConv, QDense, QDepthwise, QParams, QuantGraph, conv_out_size, frozen_array,
)


def round_half_away(x: float) -> int:
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = q * 2^shift with q a Q31 int32, rounded half away from zero."""
    if real == 0.0:
        return 0, 0
    mant, exp = math.frexp(real)
    q = round_half_away(mant * (1 << 31))
    assert q <= (1 << 31)
    if q == (1 << 31):
        q //= 2
        exp += 1
    if exp < -31:
        return 0, 0
    return int(q), int(exp)


def f32(x) -> float:
    return float(np.float32(x))


def activation_range(activation: str, qp: QParams) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized (float32 arithmetic, std::round)."""
    def quantize(f):
        return qp.zero_point + round_half_away(float(np.float32(f) / np.float32(qp.scale)))
    if activation == "none":
        return -128, 127
    if activation == "relu":
        return max(-128, quantize(0.0)), 127
    if activation == "relu6":
        return max(-128, quantize(0.0)), min(127, quantize(6.0))
    raise ValueError(activation)


def add_params(s1: float, s2: float, s_out: float) -> dict:
    """TFLite ADD (int8) Prepare: left_shift 20, twice the larger input scale, 'smaller than one' multipliers."""
    left_shift = 20
    twice_max = 2.0 * max(float(s1), float(s2))
    m1, sh1 = quantize_multiplier(float(s1) / twice_max)
    m2, sh2 = quantize_multiplier(float(s2) / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << left_shift) * float(s_out)))
    return dict(left_shift=left_shift, input_multipliers=(m1, m2), input_shifts=(sh1, sh2),
                output_multiplier=mo, output_shift=sho)


class GraphBuilder:
    """Appends ops to a QuantGraph under construction, choosing random consistent quantization parameters."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int] = (16, 16), channels: int = 3):
        self.rng = rng
        self.ops: list = []
        self.shapes: dict = {}
        self.qparams: dict = {}
        self.input = "input"
        self.shapes["input"] = (size[0], size[1], channels)
        self.qparams["input"] = QParams(f32(rng.uniform(0.015, 0.03)), int(rng.integers(-20, 21)))
        self.cur = "input"
        self.n = 0
        # rough (mean, std) of q - zero_point per tensor, in LSB, to aim each layer's gain
        self.stats: dict = {"input": (0.0, 74.0)}

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"op{self.n}_{kind}"

    def _out_qparams(self, activation: str) -> QParams:
        r = self.rng
        if activation == "relu6":
            return QParams(f32(6.0 / 255.0 * r.uniform(0.8, 1.25)), int(r.integers(-128, -110)))
        if activation == "relu":
            return QParams(f32(r.uniform(0.02, 0.06)), int(r.integers(-128, -100)))
        return QParams(f32(r.uniform(0.03, 0.12)), int(r.integers(-20, 21)))

    def _gain(self, src: str, fan_in: int) -> float:
        """Accumulator spread for random weights (std 73) over `fan_in` inputs of tensor `src`."""
        mu, sigma = self.stats[src]
        return math.sqrt(fan_in) * 73.0 * math.hypot(mu, sigma)

    def _weights_and_requant(self, name, w_shape, fan_in, out_c, s_in, s_out, src, activation):
        r = self.rng
        weight = r.integers(-127, 128, size=w_shape).astype(np.int8)
        acc = self._gain(src, fan_in)
        # aim for ~35 output LSB per sigma of the accumulator: multipliers around 2^-6..2^-9
        target = 35.0 / acc
        w_scale = (target * s_out / s_in * r.uniform(0.7, 1.4, size=out_c)).astype(np.float32)
        mult, shift = zip(*(quantize_multiplier(float(s_in) * float(ws) / float(s_out)) for ws in w_scale))
        centre = 0.5 * acc if activation != "none" else 0.0  # keep ReLU outputs off the floor
        bias = r.normal(centre, acc / 6.0, size=out_c).round().astype(np.int32)
        return weight, bias, w_scale, np.array(mult, np.int32), np.array(shift, np.int32)

    def conv(self, out_c: int, kernel: int = 1, stride: int = 1, padding=(0, 0, 0, 0), activation="relu6",
             depthwise: bool = False, src: str | None = None) -> str:
        src = src or self.cur
        h, w, c = self.shapes[src]
        name = self._name("dw" if depthwise else "conv")
        out_c = c if depthwise else out_c
        oh = conv_out_size(h, kernel, stride, padding[0], padding[1])
        ow = conv_out_size(w, kernel, stride, padding[2], padding[3])
        out = f"{name}/out"
        s_in = self.qparams[src].scale
        out_qp = self._out_qparams(activation)
        if depthwise:
            w_shape, fan_in = (kernel, kernel, c), kernel * kernel
        else:
            w_shape, fan_in = (out_c, kernel, kernel, c), kernel * kernel * c
        weight, bias, w_scale, mult, shift = self._weights_and_requant(name, w_shape, fan_in, out_c, s_in,
                                                                       out_qp.scale, src, activation)
        self.stats[out] = (0.0, 35.0) if activation == "none" else (25.0, 25.0)
        lo, hi = activation_range(activation, out_qp)
        cls = QDepthwise if depthwise else QConv
        self.ops.append(cls(name=name, input=src, output=out, weight=frozen_array(weight, np.int8),
                            bias=frozen_array(bias, np.int32), weight_scale=frozen_array(w_scale, np.float32),
                            multiplier=frozen_array(mult, np.int32), shift=frozen_array(shift, np.int32),
                            stride=stride, padding=tuple(padding), activation=activation, act_min=lo, act_max=hi))
        self.shapes[out] = (oh, ow, out_c)
        self.qparams[out] = out_qp
        self.cur = out
        return out

    def depthwise(self, kernel=3, stride=1, padding=(1, 1, 1, 1), activation="relu6", src=None) -> str:
        return self.conv(0, kernel, stride, padding, activation, depthwise=True, src=src)

    def add(self, a: str, b: str) -> str:
        assert self.shapes[a] == self.shapes[b]
        name = self._name("add")
        out = f"{name}/out"
        sa, sb = self.qparams[a].scale, self.qparams[b].scale
        out_qp = QParams(f32((sa + sb) * self.rng.uniform(0.6, 0.9)), int(self.rng.integers(-20, 21)))
        p = add_params(sa, sb, out_qp.scale)
        self.ops.append(QAdd(name=name, inputs=(a, b), output=out, act_min=-128, act_max=127, **p))
        self.shapes[out] = self.shapes[a]
        self.qparams[out] = out_qp
        self.stats[out] = (0.0, 35.0)
        self.cur = out
        return out

    def avgpool(self) -> str:
        name = self._name("pool")
        out = f"{name}/out"
        src = self.cur
        self.ops.append(QAvgPool(name=name, input=src, output=out, act_min=-128, act_max=127))
        self.shapes[out] = (self.shapes[src][2],)
        self.qparams[out] = self.qparams[src]
        self.stats[out] = self.stats[src]
        self.cur = out
        return out

    def dense(self, classes: int) -> str:
        r = self.rng
        name = self._name("dense")
        out = f"{name}/out"
        src = self.cur
        (c,) = self.shapes[src]
        s_in = self.qparams[src].scale
        out_qp = QParams(f32(r.uniform(0.05, 0.2)), int(r.integers(-20, 21)))
        acc = self._gain(src, c)
        w_scale = f32(35.0 / acc * out_qp.scale / s_in * r.uniform(0.7, 1.4))
        m, sh = quantize_multiplier(float(np.float32(s_in) * np.float32(w_scale)) / float(out_qp.scale))
        weight = r.integers(-127, 128, size=(classes, c)).astype(np.int8)
        bias = r.normal(0.0, acc / 6.0, size=classes).round().astype(np.int32)
        self.ops.append(QDense(name=name, input=src, output=out, weight=frozen_array(weight, np.int8),
                               bias=frozen_array(bias, np.int32), weight_scale=w_scale, multiplier=m, shift=sh,
                               act_min=-128, act_max=127))
        self.shapes[out] = (classes,)
        self.qparams[out] = out_qp
        self.cur = out
        return out

    def build(self) -> QuantGraph:
        h, w, _ = self.shapes[self.input]
        classes = self.shapes[self.cur][0]
        info = ModelInfo(alpha=1.0, resolution=(h, w), class_names=tuple(f"class{i}" for i in range(classes)),
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        return QuantGraph(info=info, input=self.input, output=self.cur, shapes=dict(self.shapes),
                          qparams=dict(self.qparams), ops=tuple(self.ops),
                          blocks=(("all", tuple(op.name for op in self.ops)),), calibration="random-test")


def random_quant_graph(rng: np.random.Generator, size: int = 32, classes: int = 10) -> QuantGraph:
    """A small MobileNetV2-like graph exercising every op and every padding case (input size x size x 3).

    With size 32: "op1_conv" (stride 2, padding (1,1,1,1) on an even input) and "op9_dw" need a PAD;
    "op2_dw" (stride 2, (0,1,0,1)), "op5_dw" and "op12_dw" (stride 1, (1,1,1,1)) and the 1x1 convs are SAME;
    "op10_conv" (3x3, all-zero padding) is VALID. With size 31 "op1_conv" is SAME too (odd input)."""
    b = GraphBuilder(rng, (size, size))
    b.conv(8, kernel=3, stride=2, padding=(1, 1, 1, 1))            # op1: 16x16x8, PAD if size is even
    b.depthwise(3, 2, (0, 1, 0, 1))                                 # op2: 8x8x8, TFLite SAME
    p1 = b.conv(8, activation="none")                               # op3: 1x1 linear
    b.conv(16)                                                      # op4: expand
    b.depthwise(3, 1, (1, 1, 1, 1))                                 # op5: SAME
    p2 = b.conv(8, activation="none")                               # op6: project
    b.add(p1, p2)                                                   # op7: residual
    b.conv(16)                                                      # op8
    b.depthwise(3, 2, (1, 1, 1, 1))                                 # op9: 4x4x16, PAD
    b.conv(12, kernel=3, padding=(0, 0, 0, 0), activation="none")   # op10: 2x2x12, VALID
    b.conv(24)                                                      # op11
    b.depthwise(3, 1, (1, 1, 1, 1))                                 # op12: SAME
    b.conv(16, activation="relu")                                   # op13: plain ReLU
    b.avgpool()                                                     # op14: 2x2 -> 16
    b.dense(classes)                                                # op15
    return b.build()


def random_inputs(rng: np.random.Generator, graph: QuantGraph, n: int) -> np.ndarray:
    return rng.integers(-128, 128, size=(n,) + tuple(graph.shapes[graph.input])).astype(np.int8)


# --------------------------------------------------------------------------------------------------- numpy reference
def _srdhm(a: np.ndarray, b: int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul(int32 a, int32 b), vectorized over a (int64 arithmetic)."""
    a = a.astype(np.int64)
    ab = a * np.int64(b)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    num = ab + nudge
    q = np.where(num >= 0, num // (1 << 31), -((-num) // (1 << 31)))  # C division truncates toward zero
    return np.where((a == -(1 << 31)) & (b == -(1 << 31)), np.int64((1 << 31) - 1), q)


def _rdbpot(x: np.ndarray, exponent: int) -> np.ndarray:
    mask = np.int64((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLM reference MultiplyByQuantizedMultiplier (double rounding); per-channel when multiplier/shift are arrays
    broadcasting against x's last axis."""
    x = np.asarray(x, dtype=np.int64)
    mult = np.broadcast_to(np.asarray(multiplier, np.int64), x.shape)
    sh = np.broadcast_to(np.asarray(shift, np.int64), x.shape)
    out = np.empty(x.shape, np.int64)
    for m, s in set(zip(mult.reshape(-1).tolist(), sh.reshape(-1).tolist())):
        sel = (mult == m) & (sh == s)
        v = x[sel] * (1 << max(s, 0))
        out[sel] = _rdbpot(_srdhm(v, m), max(-s, 0))
    return out


def reference_op(graph: QuantGraph, op, tensors: dict) -> np.ndarray:
    """Compute one QuantGraph op in numpy from its input tensor(s) in `tensors` ((H,W,C) int8 arrays), with the
    graph's own integer parameters (multiplier/shift, not scales)."""
    qp = graph.qparams
    if op.kind in ("conv", "depthwise"):
        x = tensors[op.input].astype(np.int64) - qp[op.input].zero_point
        t, b, l, r = op.padding
        x = np.pad(x, ((t, b), (l, r), (0, 0)))  # zero-point padding: 0 after the offset
        w = op.weight.astype(np.int64)
        kh, kw = (w.shape[0], w.shape[1]) if op.kind == "depthwise" else (w.shape[1], w.shape[2])
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))[::op.stride, ::op.stride]
        # win: (OH, OW, C, kh, kw)
        if op.kind == "depthwise":
            acc = np.einsum("hwcij,ijc->hwc", win, w)
        else:
            acc = np.einsum("hwcij,oijc->hwo", win, w)
        acc = acc + op.bias.astype(np.int64)
        y = multiply_by_quantized_multiplier(acc, op.multiplier, op.shift) + qp[op.output].zero_point
    elif op.kind == "add":
        vals = []
        for name, m, s in zip(op.inputs, op.input_multipliers, op.input_shifts):
            v = (tensors[name].astype(np.int64) - qp[name].zero_point) * (1 << op.left_shift)
            vals.append(multiply_by_quantized_multiplier(v, m, s))
        y = multiply_by_quantized_multiplier(vals[0] + vals[1], op.output_multiplier, op.output_shift)
        y = y + qp[op.output].zero_point
    elif op.kind == "avgpool":
        x = tensors[op.input].astype(np.int64)
        n = x.shape[0] * x.shape[1]
        s = x.sum(axis=(0, 1))
        y = np.where(s >= 0, (s + n // 2) // n, -((-s + n // 2) // n))
    elif op.kind == "dense":
        x = tensors[op.input].astype(np.int64).reshape(-1) - qp[op.input].zero_point
        acc = op.weight.astype(np.int64) @ x + op.bias.astype(np.int64)
        y = multiply_by_quantized_multiplier(acc, op.multiplier, op.shift) + qp[op.output].zero_point
    else:
        raise TypeError(op)
    return np.clip(y, op.act_min, op.act_max).astype(np.int8).reshape(graph.shapes[op.output])
