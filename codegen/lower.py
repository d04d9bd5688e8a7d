"""Lowering: QuantGraph + MemoryPlan + Target -> Schedule (one kernel call per op, every constant named)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .graph import QuantGraph
from .memory import MemoryPlan
from .targets import Target


@dataclass(frozen=True)
class ConstArray:
    """A constant array in flash: `symbol` is its C name, `ctype` int8_t or int32_t."""
    symbol: str
    ctype: str
    values: np.ndarray
    role: str  # weight | bias | mult | shift


@dataclass(frozen=True)
class Step:
    """One kernel call. `params` are the fields of the kernel's parameter struct, in declaration order."""
    op: str  # op / output tensor name in the graph
    cname: str  # C identifier fragment, unique
    kernel: str  # conv | depthwise | add | avgpool | fc
    params: tuple  # tuple[tuple[str, int], ...]
    inputs: tuple  # tensor names read
    output: str  # tensor name written
    arrays: tuple  # tuple[ConstArray, ...] in call order
    macs: int
    summary: str  # human-readable one-liner for comments


@dataclass(frozen=True)
class Schedule:
    graph: QuantGraph
    plan: MemoryPlan
    target: Target
    steps: tuple  # tuple[Step, ...]

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.steps)

    @property
    def param_bytes(self) -> int:
        return sum(a.values.nbytes for s in self.steps for a in s.arrays)

    @property
    def weight_count(self) -> int:
        return sum(int(a.values.size) for s in self.steps for a in s.arrays if a.role in ("weight", "bias"))


def c_name(name: str) -> str:
    """Tensor/op name -> C identifier fragment: 'b3/expand' -> 'b3_expand'."""
    out = re.sub(r"[^0-9A-Za-z_]", "_", name).lower()
    return out if not out[0].isdigit() else f"t_{out}"


def _arrays(cname: str, op, with_requant: bool = True) -> tuple:
    arrs = [ConstArray(f"mnv2_{cname}_weight", "int8_t", op.weight, "weight"),
            ConstArray(f"mnv2_{cname}_bias", "int32_t", op.bias, "bias")]
    if with_requant:
        arrs += [ConstArray(f"mnv2_{cname}_mult", "int32_t", op.multiplier, "mult"),
                 ConstArray(f"mnv2_{cname}_shift", "int32_t", op.shift, "shift")]
    return tuple(arrs)


def lower(graph: QuantGraph, plan: MemoryPlan, target: Target) -> Schedule:
    qp, shapes = graph.qparams, graph.shapes
    steps = []
    for op in graph.ops:
        cn = c_name(op.name)
        if op.kind in ("conv", "depthwise"):
            ih, iw, ic = shapes[op.input]
            oh, ow, oc = shapes[op.output]
            k = op.weight.shape[1] if op.kind == "conv" else op.weight.shape[0]
            common = dict(kernel=k, stride=op.stride, pad_top=op.padding[0], pad_left=op.padding[2],
                          in_zp=qp[op.input].zero_point, out_zp=qp[op.output].zero_point,
                          act_min=op.act_min, act_max=op.act_max)
            if op.kind == "conv":
                params = dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, **common)
                macs = oh * ow * oc * k * k * ic
            else:
                params = dict(in_h=ih, in_w=iw, channels=ic, out_h=oh, out_w=ow, **common)
                macs = oh * ow * oc * k * k
            summary = (f"{op.kind} {k}x{k}/{op.stride} {ih}x{iw}x{ic} -> {oh}x{ow}x{oc}"
                       f"{'' if op.activation == 'none' else ' ' + op.activation}")
            steps.append(Step(op.name, cn, op.kind, tuple(params.items()), (op.input,), op.output,
                              _arrays(cn, op), macs, summary))
        elif op.kind == "add":
            a, b = op.inputs
            params = dict(size=int(np.prod(shapes[op.output])), in1_zp=qp[a].zero_point, in2_zp=qp[b].zero_point,
                          left_shift=op.left_shift, in1_mult=op.input_multipliers[0], in1_shift=op.input_shifts[0],
                          in2_mult=op.input_multipliers[1], in2_shift=op.input_shifts[1],
                          out_mult=op.output_multiplier, out_shift=op.output_shift, out_zp=qp[op.output].zero_point,
                          act_min=op.act_min, act_max=op.act_max)
            h, w, c = shapes[op.output]
            steps.append(Step(op.name, cn, "add", tuple(params.items()), (a, b), op.output, (), 0,
                              f"add {h}x{w}x{c}"))
        elif op.kind == "avgpool":
            h, w, c = shapes[op.input]
            params = dict(h=h, w=w, channels=c, act_min=op.act_min, act_max=op.act_max)
            steps.append(Step(op.name, cn, "avgpool", tuple(params.items()), (op.input,), op.output, (), 0,
                              f"global average pool {h}x{w}x{c} -> {c}"))
        elif op.kind == "dense":
            n_out, n_in = op.weight.shape
            params = dict(in_n=n_in, out_n=n_out, in_zp=qp[op.input].zero_point, mult=op.multiplier,
                          shift=op.shift, out_zp=qp[op.output].zero_point, act_min=op.act_min, act_max=op.act_max)
            arrays = _arrays(cn, op, with_requant=False)
            steps.append(Step(op.name, cn, "fc", tuple(params.items()), (op.input,), op.output, arrays,
                              n_in * n_out, f"fully connected {n_in} -> {n_out}"))
        else:
            raise TypeError(f"unknown op kind {op.kind}")
    for s in steps:
        for name in s.inputs:
            assert name in {b.name for b in plan.buffers}, name
    names = [s.cname for s in steps]
    assert len(set(names)) == len(names), "C names collide"
    return Schedule(graph=graph, plan=plan, target=target, steps=tuple(steps))
