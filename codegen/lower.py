"""Lowering: QuantGraph + MemoryPlan + Target -> Schedule (one kernel call per op, every constant named)."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from . import requant
from .errors import UserError
from .graph import QuantGraph
from .memory import MemoryPlan
from .strips import layout as strips_layout
from .targets import Target


@dataclass(frozen=True)
class ConstArray:
    """A constant array in flash: `symbol` is its C name, `ctype` int8_t or int32_t."""
    symbol: str
    ctype: str
    values: np.ndarray
    role: str  # weight | bias | mult | shift (int8: requantization shifts lie in [-31, 30]) | wide (int16 pairs)


@dataclass(frozen=True)
class Step:
    """One kernel call. `params` are the fields of the kernel's parameter struct, in declaration order."""
    op: str  # op / output tensor name in the graph
    cname: str  # C identifier fragment, unique
    kernel: str  # conv | depthwise | add | avgpool | fc | block | chain
    params: tuple  # tuple[tuple[str, int], ...]
    inputs: tuple  # tensor names read
    output: str  # tensor name written
    arrays: tuple  # tuple[ConstArray, ...]: the call arguments (unless call_args) or the params' pointers
    macs: int
    summary: str  # human-readable one-liner for comments
    scratch: int = 0  # bytes of arena scratch the kernel uses (at the plan's `<output>/scratch` buffer)
    call_args: tuple | None = None  # the constant arguments of the call; None: the arrays' symbols
    dwi: tuple = ()  # the depthwise ops it runs on the interleaved kernel (FAST_DWI)
    dwh: tuple = ()  # of those, the ones on int16 mid rows (FAST_DWH)
    dwh_direct: tuple = ()  # of those, the ones whose stage A writes the int16 rows itself (dwh_direct)
    runtime_ww: bool = False  # a block stage widened on the stack at run time (runtime_widening)
    dw_stream: tuple = ()  # mid channel counts of its depthwise on a stream outside the interleaved kernels
    slow_proj: bool = False  # a block's projection or ADD may leave the pixel-pair kernels (_block_parts)

    @property
    def args(self) -> tuple:
        return tuple(a.symbol for a in self.arrays) if self.call_args is None else self.call_args


@dataclass(frozen=True)
class Schedule:
    graph: QuantGraph
    plan: MemoryPlan
    target: Target
    steps: tuple  # tuple[Step, ...]

    @property
    def dwi(self) -> frozenset:
        """The depthwise ops on the interleaved kernel (FAST_DWI)."""
        return frozenset(name for s in self.steps for name in s.dwi)

    @property
    def dwh(self) -> frozenset:
        """The depthwise ops on the interleaved kernel on int16 mid rows (FAST_DWH)."""
        return frozenset(name for s in self.steps for name in s.dwh)

    @property
    def dwh_relayout(self) -> bool:
        """Whether a block's int16 mid rows are widened from int8 ones (arm_dsp.c.j2's mnv2_dwh_relayout, compiled
        only then): a stage A not dwh_direct."""
        return any(set(s.dwh) - set(s.dwh_direct) for s in self.steps)

    @property
    def runtime_widening(self) -> bool:
        """Whether a block widens weights on the stack at run time (arm_dsp.c.j2's mnv2_widen_stream / mnv2_dw_stream,
        compiled only then: MNV2_DSP_RUNTIME_WW)."""
        return any(s.runtime_ww for s in self.steps)

    @property
    def dw_stream_channels(self) -> frozenset:
        """The channel counts of the blocks' depthwise streams (generated or widened at run time) outside the
        interleaved kernels: those arm_dsp.c.j2's two-window kernel may run (mnv2_dsp_dw3_run_wN where dw_fixed has
        the count, else mnv2_dsp_dw3_run_w, compiled only then: MNV2_DSP_DW_GENERIC)."""
        return frozenset(c for s in self.steps for c in s.dw_stream)

    @property
    def slow_proj(self) -> bool:
        """Whether a block's projection or residual ADD may leave the pixel-pair kernels' conditions (arm_dsp.c.j2's
        mnv2_block_proj_pair / _one and the ADD's per-byte loop, compiled only then: MNV2_DSP_SLOW_PROJ)."""
        return any(s.slow_proj for s in self.steps)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.steps)

    @property
    def param_bytes(self) -> int:
        return sum(a.values.nbytes for s in self.steps for a in s.arrays)

    @property
    def widened_bytes(self) -> int:
        """Flash of the speed copies: widened streams (weights also held as int8, with their requantization
        constants) and residual ADD tables."""
        return sum(a.values.nbytes for s in self.steps for a in s.arrays if a.role == "wide")

    @property
    def weight_count(self) -> int:
        return sum(int(a.values.size) for s in self.steps for a in s.arrays if a.role in ("weight", "bias"))


def c_name(name: str) -> str:
    """Tensor/op name -> C identifier fragment: 'b3/expand' -> 'b3_expand'."""
    out = re.sub(r"[^0-9A-Za-z_]", "_", name).lower()
    return out if not out[0].isdigit() else f"t_{out}"


def _shift_int8(shift: np.ndarray) -> np.ndarray:
    assert shift.min() >= -128 and shift.max() <= 127, "requantization shifts fit int8"
    return shift.astype(np.int8)


def fold_zero_point(op, zp: int, foldable: bool = True) -> tuple[np.ndarray, int]:
    """(bias, kernel input zero point) for an op whose inputs have zero point zp. An unpadded product (1x1 conv,
    dense) takes bias - zp * (each output channel's weight sum) and zero point 0: sum((x - zp) * w) + bias ==
    sum(x * w) + that bias, so kernels need no per-call weight sums. Kept unfolded (op.bias, zp) when not foldable
    (padding reads the zero point) or when the folded accumulators could leave int32 (|bias| + n * 128 * 128)."""
    if not foldable or zp == 0:
        return op.bias, int(zp)
    w = op.weight.reshape(op.weight.shape[0], -1).astype(np.int64)
    out = op.bias.astype(np.int64) - int(zp) * w.sum(axis=1)
    if np.abs(out).max(initial=0) + w.shape[1] * 128 * 128 >= 2 ** 31:
        return op.bias, int(zp)
    return out.astype(np.int32), 0


def _arrays(cname: str, op, with_requant: bool = True, bias: np.ndarray | None = None) -> tuple:
    """The op's constants (bias: in place of op.bias, e.g. folded)."""
    bias = op.bias if bias is None else bias
    arrs = [ConstArray(f"mnv2_{cname}_weight", "int8_t", op.weight, "weight"),
            ConstArray(f"mnv2_{cname}_bias", "int32_t", bias, "bias")]
    if with_requant:
        arrs += [ConstArray(f"mnv2_{cname}_mult", "int32_t", op.multiplier, "mult"),
                 ConstArray(f"mnv2_{cname}_shift", "int8_t", _shift_int8(op.shift), "shift")]
    return tuple(arrs)


