"""The requantization arithmetic against an independent exact-integer model of gemmlowp's definitions."""
from fractions import Fraction

import numpy as np
import pytest

from codegen import requant

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def srdhm_model(a: int, b: int) -> int:
    """gemmlowp's specification in Python integers: (2ab + 2^31 nudge toward +-inf) / 2^32, truncated, saturated."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    s = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return s // (1 << 31) if s >= 0 else -((-s) // (1 << 31))


def rdbp_model(x: int, e: int) -> int:
    """x / 2^e rounded to nearest, ties away from zero."""
    q = Fraction(x, 1 << e)
    floor = q.numerator // q.denominator
    frac = q - floor
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and x > 0):
        return floor + 1
    return floor


EDGES = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -12345, -1, 0, 1, 2, 3, 12345, 1 << 30, INT32_MAX - 1, INT32_MAX]


def test_rounding_divide_by_pot_edges():
    for x in EDGES:
        for e in range(0, 32):
            assert int(requant.rounding_divide_by_pot(x, e)) == rdbp_model(x, e), (x, e)


def test_rounding_divide_by_pot_random(rng):
    x = rng.integers(INT32_MIN, INT32_MAX, 5000, endpoint=True)
    e = rng.integers(0, 32, 5000)
    got = requant.rounding_divide_by_pot(x, e)
    assert [int(g) for g in got] == [rdbp_model(int(a), int(b)) for a, b in zip(x, e)]


def test_srdhm_saturates_and_rounds():
    assert int(requant.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    for a in EDGES:
        for b in EDGES:
            exact = Fraction(a * b, 1 << 31)
            got = int(requant.saturating_rounding_doubling_high_mul(a, b))
            if not (a == b == INT32_MIN):
                assert abs(Fraction(got) - exact) <= Fraction(1, 2), (a, b)


def test_quantize_multiplier_reconstructs_real(rng):
    for real in list(rng.uniform(1e-6, 4.0, 2000)) + [0.5, 0.25, 1.0, 2.0 ** -31, 1 - 2.0 ** -40]:
        m, s = requant.quantize_multiplier(float(real))
        assert (1 << 30) <= m < (1 << 31)
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2.0 ** -30


def test_quantize_multiplier_rounds_half_away_and_carries():
    # mantissa so close to 1 that rounding carries into the next power of two
    m, s = requant.quantize_multiplier(1.0 - 2.0 ** -33)
    assert (m, s) == (1 << 30, 1)
    assert requant.quantize_multiplier(0.0) == (0, 0)
    assert requant.quantize_multiplier(2.0 ** -40) == (0, 0)  # shift < -31 flushes to zero
    assert requant.quantize_multiplier(2.0 ** 40) == (INT32_MAX, 30)


def test_multiply_by_quantized_multiplier_matches_model(rng):
    for _ in range(3000):
        x = int(rng.integers(-(1 << 24), 1 << 24))
        m = int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(-31, 8))
        left, right = max(shift, 0), max(-shift, 0)
        xs = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)
        want = rdbp_model(srdhm_model(xs, m), right)
        assert int(requant.multiply_by_quantized_multiplier(x, m, shift)) == want


@pytest.mark.parametrize("value,scale,zp,expect", [(6.0, 6.0 / 255, -128, 127), (6.0, 0.1, -10, 50),
                                                     (0.0, 0.05, 5, 125)])
def test_activation_range(value, scale, zp, expect):
    lo, hi = requant.activation_range("relu6", scale, zp)
    assert lo == max(-128, zp)
    assert hi == expect
    assert requant.activation_range("none", scale, zp) == (-128, 127)
    assert requant.activation_range("relu", scale, zp) == (max(-128, zp), 127)


def test_round_half_away():
    assert [requant.round_half_away(v) for v in (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5)] == [-3, -2, -1, 1, 2, 3]
    assert list(requant.round_half_away_array(np.array([-2.5, 2.5, 0.49]))) == [-3, 3, 0]


def test_average_rounding():
    got = requant.divide_round_half_away(np.array([7, -7, 5, -5, 0, 6, -6]), 2)
    assert list(got) == [4, -4, 3, -3, 0, 3, -3]


def test_fold_zero_point_is_exact_and_keeps_int32():
    """The lowered 1x1 / dense bias with the input zero point folded in gives the same accumulators with zero
    point 0; padded stages and biases the fold would push past int32 stay as they are."""
    from types import SimpleNamespace

    from codegen.lower import fold_zero_point

    rng = np.random.default_rng(7)
    op = SimpleNamespace(weight=rng.integers(-127, 128, (6, 1, 1, 20)).astype(np.int8),
                         bias=rng.integers(-40000, 40000, 6).astype(np.int32))
    w = op.weight.reshape(6, -1).astype(np.int64)
    for zp in (-128, -3, 0, 55, 127):
        bias, kernel_zp = fold_zero_point(op, zp)
        x = rng.integers(-128, 128, (50, 20))
        assert kernel_zp == 0 and bias.dtype == np.int32
        np.testing.assert_array_equal((x - kernel_zp) @ w.T + bias, (x - zp) @ w.T + op.bias)
    assert fold_zero_point(op, 5, foldable=False) == (op.bias, 5)
    big = SimpleNamespace(weight=op.weight, bias=np.full(6, 2 ** 31 - 100, np.int32))
    bias, kernel_zp = fold_zero_point(big, -128)
    assert kernel_zp == -128 and bias is big.bias
