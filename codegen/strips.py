"""A chain run in two column strips (mnv2_strips_s8): the layout of its columns, holes and scratch, and the memory
accesses the replay checks.

Contracts. Columns are absolute (mid column c of a block is column c of its mid tensor). The left strip runs every
output row of the chain, then the right strip does; each holds mid rows only as wide as its columns, so the line
buffers of both blocks are about half as wide as a whole-width chain's. The mid columns both strips' depthwise
windows read (the "edge") are computed once, by the left strip, and handed to the right strip through holes in the
chain's input: the left strip consumes the left part of every input row (bytes [0, hole_bytes), which the right
strip never reads), and output row r of the chain owns the input bytes of its group [r * group_bytes, (r + 1) *
group_bytes): the left strip's output row in pieces (one per input row's hole), the edge rows of both blocks
exported during row r, and, in input rows the left strip leaves untouched, the right strip's output row once the
right strip has consumed those rows. At the end the pieces are gathered into the output tensor (row r = left
pixels, then right pixels), which starts at or below the input. Sizes in bytes; `layout` returns None where this
geometry does not fit (then the planner keeps the whole-width chain).
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import QuantGraph

PIECES = 4  # MNV2_STRIP_PIECES: pieces of one strip's output row
EDGE_ALIGN = 4


@dataclass(frozen=True)
class Cols:
    """One block's columns in one strip (mnv2_strip_cols_t): output [ox0, ox1), mid [m0, m1) held, [m0, own)
    imported, [exp0, m1) exported."""
    ox0: int
    ox1: int
    m0: int
    m1: int
    own: int
    exp0: int


@dataclass(frozen=True)
class Piece:
    """Bytes [src, src + size) of a strip's output row, stored at byte `dst` of its group."""
    src: int
    size: int
    dst: int


@dataclass(frozen=True)
class StripsLayout:
    cols: tuple  # ((left first, left second), (right first, right second)) Cols
    pieces: tuple  # (left pieces, right pieces)
    group_bytes: int
    hole_bytes: int  # leading bytes of each input row the right strip never reads
    edge_per: tuple  # edge rows of each block per output row
    edge_dst: tuple  # group byte of each block's first edge row
    edge_bytes: tuple  # bytes of one edge row of each block
    edge_ring: tuple  # rows of each block's edge buffer in scratch
    at_first: int
    at_ring: int
    at_second: int
    at_edge: tuple
    at_row: int
    scratch: int

    def c_params(self) -> dict:
        """The fields of mnv2_strips_params_t besides `chain`, as C initializer text."""
        def cols(c: Cols) -> str:
            return f"{{{c.ox0}, {c.ox1}, {c.m0}, {c.m1}, {c.own}, {c.exp0}}}"

        def pieces(ps: tuple) -> str:
            padded = list(ps) + [Piece(0, 0, 0)] * (PIECES - len(ps))
            return "{" + ", ".join(f"{{{p.src}, {p.size}, {p.dst}}}" for p in padded) + "}"

        pair = "{{{}, {}}}".format
        return {"cols": "{" + ", ".join("{" + cols(a) + ", " + cols(b) + "}" for a, b in self.cols) + "}",
                "pieces": pair(*(len(p) for p in self.pieces)),
                "piece": "{" + ", ".join(pieces(p) for p in self.pieces) + "}",
                "group_bytes": self.group_bytes, "edge_per": pair(*self.edge_per), "edge_dst": pair(*self.edge_dst),
                "edge_ring": pair(*self.edge_ring), "at_first": self.at_first, "at_ring": self.at_ring,
                "at_second": self.at_second, "at_edge": pair(*self.at_edge), "at_row": self.at_row}


@dataclass(frozen=True)
class _Cgeom:
    """Column geometry of a block: input -> (stage A) mid -> (depthwise) output columns."""
    in_w: int
    mid_w: int
    out_w: int
    ka: int
    sa: int
    pa: int
    kb: int
    sb: int
    pb: int

    def mid_span(self, ox0: int, ox1: int) -> tuple[int, int]:
        """Mid columns the depthwise windows of output columns [ox0, ox1) read."""
        return max(0, ox0 * self.sb - self.pb), min(self.mid_w, (ox1 - 1) * self.sb - self.pb + self.kb)

    def in_span(self, m0: int, m1: int) -> tuple[int, int]:
        """Input columns stage A reads for mid columns [m0, m1)."""
        return max(0, m0 * self.sa - self.pa), min(self.in_w, (m1 - 1) * self.sa - self.pa + self.ka)


def _cgeom(graph: QuantGraph, unit) -> _Cgeom:
    ops = {op.name: op for op in graph.ops}
    a, dw = ops[unit.a], ops[unit.b]
    return _Cgeom(graph.shapes[unit.inputs[0]][1], graph.shapes[dw.input][1], graph.shapes[unit.output][1],
                  a.weight.shape[1], a.stride, a.padding[2], dw.weight.shape[0], dw.stride, dw.padding[2])


