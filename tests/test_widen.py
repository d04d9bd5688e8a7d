"""Weights widened to int16 pairs at generation time for the Arm DSP kernels (codegen/lower.py): the layouts, the
choice of stages within a flash budget, and where they are (not) emitted. The kernels' use of them is tested in
tests/test_kernels_arm.py (its own widening, from the header's description) and on whole models in
tests/test_mcu_qemu.py (cortex-m7 / m4 / m33 projects carry the generated arrays)."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from codegen import requant
from codegen.lower import (DW_FIXED_MAX, DW_STREAM_SHIFT, DW_STREAM_WORDS, DW_STREAM_WORDS_U, DW_TAP_PAIRS, DWI_LAST,
                           DWH2_FIXED_MAX, DWH2_MID_MAX, DWH_DIRECT_MAX_INPUTS, DWH_MID_MAX, DWI_WORDS,
                           FAST_A, FAST_DWH, FAST_DWI,
                           FLASH_RESERVE_BYTES, ONE_STREAM_INPUTS, ONE_STREAM_SHIFT, ONE_STREAM_WORDS,
                           PAIR_STREAM_SHIFT, STREAM_HEAD_WORDS, STREAM_LAST, STREAM_TAIL_WORDS, STREAM_TAIL_WORDS_U,
                           STREAM_UNIFORM, UNIFORM_D_MAX, RUNTIME_WW_MAX, RUNTIME_DWW_MAX, DW_BASE_MAX, add_lut,
                           choose_widened, classic_kernels, dw_fixed_channels, dwh_channels, dwh_direct,
                           dwi_input_order, lower, runtime_widening, tri_rows, uniform_scale, widen_dw_stream,
                           widen_dwi_stream, widen_one_stream, widen_stream, widenable)
from codegen.generate import SramOffer, plan_and_lower, plans_and_lower, sram_offer
from codegen.memory import padded_blocks, plan, replay
from codegen.pipeline import CalibOptions, compile_front
from codegen.targets import load_target
from test_cli import run

ROOT = Path(__file__).resolve().parents[1]


def _conv(weight, shift, mult=None, activation="none"):
    """A conv op as the quantizer makes it (only what the stream reads)."""
    w = np.asarray(weight, dtype=np.int8)
    w = w.reshape(w.shape[0], 1, 1, -1) if w.ndim == 2 else w
    mult = np.full(w.shape[0], 1 << 30, dtype=np.int32) if mult is None else np.asarray(mult, dtype=np.int32)
    return SimpleNamespace(kind="conv", weight=w, bias=np.zeros(w.shape[0], dtype=np.int32), multiplier=mult,
                           shift=np.asarray(shift, dtype=np.int32), activation=activation, act_min=-128, act_max=127)


def _halves(v) -> tuple[int, int]:
    v = int(v) & 0xFFFFFFFF
    s16 = lambda x: ((x + 0x8000) & 0xFFFF) - 0x8000  # noqa: E731
    return s16(v), s16(v >> 16)


def test_widen_stream_layout():
    # rows o = 0, 1 of 4 inputs: doubled biases; doubled weights (w[o][0], w[o][2]), (w[o][1], w[o][3]) as int16
    # pairs, low half first; multipliers, (2 zp + 1) << em1 per channel, em1 per channel (the last pair's second
    # marked). A third row has no partner.
    op = _conv([[1, 2, 3, 4], [5, -6, 7, -8], [9, 9, 9, 9]], shift=[-1, -4, -2], mult=[1 << 30, 1234567890, 5])
    got = widen_stream(op, np.array([100, -7, 3], dtype=np.int32), out_zp=-3)
    assert list(got[:4]) == [200, -14, 200, -14]
    assert [_halves(v) for v in got[4:8]] == [(2, 6), (4, 8), (10, 14), (-12, -16)]
    assert list(got[8:]) == [1 << 30, 1234567890, -5 * 1, -5 * 8, 0, 3 + STREAM_LAST]  # the last pair marked
    assert widenable(op) == got.nbytes


def test_widen_one_stream_layout():
    # a 1x1 stage A of 8 inputs, 2 channels, scaled by 2^d, d = ONE_STREAM_SHIFT - e (e = -shift): per channel the
    # bias and the weights of inputs (0, 2), (1, 3), (4, 6), (5, 7) as int16 pairs times 2^(d + 1), multiplier,
    # K' = (2 zp + 1) 2^(ONE_STREAM_SHIFT - 1) + 2^(d - 1), STREAM_UNIFORM (the last channel marked)
    w = [[1, 2, 3, 4, 5, 6, 7, 8], [-1, -2, -3, -4, -5, -6, -7, -8]]
    e = (ONE_STREAM_SHIFT - 5, ONE_STREAM_SHIFT - 2)  # d = 5, 2
    op = _conv(w, shift=[-e[0], -e[1]], mult=[1 << 30, 77], activation="relu6")
    got = widen_one_stream(op, np.array([10, -20], dtype=np.int32), out_zp=2)
    assert got.size == 16
    assert got[0] == 10 * 64 and [_halves(v) for v in got[1:5]] == [(64, 192), (128, 256), (320, 448), (384, 512)]
    assert list(got[5:8]) == [1 << 30, 5 * 2 ** (ONE_STREAM_SHIFT - 1) + 16, STREAM_UNIFORM]
    assert got[8] == -20 * 8 and [_halves(v) for v in got[9:13]] == [(-8, -24), (-16, -32), (-40, -56), (-48, -64)]
    assert list(got[13:]) == [77, 5 * 2 ** (ONE_STREAM_SHIFT - 1) + 2, STREAM_UNIFORM + STREAM_LAST]
    assert widenable(op, stage_a=True) == got.nbytes  # a projection of 8 inputs keeps the pair stream
    assert widenable(op) == widen_stream(op, np.zeros(2, dtype=np.int32), -128).nbytes  # a ReLU's zero point
    with pytest.raises(AssertionError):  # an odd number of channels: the pair stream
        widen_one_stream(_conv(w[:1], shift=[-e[0]], activation="relu6"), np.zeros(1, dtype=np.int32), 0)
    # no ReLU: the output zero point may be anything but MNV2_RQ_ZP_FLOOR, which mnv2_dsp_one_run needs
    plain = _conv(w, shift=[-e[0], -e[1]])
    assert widenable(plain, stage_a=True) == widen_stream(plain, np.zeros(2, dtype=np.int32), 0).nbytes
    # shifts beyond uniform_scale's reach of ONE_STREAM_SHIFT (d = 0, UNIFORM_D_MAX + 1): the classic form, doubled
    # bias and weights, (2 zp + 1) << em1, em1 (mnv2_dsp_one_run_c), and classic_kernels names it
    for shift in (-ONE_STREAM_SHIFT, UNIFORM_D_MAX + 1 - ONE_STREAM_SHIFT):
        far = _conv(w, shift=[-e[0], shift], activation="relu6")
        got = widen_one_stream(far, np.array([10, -20], dtype=np.int32), out_zp=2)
        assert got[0] == 20 and [_halves(v) for v in got[1:5]] == [(2, 6), (4, 8), (10, 14), (12, 16)]
        assert list(got[5:8]) == [1 << 30, 5 << (e[0] - 1), e[0] - 1]
        assert list(got[13:]) == [1 << 30, 5 << (-shift - 1), -shift - 1 + STREAM_LAST]
        assert widenable(far, stage_a=True) == got.nbytes
        assert classic_kernels(SimpleNamespace(ops=[far])) == {"one": True, "dw": False}
    assert classic_kernels(SimpleNamespace(ops=[op])) == {"one": False, "dw": False}


def test_uniform_scale_requantization_matches_the_reference(rng):
    # mnv2_dsp_one_run's arithmetic on the stream's words (SMLAD sums, SMMLA, SSAT by MNV2_ONE_SHIFT), emulated in
    # int64, against requant.requantize at zero point -128 (ReLU over the whole int8 range): random channels over the
    # whole reach of uniform_scale, random int8 inputs, and the biases at the accumulator bound
    out_c = 64
    shift = -rng.integers(ONE_STREAM_SHIFT - UNIFORM_D_MAX, ONE_STREAM_SHIFT, size=out_c)
    w = rng.integers(-127, 128, size=(out_c, ONE_STREAM_INPUTS))
    w[:4] = 127  # the int16 limit at d = UNIFORM_D_MAX
    op = _conv(w, shift=shift, mult=rng.integers(1 << 30, 1 << 31, size=out_c), activation="relu6")
    bias = rng.integers(-40000, 40000, size=out_c).astype(np.int32)
    d = uniform_scale(op, ONE_STREAM_SHIFT, ONE_STREAM_INPUTS)
    assert d is not None and d.min() == 1 and d.max() == UNIFORM_D_MAX
    words = widen_one_stream(op, bias, out_zp=-128).astype(np.int64).reshape(out_c, ONE_STREAM_WORDS)
    x = rng.integers(-128, 128, size=(20000, ONE_STREAM_INPUTS))
    lo, hi = np.vectorize(_halves, otypes=[np.int64, np.int64])(words[:, 1:5])  # (out_c, 4) each
    acc2 = words[:, 0] + x[:, [0, 1, 4, 5]] @ lo.T + x[:, [2, 3, 6, 7]] @ hi.T  # 4 SMLAD on the widened pixel
    assert np.all(np.abs(acc2) < 2 ** 31)
    r = (acc2 * words[:, 5] + (words[:, 6] << 32)) >> 32  # SMMLA: the high word, no rounding
    got = np.clip(r >> ONE_STREAM_SHIFT, -128, 127)  # SSAT #8, asr #ONE_STREAM_SHIFT
    acc = bias + x @ w.T
    want = requant.requantize(acc, op.multiplier, op.shift, -128, -128, 127)
    assert np.array_equal(got, want)


def test_widen_stream_uniform_matches_the_reference(rng):
    # at output zero point -128 within uniform_scale's reach of PAIR_STREAM_SHIFT the pair stream is scaled: the
    # kernel's arithmetic on its words (SMLAD sums from the doubled-and-scaled biases, SMMLA, SSAT by
    # PAIR_STREAM_SHIFT), emulated in int64, against requant.requantize; shift words STREAM_UNIFORM (the last marked)
    out_c, n = 6, 27  # a stem's 3 x 3 x 3 (one zero-padded input per row)
    shift = -rng.integers(PAIR_STREAM_SHIFT - UNIFORM_D_MAX, PAIR_STREAM_SHIFT, size=out_c)
    shift[:2] = -(PAIR_STREAM_SHIFT - np.array([1, UNIFORM_D_MAX]))  # both ends of the reach
    w = rng.integers(-127, 128, size=(out_c, n))
    op = _conv(w.reshape(out_c, 3, 3, 3), shift=shift, mult=rng.integers(1 << 30, 1 << 31, size=out_c),
               activation="relu6")
    bias = rng.integers(-40000, 40000, size=out_c).astype(np.int32)
    words = widen_stream(op, bias, out_zp=-128).astype(np.int64).reshape(out_c // 2, -1)
    x = rng.integers(-128, 128, size=(5000, n + 1))
    x[:, n] = 0
    got = []
    for i, pr in enumerate(words):
        lo, hi = np.vectorize(_halves, otypes=[np.int64, np.int64])(pr[4:-5].reshape(-1, 4))  # group, row o/o+1 words
        for row in range(2):  # row o's words 0, 1 of a group: inputs (0, 2), (1, 3); row o + 1's: words 2, 3
            wl = np.stack([lo[:, 2 * row], lo[:, 2 * row + 1]], axis=1).reshape(-1)  # inputs 0, 1 of each group
            wh = np.stack([hi[:, 2 * row], hi[:, 2 * row + 1]], axis=1).reshape(-1)  # inputs 2, 3
            xi = x.reshape(len(x), -1, 4)
            acc2 = pr[row] + xi[:, :, [0, 1]].reshape(len(x), -1) @ wl + xi[:, :, [2, 3]].reshape(len(x), -1) @ wh
            assert np.all(np.abs(acc2) < 2 ** 31)
            r = (acc2 * pr[-5 + row] + (pr[-3 + row] << 32)) >> 32  # SMMLA
            got.append(np.clip(r >> PAIR_STREAM_SHIFT, -128, 127))  # SSAT #8, asr #PAIR_STREAM_SHIFT
        assert pr[-1] == STREAM_UNIFORM + (STREAM_LAST if i == len(words) - 1 else 0)  # the one shift word
    want = requant.requantize(bias + x[:, :n] @ w.T, op.multiplier, op.shift, -128, -128, 127)
    assert np.array_equal(np.stack(got, axis=1), want)
    assert words.size == out_c // 2 * (STREAM_HEAD_WORDS + 4 * 7 + STREAM_TAIL_WORDS_U)
    assert widenable(op) == 4 * words.size
    # another zero point, or a channel beyond reach: the doubled stream, shift words em1
    for zp, sh in ((-127, shift), (-128, np.where(np.arange(out_c) == 5, -PAIR_STREAM_SHIFT, shift))):
        plain = widen_stream(_conv(w, shift=sh, activation="relu6"), bias, out_zp=zp).reshape(out_c // 2, -1)
        assert plain.shape[1] == STREAM_HEAD_WORDS + 4 * 7 + STREAM_TAIL_WORDS
        assert list(plain[:, 0]) == list(2 * bias[::2]) and list(plain[-1, -2:]) == [-sh[-2] - 1,
                                                                                   -sh[-1] - 1 + STREAM_LAST]


def test_widen_stream_pads_rows_and_orders_groups_before_rows():
    w = np.arange(18, dtype=np.int8).reshape(2, 9)  # 9 inputs: groups (0..3), (4..7), (8, 0, 0, 0)
    got = widen_stream(_conv(w, shift=[-3, -3]), np.zeros(2, dtype=np.int32), out_zp=0)
    pairs = [_halves(v) for v in got[4:16]]
    assert pairs == [(0, 4), (2, 6), (18, 22), (20, 24), (8, 12), (10, 14), (26, 30), (28, 32),
                     (16, 0), (0, 0), (34, 0), (0, 0)]
    assert got.size == 4 + 12 + 6


def test_no_stream_without_the_short_requantization():
    assert widenable(_conv([[1, 2, 3, 4], [5, 6, 7, 8]], shift=[-1, 0])) is None  # a left shift
    assert widenable(_conv([[1, 2, 3, 4], [5, 6, 7, 8]], shift=[-23, -1])) is None  # K would leave int32
    op = _conv([[1, 2, 3, 4], [5, 6, 7, 8]], shift=[-1, -1])
    op.act_min = -100  # a clamp inside the int8 range
    assert widenable(op) is None


def test_widen_dw_stream_layout():
    c = 8
    w = (np.arange(9 * c) % 100 - 50).astype(np.int8).reshape(3, 3, c)
    e = DW_STREAM_SHIFT - 1 - np.arange(c) % UNIFORM_D_MAX  # d = 1..7, 1
    op = SimpleNamespace(kind="depthwise", weight=w, bias=np.arange(c, dtype=np.int32) * 1000 - 3000,
                         multiplier=np.arange(c, dtype=np.int32) + (1 << 30),
                         shift=-e.astype(np.int32), activation="relu6", act_min=-128, act_max=127)
    got = widen_dw_stream(op, in_zp=5, out_zp=-2)
    assert got.size == 51 * c // 4 and widenable(op) == got.nbytes
    taps = w.reshape(9, c).astype(int)
    k = [2 ** (DW_STREAM_SHIFT - int(e[j]) + 1) for j in range(c)]  # 2^(d + 1)
    for g in range(c // 4):  # per 4 channels, scaled by 2^(d + 1): folded biases, per tap (0, 2), (1, 3), biases,
        rec = got[51 * g:51 * (g + 1)]  # the tap pairs (w_t, w_u) of channels 0, 2, 1, 3, then (M, K'), the mark
        ch = range(4 * g, 4 * g + 4)
        assert list(rec[:4]) == [k[j] * (int(op.bias[j]) - 5 * int(taps[:, j].sum())) for j in ch]
        want = []
        for t in range(9):
            j = 4 * g
            want += [(k[j] * taps[t, j], k[j + 2] * taps[t, j + 2]), (k[j + 1] * taps[t, j + 1],
                                                                     k[j + 3] * taps[t, j + 3])]
        assert [_halves(v) for v in rec[4:22]] == want
        assert list(rec[22:26]) == [k[j] * int(op.bias[j]) for j in ch]
        want = []
        for t, u in ((1, 2), (4, 5), (7, 8), (3, 6)):  # row 0's columns 1, 2; row 1's; row 2's; column 0's rows 1, 2
            want += [(k[j] * taps[t, j], k[j] * taps[u, j]) for j in (4 * g, 4 * g + 2, 4 * g + 1, 4 * g + 3)]
        assert [_halves(v) for v in rec[26:42]] == want
        # K' = (2 zp + 1) 2^(DW_STREAM_SHIFT - 1) + 2^(d - 1); (M, K') of channels 0, 2, 1, 3, then the mark (the last
        # group's + STREAM_LAST)
        m = [int(op.multiplier[j]) for j in ch]
        kk = [-3 * 2 ** (DW_STREAM_SHIFT - 1) + k[j] // 4 for j in ch]
        mark = STREAM_UNIFORM + (STREAM_LAST if g == c // 4 - 1 else 0)
        assert list(rec[42:]) == [m[0], kk[0], m[2], kk[2], m[1], kk[1], m[3], kk[3], mark]
    assert widenable(SimpleNamespace(**{**vars(op), "activation": "none"})) is None  # zero point not known -128
    assert classic_kernels(SimpleNamespace(ops=[op])) == {"one": False, "dw": False}
    for far in (DW_STREAM_SHIFT, DW_STREAM_SHIFT - UNIFORM_D_MAX - 1):  # d = 0, UNIFORM_D_MAX + 1: the classic form
        sh = np.where(np.arange(c) == 3, -far, -e)
        far_op = SimpleNamespace(**{**vars(op), "shift": sh})
        got = widen_dw_stream(far_op, in_zp=5, out_zp=-2)
        assert got.size == 54 * c // 4 and widenable(far_op) == got.nbytes
        assert classic_kernels(SimpleNamespace(ops=[far_op]))["dw"]
        assert list(got[:4]) == [2 * (int(op.bias[j]) - 5 * int(taps[:, j].sum())) for j in range(4)]
        assert list(got[42:54]) == [v for j in (0, 2, 1, 3) for v in (int(op.multiplier[j]), -3 << (-sh[j] - 1),
                                                                      -sh[j] - 1)]


def test_widen_dwi_stream_layout():
    c = 16
    w = (np.arange(9 * c) % 97 - 48).astype(np.int8).reshape(3, 3, c)
    e = DW_STREAM_SHIFT - 1 - np.arange(c) % UNIFORM_D_MAX  # d = 1..7, 1, ...
    op = SimpleNamespace(kind="depthwise", weight=w, bias=np.arange(c, dtype=np.int32) * 700 - 4000, stride=1,
                         multiplier=np.arange(c, dtype=np.int32) + (1 << 30), shift=-e.astype(np.int32),
                         activation="relu6", act_min=-128, act_max=127)
    got = widen_dwi_stream(op, in_zp=7, out_zp=-2)
    assert got.size == DWI_WORDS * c // 2
    k = [2 ** (DW_STREAM_SHIFT - int(e[j]) + 1) for j in range(c)]  # 2^(d + 1)
    for g in range(c // 2):  # per channel pair (j, j + 1), scaled by 2^(d + 1): the folded biases of j, j, j + 1,
        rec = got[DWI_WORDS * g:DWI_WORDS * (g + 1)]  # j + 1; per row (w0, w1), (w1, w2) of j, then j + 1; M, K'
        j = 2 * g
        folded = [k[i] * (int(op.bias[i]) - 7 * int(w[..., i].astype(int).sum())) for i in (j, j + 1)]
        assert list(rec[:4]) == [folded[0], folded[0], folded[1], folded[1]]
        want = [pair for r in range(3) for i in (j, j + 1)
                for pair in ((k[i] * w[r, 0, i], k[i] * w[r, 1, i]), (k[i] * w[r, 1, i], k[i] * w[r, 2, i]))]
        assert [_halves(v) for v in rec[4:16]] == want
        kk = [-3 * 2 ** (DW_STREAM_SHIFT - 1) + k[i] // 4 for i in (j, j + 1)]
        mark = DWI_LAST if g == c // 2 - 1 else 0
        assert list(rec[16:]) == [int(op.multiplier[j]), kk[0], int(op.multiplier[j + 1]), kk[1], mark]
    # the projection reads the pair (inputs 4m, 4m + 1), (4m + 2, 4m + 3) where widen_stream pairs (0, 2), (1, 3)
    assert list(dwi_input_order(8)) == [0, 2, 1, 3, 4, 6, 5, 7]
    proj = _conv(np.arange(2 * 8).reshape(2, 8) - 8, [-5, -5], activation="relu6")
    plain = widen_stream(proj, np.zeros(2, np.int32), -128)
    words = widen_stream(SimpleNamespace(**{**vars(proj), "weight": proj.weight[..., dwi_input_order(8)]}),
                         np.zeros(2, np.int32), -128)
    for g in range(2):  # each group's row o words: (x0, x1), (x2, x3) where the plain stream has (x0, x2), (x1, x3)
        for r in range(2):
            at = STREAM_HEAD_WORDS + 4 * g + 2 * r
            (a0, a2), (a1, a3) = (_halves(v) for v in plain[at:at + 2])
            assert [_halves(v) for v in words[at:at + 2]] == [(a0, a1), (a2, a3)]


def test_dw_fixed_channels_takes_the_counts_with_most_group_windows():
    def dw(name, c, size, stride=1, relu=True):
        pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)
        shapes[name + "/in"] = (size, size, c)
        shapes[name] = (size // stride, size // stride, c)
        return SimpleNamespace(kind="depthwise", name=name, input=name + "/in", output=name, stride=stride,
                               padding=pad, weight=np.ones((3, 3, c), np.int8), bias=np.zeros(c, np.int32),
                               multiplier=np.full(c, 1 << 30, np.int32), shift=np.full(c, -5, np.int32),
                               activation="relu6" if relu else "none", act_min=-128, act_max=127)
    shapes = {}
    ops = [dw("a", 16, 48), dw("b", 48, 48, 2), dw("c", 48, 48, 2), dw("d", 96, 12), dw("e", 192, 48, relu=False),
           dw("f", 336, 3), dw("g", 336, 3)]
    graph = SimpleNamespace(ops=ops, shapes=shapes)
    # group windows the two-window kernel runs (whole windows x channels / 4): 16: 46 x 46 x 4 = 8464; 48: 2 x 23 x 23
    # x 12 = 12696 (stride 2, padded below and right); 96: 10 x 10 x 24 = 2400; e has no depthwise stream (its zero
    # point not known -128); rows of 3 (f, g) run as triples
    assert DW_FIXED_MAX == 2
    assert dw_fixed_channels(graph) == (16, 48)
    # layers on the interleaved kernel do not count, and the model with them gets one copy
    assert dw_fixed_channels(graph, frozenset({"b", "c"})) == (16,)
    assert dw_fixed_channels(graph, frozenset({"a"})) == (48,)  # 96's 2400 second
    ops[3] = dw("d", 96, 28)  # 26 x 26 x 24 = 16224: more than 48's
    assert dw_fixed_channels(graph) == (48, 96)
    assert dw_fixed_channels(graph, frozenset({"a"})) == (96,)
    ops[3] = dw("d", 96, 8)  # 6 x 6 x 24 = 864: below DW_FIXED_MIN_WINDOWS
    assert dw_fixed_channels(graph) == (16, 48)
    assert dw_fixed_channels(graph, frozenset({"a", "b", "c"})) == ()
    assert dw_fixed_channels(SimpleNamespace(ops=[], shapes={})) == ()


def test_add_lut_layout():
    # multipliers of exactly 1/2 make every rescale exact: (x - zp) 2^20 / 2 / 2^-shift, doubled in the table
    op = SimpleNamespace(kind="add", left_shift=20, input_multipliers=(1 << 30, 1 << 30), input_shifts=(0, -1),
                         output_shift=-3, act_min=-128, act_max=127)
    t = add_lut(op, in_zp=5, proj_zp=-3)
    assert t.dtype == np.int32 and t.size == 512 and widenable(op) == t.nbytes
    x = np.arange(-128, 128)
    assert list(t[:256]) == list((x - 5) * (1 << 20)) and list(t[256:]) == list((x + 3) * (1 << 19))
    for field, value in (("left_shift", 19), ("act_min", -100), ("output_shift", 1), ("output_shift", 0),
                         ("output_shift", -23)):  # ADDs its table kernel does not run
        assert widenable(SimpleNamespace(**{**vars(op), field: value})) is None


def test_limits_and_stream_sizes_match_the_kernels():
    text = (ROOT / "templates" / "kernels" / "arm_dsp.c.j2").read_text()

    def define(name):
        return int(re.search(rf"#define {name} (\d+)", text).group(1))
    assert (define("MNV2_STREAM_HEAD"), define("MNV2_STREAM_TAIL"), define("MNV2_STREAM_TAIL_U"),
            define("MNV2_DW_STREAM_WORDS"), define("MNV2_DW_STREAM_WORDS_U")) == (
        STREAM_HEAD_WORDS, STREAM_TAIL_WORDS, STREAM_TAIL_WORDS_U, DW_STREAM_WORDS, DW_STREAM_WORDS_U)
    assert re.search(r"set stream_last = (\d+) ", text).group(1) == str(STREAM_LAST)
    pairs = re.search(r"#define MNV2_DW_TAP_PAIRS \{([\d, ]+)\}", text).group(1)
    assert [int(v) for v in pairs.split(",")] == [t for pair in DW_TAP_PAIRS for t in pair]
    assert define("MNV2_ONE_INPUTS") == ONE_STREAM_INPUTS
    assert re.search(r"set one_shift = (\d+) ", text).group(1) == str(ONE_STREAM_SHIFT)
    assert re.search(r"set dw_shift = (\d+) ", text).group(1) == str(DW_STREAM_SHIFT)
    assert re.search(r"set pair_shift = (\d+) ", text).group(1) == str(PAIR_STREAM_SHIFT)
    assert define("MNV2_STREAM_UNIFORM") == STREAM_UNIFORM
    assert define("MNV2_DWI_WORDS") == DWI_WORDS
    assert re.search(r"set dwi_last = (\d+) ", text).group(1) == str(DWI_LAST)
    assert 4 * int(re.search(r"set pair_unroll, pair_group_bytes = (\d+), ", text).group(1)) == DWH_DIRECT_MAX_INPUTS
    assert (define("MNV2_DSP_WW_MAX"), define("MNV2_DSP_DWW_MAX"), define("MNV2_DW_BASE_MAX")) == (
        RUNTIME_WW_MAX, RUNTIME_DWW_MAX, DW_BASE_MAX)
    header = (ROOT / "templates" / "kernels" / "mnv2_kernels.h.j2").read_text()
    assert int(re.search(r"#define MNV2_FAST_DWI (\d+)", header).group(1)) == FAST_DWI
    assert re.search(r"#define MNV2_RQ_ZP_FLOOR \((-\d+)\)", text).group(1) == "-128"  # lower.relu_floor's zero point


@pytest.fixture(scope="module")
def graph_plan(checkpoint_factory):
    g = compile_front(None, str(checkpoint_factory(0.35)), calib=CalibOptions(samples=16)).quant_graph
    return g, plan(g)


def _stages(g, p, three_wide: bool = False):
    """(pixels, name, extra bytes) of every widenable block stage (and residual ADD: its table); without the 1x1
    stages of 3-pixel rows unless three_wide."""
    ops = {op.name: op for op in g.ops}
    out = []
    for unit in p.units:
        for part in (unit.parts if unit.kind == "chain" else (unit,) if unit.kind == "block" else ()):
            for name in (part.a, part.b, part.c, part.add):
                extra = widenable(ops[name], stage_a=name == part.a) if name else None
                if extra and (three_wide or not tri_rows(g, ops[name])):
                    h, w, _ = g.shapes[ops[name].output]
                    out.append((h * w, name, extra))
    return out


def test_choice_stays_within_the_budget_most_pixels_first(graph_plan):
    g, p = graph_plan
    stages = _stages(g, p)
    kinds = {op.name: op.kind for op in g.ops}
    assert {kinds[s[1]] for s in stages} == {"conv", "depthwise", "add"}
    total = sum(s[2] for s in stages)
    assert choose_widened(g, p, 0) == frozenset()
    assert choose_widened(g, p, total) == {s[1] for s in stages}
    extra = {s[1]: s[2] for s in stages}
    for budget in (1000, 20_000, total // 3, total - 1):
        chosen = choose_widened(g, p, budget)
        assert sum(extra[n] for n in chosen) <= budget
        # a stage left out must not have fit in what the stages of at least as many pixels left
        pixels = {s[1]: s[0] for s in stages}
        for n in set(extra) - chosen:
            taken_before = sum(extra[m] for m in chosen if pixels[m] >= pixels[n])
            assert extra[n] > budget - taken_before
    top = sorted(stages, key=lambda s: -s[0])
    k = next(i for i in range(1, len(top)) if top[i][0] < top[i - 1][0])  # the stages of the most pixels
    assert choose_widened(g, p, sum(s[2] for s in top[:k])) == {s[1] for s in top[:k]}
    # at equal pixels: depthwise, the ADD's table, the projection, then stage A (an expansion)
    parts = {name: role for unit in p.units
             for part in (unit.parts if unit.kind == "chain" else (unit,) if unit.kind == "block" else ())
             for role, name in (("a", part.a), ("b", part.b), ("c", part.c), ("add", part.add)) if name}
    for px in sorted({s[0] for s in stages}, reverse=True):
        if {parts[s[1]] for s in stages if s[0] == px} == {"a", "b", "c", "add"}:
            break
    before = [s for s in stages if s[0] > px or (s[0] == px and parts[s[1]] != "a")]
    assert choose_widened(g, p, sum(s[2] for s in before)) == {s[1] for s in before}
    no_proj = [s for s in before if s[0] > px or parts[s[1]] != "c"]
    assert choose_widened(g, p, sum(s[2] for s in no_proj)) == {s[1] for s in no_proj}


def test_three_pixel_rows_keep_int8_weights(graph_plan):
    """The 1x1 stages of 3-pixel rows (96 x 96: block 14's projection, blocks 15-17's both) stay on int8 weights at
    any budget, where the three-pixel kernel runs them in fewer instructions."""
    g, p = graph_plan
    ops = {op.name: op for op in g.ops}
    three = {n for _, n, _ in _stages(g, p, three_wide=True)
             if ops[n].kind == "conv" and ops[n].weight.shape[1:3] == (1, 1) and g.shapes[ops[n].output][1] == 3}
    assert len(three) == 7
    chosen = choose_widened(g, p, 10 ** 9)
    assert not three & chosen
    assert chosen == {n for _, n, _ in _stages(g, p, three_wide=True)} - three


def test_only_dsp_targets_get_widened_weights(graph_plan):
    g, p = graph_plan
    for name in ("host", "cortex-m55", "esp32-c3"):
        assert lower(g, p, load_target(name)).widened_bytes == 0, name
    m7 = load_target("cortex-m7")
    s = lower(g, p, m7)
    plain = lower(g, p, m7, widen_budget=0)
    assert plain.widened_bytes == 0 and s.widened_bytes > 0
    assert s.param_bytes == plain.param_bytes + s.widened_bytes
    assert s.widened_bytes <= (m7.flash_bytes - plain.param_bytes - FLASH_RESERVE_BYTES) // 2  # the default budget
    symbols = {a.symbol for st in s.steps for a in st.arrays if a.role == "wide"}
    referenced = set()
    for st in s.steps:
        text = " ".join(str(v) for _, v in st.params)
        referenced |= set(re.findall(r"mnv2_\w+_wide", text))
        assert not any(a.role == "wide" and a.symbol in st.args for a in st.arrays)  # params, not call arguments
    assert referenced == symbols


def test_plan_pads_only_the_blocks_on_the_interleaved_depthwise(graph_plan):
    g, p = graph_plan
    for name in ("cortex-m7", "cortex-m4", "host"):
        padded_plan, s = plan_and_lower(g, "streamed", load_target(name))
        assert {u.b for u in padded_blocks(padded_plan)} == s.dwi, name
        if name == "cortex-m7":  # the 3 x 3 stride-1 blocks of even width, 80 B more arena (block 1 at the peak),
            # and the stride-2 ones of widths 4k (int16 rows only) that leave it as it is: blocks 4 and 7, not 2
            s2 = {op.name for op in g.ops if op.name in s.dwi and op.stride == 2}
            assert len(s.dwi) == 12 and s2 == {"b4/dw", "b7/dw"} and padded_plan.arena_bytes == p.arena_bytes + 80
            assert all(st.kernel != "block" or (dict(st.params)["fast"] & FAST_DWI != 0) == bool(st.dwi)
                       for st in s.steps)
            # int16 mid rows on the interleaved blocks that leave the arena as it is: all but block 1 (48 x 48 x 16,
            # at the peak), of at most DWH_FIXED_MAX channel counts (48, 96, 144, 192), of stride 2 DWH2_FIXED_MAX
            assert s.dwh == s.dwi - {"b1/dw"} and {u.b for u in padded_blocks(padded_plan) if u.wide} == s.dwh
            assert dwh_channels(g, s.dwh) == (48, 96, 144, 192) and dwh_channels(g, s.dwh, 2) == (48, 96)
            assert len(dwh_channels(g, s.dwh, 2)) <= DWH2_FIXED_MAX
            # block 2 (stride 2, 48 x 48 x 48) would take 2 x 3 x 50 x 48 bytes at the peak: not padded at all
            assert "b2/dw" not in {u.b for u in padded_blocks(padded_plan)}
            # stride 2 on int16 rows only: padded with int8 rows, those blocks keep their 4-channel kernels
            int8_rows = lower(g, plan(g, "streamed", padded_rows=True), load_target(name))
            assert {op.name for op in g.ops if op.name in int8_rows.dwi and op.stride == 2} == set()
            assert all(st.kernel != "block" or (dict(st.params)["fast"] & FAST_DWH != 0) == bool(st.dwh)
                       for st in s.steps)
            assert max(g.shapes[op.input][2] for op in g.ops if op.name in s.dwh) <= DWH_MID_MAX
            assert max(g.shapes[op.input][2] for op in g.ops if op.name in s2) <= DWH2_MID_MAX
            # stage A writes the int16 rows itself in every one (blocks 5-13 on their pair streams, block 3 on its
            # one-pixel stream): no int8 row is widened (mnv2_dwh_relayout not compiled)
            assert {n for st in s.steps for n in st.dwh_direct} == s.dwh and not s.dwh_relayout
            narrow = padded_blocks(plan(g, "streamed", padded_rows=s.dwi))  # the same blocks with int8 rows
            assert [(u.b, u.scratch * (2 if u.b in s.dwh else 1)) for u in narrow] == \
                [(u.b, u.scratch) for u in padded_blocks(padded_plan)]
        else:  # no flash for the streams on the cortex-m4's chip, no such kernel on the host: the plan unchanged
            assert not s.dwi and not s.dwh and padded_plan.arena_bytes == p.arena_bytes, name


def test_speed_sram_buys_int16_rows_within_its_bytes(graph_plan):
    """plan_and_lower's speed_sram (--speed-sram): int16 mid rows also where they make the arena larger, by at most
    the bytes given; every plan replayed."""
    g, _ = graph_plan
    m7 = load_target("cortex-m7")
    base, s0 = plan_and_lower(g, "streamed", m7)
    for extra in (0, 1024, 4096, 1 << 20):
        p, s = plan_and_lower(g, "streamed", m7, speed_sram=extra)
        replay(g, p)
        assert base.arena_bytes <= p.arena_bytes <= base.arena_bytes + extra, extra
        assert {u.b for u in padded_blocks(p)} == s.dwi and {u.b for u in padded_blocks(p) if u.wide} == s.dwh
        if extra <= 1024:  # blocks 1 and 2 (at the peak) need more: as without it
            assert p.arena_bytes == base.arena_bytes and s.dwh == s0.dwh and s.dwi == s0.dwi, extra
        else:  # both, block 1 (16 channels) on a fifth count, block 2 on the stride-2 kernel of 48 channels
            assert p.arena_bytes > base.arena_bytes and s.dwh == s0.dwh | {"b1/dw", "b2/dw"}, extra
            assert dwh_channels(g, s.dwh) == (16, 48, 96, 144, 192) and dwh_channels(g, s.dwh, 2) == (48, 96)
            assert s.dwh_relayout  # block 1's stage A, the stem, writes int8 rows
    # what the main job offers (no speed_sram): the most a larger arena buys, over the smallest one
    # (the plan with no bound, speed_sram None, skips the arena's plans: the same as with a bound never reached)
    most, s = plan_and_lower(g, "streamed", m7, speed_sram=1 << 20)
    unbounded = plan_and_lower(g, "streamed", m7, speed_sram=None)
    assert unbounded[0].arena_bytes == most.arena_bytes and unbounded[1].dwh == s.dwh
    assert sram_offer((base, s0), unbounded) == SramOffer(most.arena_bytes - base.arena_bytes, ("b1/dw", "b2/dw"))
    for name in ("cortex-m4", "cortex-m55", "host"):  # no interleaved depthwise (m4: no flash for its streams)
        t = load_target(name)
        assert sram_offer(*plans_and_lower(g, "streamed", t, None, (0, None))) is None, name


def test_speed_sram_option_int16_rows_bit_exact(tmp_path):
    """`--speed-sram 4K` on the cortex-m7: recorded, the larger arena within it, bit-exact on the board, the int16-row
    kernel of block 1's 16 channels compiled; without it the summary offers those bytes."""
    out = tmp_path / "p"
    r = run("--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "16", "--speed-sram", "4K", "-o",
            str(out), "--json")
    assert r.returncode == 0, r.stderr
    summary, meta = json.loads(r.stdout), json.loads((out / "metadata.json").read_text())
    assert summary["bit_exact"] and meta["options"]["speed_sram"] == "4096"
    assert "static void mnv2_dsp_dwh_run_16(" in (out / "mnv2_kernels.c").read_text()
    r = run("--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "16", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    default = json.loads(r.stdout)
    assert summary["arena_bytes"] - 4096 <= default["arena_bytes"] < summary["arena_bytes"]
    assert "speed_sram_offer" not in summary
    assert default["speed_sram_offer"] == {"bytes": summary["arena_bytes"] - default["arena_bytes"],
                                           "blocks": ["b1/dw", "b2/dw"]}
    assert "speed_sram" not in json.loads((out / "metadata.json").read_text())["options"]


def test_dwh_direct_takes_the_stage_a_kernels_can_write_int16_rows(graph_plan):
    g, p = graph_plan
    ops = {op.name: op for op in g.ops}
    _, s = plan_and_lower(g, "streamed", load_target("cortex-m7"))
    params = {st.op: dict(st.params) for st in s.steps if st.kernel == "block"}
    one, pair = params["b3/add"], params["b5/add"]  # 8 inputs on the one-pixel stream; 16 on the pair stream
    a1, a2 = ops["b3/expand"], ops["b5/expand"]
    assert one["a_one"] == 1 and one["in_c"] == ONE_STREAM_INPUTS and pair["a_one"] == 0
    assert dwh_direct(a1, one) and dwh_direct(a2, pair)
    for prm, a in ((one, a1), (pair, a2)):
        for field, value in (("mid_zp", -127), ("fast", prm["fast"] & ~FAST_A), ("a_kernel", 3), ("a_stride", 2),
                             ("a_pad_left", 1), ("in_w", prm["mid_w"] + 1)):
            assert not dwh_direct(a, {**prm, field: value}), field
    assert not dwh_direct(a1, {**one, "in_c": 16})  # the one-pixel stream's 8 inputs only
    assert not dwh_direct(a2, {**pair, "in_c": DWH_DIRECT_MAX_INPUTS + 4})  # one pass of the pair kernel
    far = SimpleNamespace(**{**vars(a2), "shift": a2.shift - 30})  # out of uniform_scale's reach: a classic stream
    assert not dwh_direct(far, pair)


def test_runtime_widening_where_a_stage_has_no_generated_stream():
    # a block of 8 -> 48 -> 8 channels with every stage's widened weights generated (symbols), then without each
    block = dict(in_c=8, mid_c=48, out_c=8, a_kernel=1, b_kernel=3, a_ww="a", b_ww="b", c_ww="c")
    assert not runtime_widening(block, True)
    assert runtime_widening({**block, "a_ww": 0}, True)  # 384 weights: widened on the stack
    assert runtime_widening({**block, "c_ww": 0}, True)
    assert runtime_widening({**block, "b_ww": 0}, True)  # 48 channels, its bias folded
    assert not runtime_widening({**block, "b_ww": 0}, False)  # no bias to fold
    assert not runtime_widening({**block, "b_ww": 0, "b_kernel": 5}, True)
    for field, value in (("in_c", 12), ("in_c", 6), ("a_kernel", 3)):  # 576 weights; not whole groups; not 1x1
        assert not runtime_widening({**block, "a_ww": 0, field: value}, True), (field, value)
    assert not runtime_widening({**block, "c_ww": 0, "out_c": 12}, True)  # 576 weights
    assert not runtime_widening({**block, "b_ww": 0, "mid_c": 52, "in_c": 4, "out_c": 4}, True)  # > 48 channels


def test_speed_flash_option_bounds_the_widened_bytes(tmp_path):
    out = tmp_path / "p"
    r = run("--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "16", "--speed-flash", "8K", "-o",
            str(out), "--json")
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert 0 < meta["widened_bytes"] <= 8192 and meta["options"]["speed_flash"] == "8192"
    assert json.loads(r.stdout)["bit_exact"]
    assert set(re.findall(r"\.[abc]_ww = ([^,]*),", (out / "mnv2_model.c").read_text())) > {"0"}
    r = run("--target", "cortex-m7", "--alpha", "0.35", "--calib-samples", "16", "--speed-flash", "0", "-o",
            str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metadata.json").read_text())["widened_bytes"] == 0
    assert set(re.findall(r"\.[abc]_ww = ([^,]*),", (out / "mnv2_model.c").read_text())) == {"0"}