# Kernel variants that read weights widened to int16 pairs at generation time, with their requantization constants
# (the block parameters a_ww, b_ww, c_ww: templates/kernels/arm_dsp.c.j2's streams, as mnv2_widen_stream and
# mnv2_dw_stream build them), trading flash for the sign extensions and constant loads of the inner loops.
WIDENING_KERNELS = ("arm_dsp",)
# The kernels with the interleaved depthwise (mnv2_dsp_dwi_run), for which the memory plan pads the mid rows that it
# may take (memory.py's paddable).
PADDED_KERNELS = ("arm_dsp",)
# Stream sizes in int32 words (arm_dsp.c.j2's MNV2_STREAM_HEAD / MNV2_STREAM_TAIL per output channel pair around its
# 4 words per 4 inputs, MNV2_STREAM_TAIL_U on a stream marked STREAM_UNIFORM; MNV2_DW_STREAM_WORDS per 4 depthwise
# channels of a classic depthwise stream, MNV2_DW_STREAM_WORDS_U of a uniform one); a test holds them equal.
STREAM_HEAD_WORDS, STREAM_TAIL_WORDS, STREAM_TAIL_WORDS_U, DW_STREAM_WORDS, DW_STREAM_WORDS_U = 4, 6, 5, 54, 51
# The tap pairs (t, u) (taps ky * 3 + kx) of a depthwise stream, in its order (arm_dsp.c.j2's MNV2_DW_TAP_PAIRS, the
# order of mnv2_dsp_dw3_run_s's loads); a test holds the two equal.
DW_TAP_PAIRS = ((1, 2), (4, 5), (7, 8), (3, 6))
# Added to the em1 of a stream's last channel (arm_dsp.c.j2's MNV2_STREAM_LAST); a test holds the two equal.
STREAM_LAST = 256
# A 1x1 stage A of this many inputs (an even number of channels) gets the one-pixel stream (widen_one_stream,
# arm_dsp.c.j2's MNV2_ONE_INPUTS: one LDM of weights and constants per output channel); a test holds the two equal.
ONE_STREAM_INPUTS = 8
ONE_STREAM_WORDS = 8  # per output channel
# mnv2_dsp_one_run's requantization shift (arm_dsp.c.j2's MNV2_ONE_SHIFT; a test holds the two equal): every channel's
# requantization ends in one SSAT by this immediate shift, its weights, bias and K scaled by 2^d (uniform_scale).
ONE_STREAM_SHIFT = 11
# The depthwise stream kernels' requantization shift (arm_dsp.c.j2's MNV2_DW_SHIFT; a test holds the two equal), as
# ONE_STREAM_SHIFT for mnv2_dsp_one_run.
DW_STREAM_SHIFT = 10
# mnv2_dsp_pair_run_s's requantization shift at zero point -128 on a stream marked STREAM_UNIFORM (arm_dsp.c.j2's
# MNV2_PAIR_SHIFT; a test holds the two equal), as ONE_STREAM_SHIFT for mnv2_dsp_one_run.
PAIR_STREAM_SHIFT = 12
# Added to every shift word of a pair stream scaled for PAIR_STREAM_SHIFT (arm_dsp.c.j2's MNV2_STREAM_UNIFORM).
STREAM_UNIFORM = 512
# Stage A writes a block's int16 mid rows itself on a pair stream of at most this many inputs (arm_dsp.c.j2's
# mnv2_dwh_direct: 4 MNV2_PAIR_UNROLL, one pass of mnv2_dsp_pair_run_s); a test holds the two equal.
DWH_DIRECT_MAX_INPUTS = 64
# A block stage without generated widened weights gets them widened on the stack once per block call (arm_dsp.c.j2's
# mnv2_block_run) up to these sizes: a 1x1 product of at most RUNTIME_WW_MAX weights (MNV2_DSP_WW_MAX), a 3 x 3
# depthwise of at most RUNTIME_DWW_MAX channels whose bias it folds, up to DW_BASE_MAX (MNV2_DSP_DWW_MAX,
# MNV2_DW_BASE_MAX); a test holds them equal.
RUNTIME_WW_MAX, RUNTIME_DWW_MAX, DW_BASE_MAX = 384, 48, 192
# The largest d of uniform_scale: int8 weights doubled and scaled by 2^d stay int16 ([-32768, 32512]).
UNIFORM_D_MAX = 7
# Flash kept free for code, constant tables and test inputs when the default widening budget is worked out.
FLASH_RESERVE_BYTES = 64 * 1024


def _int16_pairs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """int32 words holding lo in the low half and hi in the high half, as int16 (what SMLAD reads)."""
    words = (lo.astype(np.int64) & 0xFFFF) | ((hi.astype(np.int64) & 0xFFFF) << 16)
    return words.astype(np.uint32).view(np.int32)


def short_shift(shift) -> bool:
    """Whether every shift (int or array) fits the DSP kernels' short requantization (arm_dsp.c.j2's mnv2_rq_fast):
    in [-22, -1]."""
    return bool(np.all((np.asarray(shift) >= -22) & (np.asarray(shift) <= -1)))


def short_requant(op) -> bool:
    """Whether the DSP kernels' short requantization (arm_dsp.c.j2's mnv2_rq_fast: short_shift, the whole int8 output
    range) can hold this op's constants; they also check the accumulator bound at run time."""
    return (op.act_min == -128 and op.act_max == 127 and bool(np.all(op.multiplier >= 0))
            and short_shift(op.shift))


# Bits of the kernels' `fast` parameter (mnv2_kernels.h.j2's MNV2_FAST_*; a test holds the two equal): the short
# paths of the Arm DSP kernels that a layer's constants allow, decided here once instead of at every call.
FAST_A, FAST_DW, FAST_PROJ, FAST_ADD, FAST_ADD_LUT, FAST_DWI, FAST_DWH = 1, 2, 4, 8, 16, 32, 64
# The largest accumulator term: an int8 weight times an input minus its zero point.
ACC_TERM_MAX = 255 * 128


def rq_fast_ok(mult, shift, bias, terms: int) -> bool:
    """Whether the short requantization (arm_dsp.c.j2's mnv2_rq_fast) holds for channels whose accumulators are bias
    (None: 0) + `terms` products of at most ACC_TERM_MAX: every mult >= 0, every shift in [-22, -1] (short_shift) and
    bias ^ (bias >> 31) <= 2^30 - 2 - terms ACC_TERM_MAX, so that |accumulator| < 2^30 (mnv2_srdhm_small); none past
    32000 terms."""
    if terms > 32000:
        return False
    b = np.zeros(1, np.int64) if bias is None else np.asarray(bias, np.int64)
    room = (1 << 30) - 2 - terms * ACC_TERM_MAX
    return bool(np.all(np.asarray(mult, np.int64) >= 0) and short_shift(shift)
                and np.all(np.where(b < 0, -b - 1, b) <= room))


def conv_fast(params: dict, bias, mult, shift) -> int:
    """mnv2_conv_params_t's `fast`: 1 when a 1x1 conv's products take the short requantization (the whole int8 output
    range and rq_fast_ok over in_c terms), else 0."""
    return int(params["act_min"] == -128 and params["act_max"] == 127
               and rq_fast_ok(mult, shift, bias, params["in_c"] * params["kernel"] ** 2))


def dw_fast(channels: int, kernel: int, out_zp: int, act_min: int, act_max: int, bias, mult, shift) -> bool:
    """Whether a depthwise layer takes the DSP kernels' short requantization at output zero point -128
    (MNV2_RQ_OUT2Z: a ReLU output over the whole int8 range) on its groups of 4 channels."""
    n = channels & ~3
    return (out_zp == -128 and act_min == -128 and act_max == 127
            and rq_fast_ok(mult[:n], shift[:n], None if bias is None else bias[:n], kernel * kernel))


