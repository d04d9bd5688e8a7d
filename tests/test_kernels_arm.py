"""The Arm kernel variants (templates/kernels/arm_dsp.c.j2, helium.c.j2) against the portable kernels, kernel by
kernel, on the emulated boards (QEMU).

The portable kernels are the reference here: tests/test_kernels_c.py holds them bit-exact with codegen/reference.py
(the numpy TFLite/TFLM interpreter) on the host, and the model tests (test_mcu_qemu.py) hold every variant bit-exact
with it on whole networks. A network only has channel counts that are multiples of 8, though; this test drives the
variants' edges: random layers of every kernel with odd channel counts and pixel counts (the scalar tails), partial
windows, stride 2, padding, every buffer-size fallback (wide stage A windows, layers wider than the stack buffers),
residual blocks run in place (out == in), MobileNetV2-like blocks on every generated stream and table (the
pixel-pair runs), extreme requantization parameters and accumulators, the layers' short-path flags (`fast`) as
tests/fast_flags_ref.h decides them, or a subset (the fallbacks). One firmware per (core, variant) builds both
kernel sets (the portable one with its functions renamed), generates the cases with a seeded PRNG inside the guest,
compares every output byte and checks guard bytes after every output and scratch buffer.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from codegen.emulate import command
from codegen.resources import resource_dir
from codegen.targets import load_target
from test_targets import toolchain_missing

ROOT = Path(__file__).resolve().parents[1]
API = ("mnv2_conv_s8", "mnv2_depthwise_s8", "mnv2_add_s8", "mnv2_avgpool_s8", "mnv2_fc_s8", "mnv2_block_s8",
       "mnv2_chain_s8", "mnv2_strips_s8")
# (target, kernels, optimisation): the targets' own -O2, and -Os as a user's size-optimised firmware build would
# compile the same sources (the Arm DSP kernels once entered their unrolled assembly loops 2 bytes off at -Os:
# functions 2-byte aligned; the Helium file did not compile: too few registers for one inline assembly).
VARIANTS = [("cortex-m7", "arm_dsp", "-O2"), ("cortex-m4", "arm_dsp", "-O2"), ("cortex-m33", "arm_dsp", "-O2"),
            ("cortex-m55", "arm_dsp", "-O2"), ("cortex-m55", "helium", "-O2"), ("cortex-m7", "arm_dsp", "-Os"),
            ("cortex-m55", "helium", "-Os")]

DRIVER = r"""
#include <stdint.h>
#include <string.h>
#include "mnv2_kernels.h"
#include "fast_flags_ref.h"

void ref_conv_s8(const mnv2_conv_params_t *p, const int8_t *in, int8_t *out, const int8_t *weight,
                 const int32_t *bias, const int32_t *mult, const int8_t *shift);
void ref_depthwise_s8(const mnv2_dw_params_t *p, const int8_t *in, int8_t *out, const int8_t *weight,
                      const int32_t *bias, const int32_t *mult, const int8_t *shift);
void ref_fc_s8(const mnv2_fc_params_t *p, const int8_t *in, int8_t *out, const int8_t *weight, const int32_t *bias);
void ref_avgpool_s8(const mnv2_avgpool_params_t *p, const int8_t *in, int8_t *out);
void ref_block_s8(const mnv2_block_params_t *p, const int8_t *in, int8_t *out, int8_t *scratch);

#define GUARD 16
static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}
static int32_t rint_(int32_t lo, int32_t hi) { return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1)); }

/* A bump allocator over a static pool; every block is followed by GUARD bytes of 0xA5. */
static uint8_t pool[1u << 21] __attribute__((aligned(16)));
static uint32_t used;
static int32_t dwi_blocks; /* blocks on the interleaved depthwise (MNV2_FAST_DWI) */
static int32_t dwh_blocks; /* of those, on int16 mid rows (MNV2_FAST_DWH) */
static int32_t dwh2_blocks; /* stride-2 blocks on the interleaved depthwise (int16 rows) */
static int32_t sdi_blocks; /* blocks whose stem writes whole interleaved mid rows itself (mnv2_stem_run) */
static void *take(uint32_t n)
{
    uint8_t *p;
    used = (used + 3u) & ~3u;
    if (used + n + GUARD > sizeof pool) {
        mnv2_sh_write0("pool exhausted\n");
        mnv2_sh_exit(7);
    }
    p = pool + used;
    memset(p + n, 0xA5, GUARD);
    used += n + GUARD;
    return p;
}
static int guard_ok(const void *p, uint32_t n)
{
    const uint8_t *g = (const uint8_t *)p + n;
    int i;
    for (i = 0; i < GUARD; ++i) {
        if (g[i] != 0xA5) {
            return 0;
        }
    }
    return 1;
}
static int8_t *rand_s8(uint32_t n)
{
    int8_t *p = take(n);
    uint32_t i;
    for (i = 0; i < n; ++i) {
        p[i] = (int8_t)rnd();
    }
    return p;
}
static int8_t *rand_w(uint32_t n) /* symmetric weights in [-127, 127], sometimes small */
{
    int8_t *p = take(n);
    const int32_t lim = (rnd() & 3u) ? 127 : 3;
    uint32_t i;
    for (i = 0; i < n; ++i) {
        p[i] = (int8_t)rint_(-lim, lim);
    }
    return p;
}
static int32_t *rand_bias(uint32_t n)
{
    int32_t *p;
    uint32_t i;
    int big;
    if ((rnd() & 7u) == 0) {
        return 0;
    }
    p = take(4 * n);
    big = (rnd() & 15u) == 0; /* near 2^30: the bound of the short requantization (ref_rq_fast_ok) */
    for (i = 0; i < n; ++i) {
        p[i] = big ? ((rnd() & 1u) ? 1 : -1) * (0x40000000 + rint_(-65536, 65536)) : rint_(-40000, 40000);
    }
    return p;
}
static void rand_requant(uint32_t n, int32_t **mult, int8_t **shift)
{
    uint32_t i;
    *mult = take(4 * n);
    *shift = take(n);
    for (i = 0; i < n; ++i) {
        (*mult)[i] = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        (*shift)[i] = rint_(-14, 1);
        if ((rnd() & 31u) == 0) {
            (*shift)[i] = rint_(-31, 8); /* extremes: wrap-around left shifts, full right shifts */
        }
        if ((rnd() & 63u) == 0) {
            (*mult)[i] = (int32_t)0x80000000u; /* INT32_MIN: the saturating case */
        }
    }
}
static void rand_act(int32_t *zp, int32_t *lo, int32_t *hi)
{
    *zp = rint_(-128, 127);
    if (rnd() & 1u) {
        *lo = -128;
        *hi = 127;
        if (rnd() & 1u) {
            *zp = -128; /* a ReLU output over the whole range: the depthwise and one-pixel streams' case */
        }
    } else {
        *lo = rint_(-128, 0);
        *hi = rint_(*lo, 127);
    }
}

/* rand_act for mnv2_block_params_t's int16_t fields */
static void rand_act16(int16_t *zp, int16_t *lo, int16_t *hi)
{
    int32_t z, l, h;
    rand_act(&z, &l, &h);
    *zp = (int16_t)z;
    *lo = (int16_t)l;
    *hi = (int16_t)h;
}