def _block_cols(g: _Cgeom, left: tuple, right: tuple) -> tuple[Cols, Cols] | None:
    """Both strips' Cols of a block whose output columns split into `left` and `right`: the edge [r0, l1) is the
    left strip's (None where the right strip's mid columns do not start inside or at the end of the left's)."""
    l0, l1 = g.mid_span(*left)
    r0, r1 = g.mid_span(*right)
    if not (l0 <= r0 <= l1 <= r1) or l1 >= r1:
        return None
    return Cols(*left, l0, l1, l0, r0), Cols(*right, r0, r1, l1, r1)


def _align(n: int, a: int = EDGE_ALIGN) -> int:
    return (n + a - 1) // a * a


def _fill(items: list, rows: int, row_bytes: int, cap: int, start: int) -> tuple[list, int] | None:
    """Places items (sizes; "split" ones may be cut) row by row from input row `start` of a group, each row taking
    at most `cap` bytes from its start; returns ([(item index, item offset, size, group byte)], next free row)."""
    placed, row, used = [], start, 0
    for i, (size, split) in enumerate(items):
        done = 0
        while done < size:
            if row >= rows:
                return None
            room = cap - used
            take = min(room, size - done) if split else (size if size <= room else 0)
            if take <= 0:
                row, used = row + 1, 0
                continue
            placed.append((i, done, take, row * row_bytes + used))
            done += take
            used = _align(used + take)  # the next item may share the row
    return placed, row + (1 if used else 0)


def layout(graph: QuantGraph, unit) -> StripsLayout | None:
    """The strips layout of a chain unit, or None where it does not apply: both blocks need a stage A, the second
    a 1x1 one (so the strips' first-block columns are disjoint), the chain's input rows must divide into one group
    per output row, and a group's holes and untouched rows must hold its pieces and edge rows."""
    from .memory import block_geom, block_scratch_bytes, tensor_bytes  # (memory imports this module)

    first, second = unit.parts
    if first.a is None or second.a is None or second.add:
        return None
    c1, c2 = _cgeom(graph, first), _cgeom(graph, second)
    g1, g2 = block_geom(graph, first), block_geom(graph, second)
    if c2.ka != 1 or c2.sa != 1 or c2.pa != 0 or g2.residual or g1.residual:
        return None
    split = c2.out_w // 2
    cols2 = _block_cols(c2, (0, split), (split, c2.out_w))
    if cols2 is None:
        return None
    # the first block's output columns each strip's stage A reads (its own mid columns only)
    left1, right1 = c2.in_span(cols2[0].m0, cols2[0].m1), c2.in_span(cols2[1].own, cols2[1].m1)
    if left1 != (0, right1[0]) or right1[1] != c1.out_w:
        return None
    cols1 = _block_cols(c1, left1, right1)
    if cols1 is None:
        return None
    in_h, in_w, in_c = graph.shapes[first.inputs[0]]
    out_h, out_w, out_c = graph.shapes[second.output]
    per_out = g1.sa * g1.sb * g2.sa * g2.sb  # input rows per output row
    if in_h != per_out * out_h:
        return None
    row_bytes = in_w * in_c
    hole = c1.in_span(cols1[1].own, cols1[1].m1)[0] * in_c  # the right strip reads input columns from there
    edge_per = (g2.sb * g2.sa * g1.sb, g2.sb)  # mid rows of each block per output row
    mid_c = tuple(graph.shapes[_dw_input(graph, part)][2] for part in (first, second))
    edge_bytes = tuple((c[0].m1 - c[0].exp0) * m for c, m in zip((cols1, cols2), mid_c))
    if g1.mid_h > edge_per[0] * out_h or g2.mid_h > edge_per[1] * out_h:
        return None
    left_row, right_row = split * out_c, (out_w - split) * out_c
    left = _fill([(left_row, True), (edge_per[0] * edge_bytes[0], False), (edge_per[1] * edge_bytes[1], False)],
                 per_out, row_bytes, hole, 0)
    if left is None:
        return None
    right = _fill([(right_row, True)], per_out, row_bytes, row_bytes, left[1])
    if right is None:
        return None
    pieces_l = tuple(Piece(off, size, dst) for i, off, size, dst in left[0] if i == 0)
    pieces_r = tuple(Piece(off, size, dst) for i, off, size, dst in right[0])
    if len(pieces_l) > PIECES or len(pieces_r) > PIECES:
        return None
    edge_dst = tuple(next((dst for i, off, size, dst in left[0] if i == k), 0) for k in (1, 2))  # 0: no edge
    rings = _edge_rings(g1, g2, out_h, edge_per)
    width1 = max(c.m1 - c.m0 for c in (cols1[0], cols1[1]))
    width2 = max(c.m1 - c.m0 for c in (cols2[0], cols2[1]))
    s1 = block_scratch_bytes(c1.ka, c1.kb, width1, mid_c[0], c1.sb, first.cs_cols)
    s2 = block_scratch_bytes(c2.ka, c2.kb, width2, mid_c[1], c2.sb, second.cs_cols)
    ring = unit.ring_rows * tensor_bytes(graph, first.output) // graph.shapes[first.output][0]
    at, offsets = 0, []
    for size in (s1, ring, s2, rings[0] * edge_bytes[0], rings[1] * edge_bytes[1], max(left_row, right_row)):
        offsets.append(at)
        at = _align(at + size)
    return StripsLayout(cols=(tuple(c[0] for c in (cols1, cols2)), tuple(c[1] for c in (cols1, cols2))),
                        pieces=(pieces_l, pieces_r), group_bytes=per_out * row_bytes, hole_bytes=hole,
                        edge_per=edge_per, edge_dst=edge_dst, edge_bytes=edge_bytes, edge_ring=rings,
                        at_first=offsets[0], at_ring=offsets[1], at_second=offsets[2],
                        at_edge=(offsets[3], offsets[4]), at_row=offsets[5], scratch=at)