def block_fast(p: dict, stages: tuple, has_lut: bool) -> int:
    """mnv2_block_params_t's `fast` (FAST_* bits) for a block's params p (its fields) and the (bias, mult, shift) of
    each stage as emitted (stage A's None without one): stage A's products (the whole int8 range, rq_fast_ok), the
    depthwise (dw_fast), the projection (the whole int8 range, rq_fast_ok, and a residual ADD's rescales by mult >= 0,
    shift <= 0, left shift <= 21), the ADD's short kernel (left shift 20, shifts above -32, the whole int8 range) and
    its table (has_lut, an output rescale that fits rq_fast_ok)."""
    a, b, c = stages
    flags = 0
    if a is not None and p["a_kernel"] > 0 and p["mid_act_min"] == -128 and p["mid_act_max"] == 127 and rq_fast_ok(
            a[1], a[2], a[0], p["a_kernel"] ** 2 * p["in_c"]):
        flags |= FAST_A
    if dw_fast(p["mid_c"], p["b_kernel"], p["dw_zp"], p["dw_act_min"], p["dw_act_max"], *b):
        flags |= FAST_DW
    add_shifts = (p["add_in_shift"], p["add_proj_shift"], p["add_out_shift"])
    add_mults = (p["add_in_mult"], p["add_proj_mult"], p["add_out_mult"])
    if (p["proj_act_min"] == -128 and p["proj_act_max"] == 127 and rq_fast_ok(c[1], c[2], c[0], p["mid_c"])
            and (not p["residual"] or (all(s <= 0 for s in add_shifts) and all(m >= 0 for m in add_mults)
                                       and p["add_left_shift"] <= 21))):
        flags |= FAST_PROJ
    if (p["residual"] and p["add_left_shift"] == 20 and all(s > -32 for s in add_shifts)
            and p["add_act_min"] == -128 and p["add_act_max"] == 127):
        flags |= FAST_ADD
        out_shift = (p["add_out_shift"] + 128) % 256 - 128  # the kernel reads it as int8_t
        if has_lut and rq_fast_ok([p["add_out_mult"]], [out_shift], None, 0):
            flags |= FAST_ADD_LUT
    return flags


def relu_floor(op) -> bool:
    """Whether op's output zero point is -128 (arm_dsp.c.j2's MNV2_RQ_ZP_FLOOR, which the depthwise and one-pixel
    stream kernels require and check): a fused ReLU clamps at quantize(0) = the zero point, so act_min == -128 means
    the zero point is -128."""
    return op.activation != "none" and op.act_min == -128


def _em1_k(shift: np.ndarray, out_zp: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel em1 = -shift - 1 and the rounding constant K = (2 out_zp + 1) 2^em1 of the short requantization."""
    em1 = -shift.astype(np.int64) - 1
    return em1, (2 * int(out_zp) + 1) * (1 << em1)


def widen_stream(op, bias: np.ndarray, out_zp: int) -> np.ndarray:
    """A conv's widened stream for the pixel-pair kernel (the layout of mnv2_block_params_t's a_ww / c_ww, as
    arm_dsp.c.j2's mnv2_widen_stream builds it): per pair of output channels (o, o + 1), their doubled biases twice; per
    group of 4 inputs (each row of kh kw in inputs zero-padded to a multiple of 4) the doubled weights as int16 pairs,
    row o's inputs (0, 2) and (1, 3), then row o + 1's; their multipliers, K = (2 out_zp + 1) 2^em1 and
    em1, em1' (em1 = -shift - 1; the last pair's em1' + STREAM_LAST). A ReLU's at output zero point -128 with every
    channel within uniform_scale's reach of PAIR_STREAM_SHIFT (pair_stream_uniform), each channel's biases and
    weights are scaled by 2^(d + 1) instead of 2, K' = (2 out_zp + 1) 2^(PAIR_STREAM_SHIFT - 1) + 2^(d - 1) and a
    single shift word STREAM_UNIFORM (+ STREAM_LAST on the last pair) ends the pair's words (the kernel's third
    requantization, MNV2_RQ_OUTU)."""
    w = op.weight.reshape(op.weight.shape[0], -1).astype(np.int64)
    out_c, n = w.shape
    assert out_c >= 2 and short_requant(op)
    pairs = out_c // 2
    uniform = out_zp == -128 and pair_stream_uniform(op)
    scale, k, em1 = (x[:2 * pairs] for x in _stream_consts(op, out_zp, PAIR_STREAM_SHIFT, n, uniform))
    w = np.pad(w, ((0, 0), (0, -n % 4)))[:2 * pairs] * scale[:, None]
    g = w.reshape(pairs, 2, -1, 4).transpose(0, 2, 1, 3)  # pair, group, row, input
    groups = _int16_pairs(g[..., [0, 1]], g[..., [2, 3]]).reshape(pairs, -1)
    k, em1 = k.reshape(pairs, 2), em1.reshape(pairs, 2)
    em1[-1, 1] += STREAM_LAST  # the kernel's end (its shifts read only the low byte)
    head = np.tile((bias[:2 * pairs].astype(np.int64) * scale).reshape(pairs, 2), 2)  # the four accumulators' starts
    tail = np.concatenate([op.multiplier[:2 * pairs].astype(np.int64).reshape(pairs, 2), k,
                           em1[:, 1:] if uniform else em1], axis=1)
    words = np.concatenate([head, groups.astype(np.int64), tail], axis=1)
    assert np.all((words >= -2 ** 31) & (words < 2 ** 31))
    return words.astype(np.int32).reshape(-1)


def dw_stream_uniform(op) -> bool:
    """Whether a depthwise layer's stream takes the uniform form: every channel within uniform_scale's reach of
    DW_STREAM_SHIFT over the 9 taps (else the classic form, the mnv2_dsp_dw3_*_c kernels)."""
    return uniform_scale(op, DW_STREAM_SHIFT, 9) is not None


def pair_stream_uniform(op) -> bool:
    """Whether a conv's pair stream at output zero point -128 takes the uniform form: a ReLU's (relu_floor: its zero
    point is -128) with every channel within uniform_scale's reach of PAIR_STREAM_SHIFT."""
    return relu_floor(op) and uniform_scale(op, PAIR_STREAM_SHIFT, int(np.prod(op.weight.shape[1:]))) is not None


def uniform_scale(op, total: int, terms: int) -> np.ndarray | None:
    """Per output channel d = total - e (e = -shift) when the op's requantization at zero point MNV2_RQ_ZP_FLOOR can
    end in one SSAT by the immediate shift `total` (arm_dsp.c.j2's MNV2_RQ_OUTU), else None. With the doubled
    accumulator 2x scaled by 2^d (its weights and bias) and K' = (2 zp + 1) 2^(total - 1) + 2^(d - 1), SMMLA gives
    floor(2^d N / 2^32) for MNV2_RQ_VAL2Z's N = 2 x mult + K 2^32 + 2^31, and its floor division by 2^total equals
    floor(N / 2^(32 + e)), MNV2_RQ_VAL2Z's value. Needs d in [1, UNIFORM_D_MAX] (K' an integer; int8 weights times
    2^(d + 1) <= 2^8 stay within int16) and |x| 2^d < 2^30 for bias + `terms` products of at most ACC_TERM_MAX
    (2 x 2^d an int32)."""
    d = total + op.shift.astype(np.int64)
    b = np.abs(op.bias.astype(np.int64))
    if np.any(d < 1) or np.any(d > UNIFORM_D_MAX) or np.any((b + terms * ACC_TERM_MAX) << d > (1 << 30) - 2):
        return None
    return d


def _stream_consts(op, out_zp: int, total: int, terms: int, uniform: bool = True) -> tuple:
    """Per output channel (the factor of its weights and bias, its rounding constant, its shift word) in a stream:
    within uniform_scale's reach of `total` (and `uniform`), 2^(d + 1), K' = (2 out_zp + 1) 2^(total - 1) + 2^(d - 1)
    and STREAM_UNIFORM; else the classic form, 2 (doubled), K = (2 out_zp + 1) 2^em1 and em1."""
    d = uniform_scale(op, total, terms) if uniform else None
    if d is None:
        em1, k = _em1_k(op.shift, out_zp)
        return np.full(em1.size, 2, np.int64), k, em1
    return 2 << d, (2 * int(out_zp) + 1) * (1 << (total - 1)) + (1 << (d - 1)), np.full(d.size, STREAM_UNIFORM,
                                                                                          np.int64)


def one_stream_applies(op) -> bool:
    """Whether a stage A conv takes the one-pixel stream instead of the pair stream."""
    return (op.kind == "conv" and op.weight.shape[1:3] == (1, 1) and op.weight.shape[-1] == ONE_STREAM_INPUTS
            and op.weight.shape[0] % 2 == 0 and short_requant(op) and relu_floor(op))


