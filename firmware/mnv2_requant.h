/*
 * mnv2_requant.h - int8 requantization arithmetic (TFLite / TFLM reference semantics), C99, header only.
 *
 * Contract: every function is bit-exact with its Python twin in codegen/requant.py (the one definition of this
 * arithmetic in the project; tests/test_kernels_c.py checks the two against each other) and therefore with the
 * TFLM reference kernels (gemmlowp's SaturatingRoundingDoublingHighMul / RoundingDivideByPOT, TFLM's
 * "double rounding" MultiplyByQuantizedMultiplier).
 *   - No undefined behaviour for any int32 value of x / a / b, provided the shift arguments are in range:
 *     mnv2_rdbp exponent in [0, 31]; mnv2_mbqm shift in [-31, 31]; mnv2_mbqm_lt1 shift in [-31, 0].
 *     (QuantizeMultiplier never produces a shift outside [-31, 30].)
 *   - Products are formed in int64; int32 wrap-around (where TFLM's C code wraps: x << shift in mnv2_mbqm) is done
 *     through uint32_t and converted back without relying on implementation-defined conversions.
 *   - Right shifts of negative values, which C99 leaves implementation-defined, are not used: an arithmetic shift
 *     is written as ~(~x >> n) for x < 0 (gcc compiles it to a single arithmetic shift).
 *   - int32_t is two's complement by definition (C99 7.18.1.1), which the bitwise masks rely on.
 * Only <stdint.h> is needed; no floating point, no library calls.
 */
#ifndef MNV2_REQUANT_H
#define MNV2_REQUANT_H

#include <stdint.h>

/* Arithmetic (floor) right shift of an int32 by n in [0, 31], defined for negative x. */
static inline int32_t mnv2_asr(int32_t x, int n)
{
    return x < 0 ? ~(~x >> n) : (x >> n);
}

/* The int32 whose two's complement bit pattern is u (what a cast does on gcc, but without
 * implementation-defined behaviour). */
static inline int32_t mnv2_u32_to_s32(uint32_t u)
{
    if (u <= (uint32_t)INT32_MAX) {
        return (int32_t)u;
    }
    return (int32_t)(u - UINT32_C(0x80000000)) + INT32_MIN;
}

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31) with the nudge rounding half away from zero,
 * truncating division, and INT32_MIN * INT32_MIN saturated to INT32_MAX (the only overflowing case). */
static inline int32_t mnv2_srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? INT64_C(1) << 30 : INT64_C(1) - (INT64_C(1) << 30);
    /* |ab + nudge| < 2^62 + 2^30, and the quotient lies in int32 range once INT32_MIN^2 is excluded.
     * Division by a constant power of two: compiled to shifts, no 64-bit division routine. */
    return (int32_t)((ab + nudge) / (INT64_C(1) << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero; exponent in [0, 31]. */
static inline int32_t mnv2_rdbp(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)((INT64_C(1) << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return mnv2_asr(x, exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLM MultiplyByQuantizedMultiplier (double rounding): x * multiplier * 2^(shift - 31).
 * The left shift x << max(shift, 0) wraps modulo 2^32 exactly like TFLM's int32 code (codegen/requant.py
 * models the same wrap). shift in [-31, 31]. */
static inline int32_t mnv2_mbqm(int32_t x, int32_t multiplier, int shift)
{
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    const int32_t shifted = mnv2_u32_to_s32((uint32_t)x << left_shift);
    return mnv2_rdbp(mnv2_srdhm(shifted, multiplier), right_shift);
}

/* TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp: shift in [-31, 0] (a right shift only). */
static inline int32_t mnv2_mbqm_lt1(int32_t x, int32_t multiplier, int shift)
{
    return mnv2_rdbp(mnv2_srdhm(x, multiplier), -shift);
}

/* v clamped to [lo, hi] (lo <= hi). */
static inline int32_t mnv2_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

#endif /* MNV2_REQUANT_H */