static int fail(const char *what, int32_t index)
{
    static char msg[80];
    const char *hex = "0123456789abcdef";
    int i, n = 0;
    while (what[n] && n < 60) {
        msg[n] = what[n];
        ++n;
    }
    msg[n++] = ' ';
    for (i = 7; i >= 0; --i) {
        msg[n++] = hex[((uint32_t)index >> (4 * i)) & 15u];
    }
    msg[n++] = '\n';
    msg[n] = 0;
    mnv2_sh_write0(msg);
    return 1;
}

static int compare(const char *what, int32_t index, const int8_t *a, const int8_t *b, uint32_t n)
{
    if (memcmp(a, b, n) != 0) {
        return fail(what, index);
    }
    if (!guard_ok(a, n) || !guard_ok(b, n)) {
        return fail("guard", index);
    }
    return 0;
}

static int case_conv(int32_t i)
{
    mnv2_conv_params_t p;
    int8_t *in, *w, *o1, *o2;
    int32_t *bias, *mult;
    int8_t *shift;
    uint32_t n_in, n_out;
    int32_t k, j, mnv2_like;
    memset(&p, 0, sizeof p);
    k = (rnd() & 1u) ? 1 : 3;
    p.kernel = k;
    p.stride = rint_(1, 2);
    p.in_h = rint_(1, 7);
    p.in_w = rint_(1, 9);
    p.in_c = (rnd() & 15u) == 0 ? rint_(500, 700) : rint_(1, 40);
    p.out_c = rint_(1, 23);
    if (k == 1 && (rnd() & 1u)) {
        p.stride = 1; /* the 1x1 fast path */
    }
    p.pad_top = k == 3 ? rint_(0, 1) : 0;
    p.pad_left = k == 3 ? rint_(0, 1) : 0;
    p.out_h = (p.in_h + p.pad_top + (k == 3 ? rint_(0, 1) : 0) - k) / p.stride + 1;
    p.out_w = (p.in_w + p.pad_left + (k == 3 ? rint_(0, 1) : 0) - k) / p.stride + 1;
    if (p.out_h < 1 || p.out_w < 1) {
        return 0;
    }
    p.in_zp = rint_(-128, 127);
    rand_act(&p.out_zp, &p.act_min, &p.act_max);
    /* MobileNetV2-like 1x1 (half the unpadded 1x1 cases): the input zero point folded into the bias (in_zp 0), 8, 16
     * or more inputs, right shifts only, the whole int8 range: the Helium assembly's all-groups kernels, with
     * odd and even pixel counts */
    mnv2_like = k == 1 && p.stride == 1 && (rnd() & 1u);
    if (mnv2_like) {
        const uint32_t pick = rnd() & 3u;
        p.in_c = pick == 0 ? 8 : pick == 1 ? 16 : pick == 2 ? 8 * rint_(3, 12) : rint_(17, 600);
        p.in_zp = 0;
        p.act_min = -128;
        p.act_max = 127;
        p.out_c = 4 * rint_(1, 6) + (int32_t)(rnd() & 3u) * ((rnd() & 3u) == 0);
    }
    n_in = (uint32_t)(p.in_h * p.in_w * p.in_c);
    n_out = (uint32_t)(p.out_h * p.out_w * p.out_c);
    in = rand_s8(n_in);
    w = rand_w((uint32_t)(p.out_c * k * k * p.in_c));
    bias = rand_bias((uint32_t)p.out_c);
    rand_requant((uint32_t)p.out_c, &mult, &shift);
    for (j = 0; mnv2_like && j < p.out_c; ++j) {
        shift[j] = (int8_t)rint_(-14, -1);
    }
    o1 = take(n_out);
    o2 = take(n_out);
    /* the generator's short-path flag (an eighth of the layers that allow it on the general path instead) */
    p.fast = (rnd() & 7u) ? ref_conv_fast(&p, bias, mult, shift) : 0;
    ref_conv_s8(&p, in, o1, w, bias, mult, shift);
    mnv2_conv_s8(&p, in, o2, w, bias, mult, shift);
    return compare("conv", i, o1, o2, n_out);
}

static int case_depthwise(int32_t i)
{
    mnv2_dw_params_t p;
    int8_t *in, *w, *o1, *o2;
    int32_t *bias, *mult;
    int8_t *shift;
    uint32_t n_out;
    memset(&p, 0, sizeof p);
    p.kernel = (rnd() & 3u) ? 3 : rint_(1, 5);
    p.stride = rint_(1, 2);
    p.in_h = rint_(1, 8);
    p.in_w = rint_(1, 10);
    p.channels = rint_(1, 45);
    p.pad_top = rint_(0, p.kernel / 2);
    p.pad_left = rint_(0, p.kernel / 2);
    p.out_h = (p.in_h + 2 * p.pad_top - p.kernel) / p.stride + 1;
    p.out_w = (p.in_w + 2 * p.pad_left - p.kernel) / p.stride + 1;
    if (p.out_h < 1 || p.out_w < 1) {
        return 0;
    }
    p.in_zp = rint_(-128, 127);
    rand_act(&p.out_zp, &p.act_min, &p.act_max);
    n_out = (uint32_t)(p.out_h * p.out_w * p.channels);
    in = rand_s8((uint32_t)(p.in_h * p.in_w * p.channels));
    w = rand_w((uint32_t)(p.kernel * p.kernel * p.channels));
    bias = rand_bias((uint32_t)p.channels);
    rand_requant((uint32_t)p.channels, &mult, &shift);
    o1 = take(n_out);
    o2 = take(n_out);
    p.fast = (rnd() & 7u) ? ref_dw_fast(p.channels, p.kernel, p.out_zp, p.act_min, p.act_max, bias, mult, shift) : 0;
    ref_depthwise_s8(&p, in, o1, w, bias, mult, shift);
    mnv2_depthwise_s8(&p, in, o2, w, bias, mult, shift);
    return compare("depthwise", i, o1, o2, n_out);
}

static int case_fc(int32_t i)
{
    mnv2_fc_params_t p;
    int8_t *in, *w, *o1, *o2;
    int32_t *bias, *mult;
    int8_t *shift;
    /* half the cases as generated models have them (the zero point folded, whole words of inputs): the five-row
     * kernel's (mnv2_dsp_fc5_run) */
    const int folded = (int)(rnd() & 1u);
    memset(&p, 0, sizeof p);
    p.in_n = folded ? 4 * rint_(1, 75) : rint_(1, 300);
    p.out_n = rint_(1, 23);
    p.in_zp = folded ? 0 : rint_(-128, 127);
    rand_act(&p.out_zp, &p.act_min, &p.act_max);
    rand_requant(1, &mult, &shift);
    p.mult = mult[0];
    p.shift = shift[0];
    in = rand_s8((uint32_t)p.in_n);
    w = rand_w((uint32_t)(p.in_n * p.out_n));
    bias = rand_bias((uint32_t)p.out_n);
    o1 = take((uint32_t)p.out_n);
    o2 = take((uint32_t)p.out_n);
    ref_fc_s8(&p, in, o1, w, bias);
    mnv2_fc_s8(&p, in, o2, w, bias);
    return compare("fc", i, o1, o2, (uint32_t)p.out_n);
}