def classic_kernels(graph: QuantGraph) -> dict:
    """Which kernels' streams of the classic form (uniform_scale out of reach) the model needs: "one" for a one-pixel
    stream, "dw" for a depthwise stream (arm_dsp.c.j2's MNV2_MODEL_ONE_CLASSIC / MNV2_MODEL_DW_CLASSIC: the classic
    kernels are compiled only then)."""
    return {"one": any(one_stream_applies(op) and uniform_scale(op, ONE_STREAM_SHIFT, ONE_STREAM_INPUTS) is None
                       for op in graph.ops),
            "dw": any(dw_stream_applies(op) and not dw_stream_uniform(op) for op in graph.ops)}


def widen_one_stream(op, bias: np.ndarray, out_zp: int) -> np.ndarray:
    """A 1x1 stage A's one-pixel stream (mnv2_block_params_t's a_ww with a_one, as arm_dsp.c.j2's mnv2_dsp_one_run
    reads it): per output channel, with d its uniform_scale at ONE_STREAM_SHIFT, its bias times 2^(d + 1), its
    weights times 2^(d + 1) of inputs (0, 2), (1, 3), (4, 6), (5, 7) as int16 pairs, its multiplier,
    K' = (2 out_zp + 1) 2^(ONE_STREAM_SHIFT - 1) + 2^(d - 1) and STREAM_UNIFORM (the last channel's + STREAM_LAST).
    Out of uniform_scale's reach, the classic form (mnv2_dsp_one_run_c): the doubled bias and weights, the multiplier,
    K = (2 out_zp + 1) 2^em1 and em1."""
    assert one_stream_applies(op)
    scale, k, last = _stream_consts(op, out_zp, ONE_STREAM_SHIFT, ONE_STREAM_INPUTS)
    last[-1] += STREAM_LAST
    w = op.weight.reshape(op.weight.shape[0], ONE_STREAM_INPUTS).astype(np.int64) * scale[:, None]
    pairs = _int16_pairs(w[:, [0, 1, 4, 5]], w[:, [2, 3, 6, 7]]).astype(np.int64)
    words = np.concatenate([(scale * bias.astype(np.int64))[:, None], pairs,
                            op.multiplier.astype(np.int64)[:, None], k[:, None], last[:, None]], axis=1)
    assert words.shape[1] == ONE_STREAM_WORDS and np.all((words >= -2 ** 31) & (words < 2 ** 31))
    return words.astype(np.int32).reshape(-1)


def dw_stream_applies(op) -> bool:
    """Whether a depthwise layer gets a depthwise stream: 3x3, channels a multiple of 4, the short requantization at
    zero point MNV2_RQ_ZP_FLOOR."""
    return (op.kind == "depthwise" and op.weight.shape[:2] == (3, 3) and op.weight.shape[-1] % 4 == 0
            and short_requant(op) and relu_floor(op))


# Channel counts given their own copy of the depthwise stream's two-window kernel (arm_dsp.c.j2's
# mnv2_dsp_dw3_run_wN: the column stride as an immediate, one instruction less per group of 4 channels and window);
# each copy takes about 370 bytes of code, given where it saves at least DW_FIXED_MIN_WINDOWS instructions: at most
# DW_FIXED_MAX, one with the interleaved depthwise's code in the model (two would leave alpha 0.35 @ 144 over 32 KiB
# on the cortex-m7).
DW_FIXED_MAX, DW_FIXED_MIN_WINDOWS = 2, 2000


def _whole(out: int, size: int, stride: int, pad: int) -> int:
    """Output positions whose 3-tap window lies inside an input of `size`."""
    return sum(1 for o in range(out) if 0 <= o * stride - pad and o * stride - pad + 2 < size)


def dw_fixed_channels(graph: QuantGraph, dwi: frozenset = frozenset()) -> tuple:
    """The channel counts (ascending; at most DW_FIXED_MAX, 1 where `dwi` has layers; each with at least
    DW_FIXED_MIN_WINDOWS) of the depthwise-stream layers with the most group windows that the two-window kernel runs
    (whole windows x channels / 4, in rows of at least 4 pixels: narrower rows run as a triple) summed per count: those
    mnv2_dsp_dw3_run_wN is compiled for. Layers in `dwi` (on the interleaved kernel) do not count."""
    windows: dict = {}
    for op in graph.ops:
        if dw_stream_applies(op) and op.name not in dwi:
            ih, iw, c = graph.shapes[op.input]
            h, w, _ = graph.shapes[op.output]
            n = (_whole(h, ih, op.stride, op.padding[0]) * _whole(w, iw, op.stride, op.padding[2]) * c // 4
                 if w >= 4 else 0)
            windows[c] = windows.get(c, 0) + n
    best = sorted((c for c in windows if windows[c] >= DW_FIXED_MIN_WINDOWS), key=lambda c: (-windows[c], c))
    return tuple(sorted(best[:1 if dwi else DW_FIXED_MAX]))


def widen_dw_stream(op, in_zp: int, out_zp: int) -> np.ndarray:
    """3x3 depthwise weights ([3][3][c], c a multiple of 4) and constants for the whole-window kernel (the layout of
    mnv2_block_params_t's b_ww, as arm_dsp.c.j2's mnv2_dw_stream builds it), each channel scaled by 2^(d + 1), d its
    uniform_scale at DW_STREAM_SHIFT: per group of 4 channels (DW_STREAM_WORDS_U words), the scaled folded biases
    (bias - in_zp * the 9 weights: whole windows); per tap the scaled weights of channels (0, 2) and (1, 3) as int16
    pairs; the scaled biases (windows crossing the edge); per tap pair (t, u) of DW_TAP_PAIRS the scaled (w_t, w_u) of
    channels 0, 2, 1, 3 as int16 pairs; then the multiplier and K' = (2 out_zp + 1) 2^(DW_STREAM_SHIFT - 1) +
    2^(d - 1) of channels 0, 2, 1, 3 (the order of the kernels' loads) and STREAM_UNIFORM (the last group's +
    STREAM_LAST). Out of uniform_scale's reach (dw_stream_uniform), the classic form (the mnv2_dsp_dw3_*_c kernels,
    DW_STREAM_WORDS a group): doubled, then the multiplier, K = (2 out_zp + 1) 2^em1 and em1 of channels 0, 2, 1, 3."""
    c = op.weight.shape[-1]
    assert dw_stream_applies(op)
    w = op.weight.reshape(9, c).astype(np.int64)
    groups = c // 4
    sc, k, last = _stream_consts(op, out_zp, DW_STREAM_SHIFT, 9)
    uniform = dw_stream_uniform(op)
    scale = sc.reshape(groups, 4)
    base = scale * (op.bias.astype(np.int64) - int(in_zp) * w.sum(axis=0)).reshape(groups, 4)
    g = (w * sc).reshape(9, groups, 4).transpose(1, 0, 2)  # group, tap, channel
    taps = _int16_pairs(g[..., [0, 1]], g[..., [2, 3]]).reshape(groups, 18).astype(np.int64)
    m, k, last = (v.astype(np.int64).reshape(groups, 4) for v in (op.multiplier, k, last))
    cols = (([v[:, j] for j in (0, 2, 1, 3) for v in (m, k)] + [last[:, 3]]) if uniform
            else [v[:, j] for j in (0, 2, 1, 3) for v in (m, k, last)])
    consts = np.stack(cols, axis=1)
    consts[-1, -1] += STREAM_LAST  # the kernels' end, the last word (a classic one's shifts read only the low byte)
    bias2 = scale * op.bias.astype(np.int64).reshape(groups, 4)
    pairs = np.concatenate([_int16_pairs(g[:, t][:, [0, 2, 1, 3]], g[:, u][:, [0, 2, 1, 3]]).astype(np.int64)
                            for t, u in DW_TAP_PAIRS], axis=1)
    words = np.concatenate([base, taps, bias2, pairs, consts], axis=1)
    assert words.shape[1] == (DW_STREAM_WORDS_U if uniform else DW_STREAM_WORDS)
    assert np.all((words >= -2 ** 31) & (words < 2 ** 31))
    return words.astype(np.int32).reshape(-1)


