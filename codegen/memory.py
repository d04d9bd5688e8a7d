"""Memory planning: every activation tensor (the input image included) gets an offset in one static arena.

Contract: a buffer is live from the op that writes it (index -1 for the graph input) through the last op that reads
it; two buffers whose live ranges intersect never overlap in the arena. Offsets are multiples of ALIGN bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import QuantGraph, op_inputs

ALIGN = 16


@dataclass(frozen=True)
class Buffer:
    name: str  # tensor name
    size: int  # bytes (int8 elements)
    offset: int  # bytes from the arena start
    first: int  # index of the op writing it (-1: the graph input, written by the caller)
    last: int  # index of the last op reading it (len(ops): the graph output, read by the caller)


@dataclass(frozen=True)
class MemoryPlan:
    strategy: str
    arena_bytes: int
    buffers: tuple  # tuple[Buffer, ...], in order of first use

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    def live_bytes(self, step: int) -> int:
        """Bytes of buffers live while op `step` runs."""
        return sum(b.size for b in self.buffers if b.first <= step <= b.last)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(graph: QuantGraph) -> dict:
    """{tensor: (first, last)} as defined in the module contract."""
    first = {graph.input: -1}
    last = {graph.input: -1}
    for i, op in enumerate(graph.ops):
        for name in op_inputs(op):
            last[name] = i
        first[op.output] = i
        last.setdefault(op.output, i)
    last[graph.output] = len(graph.ops)
    return {n: (first[n], last[n]) for n in first}


def plan_layerwise(graph: QuantGraph) -> MemoryPlan:
    """Greedy by size (as TFLM's GreedyMemoryPlanner): largest buffers first, each at the lowest offset that does not
    overlap a placed buffer with an intersecting live range."""
    life = lifetimes(graph)
    sizes = {n: int(np.prod(graph.shapes[n])) for n in life}
    order = sorted(life, key=lambda n: (-sizes[n], life[n][0], n))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets = {}
    for name in order:
        f, l = life[name]
        conflicts = sorted((o, e) for o, e, pf, pl in placed if not (pl < f or l < pf))
        offset = 0
        for o, e in conflicts:
            if offset + sizes[name] <= o:
                break
            offset = max(offset, _align(e))
        offsets[name] = offset
        placed.append((offset, offset + sizes[name], f, l))
    buffers = tuple(sorted((Buffer(n, sizes[n], offsets[n], *life[n]) for n in life), key=lambda b: (b.first, b.name)))
    arena = _align(max(b.offset + b.size for b in buffers))
    return MemoryPlan(strategy="layerwise", arena_bytes=arena, buffers=buffers)


def check_plan(plan: MemoryPlan) -> None:
    """Raises AssertionError if two buffers with intersecting live ranges share bytes, or one leaves the arena."""
    bufs = plan.buffers
    for b in bufs:
        assert 0 <= b.offset and b.offset + b.size <= plan.arena_bytes, f"{b.name} leaves the arena"
        assert b.offset % ALIGN == 0, f"{b.name} is misaligned"
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if not (a.last < b.first or b.last < a.first):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, \
                    f"{a.name} and {b.name} are live together and overlap"