static int case_avgpool(int32_t i)
{
    mnv2_avgpool_params_t p;
    int8_t *in, *o1, *o2;
    int32_t zp;
    memset(&p, 0, sizeof p);
    p.h = rint_(1, 18); /* up to 324 pixels: both sides of the DSP variant's 255-pixel int16 sums */
    p.w = rint_(1, 18);
    p.channels = rint_(1, 40);
    rand_act(&zp, &p.act_min, &p.act_max);
    in = rand_s8((uint32_t)(p.h * p.w * p.channels));
    o1 = take((uint32_t)p.channels);
    o2 = take((uint32_t)p.channels);
    ref_avgpool_s8(&p, in, o1);
    mnv2_avgpool_s8(&p, in, o2);
    return compare("avgpool", i, o1, o2, (uint32_t)p.channels);
}

/* Whether the block may run exactly in place (out == in): the memory planner's rule (codegen/memory.py
 * row_constraints): output row r may overwrite input rows that neither it nor a later row still reads. */
static int inplace_legal(const mnv2_block_params_t *p)
{
    int32_t r;
    for (r = 0; r < p->out_h; ++r) {
        int32_t free_rows;
        if (p->a_kernel) {
            int32_t next_mid = r * p->b_stride - p->b_pad_top + p->b_kernel;
            next_mid = next_mid < p->mid_h ? next_mid : p->mid_h;
            free_rows = next_mid >= p->mid_h ? p->in_h : next_mid * p->a_stride - p->a_pad_top;
        } else {
            free_rows = r * p->b_stride - p->b_pad_top;
        }
        free_rows = free_rows < r + 1 ? free_rows : r + 1;
        if (r + 1 > free_rows) {
            return 0;
        }
    }
    return 1;
}

/* The generated widened weights of mnv2_block_params_t (a_ww, b_ww, c_ww), written from the header's description of
 * their layout. A conv stream [out_c][n] (n = a_kernel^2 in_c, zero-padded to a multiple of 4): per output channel
 * pair, 2 bias (both channels, twice); per 4 inputs, the doubled weights of row 0's inputs (0, 2), (1, 3), then row
 * 1's; mult, mult, (2 zp + 1) << em1 of each channel, em1 of each (+ 256 on the last pair's second). A 3x3
 * depthwise [9][c]: per 4 channels, 2 (bias - in_zp * the 9 weights); per tap, the doubled weights of channels
 * (0, 2), (1, 3); 2 bias; per tap pair, the doubled weights of channels 0, 2, 1, 3; mult, (2 zp + 1) << em1, em1 of
 * channels 0, 2, 1, 3 (+ 256 on the last channel). int16 pairs, the low half first. The scaled (uniform) forms
 * below keep one shift word a pair or group. */
static int32_t pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}
static int uniform_ok(int32_t n, const int32_t *bias, const int8_t *shift, int32_t shift_, int32_t terms);
/* wide_conv at output zero point -128 with every channel within reach of MNV2_PAIR_SHIFT (uniform_ok), 3 times in 4
 * scaled as lower.py's widen_stream does: biases and weights times 2^(d + 1), d = MNV2_PAIR_SHIFT + shift, K' =
 * (2 zp + 1) << (MNV2_PAIR_SHIFT - 1) plus 2^(d - 1), one shift word 512 (MNV2_STREAM_UNIFORM). */
static const int32_t *wide_conv(const int8_t *w, int32_t out_c, int32_t n, const int32_t *bias, const int32_t *mult,
                                const int8_t *shift, int32_t zp)
{
    const int32_t n4 = (n + 3) & ~3;
    const int u = zp == -128 && uniform_ok(out_c & ~1, bias, shift, MNV2_PAIR_SHIFT, n) && (rnd() & 3u) != 0;
    int32_t *d = take(4u * (uint32_t)(out_c / 2 * (n4 + 10))), *q = d;
    int32_t o, g, r, j, k[2];
    for (o = 0; o + 2 <= out_c; o += 2) {
        for (j = 0; j < 2; ++j) {
            k[j] = u ? 2 << (MNV2_PAIR_SHIFT + shift[o + j]) : 2;
        }
        for (j = 0; j < 2; ++j) {
            *q++ = bias ? k[0] * bias[o] : 0;
            *q++ = bias ? k[1] * bias[o + 1] : 0;
        }
        for (g = 0; g < n4; g += 4) {
            for (r = 0; r < 2; ++r) {
                int32_t x[4];
                for (j = 0; j < 4; ++j) {
                    x[j] = g + j < n ? k[r] * w[(o + r) * n + g + j] : 0;
                }
                *q++ = pack16(x[0], x[2]);
                *q++ = pack16(x[1], x[3]);
            }
        }
        *q++ = mult[o];
        *q++ = mult[o + 1];
        for (j = 0; j < 2; ++j) {
            *q++ = u ? (int32_t)((uint32_t)(2 * zp + 1) << (MNV2_PAIR_SHIFT - 1)) + k[j] / 4
                     : (int32_t)((uint32_t)(2 * zp + 1) << ((uint32_t)(-shift[o + j] - 1) & 31u));
        }
        *q++ = u ? 512 : -shift[o] - 1; /* uniform: one shift word */
        if (!u) {
            *q++ = -shift[o + 1] - 1;
        }
    }
    if (q > d) {
        q[-1] += 256; /* the last pair marked */
    }
    return d;
}
/* The one-pixel stream of a 1x1 stage A of 8 inputs (a_one), each channel scaled by 2^d, d = MNV2_ONE_SHIFT + shift
 * (lower.py's uniform_scale): per output channel, 2^(d + 1) bias; 2^(d + 1) times the weights of inputs (0, 2), (1, 3),
 * (4, 6), (5, 7); mult, (2 zp + 1) << (MNV2_ONE_SHIFT - 1) plus 2^(d - 1), 512 (+ 256 on the last channel); where a
 * channel is out of reach (uniform_ok), the classic stream: doubled, (2 zp + 1) << em1, em1. wide_dw likewise. */
static const int32_t *wide_one(const int8_t *w, int32_t out_c, const int32_t *bias, const int32_t *mult,
                               const int8_t *shift, int32_t zp)
{
    const int u = uniform_ok(out_c, bias, shift, MNV2_ONE_SHIFT, 8);
    int32_t *d = take(4u * (uint32_t)(out_c * 8)), *q = d;
    int32_t o;
    for (o = 0; o < out_c; ++o) {
        const int8_t *r = w + o * 8;
        const int32_t d_ = MNV2_ONE_SHIFT + shift[o], k = u ? 2 << d_ : 2;
        *q++ = bias ? k * bias[o] : 0;
        *q++ = pack16(k * r[0], k * r[2]);
        *q++ = pack16(k * r[1], k * r[3]);
        *q++ = pack16(k * r[4], k * r[6]);
        *q++ = pack16(k * r[5], k * r[7]);
        *q++ = mult[o];
        *q++ = u ? (int32_t)((uint32_t)(2 * zp + 1) << (MNV2_ONE_SHIFT - 1)) + (1 << (d_ - 1))
                 : (int32_t)((uint32_t)(2 * zp + 1) << ((uint32_t)(-shift[o] - 1) & 31u));
        *q++ = u ? 512 : -shift[o] - 1;
    }
    q[-1] += 256; /* the last channel marked */
    return d;
}
/* Whether a stream scaled by 2^d, d = shift_ + shift[j], can hold n channels whose accumulators are bias + terms
 * products (lower.py's uniform_scale): every d in [1, 7], (|bias| + terms * 255 * 128) 2^d <= 2^30 - 2. */