# Words per 2 channels of an interleaved depthwise stream (arm_dsp.c.j2's MNV2_DWI_WORDS; a test holds the two equal).
DWI_WORDS = 21
# The step word's mark of an interleaved depthwise stream's last channel pair (arm_dsp.c.j2's MNV2_DWI_LAST).
DWI_LAST = 256
# The widest blocks the interleaved depthwise takes (arm_dsp.c.j2's MNV2_DSP_WIDE_MAX: the widened pair on the stack;
# MNV2_DSP_PROJ_MAX: a residual block's projected pair on the stack).
DWI_MID_MAX, DWI_OUT_MAX = 640, 256
# The widest mid rows the interleaved depthwise takes as int16 (arm_dsp.c.j2's mnv2_dsp_dwh_run_N: the next pixel
# pair 4 N - 8 bytes on, an LDRD offset up to 1020), and the most channel counts that get such a kernel (one each);
# the same of stride 2 (mnv2_dsp_dwh2_run_N: the pair after next 8 N - 8 bytes on; 238 bytes of code each).
DWH_MID_MAX, DWH_FIXED_MAX = 256, 5
DWH2_MID_MAX, DWH2_FIXED_MAX = 128, 2


def dwh_mid_max(stride: int) -> int:
    """The most mid channels of an interleaved depthwise of this stride on int16 rows."""
    return DWH_MID_MAX if stride == 1 else DWH2_MID_MAX


def dwh_candidates(graph: QuantGraph, dwi: frozenset) -> tuple:
    """The interleaved depthwise ops (`dwi`; of stride 2, those memory.paddable allows) that may run on int16 mid rows
    (FAST_DWH), at most dwh_mid_max channels, most outputs first: generate.plan_and_lower gives them int16 rows in
    this order where the wider rows leave the arena as it is, of at most DWH_FIXED_MAX (DWH2_FIXED_MAX) channel
    counts."""
    ops = [op for op in graph.ops if op.name in dwi and graph.shapes[op.input][2] <= dwh_mid_max(op.stride)]
    return tuple(op.name for op in sorted(ops, key=lambda op: (-int(np.prod(graph.shapes[op.output])), op.name)))


def dwh_direct(a, params: dict) -> bool:
    """Whether a block's stage A `a`, given its generated stream, writes the int16 interleaved mid rows itself
    (arm_dsp.c.j2's mnv2_dwh_direct, which decides at run time; its blocks' rows are otherwise widened by
    mnv2_dwh_relayout): a 1x1 expansion (stride 1, unpadded) with the short requantization (FAST_A) at zero point
    -128, on its uniform one-pixel stream or, of at most DWH_DIRECT_MAX_INPUTS inputs, its uniform pair stream."""
    n = params["in_c"]
    if not (params["a_kernel"] == 1 and params["a_stride"] == 1 and params["a_pad_top"] == params["a_pad_left"] == 0
            and params["in_w"] == params["mid_w"] and params["fast"] & FAST_A and params["mid_zp"] == -128):
        return False
    if params["a_one"]:
        return n == ONE_STREAM_INPUTS and uniform_scale(a, ONE_STREAM_SHIFT, ONE_STREAM_INPUTS) is not None
    return 4 <= n <= DWH_DIRECT_MAX_INPUTS and n % 4 == 0 and pair_stream_uniform(a)


def runtime_widening(params: dict, dw_bias: bool) -> bool:
    """Whether a block (its params, with the stages' widened-weight symbols or 0) widens a stage's weights on the stack
    at run time (arm_dsp.c.j2's mnv2_block_run, the source of truth: it does so only where this holds): a 1x1 stage A
    or projection of whole groups of 4 inputs with no generated stream and at most RUNTIME_WW_MAX weights, or a 3 x 3
    depthwise (dw_bias: with a bias) of whole groups of 4 channels with none and at most RUNTIME_DWW_MAX channels."""
    n, mid_c, out_c = params["in_c"], params["mid_c"], params["out_c"]
    a = (params["a_kernel"] == 1 and not params["a_ww"] and n >= 4 and n % 4 == 0 and mid_c >= 2
         and n * mid_c <= RUNTIME_WW_MAX)
    c = not params["c_ww"] and mid_c >= 4 and mid_c % 4 == 0 and out_c >= 2 and mid_c * out_c <= RUNTIME_WW_MAX
    return a or runtime_dw_widening(params, dw_bias) or c


def runtime_dw_widening(params: dict, dw_bias: bool) -> bool:
    """runtime_widening's depthwise part: a 3 x 3 depthwise (dw_bias: with a bias) of whole groups of 4 channels with
    no generated stream and at most RUNTIME_DWW_MAX channels gets its stream on the stack (mnv2_dw_stream)."""
    mid_c = params["mid_c"]
    return (params["b_kernel"] == 3 and dw_bias and not params["b_ww"] and mid_c % 4 == 0
            and mid_c <= min(RUNTIME_DWW_MAX, DW_BASE_MAX))


def dwh_channels(graph: QuantGraph, dwh: frozenset, stride: int = 1) -> tuple:
    """The channel counts (ascending) of the depthwise ops of this stride on int16 mid rows: arm_dsp.c.j2's
    mnv2_dsp_dwh_run_N (stride 1), mnv2_dsp_dwh2_run_N (stride 2)."""
    return tuple(sorted({graph.shapes[op.input][2] for op in graph.ops if op.name in dwh and op.stride == stride}))


def widen_dwi_stream(op, in_zp: int, out_zp: int) -> np.ndarray:
    """3x3 depthwise weights ([3][3][c], c a multiple of 4, dw_stream_uniform) and constants for the interleaved
    kernels (arm_dsp.c.j2's mnv2_dsp_dwi_run, _dwh_run_N and, stride 2, _dwh2_run_N; mnv2_block_params_t's b_ww under
    MNV2_FAST_DWI): per pair of
    channels (c, c + 1), DWI_WORDS words, each channel scaled by 2^(d + 1) as in widen_dw_stream: the scaled folded
    biases of c, c, c + 1, c + 1 (the four accumulators' starts: two output pixels); per window row the int16 pairs
    (w0, w1) and (w1, w2) of channel c, then of c + 1; the multiplier and K' of c, then of c + 1; a mark word, DWI_LAST
    on the last pair, else 0 (the kernels store each pair's outputs 8 bytes after the last pair's)."""
    c = op.weight.shape[-1]
    assert dw_stream_applies(op) and dw_stream_uniform(op) and op.stride in (1, 2)
    w = op.weight.reshape(3, 3, c).astype(np.int64)
    sc, k, _ = _stream_consts(op, out_zp, DW_STREAM_SHIFT, 9)
    base = sc * (op.bias.astype(np.int64) - int(in_zp) * w.reshape(9, c).sum(axis=0))
    ws = w * sc  # row, column, channel
    pairs = c // 2
    heads = np.repeat(base.reshape(pairs, 2), 2, axis=1)  # c, c, c + 1, c + 1
    rows = []
    for r in range(3):
        w01 = _int16_pairs(ws[r, 0], ws[r, 1]).astype(np.int64).reshape(pairs, 2)
        w12 = _int16_pairs(ws[r, 1], ws[r, 2]).astype(np.int64).reshape(pairs, 2)
        rows.append(np.stack([w01[:, 0], w12[:, 0], w01[:, 1], w12[:, 1]], axis=1))
    m = op.multiplier.astype(np.int64).reshape(pairs, 2)
    kk = np.asarray(k, np.int64).reshape(pairs, 2)
    mark = np.zeros(pairs, np.int64)
    mark[-1] = DWI_LAST
    words = np.concatenate([heads] + rows + [np.stack([m[:, 0], kk[:, 0], m[:, 1], kk[:, 1], mark], axis=1)],
                           axis=1)
    assert words.shape[1] == DWI_WORDS and np.all((words >= -2 ** 31) & (words < 2 ** 31))
    return words.astype(np.int32).reshape(-1)


