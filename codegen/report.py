"""The memory report: per-block bottleneck analysis, the chosen plan against layer-by-layer, the paper's bound and
TFLM's arena for the same model, as text, JSON and a picture.

Sizes in bytes, int8 activations. Per block, the working set of each execution strategy (what must be in RAM while
the block runs):
- layerwise: the largest set of simultaneously live tensors among the block's ops (as TFLM runs it);
- channel_slices: the paper's section 5.1 split of the expansion into t slices: input + output + one slice of the
  expanded and depthwise tensors + an int32 accumulator of the whole output (the partial projections must be summed
  before requantization in int8);
- row_band: our streamed kernel: input and output (overlapping as far as proven safe) + its line-buffer scratch
  ("chained": the block runs in a chain with a neighbour, whose joint working set is the unit's; "+cols": its mid
  rows are column-sliding, b_kernel - b_stride shared rows plus column windows instead of b_kernel rows; "+strips":
  the chain runs in two column strips, codegen/strips.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .graph import QuantGraph, op_inputs
from .memory import MemoryPlan, min_offset_gap, plan, tensor_bytes


@dataclass(frozen=True)
class BlockRow:
    name: str
    input_bytes: int
    output_bytes: int
    expanded_bytes: int
    expansion: int
    layerwise: int
    channel_slices: int
    row_band: int
    chosen: str
    scratch: int
    live: int  # bytes of the planned arena in use while this block runs


def _block_ops(graph: QuantGraph, members: tuple) -> list:
    ops = {op.name: op for op in graph.ops}
    return [ops[m] for m in members]


def _layerwise_working_set(graph: QuantGraph, members: list) -> int:
    """Largest live set among the block's ops, with the block input kept alive for a residual add."""
    names = {op.output for op in members}
    block_input = next(n for op in members for n in op_inputs(op) if n not in names)
    residual = any(op.kind == "add" for op in members)
    best = 0
    for op in members:
        live = {op.output, *op_inputs(op)}
        if residual:
            live.add(block_input)
        best = max(best, sum(tensor_bytes(graph, n) for n in live))
    return best


