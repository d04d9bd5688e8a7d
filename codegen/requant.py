"""The one definition of int8 requantization arithmetic (TFLite/TFLM reference semantics), scalar and numpy.

Contracts: accumulators are int32 values carried in int64 numpy arrays; every function returns int64 arrays whose
values lie in int32 range, reproducing C int32 arithmetic (including wrap-around where TFLM's C code wraps).
Multipliers are Q31 int32 in [2^30, 2^31) (or 0); shifts are left shifts (negative = right shift).
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def round_half_away(x: float) -> int:
    """C `round()`: halves go away from zero (Python's round() goes to even)."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def round_half_away_array(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, np.floor(x + 0.5), -np.floor(-x + 0.5))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier Q31 from frexp, rounded half away."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    q = round_half_away(mantissa * (1 << 31))
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return int(q), int(shift)


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplierSmallerThanOneExp: as quantize_multiplier, for 0 < real < 1 (shift <= 0)."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier {real} is not in (0, 1)")
    return quantize_multiplier(real)


def conv_multiplier(input_scale: float, weight_scale: float, output_scale: float) -> tuple[int, int]:
    """Per-channel conv/depthwise (TFLM PopulateConvolutionQuantizationParams): product taken in double."""
    s_in, s_w, s_out = (float(np.float32(v)) for v in (input_scale, weight_scale, output_scale))
    return quantize_multiplier(s_in * s_w / s_out)


def dense_multiplier(input_scale: float, weight_scale: float, output_scale: float) -> tuple[int, int]:
    """Fully connected (TFLite GetQuantizedConvolutionMultipler): the scale product is taken in float32 first."""
    product = float(np.float32(input_scale) * np.float32(weight_scale))
    return quantize_multiplier(product / float(np.float32(output_scale)))


def add_params(scale_a: float, scale_b: float, scale_out: float) -> dict:
    """TFLite ADD (int8) preparation: both inputs to twice the larger scale, 20 bits of headroom."""
    left_shift = 20
    s_a, s_b, s_o = (float(np.float32(v)) for v in (scale_a, scale_b, scale_out))
    twice_max = 2.0 * max(s_a, s_b)
    ma, sa = quantize_multiplier_smaller_than_one(s_a / twice_max)
    mb, sb = quantize_multiplier_smaller_than_one(s_b / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << left_shift) * s_o))
    return dict(left_shift=left_shift, input_multipliers=(ma, mb), input_shifts=(sa, sb),
                output_multiplier=mo, output_shift=so)


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for int8: limits quantized in float32, rounded half away."""
    def quantize(f: float) -> int:
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))
    if activation == "none":
        return -128, 127
    lo = max(-128, quantize(0.0))
    if activation == "relu":
        return lo, 127
    if activation == "relu6":
        return lo, min(127, quantize(6.0))
    raise ValueError(f"unknown activation {activation!r}")


# ---------------------------------------------------------------------------------------- vectorised integer ops
def wrap_int32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return ((x - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN


def saturating_rounding_doubling_high_mul(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: (a*b*2 + 2^31 rounding) >> 32, saturating INT32_MIN*INT32_MIN."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C division truncates toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero (0 <= exponent <= 31)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLM MultiplyByQuantizedMultiplier (double rounding); `x << left_shift` wraps as int32 like the C code."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = wrap_int32(np.asarray(x, dtype=np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def multiply_by_quantized_multiplier_smaller_than_one(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0)."""
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, multiplier), -np.asarray(shift))


def requantize(acc: np.ndarray, multiplier, shift, zero_point: int, act_min: int, act_max: int) -> np.ndarray:
    """int32 accumulator -> int8: scale, add the output zero point, clamp to the activation range."""
    out = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(out, act_min, act_max).astype(np.int8)


def divide_round_half_away(total: np.ndarray, count: int) -> np.ndarray:
    """TFLite AVERAGE_POOL int8: (sum +/- count/2) / count with C truncating division."""
    total = np.asarray(total, dtype=np.int64)
    num = np.where(total > 0, total + count // 2, total - count // 2)
    return np.where(num >= 0, num // count, -((-num) // count))