def dwi_input_order(n: int) -> np.ndarray:
    """The order of a projection's n inputs (a multiple of 4) whose pair stream reads the widened pair that
    mnv2_dsp_dwi_run writes (in its x layout, read by mnv2_prs_groups_x): inputs (0, 1), (2, 3) of each 4 where
    widen_stream pairs (0, 2), (1, 3)."""
    return (np.arange(n).reshape(-1, 4)[:, [0, 2, 1, 3]]).reshape(-1)


# A residual ADD's lookup table (mnv2_block_params_t's add_lut): each input's rescaled value for every int8 byte.
ADD_LUT_WORDS = 2 * 256


def add_lut(op, in_zp: int, proj_zp: int) -> np.ndarray:
    """The block's residual ADD (inputs: the block input, zero point in_zp, and the projection, proj_zp) as a table
    for the DSP kernels (the layout of mnv2_block_params_t's add_lut): word 128 + x of each half, x in [-128, 127],
    is twice TFLite's rescale of input byte x, MultiplyByQuantizedMultiplierSmallerThanOneExp((x - zp) << left_shift,
    multiplier, shift): the block input's, then the projection's (doubled: their sum is the doubled accumulator that
    the kernels' short requantization takes)."""
    x = np.arange(-128, 128, dtype=np.int64)
    halves = [2 * requant.multiply_by_quantized_multiplier_smaller_than_one((x - zp) * (1 << op.left_shift), m, sh)
              for zp, m, sh in zip((in_zp, proj_zp), op.input_multipliers, op.input_shifts)]
    words = np.concatenate(halves)
    assert words.size == ADD_LUT_WORDS and np.all((words >= -2 ** 31) & (words < 2 ** 31))
    return words.astype(np.int32)