static int uniform_ok(int32_t n, const int32_t *bias, const int8_t *shift, int32_t shift_, int32_t terms)
{
    int32_t j;
    for (j = 0; j < n; ++j) {
        const int32_t d_ = shift_ + shift[j];
        const int64_t b = bias ? (bias[j] < 0 ? -(int64_t)bias[j] : bias[j]) : 0;
        if (d_ < 1 || d_ > 7 || ((b + terms * 255 * 128) << d_) > (1 << 30) - 2) {
            return 0;
        }
    }
    return 1;
}
static const int32_t *wide_dw(const int8_t *w, int32_t c, const int32_t *bias, const int32_t *mult,
                              const int8_t *shift, int32_t in_zp, int32_t zp)
{
    static const int pairs[8] = {1, 2, 4, 5, 7, 8, 3, 6}; /* taps ky * 3 + kx, paired */
    int32_t *d = take(4u * (uint32_t)(c / 4 * 54)), *q = d;
    const int u = uniform_ok(c, bias, shift, MNV2_DW_SHIFT, 9);
    int32_t g, t, j, k[4];
    for (g = 0; g < c; g += 4) {
        for (j = 0; j < 4; ++j) {
            int32_t sum = 0;
            k[j] = u ? 2 << (MNV2_DW_SHIFT + shift[g + j]) : 2; /* 2^(d + 1), or doubled */
            for (t = 0; t < 9; ++t) {
                sum += w[t * c + g + j];
            }
            *q++ = k[j] * (bias[g + j] - in_zp * sum);
        }
        for (t = 0; t < 9; ++t) {
            const int8_t *x = w + t * c + g;
            *q++ = pack16(k[0] * x[0], k[2] * x[2]);
            *q++ = pack16(k[1] * x[1], k[3] * x[3]);
        }
        for (j = 0; j < 4; ++j) {
            *q++ = k[j] * bias[g + j];
        }
        for (t = 0; t < 8; t += 2) { /* (w_t, w_u) of channels 0, 2, 1, 3 */
            const int8_t *x = w + pairs[t] * c + g, *y = w + pairs[t + 1] * c + g;
            *q++ = pack16(k[0] * x[0], k[0] * y[0]);
            *q++ = pack16(k[2] * x[2], k[2] * y[2]);
            *q++ = pack16(k[1] * x[1], k[1] * y[1]);
            *q++ = pack16(k[3] * x[3], k[3] * y[3]);
        }
        for (j = 0; j < 4; ++j) { /* channels 0, 2, 1, 3: uniform (mult, K') of each, then 512; classic (mult, K,
                                   * em1) of each */
            const int32_t o = j == 1 ? 2 : j == 2 ? 1 : j;
            *q++ = mult[g + o];
            *q++ = u ? (int32_t)((uint32_t)(2 * zp + 1) << (MNV2_DW_SHIFT - 1)) + k[o] / 4
                     : (int32_t)((uint32_t)(2 * zp + 1) << ((uint32_t)(-shift[g + o] - 1) & 31u));
            if (!u || j == 3) {
                *q++ = u ? 512 : -shift[g + o] - 1;
            }
        }
    }
    if (q > d) {
        q[-1] += 256; /* the last channel marked */
    }
    return d;
}
/* The interleaved depthwise's stream (MNV2_FAST_DWI: b_ww), from lower.py's description of widen_dwi_stream: per
 * channel pair (c, c + 1), each channel scaled by 2^(d + 1) (uniform_ok at MNV2_DW_SHIFT), the folded biases of c, c,
 * c + 1, c + 1; per window row (w0, w1), (w1, w2) of c, then of c + 1; mult, K' of c, then of c + 1; a mark word,
 * 256 on the last pair, else 0. */
static const int32_t *wide_dwi(const int8_t *w, int32_t c, const int32_t *bias, const int32_t *mult,
                               const int8_t *shift, int32_t in_zp, int32_t zp)
{
    int32_t *d = take(4u * (uint32_t)(c / 2 * 21)), *q = d;
    int32_t g, j, r, t, k[2];
    for (g = 0; g < c; g += 2) {
        for (j = 0; j < 2; ++j) {
            int32_t sum = 0;
            k[j] = 2 << (MNV2_DW_SHIFT + shift[g + j]);
            for (t = 0; t < 9; ++t) {
                sum += w[t * c + g + j];
            }
            q[0] = q[1] = k[j] * (bias[g + j] - in_zp * sum);
            q += 2;
        }
        for (r = 0; r < 3; ++r) {
            for (j = 0; j < 2; ++j) {
                const int8_t *x = w + 3 * r * c + g + j;
                *q++ = pack16(k[j] * x[0], k[j] * x[c]);
                *q++ = pack16(k[j] * x[c], k[j] * x[2 * c]);
            }
        }
        for (j = 0; j < 2; ++j) {
            *q++ = mult[g + j];
            *q++ = (int32_t)((uint32_t)(2 * zp + 1) << (MNV2_DW_SHIFT - 1)) + k[j] / 4;
        }
        *q++ = 0;
    }
    q[-1] = 256;
    return d;
}
/* The residual ADD's table of mnv2_block_params_t's add_lut, from the header's description: gemmlowp's rounding
 * doubling high multiply and rounding divide by a power of two, written here again. */
static int32_t srdhm(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * b, s = ab + (ab >= 0 ? (1 << 30) : 1 - (1 << 30));
    return (int32_t)(s >= 0 ? s >> 31 : -((-s) >> 31));
}
static int32_t rdbpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)((1u << e) - 1u), rem = x & mask, threshold = (mask >> 1) + (x < 0);
    return (x >> e) + (rem > threshold);
}
static const int32_t *add_table(const mnv2_block_params_t *p)
{
    int32_t *t = take(4u * 512u);
    int32_t x;
    for (x = -128; x < 128; ++x) {
        t[128 + x] = 2 * rdbpot(srdhm((x - p->in_zp) * (1 << p->add_left_shift), p->add_in_mult), -p->add_in_shift);
        t[384 + x] = 2 * rdbpot(srdhm((x - p->proj_zp) * (1 << p->add_left_shift), p->add_proj_mult),
                                -p->add_proj_shift);
    }
    return t;
}

/* The interleaved depthwise's streams of a block (wide_dwi) and its projection's, whose inputs (0, 1), (2, 3) of each
 * 4 are paired (lower.py's dwi_input_order: the weights' inputs taken in the order 0, 2, 1, 3). */
