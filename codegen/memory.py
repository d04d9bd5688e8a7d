"""Memory planning: execution units (single ops or streamed blocks) and their buffers in one static arena.

Contracts. Sizes in bytes (int8 activations). The arena holds the input image, every activation tensor that exists
between units, and each unit's scratch. A tensor is live from the unit that writes it (-1: the input, written by the
caller) to the last unit that reads it (len(units): the output, read by the caller).
Two plans:
- `layerwise`: one unit per op, every tensor materialized, no overlap of live tensors (the baseline, as TFLM).
- `streamed`: each inverted-residual block is one unit run row by row (expansion rows in a ring of line buffers,
  depthwise + projection pixel by pixel: the wide expanded tensor never exists), the stem is fused into the first
  block, and a unit's output may overlap input rows it has consumed (residual blocks run fully in place). Where a
  unit's output overlaps its input, the offset is the smallest one that `row_constraints` proves safe, and
  `replay` re-checks the plan against the kernels' actual read/write order. Where it lowers the peak, two
  consecutive blocks become one "chain" unit: the first block's output rows are produced on demand into a small
  ring, so that tensor never exists either; and where that lowers it further, a chain runs in two column strips
  (codegen/strips.py: line buffers half as wide; the strips' shared mid columns and outputs kept in holes of the
  consumed input).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import strips
from .graph import QuantGraph

ALIGN = 16
# A refinement of the streamed plan (column-sliding, chaining) costs speed (column windows, smaller kernel calls); it
# is kept only when it saves at least this fraction of the arena and at least MIN_REFINE_BYTES.
MIN_REFINE_GAIN = 1 / 64
MIN_REFINE_BYTES = 1024
STRATEGIES = ("streamed", "layerwise")


@dataclass(frozen=True)
class Unit:
    """One kernel call. `ops` are graph op names executed by it, in order. For kind "block" the stages are:
    `a` (expansion 1x1 or the stem conv; None when absent), `b` (depthwise), `c` (projection), `add` (or None)."""
    kind: str  # block | chain | conv | depthwise | add | avgpool | dense
    ops: tuple
    inputs: tuple  # tensors read from the arena
    output: str
    scratch: int  # bytes
    a: str | None = None
    b: str | None = None
    c: str | None = None
    add: str | None = None
    parts: tuple = ()  # chain: the two block Units, in order
    ring_rows: int = 0  # chain: rows of the first block's output held at once
    cs_cols: int = 0  # block: column-sliding mid rows (windows of cs_cols columns) instead of a ring of whole rows
    strips: bool = False  # chain: run in two column strips (codegen/strips.py; scratch then per its layout)
    padded: bool = False  # block: mid rows two pixels longer (padded_rows: the interleaved depthwise may take them)
    wide: bool = False  # padded block: mid values held as int16 (wide_rows: the interleaved depthwise on int16 rows)


@dataclass(frozen=True)
class Buffer:
    name: str  # tensor name, or "<unit output>/scratch"
    size: int
    offset: int
    first: int  # unit index writing it (-1: the graph input)
    last: int  # last unit index reading it (len(units): the graph output)


@dataclass(frozen=True)
class MemoryPlan:
    strategy: str
    arena_bytes: int
    units: tuple  # tuple[Unit, ...]
    buffers: tuple  # tuple[Buffer, ...] (activations, then scratch)

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    def live_bytes(self, unit: int) -> int:
        """Arena bytes in use while unit `unit` runs: the union of the live buffers' byte ranges (a tensor written
        over another's consumed rows is not counted twice)."""
        spans = sorted((b.offset, b.offset + b.size) for b in self.buffers if b.first <= unit <= b.last)
        total, end = 0, 0
        for lo, hi in spans:
            if hi > end:
                total += hi - max(lo, end)
                end = hi
        return total


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def tensor_bytes(graph: QuantGraph, name: str) -> int:
    return int(np.prod(graph.shapes[name]))