def widenable(op, stage_a: bool = False) -> int | None:
    """The extra flash bytes when the DSP kernels can read this block stage's weights widened (or, for a residual
    ADD, its lookup table), else None. stage_a: the op is the block's stage A (which may take the one-pixel stream)."""
    if stage_a and one_stream_applies(op):
        return 4 * ONE_STREAM_WORDS * op.weight.shape[0]
    if op.kind == "add":  # the ADDs arm_dsp.c.j2's mnv2_dsp_add runs on the table (mnv2_dsp_add_ok, its output shift)
        shifts = (*op.input_shifts, op.output_shift)
        ok = (op.left_shift == 20 and op.act_min == -128 and op.act_max == 127 and all(-32 < s <= 0 for s in shifts)
              and short_shift(op.output_shift))
        return 4 * ADD_LUT_WORDS if ok else None
    if (op.kind == "conv" and op.weight.shape[0] >= 2 and (op.weight.shape[1] > 1 or op.weight.shape[-1] % 4 == 0)
            and short_requant(op)):
        n4 = -(-int(np.prod(op.weight.shape[1:])) // 4)
        tail = STREAM_TAIL_WORDS_U if pair_stream_uniform(op) else STREAM_TAIL_WORDS
        return 4 * (op.weight.shape[0] // 2) * (STREAM_HEAD_WORDS + 4 * n4 + tail)
    if dw_stream_applies(op):
        return 4 * (DW_STREAM_WORDS_U if dw_stream_uniform(op) else DW_STREAM_WORDS) * (op.weight.shape[-1] // 4)
    return None


# The int32_t scalar fields of mnv2_block_params_t (the others are int16_t).
BLOCK_INT32_FIELDS = frozenset({"add_in_mult", "add_proj_mult", "add_out_mult"})


def check_block_fields(block: str, params: dict) -> None:
    """Raises UserError, naming the block and field, when a value does not fit its mnv2_block_params_t field."""
    for field, value in params.items():
        if field not in BLOCK_INT32_FIELDS and not -2 ** 15 <= value < 2 ** 15:
            raise UserError(f"block {block}: {field} = {value} does not fit the int16 field of the streamed "
                            f"block's parameters (-32768..32767)")


@dataclass(frozen=True)
class _BlockParts:
    """One block's share of a Step (_block_parts): its params, arrays, MACs, stage phrases and Step's dwi, dwh,
    dwh_direct, runtime_ww, dw_stream, slow_proj."""
    params: dict
    arrays: tuple
    macs: int
    stages: list
    dwi: tuple
    dwh: tuple
    dwh_direct: tuple
    runtime_ww: bool
    dw_stream: tuple
    slow_proj: bool


def _block_parts(graph: QuantGraph, unit, ops: dict, wide: frozenset = frozenset(),
                 striped: bool = False) -> _BlockParts:
    """A streamed inverted-residual block (mnv2_block_s8 / one half of mnv2_chain_s8): stage A (expansion or stem
    conv), depthwise, projection, residual ADD; the stages named in `wide` also get their weights widened (a_ww,
    b_ww, c_ww), and the weights and constants go in its params' stage[] (no call arguments)."""
    qp, shapes = graph.qparams, graph.shapes
    a = ops[unit.a] if unit.a else None
    b, c = ops[unit.b], ops[unit.c]
    add = ops[unit.add] if unit.add else None
    src = unit.inputs[0]
    in_h, in_w, in_c = shapes[src]
    mid_h, mid_w, mid_c = shapes[b.input]
    out_h, out_w, out_c = shapes[unit.output]
    a_bias, a_zp = (fold_zero_point(a, qp[src].zero_point, a.weight.shape[1] == 1 and not any(a.padding)) if a
                    else (None, qp[src].zero_point))
    c_bias, c_zp = fold_zero_point(c, qp[b.output].zero_point)
    params = dict(in_h=in_h, in_w=in_w, in_c=in_c,
                  a_kernel=a.weight.shape[1] if a else 0, a_stride=a.stride if a else 1,
                  a_pad_top=a.padding[0] if a else 0, a_pad_left=a.padding[2] if a else 0,
                  mid_h=mid_h, mid_w=mid_w, mid_c=mid_c, in_zp=qp[src].zero_point,
                  a_zp=a_zp,
                  mid_zp=qp[b.input].zero_point, mid_act_min=a.act_min if a else -128,
                  mid_act_max=a.act_max if a else 127,
                  b_kernel=b.weight.shape[0], b_stride=b.stride, b_pad_top=b.padding[0], b_pad_left=b.padding[2],
                  out_h=out_h, out_w=out_w, out_c=out_c,
                  dw_zp=qp[b.output].zero_point, dw_act_min=b.act_min, dw_act_max=b.act_max, c_zp=c_zp,
                  proj_zp=qp[c.output].zero_point, proj_act_min=c.act_min, proj_act_max=c.act_max,
                  residual=1 if add else 0, add_left_shift=add.left_shift if add else 0,
                  add_in_mult=add.input_multipliers[0] if add else 0, add_in_shift=add.input_shifts[0] if add else 0,
                  add_proj_mult=add.input_multipliers[1] if add else 0,
                  add_proj_shift=add.input_shifts[1] if add else 0,
                  add_out_mult=add.output_multiplier if add else 0, add_out_shift=add.output_shift if add else 0,
                  add_out_zp=qp[add.output].zero_point if add else 0, add_act_min=add.act_min if add else -128,
                  add_act_max=add.act_max if add else 127, cs_cols=unit.cs_cols)
    check_block_fields(unit.output, params)
    if add is not None:
        assert add.inputs == (src, c.output), "the fused residual adds the block input and the projection"
    arrays = ((_arrays(c_name(a.name), a, bias=a_bias) if a else ()) + _arrays(c_name(b.name), b)
              + _arrays(c_name(c.name), c, bias=c_bias))
    symbols = (() if a else ("0",) * 4) + tuple(x.symbol for x in arrays)
    wide_arrays = []
    one = a is not None and a.name in wide and one_stream_applies(a)
    params["a_one"] = 1 if one else 0
    consts = [(bias, op.multiplier, _shift_int8(op.shift)) for op, bias in ((a, a_bias), (b, b.bias), (c, c_bias))
              if op is not None]
    stage_consts = ((None,) if a is None else ()) + tuple(consts)
    short = block_fast(params, stage_consts, False)
    # stride 2: on int16 rows only (no int8 kernel)
    dwi = (not striped and unit.padded and (b.stride == 1 or (unit.wide and mid_c <= dwh_mid_max(b.stride)))
           and b.name in wide and c.name in wide and dw_stream_uniform(b)
           and widenable(c) is not None and out_c % 2 == 0 and mid_c <= DWI_MID_MAX
           and (add is None or out_c <= DWI_OUT_MAX) and short & FAST_DW != 0 and short & FAST_PROJ != 0
           and c_zp == 0 and c_bias is not None and b.bias is not None)
    c_in = replace(c, weight=c.weight[..., dwi_input_order(mid_c)]) if dwi else c
    for field, op, widen in (("a_ww", a, lambda: (widen_one_stream if one else widen_stream)(a, a_bias,
                                                                                            params["mid_zp"])),
                             ("b_ww", b, lambda: (widen_dwi_stream if dwi else widen_dw_stream)(
                                 b, params["mid_zp"], params["dw_zp"])),
                             ("c_ww", c, lambda: widen_stream(c_in, c_bias, params["proj_zp"])),
                             ("add_lut", add, lambda: add_lut(add, params["in_zp"], params["proj_zp"]))):
        params[field] = 0
        if op is not None and op.name in wide:
            values = widen()
            assert values.nbytes == (4 * DWI_WORDS * mid_c // 2 if dwi and field == "b_ww"
                                     else widenable(op, stage_a=field == "a_ww"))
            wide_arrays.append(ConstArray(f"mnv2_{c_name(op.name)}_wide", "int32_t", values, "wide"))
            params[field] = wide_arrays[-1].symbol
    arrays += tuple(wide_arrays)
    dwh = dwi and unit.wide and mid_c <= dwh_mid_max(b.stride)
    params["fast"] = (block_fast(params, stage_consts, params["add_lut"] != 0) | (FAST_DWI if dwi else 0)
                      | (FAST_DWH if dwh else 0))
    direct = dwh and a is not None and a.name in wide and a_bias is not None and dwh_direct(a, params)
    # stage[]: stage A (0s without one), depthwise, projection: weights, bias, mult, shift
    params["stage"] = "{" + ", ".join("{" + ", ".join(symbols[i:i + 4]) + "}" for i in (0, 4, 8)) + "}"
    ka = a.weight.shape[1] if a else 0
    macs = (mid_h * mid_w * mid_c * ka * ka * in_c if a else 0) + out_h * out_w * mid_c * (
        b.weight.shape[0] ** 2 + out_c)
    stages = ([f"{'stem conv' if ka > 1 else 'expand'} {ka}x{ka}/{a.stride} to {mid_h}x{mid_w}x{mid_c}"] if a else [])
    kind = " (interleaved, int16 rows)" if dwh else " (interleaved)" if dwi else ""
    stages += [f"depthwise {b.weight.shape[0]}x{b.weight.shape[0]}/{b.stride}{kind}",
               f"project to {out_c}"]
    stages += ["residual add"] if add else []
    stages[0] += f" (column-sliding, {unit.cs_cols}-column windows)" if unit.cs_cols else ""
    dw_stream = (mid_c,) if (not dwi and params["b_kernel"] == 3 and mid_c % 4 == 0 and
                             (params["b_ww"] or runtime_dw_widening(params, b.bias is not None))) else ()
    # arm_dsp.c.j2's mnv2_block_body runs every pixel's projection (and ADD) on the pixel-pair kernels where these
    # hold (its pairs' and lone pixels' conditions; the bias is always given), else on mnv2_block_proj_pair / _one
    fast = params["fast"]
    slow_proj = not (fast & FAST_PROJ and 4 <= mid_c <= DWI_MID_MAX and mid_c % 4 == 0 and out_c % 2 == 0
                     and (add is None or (out_c <= DWI_OUT_MAX and fast & FAST_ADD)))
    return _BlockParts(params, arrays, macs, stages, (b.name,) if dwi else (), (b.name,) if dwh else (),
                       (b.name,) if direct else (), runtime_widening(params, b.bias is not None), dw_stream,
                       slow_proj)


def _shape_text(graph: QuantGraph, name: str) -> str:
    return "x".join(str(d) for d in graph.shapes[name])


def _block_step(graph: QuantGraph, unit, ops: dict, wide: frozenset = frozenset()) -> Step:
    b = _block_parts(graph, unit, ops, wide)
    summary = (f"streamed block {_shape_text(graph, unit.inputs[0])} -> {_shape_text(graph, unit.output)}: "
               + ", ".join(b.stages))
    return Step(unit.output, c_name(unit.output), "block", tuple(b.params.items()), unit.inputs, unit.output,
                b.arrays, b.macs, summary, scratch=unit.scratch, call_args=(), dwi=b.dwi, dwh=b.dwh,
                dwh_direct=b.dwh_direct, runtime_ww=b.runtime_ww, dw_stream=b.dw_stream, slow_proj=b.slow_proj)


def c_initializer(params: dict, indent: int = 8) -> str:
    """A nested C99 designated initializer, one field per line: {.field = value, ...} (the closing brace at
    `indent` - 4 columns, as a field value of the generated parameter structs)."""
    pad = " " * indent
    return "{\n" + "".join(f"{pad}.{k} = {v},\n" for k, v in params.items()) + " " * (indent - 4) + "}"


def _chain_step(graph: QuantGraph, unit, ops: dict, wide: frozenset = frozenset()) -> Step:
    """Two blocks as one pipeline (mnv2_chain_s8): the first block's output lives only in a ring of rows."""
    first, second = (_block_parts(graph, u, ops, wide, striped=unit.strips) for u in unit.parts)
    params = (("first", c_initializer(first.params)), ("second", c_initializer(second.params)),
              ("ring_rows", unit.ring_rows))
    mid = unit.parts[0].output
    summary = (f"chained blocks {_shape_text(graph, unit.inputs[0])} -> {_shape_text(graph, unit.output)}, "
               f"{mid} ({_shape_text(graph, mid)}) only as a ring of {unit.ring_rows} rows: "
               + ", ".join(first.stages) + "; then " + ", ".join(second.stages))
    kernel = "chain"
    if unit.strips:  # the chain's parameters nested, then the strips' layout
        kernel = "strips"
        chain = {"first": c_initializer(first.params, 12), "second": c_initializer(second.params, 12),
                 "ring_rows": unit.ring_rows}
        params = (("chain", c_initializer(chain)),) + tuple(strips_layout(graph, unit).c_params().items())
        summary += "; in two column strips, the left strip's outputs and the shared columns kept in consumed input"
    return Step(unit.output, c_name(unit.output), kernel, params, unit.inputs, unit.output,
                first.arrays + second.arrays, first.macs + second.macs, summary, scratch=unit.scratch, call_args=(),
                dwi=first.dwi + second.dwi, dwh=first.dwh + second.dwh,
                dwh_direct=first.dwh_direct + second.dwh_direct, runtime_ww=first.runtime_ww or second.runtime_ww,
                dw_stream=first.dw_stream + second.dw_stream, slow_proj=first.slow_proj or second.slow_proj)


def _op_step(graph: QuantGraph, op) -> Step:
    qp, shapes = graph.qparams, graph.shapes
    cn = c_name(op.name)
    if op.kind in ("conv", "depthwise"):
        ih, iw, ic = shapes[op.input]
        oh, ow, oc = shapes[op.output]
        k = op.weight.shape[1] if op.kind == "conv" else op.weight.shape[0]
        bias, in_zp = fold_zero_point(op, qp[op.input].zero_point,
                                      op.kind == "conv" and k == 1 and not any(op.padding))
        common = dict(kernel=k, stride=op.stride, pad_top=op.padding[0], pad_left=op.padding[2],
                      in_zp=in_zp, out_zp=qp[op.output].zero_point,
                      act_min=op.act_min, act_max=op.act_max)
        consts = (bias, op.multiplier, _shift_int8(op.shift))
        if op.kind == "conv":
            params = dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, **common)
            params["fast"] = conv_fast(params, *consts)
            macs = oh * ow * oc * k * k * ic
        else:
            params = dict(in_h=ih, in_w=iw, channels=ic, out_h=oh, out_w=ow, **common)
            params["fast"] = int(dw_fast(ic, k, params["out_zp"], op.act_min, op.act_max, *consts))
            macs = oh * ow * oc * k * k
        summary = (f"{op.kind} {k}x{k}/{op.stride} {ih}x{iw}x{ic} -> {oh}x{ow}x{oc}"
                   f"{'' if op.activation == 'none' else ' ' + op.activation}")
        arrays = _arrays(cn, op, bias=bias)
        return Step(op.name, cn, op.kind, tuple(params.items()), (op.input,), op.output, arrays, macs, summary)
    if op.kind == "add":
        a, b = op.inputs
        params = dict(size=int(np.prod(shapes[op.output])), in1_zp=qp[a].zero_point, in2_zp=qp[b].zero_point,
                      left_shift=op.left_shift, in1_mult=op.input_multipliers[0], in1_shift=op.input_shifts[0],
                      in2_mult=op.input_multipliers[1], in2_shift=op.input_shifts[1],
                      out_mult=op.output_multiplier, out_shift=op.output_shift, out_zp=qp[op.output].zero_point,
                      act_min=op.act_min, act_max=op.act_max)
        h, w, c = shapes[op.output]
        return Step(op.name, cn, "add", tuple(params.items()), (a, b), op.output, (), 0, f"add {h}x{w}x{c}")
    if op.kind == "avgpool":
        h, w, c = shapes[op.input]
        params = dict(h=h, w=w, channels=c, act_min=op.act_min, act_max=op.act_max)
        return Step(op.name, cn, "avgpool", tuple(params.items()), (op.input,), op.output, (), 0,
                    f"global average pool {h}x{w}x{c} -> {c}")
    if op.kind == "dense":
        n_out, n_in = op.weight.shape
        bias, in_zp = fold_zero_point(op, qp[op.input].zero_point)
        params = dict(in_n=n_in, out_n=n_out, in_zp=in_zp, mult=op.multiplier,
                      shift=op.shift, out_zp=qp[op.output].zero_point, act_min=op.act_min, act_max=op.act_max)
        return Step(op.name, cn, "fc", tuple(params.items()), (op.input,), op.output,
                    _arrays(cn, op, with_requant=False, bias=bias), n_in * n_out, f"fully connected {n_in} -> {n_out}")
    raise TypeError(f"unknown op kind {op.kind}")


def _block_units(unit) -> tuple:
    return unit.parts if unit.kind == "chain" else (unit,) if unit.kind == "block" else ()


# Output rows of this width run a block's 1x1 stages on int8 weights three pixels at a time (mnv2_dsp_tri_run), which
# takes fewer instructions than the widened stream's pixel pair and lone pixel: on the cortex-m7 at alpha 0.35 @ 96,
# widening block 15's expansion cost 5,900 more, its projection 10,500 more; rows of 5 (@ 144, @ 160) gain from it.
TRI_ROW_WIDTH = 3


def tri_rows(graph: QuantGraph, op) -> bool:
    """A 1x1 conv of TRI_ROW_WIDTH-pixel output rows whose inputs mnv2_dsp_tri_run takes (a multiple of 8, >= 16)."""
    return (op.kind == "conv" and op.weight.shape[1:3] == (1, 1) and op.weight.shape[-1] % 8 == 0
            and op.weight.shape[-1] >= 16 and graph.shapes[op.output][1] == TRI_ROW_WIDTH)


def choose_widened(graph: QuantGraph, plan: MemoryPlan, budget: int) -> frozenset:
    """The block stages whose weights are widened (and residual ADDs given tables) within `budget` extra flash bytes:
    most pixels first (each weight of a stage is used once per pixel it computes, so those save the most
    instructions per byte); at equal pixels the depthwise (more saved per weight), the residual ADD's table (2 KB,
    about 18 instructions saved per output), the projection (its int8 kernel, mnv2_dsp_pair_run, the slower one),
    then stage A (mnv2_dsp_tri_run on int8 weights); then by name. Never a stage of tri_rows."""
    ops = {op.name: op for op in graph.ops}
    cands = []
    for unit in plan.units:
        for part in _block_units(unit):
            for name in (part.a, part.b, part.c, part.add):
                op = ops.get(name) if name else None
                if op is None or tri_rows(graph, op):
                    continue
                extra = widenable(op, stage_a=name == part.a)
                if extra is not None:
                    h, wd, _ = graph.shapes[op.output]
                    rank = (op.kind != "depthwise", op.kind != "add", name != part.c)
                    cands.append((-h * wd, rank, name, extra))
    chosen, left = [], budget
    for _, _, name, extra in sorted(cands):
        if extra <= left:
            chosen.append(name)
            left -= extra
    return frozenset(chosen)


def default_widen_budget(schedule: "Schedule") -> int:
    """Half of the flash the model leaves free (after its weights and FLASH_RESERVE_BYTES), on targets whose kernels
    read widened weights; 0 elsewhere or without a flash size."""
    t = schedule.target
    if t.kernels not in WIDENING_KERNELS or not t.flash_bytes:
        return 0
    return max(0, t.flash_bytes - schedule.param_bytes - FLASH_RESERVE_BYTES) // 2


def lower(graph: QuantGraph, plan: MemoryPlan, target: Target, widen_budget: int | None = None) -> Schedule:
    """One Step per unit of the plan. On targets whose kernels read widened weights, block stages get widened
    copies within `widen_budget` extra flash bytes (None: default_widen_budget; 0: none)."""
    ops = {op.name: op for op in graph.ops}

    def build(wide: frozenset) -> Schedule:
        builders = {"block": _block_step, "chain": _chain_step}
        steps = [(builders[u.kind](graph, u, ops, wide) if u.kind in builders else _op_step(graph, ops[u.ops[0]]))
                 for u in plan.units]
        names = [s.cname for s in steps]
        assert len(set(names)) == len(names), "C names collide"
        return Schedule(graph=graph, plan=plan, target=target, steps=tuple(steps))

    plain = build(frozenset())
    budget = default_widen_budget(plain) if widen_budget is None else widen_budget
    if target.kernels not in WIDENING_KERNELS or budget <= 0:
        return plain
    wide = choose_widened(graph, plan, budget)
    best = build(wide) if wide else plain
    # choose_widened counts every depthwise stream at its classic size; the interleaved ones take less, which the
    # next choice may spend (kept only within the budget, as measured on the schedule built)
    stage_a = frozenset(part.a for unit in plan.units for part in _block_units(unit) if part.a)
    for _ in range(3):
        counted = sum(widenable(ops[n], stage_a=n in stage_a) for n in wide)
        more = choose_widened(graph, plan, budget + counted - best.widened_bytes)
        if more == wide:
            break
        trial = build(more)
        if trial.widened_bytes > budget:
            break
        wide, best = more, trial
    return best