static void interleave_streams(mnv2_block_params_t *p, const int8_t *bw, const int32_t *bb, const int32_t *bm,
                               const int8_t *bs, const int8_t *cw, const int32_t *cb, const int32_t *cm,
                               const int8_t *cs)
{
    int8_t *cw2 = take((uint32_t)(p->out_c * p->mid_c));
    int32_t j;
    for (j = 0; j < p->out_c * p->mid_c; ++j) {
        cw2[j] = cw[(j & ~3) | ((j & 1) << 1) | ((j & 2) >> 1)];
    }
    p->b_ww = wide_dwi(bw, p->mid_c, bb, bm, bs, p->mid_zp, p->dw_zp);
    p->c_ww = wide_conv(cw2, p->out_c, p->mid_c, cb, cm, cs, p->proj_zp);
}

static int case_block(int32_t i)
{
    mnv2_block_params_t p, pl;
    int8_t *in1, *in2, *o1, *o2, *s1, *s2, *aw = 0, *bw, *cw;
    int32_t *ab = 0, *am = 0, *bb, *bm, *cb, *cm;
    int8_t *as = 0, *bs, *cs;
    uint32_t n_in, n_out, n_scratch, n_ref_scratch;
    int32_t ka, wide = (rnd() & 15u) == 0, inplace, stem, j, mnv2_like, full, a_wide, one, probe, tri, dwi, dwi2, sdi;
    memset(&p, 0, sizeof p);
    ka = (int32_t)(rnd() % 3u); /* 0: none, 1: 1x1 expansion, 2: a 3x3 stem */
    p.a_kernel = ka == 2 ? 3 : ka;
    p.a_stride = p.a_kernel == 3 ? rint_(1, 2) : ((rnd() & 3u) ? 1 : 2);
    p.in_h = rint_(1, 8);
    p.in_w = rint_(1, 11);
    p.in_c = p.a_kernel == 3 ? ((rnd() & 3u) ? rint_(1, 8) : rint_(57, 70)) : rint_(1, 40);
    /* MobileNetV2-like depthwise (half the blocks): 3 x 3, channels a multiple of 8, right shifts only, the whole
     * int8 range, wider rows: the runs of interior pixels the Helium assembly takes */
    mnv2_like = (rnd() & 1u);
    full = mnv2_like && (rnd() & 3u) == 0; /* and on every stream and table where it can (the pixel-pair runs) */
    /* or shaped for the projection on int8 weights of three pixels with the table ADD (mnv2_dsp_block_tri_fast):
     * a residual 1x1-expansion block, rows of odd width, mid channels a multiple of 8, any channel count */
    tri = mnv2_like && !full && p.a_kernel == 1 && (rnd() & 3u) == 0;
    /* or shaped for the interleaved depthwise (MNV2_FAST_DWI, Arm DSP): a 1x1 expansion to even rows of 8k channels
     * (or a 3x3 stage A, half of them even), a 3x3 stride-1 depthwise padded by 1, both streams, the projection's
     * zero point folded, an even out_c */
    dwi = MNV2_TEST_DWI && mnv2_like && !tri && p.a_kernel > 0 && (rnd() & 1u);
    if (mnv2_like && p.a_kernel != 3) {
        p.in_w = rint_(4, 24);
        p.in_c = p.a_kernel ? ((rnd() & 3u) ? 8 : p.in_c) : 8 * rint_(1, 5); /* 8: the one-pixel stream */
    }
    if (tri) {
        p.a_stride = 1;
        p.in_w |= 1;
        p.in_c = rint_(1, 24);
    }
    /* half of those with a 1x1 expansion of stride 2 instead, on rows of 4k pixels (int16 rows only) */
    dwi2 = dwi && p.a_kernel == 1 && (rnd() & 1u);
    if (dwi && p.a_kernel == 1) {
        p.a_stride = 1;
        p.in_w = dwi2 ? 4 * rint_(1, 6) : 2 * rint_(1, 12);
        p.in_h = rint_(2, 8);
        p.in_c = (rnd() & 1u) ? 8 : 2 * rint_(1, 20); /* even: the residual's out_c */
    }
    stem = p.a_kernel == 3 && p.a_stride == 2 && (rnd() & 1u); /* MobileNetV2's stem: 3 channels, wider rows */
    /* the interleaved ones shaped for the stem writing its whole rows interleaved itself (mnv2_stem_run): padded by
     * 1 on the left, every window's right column inside the row, rows of even width, on its marked stream */
    sdi = stem && dwi;
    if (stem) {
        p.in_c = 3;
        p.in_w = sdi ? 4 * rint_(2, 6) + rint_(0, 1) : rint_(5, 24);
        p.in_h = sdi ? rint_(4, 9) : p.in_h; /* sdi: whole rows (input rows iy0 - 1 to iy0 + 2) */
    }
    if (p.a_kernel == 3) {
        p.a_pad_top = rint_(0, 1);
        p.a_pad_left = sdi ? 1 : rint_(0, 1);
        p.mid_h = (p.in_h + p.a_pad_top + rint_(0, 1) - 3) / p.a_stride + 1;
        p.mid_w = (p.in_w + p.a_pad_left + (sdi ? 0 : rint_(0, 1)) - 3) / p.a_stride + 1;
    } else if (p.a_kernel == 1) {
        p.mid_h = (p.in_h - 1) / p.a_stride + 1;
        p.mid_w = (p.in_w - 1) / p.a_stride + 1;
    } else {
        p.mid_h = p.in_h;
        p.mid_w = p.in_w;
    }
    if (p.mid_h < 1 || p.mid_w < 1) {
        return 0;
    }
    p.mid_c = p.a_kernel ? (wide        ? rint_(1025, 1100)
                            : !mnv2_like ? rint_(1, 60)
                            : tri || dwi   ? 8 * ((rnd() & 3u) ? rint_(1, 8) : rint_(9, 80))
                            : (rnd() & 3u) ? ((rnd() & 1u)   ? 8 * rint_(1, 7)
                                              : (rnd() & 1u) ? 8 * rint_(25, 45)
                                                             : 4 * rint_(130, 256))
                                           : 2 * rint_(1, 24))
                         : p.in_c; /* mnv2_like: sometimes over 192 channels (depthwise streams of any width) or
                                    * 520-1024 (the widened pair's projection up to MNV2_DSP_WIDE_MAX, the raw pair's
                                    * beyond it), or any even number (the one-pixel stream's entry into its 8-channel
                                    * passes) */
    p.b_kernel = mnv2_like || (rnd() & 3u) ? 3 : rint_(1, 5);
    p.b_stride = rint_(1, 2);
    p.b_pad_top = rint_(0, p.b_kernel / 2);
    p.b_pad_left = rint_(0, p.b_kernel / 2);
    if (mnv2_like && ((p.a_kernel < 3 && p.a_stride == 1 && (full || tri || (rnd() & 1u))) || dwi)) { /* residual */
        p.b_stride = dwi2 ? 2 : 1;
        p.b_pad_top = p.b_pad_left = 1;
    }
    p.out_h = (p.mid_h + 2 * p.b_pad_top - p.b_kernel) / p.b_stride + 1;
    p.out_w = (p.mid_w + 2 * p.b_pad_left - p.b_kernel) / p.b_stride + 1;
    if (p.out_h < 1 || p.out_w < 1) {
        return 0;
    }
    p.out_c = dwi ? 2 * rint_(1, 12) : rint_(1, 23);
    p.residual = 0;
    if (p.out_h == p.in_h && p.out_w == p.in_w && (full || tri || (rnd() & 1u))) {
        p.residual = 1;
        p.out_c = p.in_c;
        p.add_left_shift = 20;
        p.add_in_mult = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        p.add_proj_mult = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        p.add_out_mult = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        p.add_in_shift = rint_(-3, 0);
        p.add_proj_shift = rint_(-3, 0);
        p.add_out_shift = (rnd() & 7u) ? rint_(-22, -14) : rint_(-31, -23); /* past the table's short rescale */
        if (rnd() & 1u) { /* rescales by powers of two: the offset inputs' (a + b) / 4, half of them ties */
            p.add_in_mult = p.add_proj_mult = p.add_out_mult = 0x40000000;
            p.add_in_shift = p.add_proj_shift = 0;
            p.add_out_shift = -20;
        }
        rand_act16(&p.add_out_zp, &p.add_act_min, &p.add_act_max);
    }
    p.in_zp = rint_(-128, 127);
    rand_act16(&p.mid_zp, &p.mid_act_min, &p.mid_act_max);
    rand_act16(&p.dw_zp, &p.dw_act_min, &p.dw_act_max);
    rand_act16(&p.proj_zp, &p.proj_act_min, &p.proj_act_max);
    if (p.a_kernel == 0) {
        p.mid_zp = p.in_zp;
    }
    /* stage A on a generated widened stream (half the time when it has one), with constants it can take */
    one = p.a_kernel == 1 && p.in_c == 8; /* the one-pixel stream's shape: mostly on it */
    a_wide = !wide && p.a_kernel > 0 && (p.a_kernel > 1 || p.in_c % 4 == 0) && p.mid_c >= 2 &&
             (sdi || (one ? (rnd() & 3u) != 0 : (rnd() & 1u)));
    one = one && a_wide && p.mid_c % 2 == 0 && (rnd() & 7u) != 0;
    if ((stem && (rnd() & 1u)) || a_wide) { /* the whole int8 range, as the Helium stem's fast path needs */
        p.mid_act_min = -128;
        p.mid_act_max = 127;
        if (sdi || (one ? (rnd() & 7u) != 0 : (rnd() & 1u))) {
            p.mid_zp = -128; /* a ReLU6 expansion's, as mnv2_dsp_one_run needs (else its callers' fallback) */
        }
    }
    if (mnv2_like) { /* and a MobileNetV2-like projection and residual ADD (no activation): the short paths */
        p.dw_act_min = -128;
        p.dw_act_max = 127;
        if (full || dwi || (rnd() & 1u)) {
            p.dw_zp = -128; /* a ReLU6 depthwise, as MobileNetV2's: the depthwise streams (MNV2_FAST_DW) */
        }
        p.proj_act_min = -128;
        p.proj_act_max = 127;
        if (p.residual && (full || tri || (rnd() & 1u))) {
            p.add_act_min = -128;
            p.add_act_max = 127;
        }
    }
    /* the stage A / projection product zero points: as the data's, or 0 (a bias that folds them, as for 1x1) */
    p.a_zp = (rnd() & 1u) ? 0 : p.in_zp;
    p.c_zp = dwi || (rnd() & 1u) ? 0 : p.dw_zp;
    /* the variant runs column-sliding half the time where it applies; the portable reference always line buffers */
    p.cs_cols = p.a_kernel > 0 && p.b_kernel > p.b_stride && !full && !dwi && (rnd() & 1u)
                    ? p.b_kernel + rint_(0, 3) * p.b_stride
                    : 0;
    /* probes, so that an error of 1 in a kernel reaches the block's output instead of vanishing in the rounding of
     * the stages after it (blocks without a residual ADD): the projection picks one mid channel for each output, over
     * the whole int8 range, and requantizes it by exactly 1, zero points matched (probe 2, an eighth of the blocks),
     * or by 2^30 2^-1 on the short requantization (probe 3, an eighth: half its results are rounding ties); with
     * stage A (three quarters of the blocks on the one-pixel stream, a quarter of the others) the depthwise passes
     * stage A's outputs through the same way before probe 2's projection (probe 1) */
    probe = p.residual ? 0
            : p.a_kernel > 0 && !dwi && (one ? (rnd() & 3u) != 0 : (rnd() & 3u) == 0) ? 1
            : (rnd() & 3u) == 0 ? 2 + (int32_t)(rnd() & 1u) : 0;
    if (probe) {
        p.proj_zp = probe < 3 ? p.c_zp : p.proj_zp;
        p.proj_act_min = -128;
        p.proj_act_max = 127;
    }
    if (probe == 1) {
        p.dw_zp = p.mid_zp;
        p.dw_act_min = -128;
        p.dw_act_max = 127;
    }
    pl = p;
    pl.cs_cols = 0;
    n_in = (uint32_t)(p.in_h * p.in_w * p.in_c);
    n_out = (uint32_t)(p.out_h * p.out_w * p.out_c);
    n_ref_scratch = (uint32_t)MNV2_BLOCK_SCRATCH_SIZE(pl);
    if (p.a_kernel) {
        aw = rand_w((uint32_t)(p.mid_c * p.a_kernel * p.a_kernel * p.in_c));
        ab = rand_bias((uint32_t)p.mid_c);
        rand_requant((uint32_t)p.mid_c, &am, &as);
        if ((stem && (rnd() & 1u)) || a_wide) {
            /* the one-pixel or the scaled pair stream's shifts (wide_one, wide_conv), else mostly beyond */
            const int32_t reach = sdi                  ? MNV2_PAIR_SHIFT
                                  : (rnd() & 7u) == 0 ? 0
                                  : one               ? MNV2_ONE_SHIFT
                                                      : MNV2_PAIR_SHIFT;
            for (j = 0; j < p.mid_c; ++j) {
                as[j] = (int8_t)(reach ? rint_(1 - reach, 7 - reach)
                                       : rint_(-14, -1)); /* right shifts only, as the Helium stem's path needs */
                am[j] = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu)); /* no INT32_MIN: the short requantization */
            }
        }
    }
    bw = rand_w((uint32_t)(p.b_kernel * p.b_kernel * p.mid_c));
    do {
        bb = rand_bias((uint32_t)p.mid_c);
    } while (full && !bb);
    rand_requant((uint32_t)p.mid_c, &bm, &bs);
    for (j = 0; mnv2_like && j < p.mid_c; ++j) { /* mostly within the depthwise stream's reach (wide_dw) */
        bs[j] = (int8_t)(dwi || (rnd() & 63u) ? rint_(1 - MNV2_DW_SHIFT, 7 - MNV2_DW_SHIFT) : rint_(-14, -1));
        bm[j] = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu)); /* no INT32_MIN: the short requantization */
    }
    cw = rand_w((uint32_t)(p.out_c * p.mid_c));
    do {
        cb = rand_bias((uint32_t)p.out_c);
    } while ((full || tri) && !cb);
    rand_requant((uint32_t)p.out_c, &cm, &cs);
    for (j = 0; mnv2_like && j < p.out_c; ++j) {
        cs[j] = (int8_t)rint_(-14, -1);
        if (p.mid_c > 512 || dwi) { /* the wide projections' short path (the raw pair's beyond MNV2_DSP_WIDE_MAX) */
            cm[j] = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
        }
    }
    if (probe) { /* the pass-through weights (see above); the picked channels spread over the mid channels */
        memset(cw, 0, (size_t)(p.out_c * p.mid_c));
        for (j = 0; j < p.out_c; ++j) {
            cw[j * p.mid_c + j * p.mid_c / p.out_c] = 1;
            if (cb) {
                cb[j] = 0;
            }
            cm[j] = 0x40000000;
            cs[j] = probe < 3 ? 1 : -1;
        }
    }
    if (probe == 1) {
        memset(bw, 0, (size_t)(p.b_kernel * p.b_kernel * p.mid_c));
        for (j = 0; j < p.mid_c; ++j) {
            bw[(p.b_pad_top * p.b_kernel + p.b_pad_left) * p.mid_c + j] = 1;
            if (bb) { /* (rand_bias gives none an eighth of the time) */
                bb[j] = 0;
            }
            bm[j] = 0x40000000;
            bs[j] = 1;
        }
    }
    if (one) {
        p.a_ww = wide_one(aw, p.mid_c, ab, am, as, p.mid_zp);
        p.a_one = 1;
    } else if (a_wide) {
        p.a_ww = wide_conv(aw, p.mid_c, p.a_kernel * p.a_kernel * p.in_c, ab, am, as, p.mid_zp);
    }
    if (p.b_kernel == 3 && p.mid_c % 4 == 0 && bb && (full || dwi || (rnd() & 1u))) {
        p.b_ww = wide_dw(bw, p.mid_c, bb, bm, bs, p.mid_zp, p.dw_zp);
    }
    if (p.mid_c % 4 == 0 && p.out_c >= 2 && !tri && (full || dwi || (rnd() & 1u))) {
        p.c_ww = wide_conv(cw, p.out_c, p.mid_c, cb, cm, cs, p.proj_zp);
    }
    if (p.residual && p.add_left_shift == 20 && p.add_in_shift <= 0 && p.add_in_shift > -32 && p.add_proj_shift <= 0 &&
        p.add_proj_shift > -32 && (full || tri || (rnd() & 1u))) {
        p.add_lut = add_table(&p);
    }
    {
        const mnv2_stage_w_t stage[3] = {{aw, ab, am, as}, {bw, bb, bm, bs}, {cw, cb, cm, cs}};
        memcpy(p.stage, stage, sizeof stage);
        memcpy(pl.stage, stage, sizeof stage);
    }
    /* the generator's short-path flags; an eighth of the blocks with a random subset of them (each path's fallback) */
    p.fast = (int16_t)(ref_block_fast(&p) & ((rnd() & 7u) ? 31 : (int)(rnd() & 31u)));
    /* the interleaved depthwise where the generator would give it (lower.py: memory.py's paddable, both streams,
     * the depthwise's uniform, the short paths, the projection's zero point folded), in 7 of 8 such blocks; its
     * projection stream reads inputs (0, 1), (2, 3) of each 4 as a pair (lower.py's dwi_input_order) */
    if (dwi && p.a_kernel > 0 && p.b_kernel == 3 && p.b_stride == 1 && p.b_pad_top == 1 && p.b_pad_left == 1 &&
        p.mid_w % 2 == 0 && p.mid_h >= 2 && p.mid_c % 8 == 0 && p.mid_c <= 640 && !p.cs_cols && p.c_zp == 0 &&
        p.out_c % 2 == 0 && (!p.residual || p.out_c <= 256) && p.b_ww && p.c_ww && cb && p.dw_zp == -128 &&
        uniform_ok(p.mid_c, bb, bs, MNV2_DW_SHIFT, 9) && (p.fast & MNV2_FAST_DW) && (p.fast & MNV2_FAST_PROJ) &&
        (rnd() & 7u)) {
        interleave_streams(&p, bw, bb, bm, bs, cw, cb, cm, cs);
        p.fast |= MNV2_FAST_DWI;
        ++dwi_blocks;
        /* arm_dsp.c.j2's stem_direct (its marked stream: 7 groups, the mark in the first pair's shift word) */
        sdi_blocks += p.a_kernel == 3 && p.a_stride == 2 && p.in_c == 3 && p.a_pad_left == 1 && p.a_ww && ab &&
                      (p.fast & MNV2_FAST_A) && p.mid_zp == -128 && p.mid_act_min == -128 && p.mid_act_max == 127 &&
                      (p.a_ww[4 + 4 * 7 + 4] & 512) && p.in_h >= 4 && ((p.in_w - 2) >> 1) + 1 >= p.mid_w;
        if (MNV2_TEST_DWH(p.mid_c) && (rnd() & 3u)) { /* int16 mid rows where a kernel is compiled for mid_c */
            p.fast |= MNV2_FAST_DWH;
            ++dwh_blocks;
        }
    } else if (dwi2 && p.b_kernel == 3 && p.b_stride == 2 && p.b_pad_top == 1 && p.b_pad_left == 1 &&
               p.mid_w % 4 == 0 && p.mid_h >= 2 && p.mid_c % 8 == 0 && MNV2_TEST_DWH2(p.mid_c) && !p.cs_cols &&
               p.c_zp == 0 && p.out_c % 2 == 0 && p.b_ww && p.c_ww && cb && p.dw_zp == -128 &&
               uniform_ok(p.mid_c, bb, bs, MNV2_DW_SHIFT, 9) && (p.fast & MNV2_FAST_DW) && (p.fast & MNV2_FAST_PROJ)) {
        /* of stride 2 (memory.py's paddable: rows of 4k pixels, padded by 1), on int16 mid rows only */
        interleave_streams(&p, bw, bb, bm, bs, cw, cb, cm, cs);
        p.fast |= MNV2_FAST_DWI | MNV2_FAST_DWH;
        ++dwh2_blocks;
    }
    n_scratch = (uint32_t)MNV2_BLOCK_SCRATCH_SIZE(p);
    inplace = p.residual && !p.cs_cols && inplace_legal(&p) && (rnd() & 1u);
    in1 = rand_s8(n_in);
    in2 = take(n_in);
    memcpy(in2, in1, n_in);
    s1 = take(n_ref_scratch);
    s2 = take(n_scratch);
    o1 = inplace ? in1 : take(n_out);
    o2 = inplace ? in2 : take(n_out);
    ref_block_s8(&pl, in1, o1, s1);
    mnv2_block_s8(&p, in2, o2, s2);
    if (!guard_ok(s1, n_ref_scratch) || !guard_ok(s2, n_scratch)) {
        return fail("block scratch guard", i);
    }
    return compare((p.fast & MNV2_FAST_DWI) ? (inplace ? "interleaved block in place" : "interleaved block")
                   : inplace ? "block in place" : "block", i, o1, o2, n_out);
}