def block_rows(graph: QuantGraph, memory_plan: MemoryPlan) -> list[BlockRow]:
    unit_of = {}
    for i, u in enumerate(memory_plan.units):
        for name in u.ops:
            unit_of[name] = i
    rows = []
    for name, members in graph.blocks:
        ops = _block_ops(graph, members)
        outputs = {op.output for op in ops}
        src = next(n for op in ops for n in op_inputs(op) if n not in outputs)
        out = ops[-1].output
        dws = [op for op in ops if op.kind == "depthwise"]
        unit_index = unit_of[members[-1]]
        unit = memory_plan.units[unit_index]
        live = memory_plan.live_bytes(unit_index)
        lw = _layerwise_working_set(graph, ops)
        if dws:
            dw = dws[0]
            exp = tensor_bytes(graph, dw.input)
            t = max(1, round(graph.shapes[dw.input][2] / graph.shapes[src][2]))
            slices = (tensor_bytes(graph, src) + tensor_bytes(graph, out) + exp // t
                      + tensor_bytes(graph, dw.output) // t + 4 * tensor_bytes(graph, out))
            band = unit.scratch + max(tensor_bytes(graph, unit.inputs[0]) + min_offset_gap(graph, unit),
                                      tensor_bytes(graph, unit.output)) if unit.kind in ("block", "chain") else lw
        else:
            exp, t, slices, band = 0, 1, lw, lw
        part = next((u for u in unit.parts if members[-1] in u.ops), unit)  # the block within a chain
        chosen = {"block": "row_band", "chain": "chained"}.get(unit.kind, "layerwise")
        chosen += ("+stem" if part.a == "stem" else "") + ("+cols" if part.cs_cols else "")
        chosen += "+strips" if unit.strips else ""
        rows.append(BlockRow(name, tensor_bytes(graph, src), tensor_bytes(graph, out), exp, t, lw, slices, band,
                             chosen, unit.scratch, live))
    return rows


def paper_bound(graph: QuantGraph) -> int:
    """The paper's section 5.1 figure: the largest |input| + |output| over the inverted-residual blocks (the
    expanded tensors never materialized)."""
    best = 0
    for name, members in graph.blocks:
        ops = _block_ops(graph, members)
        if any(op.kind == "depthwise" for op in ops):
            outputs = {op.output for op in ops}
            src = next(n for op in ops for n in op_inputs(op) if n not in outputs)
            best = max(best, tensor_bytes(graph, src) + tensor_bytes(graph, ops[-1].output))
    return best


def live_profile(graph: QuantGraph, memory_plan: MemoryPlan) -> list[tuple[str, int]]:
    """(block name, most bytes live in the arena while any of the block's ops runs), along the network."""
    unit_of = {name: i for i, u in enumerate(memory_plan.units) for name in u.ops}
    return [(name, max(memory_plan.live_bytes(unit_of[m]) for m in members)) for name, members in graph.blocks]


def build_report(graph: QuantGraph, strategy: str = "streamed", tflm: dict | None = None,
                 sram_bytes: int = 0, memory_plan: MemoryPlan | None = None) -> dict:
    """memory_plan: the plan to report (a target's, as generate.plan_and_lower makes it), else memory.plan's."""
    chosen, layerwise = memory_plan or plan(graph, strategy), plan(graph, "layerwise")
    rows = block_rows(graph, chosen)
    h, w = graph.info.resolution
    report = {
        "model": {"alpha": graph.info.alpha, "resolution": [h, w], "classes": len(graph.info.class_names)},
        "strategy": chosen.strategy,
        "peak_bytes": chosen.arena_bytes,
        "layerwise_peak_bytes": layerwise.arena_bytes,
        "paper_bound_bytes": paper_bound(graph),
        "input_bytes": tensor_bytes(graph, graph.input),
        "tflm_arena_bytes": tflm["head"] if tflm else None,
        "tflm_arena_total_bytes": tflm["total"] if tflm else None,
        "ratio_layerwise": round(layerwise.arena_bytes / chosen.arena_bytes, 2),
        "ratio_tflm": round(tflm["head"] / chosen.arena_bytes, 2) if tflm else None,
        "sram_bytes": sram_bytes or None,
        "fits_sram": (chosen.arena_bytes <= sram_bytes) if sram_bytes else None,
        "blocks": [row.__dict__ for row in rows],
        "profile": {"planned": live_profile(graph, chosen), "layerwise": live_profile(graph, layerwise)},
    }
    return report


def tflm_arena(graph: QuantGraph) -> dict:
    """TFLM's arena for the exported .tflite of the same model, from its allocation report."""
    from .export import export_tflite
    from .oracles import tflm_arena_bytes
    return tflm_arena_bytes(export_tflite(graph))


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def format_text(report: dict) -> str:
    m = report["model"]
    lines = [f"MobileNetV2 alpha {m['alpha']:g} {m['resolution'][0]}x{m['resolution'][1]}: memory plan "
             f"'{report['strategy']}' (KiB, int8; input image included)",
             f"{'block':<6} {'input':>7} {'output':>7} {'expanded':>9} {'t':>2} {'layerwise':>10} "
             f"{'ch.slices':>10} {'row band':>9} {'chosen':<17} {'scratch':>8} {'live':>7}"]
    for b in report["blocks"]:
        lines.append(f"{b['name']:<6} {_kib(b['input_bytes']):>7} {_kib(b['output_bytes']):>7} "
                     f"{_kib(b['expanded_bytes']):>9} {b['expansion']:>2} {_kib(b['layerwise']):>10} "
                     f"{_kib(b['channel_slices']):>10} {_kib(b['row_band']):>9} {b['chosen']:<17} "
                     f"{_kib(b['scratch']):>8} {_kib(b['live']):>7}")
    lines += [
        f"planned peak (one static arena)   {report['peak_bytes']:>10,} B  {_kib(report['peak_bytes']):>8} KiB",
        f"layer-by-layer peak               {report['layerwise_peak_bytes']:>10,} B  "
        f"{_kib(report['layerwise_peak_bytes']):>8} KiB  ({report['ratio_layerwise']}x ours)",
        f"paper section 5.1 bound           {report['paper_bound_bytes']:>10,} B  "
        f"{_kib(report['paper_bound_bytes']):>8} KiB  (max |block in| + |block out|)",
    ]
    if report["tflm_arena_bytes"] is not None:
        lines.append(f"TFLM arena (same .tflite)         {report['tflm_arena_bytes']:>10,} B  "
                     f"{_kib(report['tflm_arena_bytes']):>8} KiB  ({report['ratio_tflm']}x ours; activations "
                     f"'head', + {report['tflm_arena_total_bytes'] - report['tflm_arena_bytes']:,} B bookkeeping)")
    if report["sram_bytes"]:
        verdict = "fits" if report["fits_sram"] else "DOES NOT FIT"
        lines.append(f"target SRAM                       {report['sram_bytes']:>10,} B  "
                     f"{_kib(report['sram_bytes']):>8} KiB  arena {verdict}")
    return "\n".join(lines)


def format_json(report: dict) -> str:
    return json.dumps(report)


def plot(report: dict, path: str) -> None:
    """Live arena bytes along the network, planned vs layer by layer, to an image file (PNG/SVG/PDF by suffix)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=120)
    for key, label, style in (("layerwise", "layer by layer", "-"), ("planned", f"planned ({report['strategy']})",
                                                                         "-")):
        prof = report["profile"][key]
        ax.step(range(len(prof)), [v / 1024 for _, v in prof], style, where="mid", label=label)
    ax.axhline(report["peak_bytes"] / 1024, color="C1", ls=":", lw=1,
               label=f"planned arena {report['peak_bytes'] / 1024:.1f} KiB")
    if report["tflm_arena_bytes"]:
        ax.axhline(report["tflm_arena_bytes"] / 1024, color="C3", ls="--", lw=1,
                   label=f"TFLM arena {report['tflm_arena_bytes'] / 1024:.1f} KiB")
    if report["sram_bytes"]:
        ax.axhline(report["sram_bytes"] / 1024, color="k", ls="-.", lw=1,
                   label=f"target SRAM {report['sram_bytes'] / 1024:.0f} KiB")
    planned = report["profile"]["planned"]
    ax.set_xticks(range(len(planned)))
    ax.set_xticklabels([name for name, _ in planned], rotation=60, fontsize=7)
    ax.set_ylabel("live arena bytes (KiB)")
    m = report["model"]
    ax.set_title(f"MobileNetV2 alpha {m['alpha']:g} @ {m['resolution'][0]}x{m['resolution'][1]}: "
                 f"live arena bytes per block")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