def _dw_input(graph: QuantGraph, block) -> str:
    return next(op.input for op in graph.ops if op.name == block.b)


def mid_ends(g1, g2, h: int) -> tuple[int, int]:
    """Mid rows of each block computed by the end of output row h (mnv2_strips_s8's end1, end2)."""
    end2 = g2.mid_done(h) if h >= 0 else 0
    rows1 = min(g2.in_h, (end2 - 1) * g2.sa - g2.pa + g2.ka) if end2 > 0 else 0
    end1 = g1.mid_done(rows1 - 1) if rows1 > 0 else 0
    return end1, end2


def _edge_rings(g1, g2, out_h: int, per: tuple) -> tuple:
    """Rows each edge buffer holds at once: the left strip's exported rows not yet moved to their holes, the right
    strip's rows moved in for one output row."""
    rings = []
    for b in (0, 1):
        most, moved = 1, 0
        for h in range(out_h):
            end = mid_ends(g1, g2, h)[b]
            before = mid_ends(g1, g2, h - 1)[b]
            most = max(most, end - moved, end - before)
            moved = min(end, (h + 1) * per[b])
        rings.append(most)
    return tuple(rings)


def hole_names(unit) -> tuple[str, str, str]:
    """The replay's names for what a strips unit keeps in its input's holes: the left strip's output pieces, the
    edge rows, the right strip's output pieces (each spans the input's bytes)."""
    return tuple(f"{unit.output}/holes.{k}" for k in ("left", "edge", "right"))


def events(graph: QuantGraph, unit):
    """mnv2_strips_s8's accesses to the arena in execution order, as memory._unit_events yields them: per strip and
    output row h, (right strip) the edge rows moved in from their holes, the input rows its first block's stage A
    reads (that strip's columns), the output row's pieces into group h, (left strip) the edge rows exported so far
    whose group is done; then the gather into the output tensor. Scratch is not modelled."""
    from .memory import block_geom  # (memory imports this module)

    lay = layout(graph, unit)
    first, second = unit.parts
    g1, g2 = block_geom(graph, first), block_geom(graph, second)
    c1 = _cgeom(graph, first)
    src = unit.inputs[0]
    in_h, in_w, in_c = graph.shapes[src]
    out_h, out_w, out_c = graph.shapes[unit.output]
    ri, group = in_w * in_c, lay.group_bytes
    names = hole_names(unit)
    edge = names[1]

    def edge_at(b: int, m: int) -> tuple[int, int]:
        at = (m // lay.edge_per[b]) * group + lay.edge_dst[b] + (m % lay.edge_per[b]) * lay.edge_bytes[b]
        return at, at + lay.edge_bytes[b]

    for side in (0, 1):
        x0, x1 = c1.in_span(lay.cols[side][0].own, lay.cols[side][0].m1)
        held, moved = 0, [0, 0]
        for h in range(out_h):
            ends = mid_ends(g1, g2, h)
            if side == 1:
                for b in (0, 1):
                    for m in range(moved[b], ends[b]):
                        yield ("r", edge, *edge_at(b, m))
                    moved[b] = ends[b]
            for m in range(held, ends[0]):
                for y in range(max(0, m * g1.sa - g1.pa), min(in_h, m * g1.sa - g1.pa + g1.ka)):
                    yield ("r", src, y * ri + x0 * in_c, y * ri + x1 * in_c)
            held = ends[0]
            for p in lay.pieces[side]:
                yield ("w", names[2 * side], h * group + p.dst, h * group + p.dst + p.size)
            if side == 0:
                for b in (0, 1):
                    last = min(ends[b], (h + 1) * lay.edge_per[b])
                    for m in range(moved[b], last):
                        yield ("w", edge, *edge_at(b, m))
                    moved[b] = last
    left_bytes = (lay.cols[1][1].ox0 - lay.cols[0][1].ox0) * out_c
    for h in range(out_h):
        for side in (0, 1):
            for p in lay.pieces[side]:
                yield ("r", names[2 * side], h * group + p.dst, h * group + p.dst + p.size)
                at = h * out_w * out_c + side * left_bytes + p.src
                yield ("w", unit.output, at, at + p.size)