int main(void)
{
    int32_t i, bad = 0;
    for (i = 0; i < CASES && bad < 5; ++i) {
        used = 0;
        switch (i % 6) { /* blocks twice as often as the single kernels: they hold most paths */
        case 0:
        case 5: bad += case_block(i); break;
        case 1: bad += case_conv(i); break;
        case 2: bad += case_depthwise(i); break;
        case 3: bad += case_avgpool(i); break;
        default: bad += case_fc(i); break;
        }
    }
    mnv2_sh_write0(bad ? "kernel mismatch\n" : "kernels ok\n");
    {
        char b[16] = "dwi 0000000\n", h[16] = "dwh 0000000\n", h2[16] = "dh2 0000000\n", sd[16] = "sdi 0000000\n";
        for (i = 10; i >= 4; --i, dwi_blocks /= 10, dwh_blocks /= 10, dwh2_blocks /= 10, sdi_blocks /= 10) {
            b[i] = (char)('0' + dwi_blocks % 10);
            h[i] = (char)('0' + dwh_blocks % 10);
            h2[i] = (char)('0' + dwh2_blocks % 10);
            sd[i] = (char)('0' + sdi_blocks % 10);
        }
        mnv2_sh_write0(b);
        mnv2_sh_write0(h);
        mnv2_sh_write0(h2);
        mnv2_sh_write0(sd);
    }
    return bad ? 1 : 0;
}
"""


def render(template: str, dst: Path, **extra) -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROOT / "templates")), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    dst.mkdir(parents=True)
    prov = f"/*\n * test build of the {template} kernels\n */"
    (dst / "mnv2_kernels.h").write_text(env.get_template("kernels/mnv2_kernels.h.j2").render(provenance=prov))
    (dst / "mnv2_kernels.c").write_text(env.get_template(f"kernels/{template}.c.j2").render(provenance=prov, **extra))
    shutil.copy(ROOT / "firmware" / "mnv2_requant.h", dst / "mnv2_requant.h")


@pytest.mark.parametrize("target,kernels,opt", VARIANTS, ids=[f"{t}-{k}{o}" for t, k, o in VARIANTS])
def test_variant_matches_portable(target, kernels, opt, tmp_path):
    if reason := toolchain_missing(target):
        pytest.skip(reason)
    t = load_target(target)
    assert "-O2" in t.cflags  # the optimisation below replaces the target's
    fw = resource_dir("firmware")
    render("portable", tmp_path / "ref")
    # -Os Arm DSP: without the int8 rows' widening (the generator's dwh_relayout false), so that the int16-row blocks
    # whose stage A does not write the rows itself run on the int8 interleaved kernel in their larger slots, and
    # without weights widened on the stack (runtime_ww false: the int8 kernels instead)
    relayout = not (kernels == "arm_dsp" and opt == "-Os")
    render(kernels, tmp_path / "fast", **({} if relayout else {"dwh_relayout": False, "runtime_ww": False}))
    # the streams' shifts, as the rendered kernels define them (wide_conv, wide_one, wide_dw)
    fast = (tmp_path / "fast" / "mnv2_kernels.c").read_text()
    shifts = "".join("#define %s %s\n" % m for m in re.findall(r"#define (MNV2_(?:ONE|DW|PAIR)_SHIFT) (\d+)", fast))
    dwi = "#define MNV2_TEST_DWI %d\n" % (kernels == "arm_dsp")  # the interleaved depthwise: Arm DSP only
    # its int16-row kernels, for the channel counts the rendered kernels have (the template's default list)
    dwh_c = sorted({int(c) for c in re.findall(r"static void mnv2_dsp_dwh_run_(\d+)\(", fast)})
    assert ("#define MNV2_DSP_DWH_RELAYOUT (MNV2_DSP_DWH && 1)" in fast) == relayout
    assert ("#define MNV2_DSP_RUNTIME_WW 1" in fast) == relayout or kernels != "arm_dsp"
    dwi += "#define MNV2_TEST_DWH(c) (0%s)\n" % "".join(f" || (c) == {c}" for c in dwh_c)
    # of stride 2 likewise, with the relayout only (no int8 kernel: the generator compiles the relayout wherever such a
    # block's stage A does not write its int16 rows itself, lower.py's dwh_relayout)
    dwh2_c = sorted({int(c) for c in re.findall(r"static void mnv2_dsp_dwh2_run_(\d+)\(", fast)}) if relayout else []
    dwi += "#define MNV2_TEST_DWH2(c) (0%s)\n" % "".join(f" || (c) == {c}" for c in dwh2_c)
    (tmp_path / "driver.c").write_text(shifts + dwi + DRIVER)
    flags = [opt if f == "-O2" else f for f in t.cflags]
    base = [t.cc, *flags, "-include", "mnv2_mcu.h", f"-I{fw}", f"-I{fw / 'include'}"]
    renames = [f"-D{name}={name.replace('mnv2_', 'ref_')}" for name in API]
    subprocess.run([*base, *renames, f"-I{tmp_path / 'ref'}", "-c", "-o", str(tmp_path / "ref.o"),
                    str(tmp_path / "ref" / "mnv2_kernels.c")], check=True, capture_output=True, timeout=120)
    mem = [f"-Wl,--defsym=__{k}=0x{v:x}" for k, v in t.emulator.memory] + ["-Wl,--defsym=__stack_size=16384"]
    r = subprocess.run([*base, "-DCASES=1500", f"-I{tmp_path / 'fast'}", f"-I{ROOT / 'tests'}", *t.ldflags,
                        "-T", str(fw / t.arch / "board.ld"), f"-L{fw / 'common'}", *mem, "-o", str(tmp_path / "k.elf"),
                        str(tmp_path / "driver.c"),
                        str(tmp_path / "fast" / "mnv2_kernels.c"), str(tmp_path / "ref.o"),
                        *[str(fw / s) for s in t.firmware], "-lgcc"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.run(command(t, tmp_path / "k.elf"), capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    log = (p.stderr or "") + (p.stdout or "")
    assert p.returncode == 0 and "kernels ok" in log, log[-2000:]
    dwi, dwh, dwh2 = (int(re.search(rf"{k} (\d+)", log).group(1)) for k in ("dwi", "dwh", "dh2"))
    # the interleaved depthwise is exercised on every Arm DSP variant (27 of the 1,500 cases' blocks), never on Helium;
    # on int16 mid rows in some of them (the kernels for 8 to 48 channels)
    assert (dwi >= 10 and dwh >= 3 and dwh_c) if kernels == "arm_dsp" else dwi == dwh == 0, (dwi, dwh, dwh_c)
    # and of stride 2 on int16 rows (the kernels for 8 to 48 channels; with the relayout compiled)
    assert (dwh2 >= 3 and dwh2_c) if kernels == "arm_dsp" and relayout else dwh2 == 0, (dwh2, dwh2_c)
    # stems writing their whole interleaved rows themselves (int8 or int16 rows, mnv2_stem_run's direct path)
    sdi = int(re.search(r"sdi (\d+)", log).group(1))
    assert sdi >= 2 if kernels == "arm_dsp" else sdi == 0, sdi