def block_scratch_bytes(a_kernel: int, b_kernel: int, mid_w: int, mid_c: int, b_stride: int = 1,
                        cs_cols: int = 0, padded: bool = False, wide: bool = False) -> int:
    """Scratch of the streamed block kernel (the C twin is MNV2_BLOCK_SCRATCH_SIZE), when there is a stage A: line
    buffers, a ring of b_kernel mid rows; or column-sliding (cs_cols > 0), the b_kernel - b_stride rows consecutive
    output rows share plus b_stride windows of cs_cols columns. Plus one mid pixel. Padded (the interleaved depthwise:
    MNV2_FAST_DWI), a ring of b_kernel rows of mid_w + 2 pixels, no more; wide (MNV2_FAST_DWH), of 2 bytes a value."""
    if a_kernel == 0:
        return mid_c
    if padded:
        return b_kernel * (mid_w + 2) * mid_c * (2 if wide else 1)
    if cs_cols:
        return ((b_kernel - b_stride) * mid_w + b_stride * cs_cols + 1) * mid_c
    return (b_kernel * mid_w + 1) * mid_c


def cs_window_cols(b_kernel: int, b_stride: int, mid_c: int) -> int:
    """Columns of a column-sliding window: the depthwise window plus enough columns for the following pixels that
    stage A runs on several columns per call (2 to 8 pixels, about 256 bytes of mid row per window)."""
    pixels = max(2, min(8, 256 // mid_c))
    return b_kernel + b_stride * (pixels - 1)


# ------------------------------------------------------------------------------------------------ units
def _ops_by_name(graph: QuantGraph) -> dict:
    return {op.name: op for op in graph.ops}


def layerwise_units(graph: QuantGraph) -> tuple:
    units = []
    for op in graph.ops:
        inputs = tuple(op.inputs) if op.kind == "add" else (op.input,)
        units.append(Unit(op.kind, (op.name,), inputs, op.output, 0))
    return tuple(units)


def unit_scratch(graph: QuantGraph, ops: dict, a: str | None, b: str, cs_cols: int = 0, padded: bool = False,
                 wide: bool = False) -> int:
    dw = ops[b]
    mid_h, mid_w, mid_c = graph.shapes[dw.input]
    a_kernel = ops[a].weight.shape[1] if a else 0
    return block_scratch_bytes(a_kernel, dw.weight.shape[0], mid_w, mid_c, dw.stride, cs_cols, padded, wide)


def paddable(graph: QuantGraph, ops: dict, a: str | None, b: str) -> bool:
    """Whether a block's mid rows may be padded for the interleaved depthwise (arm_dsp.c.j2's mnv2_dsp_dwi_run):
    a stage A, a 3x3 depthwise padded by 1 all round over at least 2 x 2 mid pixels, channels a multiple of 8, of
    stride 1 on an even width or of stride 2 (mnv2_dsp_dwh2_run_N, int16 rows only) on a width that is a multiple of 4
    (whole output pixel pairs)."""
    dw = ops[b]
    mid_h, mid_w, mid_c = graph.shapes[dw.input]
    if not (a is not None and dw.weight.shape[:2] == (3, 3) and mid_h >= 2 and mid_w >= 2 and mid_c % 8 == 0):
        return False
    return tuple(dw.padding) == (1, 1, 1, 1) and mid_w % (2 * dw.stride) == 0 and dw.stride in (1, 2)


def column_sliding(graph: QuantGraph, unit: Unit) -> Unit | None:
    """The block with column-sliding mid rows (cs), or None where it does not apply (no stage A, or a depthwise
    whose stride is not below its kernel, or already cs)."""
    if unit.kind != "block" or unit.cs_cols or unit.a is None:
        return None
    dw = _ops_by_name(graph)[unit.b]
    if dw.weight.shape[0] <= dw.stride:
        return None
    cols = cs_window_cols(dw.weight.shape[0], dw.stride, graph.shapes[dw.input][2])
    return replace(unit, cs_cols=cols, scratch=unit_scratch(graph, _ops_by_name(graph), unit.a, unit.b, cols))


def streamed_units(graph: QuantGraph) -> tuple:
    """Blocks (expand? -> depthwise -> project -> add?) become one unit each; the stem conv becomes stage A of the
    first block when that block has no expansion and no residual."""
    ops = _ops_by_name(graph)
    units: list[Unit] = []
    pending_stem = None
    for name, members in graph.blocks:
        kinds = [ops[m].kind for m in members]
        if name == "stem":
            pending_stem = members[0]
            continue
        if "depthwise" in kinds:
            expand = next((m for m in members if m.endswith("/expand")), None)
            dw = next(m for m in members if ops[m].kind == "depthwise")
            proj = next(m for m in members if m.endswith("/project"))
            add = next((m for m in members if ops[m].kind == "add"), None)
            block_input = ops[expand].input if expand else ops[dw].input
            a = expand
            if pending_stem is not None:
                if expand is None and add is None:
                    a, block_input = pending_stem, ops[pending_stem].input
                else:
                    stem = ops[pending_stem]
                    units.append(Unit("conv", (pending_stem,), (stem.input,), stem.output, 0))
                pending_stem = None
            member_ops = tuple(x for x in (a, dw, proj, add) if x)
            output = add or proj
            units.append(Unit("block", member_ops, (block_input,), output, unit_scratch(graph, ops, a, dw),
                              a=a, b=dw, c=proj, add=add))
        else:
            for m in members:
                op = ops[m]
                inputs = tuple(op.inputs) if op.kind == "add" else (op.input,)
                units.append(Unit(op.kind, (m,), inputs, op.output, 0))
    return tuple(units)


@dataclass(frozen=True)
class _BlockGeom:
    """Row geometry of a streamed block: input rows -> (stage A) mid rows -> (depthwise) output rows."""
    in_h: int
    mid_h: int
    out_h: int
    ka: int  # 0: no stage A
    sa: int
    pa: int
    kb: int
    sb: int
    pb: int
    residual: bool
    cs: bool = False

    def mid_done(self, r: int) -> int:
        """Mid rows computed once output row r is finished."""
        return min(self.mid_h, r * self.sb - self.pb + self.kb)

    def in_needed(self, r: int) -> int:
        """Input rows [0, n) read by the time output row r is finished."""
        if self.ka:
            n = min(self.in_h, (self.mid_done(r) - 1) * self.sa - self.pa + self.ka)
        else:
            n = min(self.in_h, r * self.sb - self.pb + self.kb)
        return max(n, r + 1) if self.residual else n

    def whole_done(self, r: int) -> int:
        """Mid rows computed before output row r's first write: all of them, except with cs the rows computed
        column by column during the row (beyond the first b_kernel - b_stride rows of its window)."""
        end = self.mid_done(r)
        if not self.cs:
            return end
        return max(self.mid_done(r - 1) if r else 0, min(end, max(0, r * self.sb - self.pb) + self.kb - self.sb))

    def in_free(self, r: int, writing: bool = True) -> int:
        """Leading input rows that neither output row r nor any later row reads (`writing`: while output row r is
        being written; else once it is finished). A residual block may run exactly in place (its residual reads are
        pixel by pixel, before the write): that case is row r free up to row r. With cs, the mid rows computed
        column by column read their input rows while row r is written."""
        if self.ka:
            next_mid = self.whole_done(r) if writing else self.mid_done(r)  # first mid row still to be read
            free = self.in_h if next_mid >= self.mid_h else max(0, next_mid * self.sa - self.pa)
        else:
            free = max(0, r * self.sb - self.pb)  # the depthwise reads input rows directly while writing row r
        return min(free, r + 1) if self.residual else free


def block_geom(graph: QuantGraph, unit: Unit) -> _BlockGeom:
    ops = _ops_by_name(graph)
    dw = ops[unit.b]
    a = ops[unit.a] if unit.a else None
    return _BlockGeom(graph.shapes[unit.inputs[0]][0], graph.shapes[dw.input][0], graph.shapes[unit.output][0],
                      a.weight.shape[1] if a else 0, a.stride if a else 1, a.padding[0] if a else 0,
                      dw.weight.shape[0], dw.stride, dw.padding[0], unit.add is not None, unit.cs_cols > 0)


def chain_unit(graph: QuantGraph, first: Unit, second: Unit) -> Unit | None:
    """The two blocks as one chain unit (mnv2_chain_s8), or None where the kernel cannot chain them: the second
    block must read exactly the first one's output, have no residual, and read every row of it."""
    if first.kind != "block" or second.kind != "block" or second.inputs != (first.output,) or second.add:
        return None
    g2 = block_geom(graph, second)
    if g2.in_needed(g2.out_h - 1) != g2.in_h:
        return None
    # rows of the first block's output read at once: one stage A window (cs: those of b_stride mid rows), or the
    # depthwise window when there is no stage A
    ring = ((g2.sb - 1) * g2.sa + g2.ka if second.cs_cols else g2.ka) if g2.ka else g2.kb
    ring_bytes = ring * int(np.prod(graph.shapes[first.output][1:]))
    return Unit("chain", first.ops + second.ops, first.inputs, second.output,
                first.scratch + ring_bytes + second.scratch, parts=(first, second), ring_rows=ring)


# ------------------------------------------------------------------------------------------------ streaming order
def row_constraints(graph: QuantGraph, unit: Unit) -> list[tuple[int, int]] | None:
    """For a unit whose output may overlap its (single) input: [(output bytes written when output row r is finished,
    input bytes that are free by then)], one pair per output row; None when the output must not overlap the input.
    "Free" = the leading input rows that neither this row nor any later row reads. A residual block may run exactly
    in place (its residual reads are pixel by pixel, before the write): that case is row r free up to row r."""
    ops = _ops_by_name(graph)
    out_shape = graph.shapes[unit.output]
    if len(unit.inputs) != 1 or len(graph.shapes[unit.inputs[0]]) != 3 or len(out_shape) != 3:
        return None
    in_h, in_w, in_c = graph.shapes[unit.inputs[0]]
    out_h, out_w, out_c = out_shape
    ri, ro = in_w * in_c, out_w * out_c
    if unit.kind == "block":
        g = block_geom(graph, unit)
        return [((r + 1) * ro, g.in_free(r) * ri) for r in range(out_h)]
    if unit.kind == "chain":  # the first block has produced the rows the second block's row r read, no more
        g1, g2 = (block_geom(graph, u) for u in unit.parts)
        return [((r + 1) * ro, g1.in_free(g2.in_needed(r) - 1, writing=False) * ri) for r in range(out_h)]
    if unit.kind == "conv":
        op = ops[unit.ops[0]]
        k, s, p = op.weight.shape[1], op.stride, op.padding[0]
        if k == 1 and s == 1 and not any(op.padding):
            pixels = in_h * in_w  # the 1x1 kernel reads pixel p while writing output pixel p
            return [((q + 1) * out_c, q * in_c) for q in range(pixels)]
        return [((r + 1) * ro, max(0, min(in_h, r * s - p)) * ri) for r in range(out_h)]
    return None


def min_offset_gap(graph: QuantGraph, unit: Unit) -> int:
    """The smallest d >= 0 such that the output may start d bytes below the input's start."""
    if unit.strips:  # the output is gathered at the end, from pieces at or above their place (strips.py)
        return 0
    pairs = row_constraints(graph, unit)
    if pairs is None:
        return tensor_bytes(graph, unit.output)
    return max(0, max(written - free for written, free in pairs))


# ------------------------------------------------------------------------------------------------ planners
def _lifetimes(graph: QuantGraph, units: tuple) -> dict:
    first, last = {graph.input: -1}, {graph.input: -1}
    for i, u in enumerate(units):
        for name in u.inputs:
            last[name] = i
        first[u.output] = i
        last.setdefault(u.output, i)
    last[graph.output] = len(units)
    return {n: (first[n], last[n]) for n in first}


def _greedy(graph: QuantGraph, units: tuple, strategy: str) -> MemoryPlan:
    """Greedy by size (as TFLM's GreedyMemoryPlanner): largest first, lowest offset with no live-range conflict."""
    life = _lifetimes(graph, units)
    sizes = {n: tensor_bytes(graph, n) for n in life}
    for i, u in enumerate(units):
        if u.scratch:
            name = f"{u.output}/scratch"
            life[name], sizes[name] = (i, i), u.scratch
    placed: list[tuple[int, int, int, int]] = []
    offsets = {}
    for name in sorted(life, key=lambda n: (-sizes[n], life[n][0], n)):
        f, l = life[name]
        offset = 0
        for o, e in sorted((o, e) for o, e, pf, pl in placed if not (pl < f or l < pf)):
            if offset + sizes[name] <= o:
                break
            offset = max(offset, align(e))
        offsets[name] = offset
        placed.append((offset, offset + sizes[name], f, l))
    buffers = tuple(sorted((Buffer(n, sizes[n], offsets[n], *life[n]) for n in life), key=lambda b: (b.first, b.name)))
    return MemoryPlan(strategy, align(max(b.offset + b.size for b in buffers)), units, buffers)


def plan_layerwise(graph: QuantGraph) -> MemoryPlan:
    return _greedy(graph, layerwise_units(graph), "layerwise")


# Interval sets of feasible start offsets: sorted, disjoint [lo, hi] pairs (inclusive), multiples of ALIGN.
def _clip(intervals: list, lo: int, hi: int) -> list:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if max(a, lo) <= min(b, hi)]


def _union(intervals: list) -> list:
    out: list = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + ALIGN:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _down(x: int) -> int:
    return x // ALIGN * ALIGN


def _place_chain(graph: QuantGraph, units: tuple, arena: int) -> tuple | None:
    """Exact feasibility of a chain of single-input units in `arena` bytes: returns ({tensor: offset},
    {unit index: scratch offset}) or None. Unit k's scratch sits at the arena's bottom or top (either); its output
    lies either entirely above its input or starts at least the proven gap below the input's start (overlapping the
    consumed rows). Forward pass: the set of feasible offsets of each tensor (interval sets); backward pass: one
    consistent choice."""
    size = {graph.input: tensor_bytes(graph, graph.input)}
    for u in units:
        size[u.output] = tensor_bytes(graph, u.output)
    gaps = [align(min_offset_gap(graph, u)) for u in units]
    scratch = [align(u.scratch) for u in units]

    def allowed(k: int, side: str, name: str) -> tuple[int, int]:
        """Start offsets of tensor `name` compatible with unit k's scratch on `side`."""
        if side == "bottom":
            return scratch[k], _down(arena - size[name])
        return 0, _down(arena - scratch[k] - size[name])

    feasible = [[(0, _down(arena - size[graph.input]))]]
    for k, u in enumerate(units):
        src, out = u.inputs[0], u.output
        nxt = []
        for side in ("bottom", "top"):
            ins = _clip(feasible[k], *allowed(k, side, src))
            if not ins:
                continue
            lo, hi = allowed(k, side, out)
            reach = [(-(1 << 62), ins[-1][1] - gaps[k]), (align(ins[0][0] + size[src]), 1 << 62)]
            nxt += _clip(reach, lo, hi)
        nxt = _union(nxt)
        if not nxt:
            return None
        feasible.append(nxt)
    offsets = {units[-1].output: feasible[-1][-1][1]} if units else {graph.input: feasible[0][-1][1]}
    scratch_at = {}
    for k in range(len(units) - 1, -1, -1):
        u = units[k]
        src, o = u.inputs[0], offsets[u.output]
        for side in ("bottom", "top"):
            lo, hi = allowed(k, side, u.output)
            if not lo <= o <= hi:
                continue
            ins = _clip(feasible[k], *allowed(k, side, src))
            below = [max(a, align(o + gaps[k])) for a, b in ins if max(a, align(o + gaps[k])) <= b]
            above = [min(b, _down(o - size[src])) for a, b in ins if min(b, _down(o - size[src])) >= a]
            if below or above:
                offsets[src] = below[0] if below else above[-1]
                scratch_at[k] = 0 if side == "bottom" else _down(arena - scratch[k])
                break
        else:
            raise AssertionError("inconsistent forward pass")
    return offsets, scratch_at


def _plan_units(graph: QuantGraph, units: tuple) -> MemoryPlan:
    """The smallest arena (to ALIGN bytes) for which `_place_chain` finds a placement of `units`, by bisection."""
    if any(len(u.inputs) != 1 for u in units):  # a stand-alone ADD (not fused): greedy placement
        return _greedy(graph, units, "streamed")
    life = _lifetimes(graph, units)
    lo = 0
    hi = align(sum(tensor_bytes(graph, n) for n in life) + sum(align(u.scratch) for u in units) + ALIGN)
    assert _place_chain(graph, units, hi) is not None
    while hi - lo > ALIGN:
        mid = align((lo + hi) // 2)
        if mid >= hi:
            break
        if _place_chain(graph, units, mid) is not None:
            hi = mid
        else:
            lo = mid
    offset, scratch_at = _place_chain(graph, units, hi)
    buffers = [Buffer(n, tensor_bytes(graph, n), offset[n], *life[n]) for n in life]
    buffers += [Buffer(f"{u.output}/scratch", u.scratch, scratch_at[i], i, i) for i, u in enumerate(units)
                if u.scratch]
    return MemoryPlan("streamed", hi, units, tuple(sorted(buffers, key=lambda b: (b.first, b.name))))


def _refinements(graph: QuantGraph, units: tuple, i: int):
    """Unit sequences that differ from `units` around unit i by one step: unit i column-sliding (or one block of
    the chain it is, in strips if the chain is), unit i chained with a neighbour, or the chain unit i in strips."""
    u = units[i]
    if u.kind == "block" and (cs := column_sliding(graph, u)) is not None:
        yield units[:i] + (cs,) + units[i + 1:]
    if u.kind == "chain":
        for k in (0, 1):
            parts = list(u.parts)
            if (cs := column_sliding(graph, parts[k])) is not None:
                parts[k] = cs
                if (chained := chain_unit(graph, *parts)) is not None:
                    if u.strips:
                        chained = strips_unit(graph, chained) or chained
                    yield units[:i] + (chained,) + units[i + 1:]
    for j in (i - 1, i):
        if 0 <= j < len(units) - 1 and (chained := chain_unit(graph, units[j], units[j + 1])) is not None:
            yield units[:j] + (chained,) + units[j + 2:]
    if u.kind == "chain" and not u.strips and (striped := strips_unit(graph, u)) is not None:
        yield units[:i] + (striped,) + units[i + 1:]


def strips_unit(graph: QuantGraph, chain: Unit) -> Unit | None:
    """The chain run in two column strips (mnv2_strips_s8), or None where strips.layout does not apply or its
    layout fails the replay of the unit alone (output over its input, as the planner may place it)."""
    lay = strips.layout(graph, chain)
    if lay is None:
        return None
    unit = replace(chain, strips=True, scratch=lay.scratch)
    src, in_bytes = unit.inputs[0], tensor_bytes(graph, unit.inputs[0])
    alone = MemoryPlan("streamed", align(in_bytes) + align(unit.scratch), (unit,),
                       (Buffer(src, in_bytes, 0, -1, 0), Buffer(unit.output, tensor_bytes(graph, unit.output), 0, 0, 1),
                        Buffer(f"{unit.output}/scratch", unit.scratch, align(in_bytes), 0, 0)))
    try:
        replay(replace(graph, input=src, output=unit.output), alone)
    except PlanError:
        return None
    return unit


def padded_units(graph: QuantGraph, units: tuple, only: frozenset | None = None,
                 wide: frozenset = frozenset()) -> tuple:
    """The units with the mid rows of their paddable blocks padded (line buffers, not in column strips; a chain's
    scratch grows by its blocks'); `only`: just the blocks of these depthwise ops; `wide`: the blocks of these
    depthwise ops with int16 mid rows too."""
    ops = _ops_by_name(graph)

    def pad(u: Unit) -> Unit:
        if (u.kind != "block" or u.cs_cols or not paddable(graph, ops, u.a, u.b)
                or (only is not None and u.b not in only)):
            return u
        w = u.b in wide
        return replace(u, padded=True, wide=w, scratch=unit_scratch(graph, ops, u.a, u.b, 0, True, w))
    out = []
    for u in units:
        if u.kind == "chain" and not u.strips:
            parts = tuple(pad(p) for p in u.parts)
            u = replace(u, parts=parts, scratch=u.scratch + sum(p.scratch - q.scratch for p, q in zip(parts, u.parts)))
        out.append(pad(u))
    return tuple(out)


def padded_blocks(memory_plan: MemoryPlan) -> tuple:
    """The block units (chains' blocks too) whose mid rows the plan pads."""
    return tuple(p for u in memory_plan.units for p in (u.parts if u.kind == "chain" else (u,)) if p.padded)


def plan_streamed(graph: QuantGraph, padded_rows: bool | frozenset = False,
                  wide_rows: frozenset = frozenset()) -> MemoryPlan:
    """Streamed units, refined while that lowers the arena: each round, of the refinements of the units running at
    the peak (column-sliding, chaining), the one with the smallest arena is kept if it saves at least
    MIN_REFINE_GAIN of the arena and MIN_REFINE_BYTES (both cost speed: column windows, smaller kernel calls)."""
    best = _plan_units(graph, streamed_units(graph))
    while True:
        units = best.units
        live = [best.live_bytes(i) for i in range(len(units))]
        peak = max(live)
        trials = [_plan_units(graph, cand) for i in range(len(units)) if live[i] == peak
                  for cand in _refinements(graph, units, i)]
        trial = min(trials, key=lambda t: t.arena_bytes, default=None)
        gain = best.arena_bytes - trial.arena_bytes if trial is not None else 0
        if gain < max(MIN_REFINE_BYTES, best.arena_bytes * MIN_REFINE_GAIN):
            # padded rows (the interleaved depthwise) on the refinements chosen without them, placed again
            only = padded_rows if isinstance(padded_rows, frozenset) else None
            return _plan_units(graph, padded_units(graph, best.units, only, wide_rows)) if padded_rows else best
        best = trial


def plan(graph: QuantGraph, strategy: str = "streamed", padded_rows: bool | frozenset = False,
         wide_rows: frozenset = frozenset()) -> MemoryPlan:
    """The memory plan; padded_rows: blocks that may take the interleaved depthwise get padded mid rows (targets
    whose kernels have it: lower.py's PADDED_KERNELS), or a set of depthwise ops: just their blocks; wide_rows: the
    padded blocks of these depthwise ops hold their mid rows as int16."""
    if strategy == "streamed":
        return plan_streamed(graph, padded_rows, wide_rows)
    if strategy == "layerwise":
        return plan_layerwise(graph)
    raise ValueError(f"unknown memory strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")


# ------------------------------------------------------------------------------------------------ checker
class PlanError(AssertionError):
    pass


def _unit_events(graph: QuantGraph, unit: Unit):
    """The kernel's memory accesses in execution order, as ("r"|"w", tensor, first byte, end byte) events, at row
    granularity (pixel granularity where a kernel reads and writes pixel by pixel). Derived from the kernels' loop
    structure, independently of `row_constraints`."""
    ops = _ops_by_name(graph)
    out_shape = graph.shapes[unit.output]
    if unit.kind == "block":
        yield from _block_events(graph, unit, 0, out_shape[0])
        return
    if unit.strips:
        yield from strips.events(graph, unit)
        return
    if unit.kind == "chain":  # the first block's rows on demand (its writes go to the ring, in scratch)
        first, second = unit.parts
        g2 = block_geom(graph, second)
        done = 0
        for r in range(out_shape[0]):
            need = g2.in_needed(r)
            if need > done:
                yield from (ev for ev in _block_events(graph, first, done, need) if ev[0] == "r")
                done = need
            yield from (ev for ev in _block_events(graph, second, r, r + 1) if ev[0] == "w")
        return
    if unit.kind == "conv":
        op = ops[unit.ops[0]]
        src = unit.inputs[0]
        in_h, in_w, in_c = graph.shapes[src]
        out_h, out_w, out_c = out_shape
        k, s, p = op.weight.shape[1], op.stride, op.padding[0]
        for r in range(out_h):
            for x in range(out_w):
                y0, y1 = max(0, r * s - p), min(in_h, r * s - p + k)
                if k == 1 and s == 1 and not any(op.padding):
                    yield ("r", src, (r * in_w + x) * in_c, (r * in_w + x + 1) * in_c)
                else:
                    yield ("r", src, y0 * in_w * in_c, y1 * in_w * in_c)
                yield ("w", unit.output, (r * out_w + x) * out_c, (r * out_w + x + 1) * out_c)
        return
    for name in unit.inputs:  # other kernels: read everything, then write everything
        yield ("r", name, 0, tensor_bytes(graph, name))
    yield ("w", unit.output, 0, tensor_bytes(graph, unit.output))


def _block_events(graph: QuantGraph, unit: Unit, row_begin: int, row_end: int):
    """Events of a block unit's output rows [row_begin, row_end), as mnv2_block_s8 computes them (stage A rows on
    demand, then the row's pixels: depthwise reads, residual read, write; with cs, the mid rows that the next output
    row shares are computed column by column: their input rows are read before every pixel's write)."""
    src = unit.inputs[0]
    in_h, in_w, in_c = graph.shapes[src]
    out_h, out_w, out_c = graph.shapes[unit.output]
    ri = in_w * in_c
    g = block_geom(graph, unit)
    next_mid = 0 if row_begin == 0 else g.mid_done(row_begin - 1)
    def stage_a_reads(m0: int, m1: int):
        for m in range(m0, m1):
            y0, y1 = max(0, m * g.sa - g.pa), min(in_h, m * g.sa - g.pa + g.ka)
            yield ("r", src, y0 * ri, y1 * ri)

    for r in range(row_begin, row_end):
        lo, hi = r * g.sb - g.pb, g.mid_done(r)
        column_rows = (hi, hi)
        if g.ka:
            whole = g.whole_done(r)  # computed before the row's pixels; the rest column by column
            yield from stage_a_reads(next_mid, whole)
            column_rows = (whole, hi)
            next_mid = hi
        for x in range(out_w):
            yield from stage_a_reads(*column_rows)
            if not g.ka:
                yield ("r", src, max(0, lo) * ri, hi * ri)
            if g.residual:
                yield ("r", src, (r * in_w + x) * in_c, (r * in_w + x + 1) * in_c)
            yield ("w", unit.output, (r * out_w + x) * out_c, (r * out_w + x + 1) * out_c)


def replay(graph: QuantGraph, plan: MemoryPlan) -> None:
    """Replays every unit's reads and writes against the plan's offsets; raises PlanError on a write over bytes
    that are still to be read (by this unit later, or by a later unit), on buffers leaving the arena, and on scratch
    overlapping a live tensor."""
    for b in plan.buffers:
        if b.offset < 0 or b.offset + b.size > plan.arena_bytes:
            raise PlanError(f"{b.name} leaves the arena")
        if b.offset % ALIGN:
            raise PlanError(f"{b.name} is misaligned")
    # a strips unit keeps data in its input's holes: named regions spanning the input, live during the unit
    holes = tuple(Buffer(name, tensor_bytes(graph, u.inputs[0]), plan.buffer(u.inputs[0]).offset, i, i)
                  for i, u in enumerate(plan.units) if u.strips for name in strips.hole_names(u))
    offset = {b.name: b.offset for b in plan.buffers + holes}
    # bytes still to be read: per tensor, per byte, the index of its last future read (events are numbered)
    events = []
    for i, u in enumerate(plan.units):
        for ev in _unit_events(graph, u):
            events.append((i,) + ev)
    last_read: dict[str, np.ndarray] = {}
    written: dict[str, np.ndarray] = {}  # per byte: index of the event that wrote it (-1: written by the caller)
    sizes = {b.name: b.size for b in plan.buffers + holes}
    for name in offset:
        if not name.endswith("/scratch"):
            last_read[name] = np.full(sizes[name], -1, dtype=np.int64)
            written[name] = np.full(sizes[name], -1 if name == graph.input else len(events) + 1, dtype=np.int64)
    for idx, (i, kind, name, lo, hi) in enumerate(events):
        if kind == "r":
            last_read[name][lo:hi] = idx
        else:
            written[name][lo:hi] = np.minimum(written[name][lo:hi], idx)
    last_read[graph.output][:] = len(events)  # read by the caller after the last unit
    live_in = {i: [b for b in plan.buffers + holes if b.first <= i <= b.last and not b.name.endswith("/scratch")]
               for i in range(len(plan.units))}
    for i, u in enumerate(plan.units):  # scratch must not overlap anything live during its unit
        if u.scratch:
            s0 = offset[f"{u.output}/scratch"]
            s1 = s0 + u.scratch
            for b in live_in[i]:
                if b.offset < s1 and s0 < b.offset + b.size:
                    raise PlanError(f"scratch of unit {i} ({u.output}) overlaps live {b.name}")
    for idx, (i, kind, name, lo, hi) in enumerate(events):
        if kind != "w":
            continue
        w0, w1 = offset[name] + lo, offset[name] + hi
        for b in live_in[i]:
            if b.name == name:
                continue
            a, e = max(w0, b.offset) - b.offset, min(w1, b.offset + b.size) - b.offset
            if a < e and ((written[b.name][a:e] < idx) & (last_read[b.name][a:e] > idx)).any():
                raise PlanError(f"unit {i} writes {name}[{lo}:{hi}] over {b.name} bytes still to be read")
