"""The memory planner: the replay checker passes for every planned model and catches broken plans; the streamed
plan meets its size goals; the generated code executes exactly the model's MACs (no recomputation)."""
import ctypes
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from codegen import dataset
from codegen.emit import render
from codegen.frontend import to_float_graph
from codegen.lower import lower
from codegen import memory, strips
from codegen.memory import PlanError, block_scratch_bytes, padded_units, plan, replay, streamed_units
from codegen.quantize import calibrate, quantize
from codegen.reference import run_int8
from codegen.targets import load_target
from codegen.verify import verification_inputs
from conftest import random_model, synthetic_info

KIB = 1024


def quant_graph(alpha, res, **ablation):
    info = synthetic_info(alpha, (res, res) if isinstance(res, int) else res, **ablation)
    fg = to_float_graph(random_model(info, bn_images=4), info)
    return quantize(fg, calibrate(fg, dataset.make_split("calib", 2, info.resolution)[0]))


@pytest.mark.parametrize("res", [96, 144, 224])
@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_replay_passes_and_streaming_wins(alpha, res):
    g = quant_graph(alpha, res)
    layerwise, streamed = plan(g, "layerwise"), plan(g, "streamed")
    replay(g, layerwise)
    replay(g, streamed)
    assert streamed.arena_bytes < layerwise.arena_bytes / 3
    assert not any(b.name.endswith(("/expand", "/dw")) for b in streamed.buffers)  # wide tensors never exist


@pytest.mark.parametrize("ablation", [{"residual": False}, {"linear_bottleneck": False}, {"expansion": 4},
                                      {"activation": "relu"}])
def test_replay_ablations(ablation):
    g = quant_graph(0.35, (128, 96), **ablation)
    replay(g, plan(g, "streamed"))


@pytest.mark.parametrize("alpha,res,goal_kib", [(0.35, 96, 40), (0.35, 144, 80), (1.0, 224, 165)])
def test_size_goals(alpha, res, goal_kib):
    g = quant_graph(alpha, res)
    p = plan(g, "streamed")
    image = int(np.prod(g.shapes[g.input]))
    assert p.arena_bytes >= image  # the arena holds the input image too
    assert p.arena_bytes <= goal_kib * KIB, p.arena_bytes


def test_replay_catches_broken_plans():
    g = quant_graph(0.35, 96)
    good = plan(g, "streamed")
    units = good.units
    # 1. move a block's output 64 bytes into rows of its input that are still to be expanded
    u = next(u for u in units if u.kind == "block" and u.add is None and u.a is not None)
    src, out = good.buffer(u.inputs[0]), good.buffer(u.output)
    moved = tuple(replace(b, offset=src.offset + 64 * 16) if b.name == out.name else b for b in good.buffers)
    with pytest.raises(PlanError):
        replay(g, replace(good, buffers=moved))
    # 2. put a unit's scratch on top of its input
    sc = next(b for b in good.buffers if b.name.endswith("/scratch"))
    unit = units[sc.first]
    victim = good.buffer(unit.inputs[0])
    moved = tuple(replace(b, offset=victim.offset) if b.name == sc.name else b for b in good.buffers)
    with pytest.raises(PlanError):
        replay(g, replace(good, buffers=moved))
    # 3. a buffer past the end of the arena
    with pytest.raises(PlanError):
        replay(g, replace(good, arena_bytes=good.arena_bytes - 16))


def test_chain_lowers_the_peak_and_replay_guards_it():
    """For 1.0@224 the planner chains block 1 (stem fused) with block 2, so block 1's 112x112x16 output exists only
    as a ring of rows, block 2 runs column-sliding (the 112x112x96 expansion keeps one shared row plus column
    windows), and the chain runs in two column strips (line buffers half as wide); the arena drops far below the
    unrefined plan's (227.6 KiB), under the issue's 165 KiB; moving the output into image rows the chain still
    reads is caught."""
    g = quant_graph(1.0, 224)
    chained = plan(g, "streamed")
    chain = next(u for u in chained.units if u.kind == "chain")
    assert chain.output == "b2/project" and chain.parts[0].output == "b1/project"
    assert chain.strips and chain.parts[1].cs_cols and chain.ring_rows == 2
    assert "b1/project" not in {b.name for b in chained.buffers}
    unrefined = memory._plan_units(g, streamed_units(g))
    assert chained.arena_bytes < unrefined.arena_bytes - 60 * KIB
    whole_width = memory._plan_units(g, tuple(replace(u, strips=False, scratch=memory.chain_unit(g, *u.parts).scratch)
                                              if u.strips else u for u in chained.units))
    assert chained.arena_bytes < whole_width.arena_bytes - 4 * KIB
    replay(g, chained)
    replay(g, whole_width)
    src, out = chained.buffer(chain.inputs[0]), chained.buffer(chain.output)
    moved = tuple(replace(b, offset=src.offset + 16 * 672) if b.name == out.name else b for b in chained.buffers)
    with pytest.raises(PlanError, match="still to be read"):
        replay(g, replace(chained, buffers=moved))


def _strips_plan():
    g = quant_graph(1.0, 224)
    p = plan(g, "streamed")
    unit = next(u for u in p.units if u.strips)
    return g, p, unit, strips.layout(g, unit)


def test_strips_layout_is_consistent():
    """The strips' columns split each block's output and stage A's work exactly (the edge computed once, by the left
    strip); each output row's pieces cover it once; the left strip's data stays in the holes (bytes the right strip
    never reads) and nothing in a group overlaps."""
    g, p, unit, lay = _strips_plan()
    for b, part in enumerate(unit.parts):
        left, right = lay.cols[0][b], lay.cols[1][b]
        out_w, mid_w = g.shapes[part.output][1], g.shapes[next(o.input for o in g.ops if o.name == part.b)][1]
        assert (left.ox0, left.ox1, right.ox1) == (0, right.ox0, out_w)
        assert left.own == left.m0 == 0 and right.m1 == mid_w and right.own == left.m1  # computed once
        assert left.exp0 == right.m0 < left.m1 and right.exp0 == right.m1  # the edge: exported by the left only
    out_c = g.shapes[unit.output][2]
    for side, pieces in enumerate(lay.pieces):
        width = (lay.cols[side][1].ox1 - lay.cols[side][1].ox0) * out_c
        assert sorted((q.src, q.src + q.size) for q in pieces)[0][0] == 0
        assert sum(q.size for q in pieces) == width
    row_bytes = g.shapes[unit.inputs[0]][1] * g.shapes[unit.inputs[0]][2]
    spans = [(q.dst, q.dst + q.size, 0) for q in lay.pieces[0]]
    spans += [(lay.edge_dst[b], lay.edge_dst[b] + lay.edge_per[b] * lay.edge_bytes[b], 0) for b in (0, 1)]
    spans += [(q.dst, q.dst + q.size, 1) for q in lay.pieces[1]]
    spans.sort()
    for (a0, a1, _), (b0, _, _) in zip(spans, spans[1:]):
        assert a1 <= b0
    for lo, hi, side in spans:
        assert hi <= lay.group_bytes
        if side == 0:  # within one input row's hole
            assert lo // row_bytes == (hi - 1) // row_bytes and hi - lo // row_bytes * row_bytes <= lay.hole_bytes


@pytest.mark.parametrize("mutation", ["edge_into_right_part", "right_over_left", "left_too_early", "edge_over_left"])
def test_replay_catches_broken_strips(monkeypatch, mutation):
    """Each broken layout is caught by the replay: an edge row stored in input bytes the right strip still reads;
    the right strip's output over the left strip's pieces; a left piece in an input row not consumed yet (the next
    group's last row); edge rows over the left strip's pieces."""
    g, p, unit, lay = _strips_plan()
    replay(g, p)
    if mutation == "edge_into_right_part":
        bad = replace(lay, edge_dst=(lay.edge_dst[0] + lay.hole_bytes, lay.edge_dst[1]))
    elif mutation == "right_over_left":
        bad = replace(lay, pieces=(lay.pieces[0], tuple(replace(q, dst=lay.pieces[0][0].dst) for q in lay.pieces[1])))
    elif mutation == "left_too_early":
        q = lay.pieces[0][0]
        bad = replace(lay, pieces=((replace(q, dst=q.dst + lay.group_bytes + 3 * lay.group_bytes // 4),)
                                   + lay.pieces[0][1:], lay.pieces[1]))
    else:
        bad = replace(lay, edge_dst=(lay.pieces[0][0].dst, lay.edge_dst[1]))
    monkeypatch.setattr(strips, "layout", lambda graph, u: bad)
    with pytest.raises(PlanError):
        replay(g, p)


def test_scratch_formula_python_equals_c(tmp_path):
    """codegen/memory.py's block_scratch_bytes and the kernels' MNV2_BLOCK_SCRATCH_SIZE agree, line buffers and
    column-sliding."""
    from codegen.emit import environment
    cases = [(a, k, w, c, s, cs, False, False) for a in (0, 1, 3) for k in (3, 5) for w in (1, 7, 112)
             for c in (1, 96) for s in (1, 2) for cs in ((0, k, k + 3 * s) if a else (0,))]
    cases += [(a, 3, w, c, 1, 0, True, wide) for a in (1, 3) for w in (2, 48) for c in (8, 96)
              for wide in (False, True)]  # padded (MNV2_FAST_DWI), int16 (MNV2_FAST_DWH)
    (tmp_path / "mnv2_kernels.h").write_text(environment().get_template("kernels/mnv2_kernels.h.j2").render(
        provenance="/* test */"))
    lines = [f"{{ mnv2_block_params_t p = {{0}}; p.a_kernel = {a}; p.b_kernel = {k}; p.mid_w = {w}; p.mid_c = {c}; "
             f"p.b_stride = {s}; p.cs_cols = {cs}; p.fast = {'MNV2_FAST_DWI | ' if pad else ''}"
             f"{'MNV2_FAST_DWH | ' if wide else ''}MNV2_FAST_DW; "
             f"printf(\"%ld\\n\", (long)MNV2_BLOCK_SCRATCH_SIZE(p)); }}"
             for a, k, w, c, s, cs, pad, wide in cases]
    (tmp_path / "t.c").write_text('#include <stdio.h>\n#include "mnv2_kernels.h"\nint main(void) {\n'
                                  + "\n".join(lines) + "\nreturn 0;\n}\n")
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "t"), "t.c"],
                   cwd=tmp_path, check=True)
    got = [int(x) for x in subprocess.run([str(tmp_path / "t")], capture_output=True, text=True,
                                          check=True).stdout.split()]
    assert got == [block_scratch_bytes(a, k, w, c, s, cs, pad, wide) for a, k, w, c, s, cs, pad, wide in cases]


def test_padded_rows_keep_the_plans_units():
    """The padded plan (the interleaved depthwise's targets) pads the line buffers of the plan chosen without padding,
    so that padding never trades the refinements (each costs speed) for its own bytes."""
    g = quant_graph(0.35, 144)
    plain, padded = plan(g), plan(g, "streamed", padded_rows=True)
    shape = lambda p: [(u.kind, u.ops, u.cs_cols, u.strips) for u in p.units]  # noqa: E731
    assert shape(plain) == shape(padded)
    assert any(u.padded for u in padded.units) and not any(u.padded for u in plain.units)
    assert padded.arena_bytes >= plain.arena_bytes
    replay(g, padded)
    only = plan(g, "streamed", padded_rows=frozenset({"b3/dw"}))  # the blocks the lowering gave the kernel
    assert shape(only) == shape(plain) and [u.b for u in only.units if u.padded] == ["b3/dw"]
    assert plan(g, "streamed", padded_rows=frozenset()).arena_bytes == plain.arena_bytes
    wide = plan(g, "streamed", padded_rows=frozenset({"b3/dw", "b5/dw"}), wide_rows=frozenset({"b5/dw"}))
    assert shape(wide) == shape(plain) and [(u.b, u.wide) for u in wide.units if u.padded] == [("b3/dw", False),
                                                                                                ("b5/dw", True)]
    _, mid_w, mid_c = g.shapes[next(op for op in g.ops if op.name == "b5/dw").input]
    assert next(u for u in wide.units if u.b == "b5/dw").scratch == 3 * (mid_w + 2) * mid_c * 2  # int16 rows
    scratch = lambda p, b: next(u.scratch for u in p.units if u.b == b)  # noqa: E731
    assert scratch(wide, "b3/dw") == scratch(only, "b3/dw")  # int8 rows
    replay(g, wide)


@pytest.mark.parametrize("padded_rows", [False, True])
def test_scratch_formula_matches_units(padded_rows):
    g = quant_graph(1.0, 96)
    padded = []
    units = streamed_units(g)
    for u in padded_units(g, units) if padded_rows else units:
        if u.kind == "block":
            dw = next(op for op in g.ops if op.name == u.b)
            mid_h, mid_w, mid_c = g.shapes[dw.input]
            ka = 3 if u.a == "stem" else (1 if u.a else 0)
            assert u.scratch == block_scratch_bytes(ka, 3, mid_w, mid_c, dw.stride, 0, u.padded)
            assert u.padded == (padded_rows and ka > 0 and dw.stride in (1, 2) and tuple(dw.padding) == (1, 1, 1, 1)
                                and mid_w % (2 * dw.stride) == 0 and mid_h >= 2 and mid_c % 8 == 0)
            padded += [u.b] if u.padded else []
    # the 3 x 3 stride-1 blocks of even width: 48 x 48 (b1) to 6 x 6 (b12, b13); not the 3 x 3 ones (b15, b16); the
    # stride-2 ones of widths 4k: 48 (b2), 24 (b4), 12 (b7); not 6 (b14)
    assert padded == ([f"b{i}/dw" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)] if padded_rows else [])


@pytest.mark.parametrize("strategy,alpha,res,chain,strips", [
    ("streamed", 0.5, (96, 80), False, False), ("layerwise", 0.5, (96, 80), False, False),
    ("streamed", 1.0, 96, True, False), ("streamed", 1.0, 224, True, True),
    ("streamed", 0.75, (160, 224), True, True), ("streamed", 0.75, 200, True, True)])
def test_generated_code_executes_exactly_the_model_macs(tmp_path, strategy, alpha, res, chain, strips):
    """Built with MNV2_COUNT_MACS, the kernels count every MAC they compute; the total equals the model's MAC count
    (from the graph's shapes), so the streamed blocks (and chains; in column strips, also with a non-square input
    and an odd number of output columns per strip at 200) recompute nothing. The same build is also bit-exact."""
    g = quant_graph(alpha, res)
    p = plan(g, strategy)
    assert any(u.kind == "chain" for u in p.units) == chain
    assert any(u.strips for u in p.units) == strips
    files = render(lower(g, p, load_target("host")), {"target": "host"})
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    lib = tmp_path / "libcount.so"
    subprocess.run(["gcc", "-std=c99", "-O1", "-shared", "-fPIC", "-DMNV2_COUNT_MACS", "-Wall", "-Wextra", "-Werror",
                    "-Wno-overlength-strings", "-o", str(lib), "mnv2_model.c", "mnv2_weights.c", "mnv2_kernels.c"],
                   cwd=tmp_path, check=True)
    c = ctypes.CDLL(str(lib))
    counter = ctypes.c_uint64.in_dll(c, "mnv2_mac_count")
    _, x = verification_inputs(g, 2)
    out = np.zeros((2, 10), np.int8)
    for i in range(2):
        counter.value = 0
        c.mnv2_invoke(x[i].ctypes.data_as(ctypes.c_void_p), out[i].ctypes.data_as(ctypes.c_void_p))
        model_macs = 0
        for op in g.ops:
            if op.kind == "conv":
                oh, ow, oc = g.shapes[op.output]
                model_macs += oh * ow * oc * int(np.prod(op.weight.shape[1:]))
            elif op.kind == "depthwise":
                oh, ow, oc = g.shapes[op.output]
                model_macs += oh * ow * oc * op.weight.shape[0] * op.weight.shape[1]
            elif op.kind == "dense":
                model_macs += op.weight.size
        assert counter.value == model_macs
    assert np.array_equal(out, run_int8(g, x))


def test_metadata_records_the_chain():
    """metadata.json lists the plan's units: the chain, its ring and its two column-sliding blocks."""
    import json
    g = quant_graph(1.0, 96)
    p = plan(g, "streamed")
    meta = json.loads(render(lower(g, p, load_target("host")), {"target": "host"})["metadata.json"])
    chain = next(u for u in meta["plan"]["units"] if u["kind"] == "chain")
    assert chain["output"] == "b2/project" and chain["ring_rows"] == 2
    assert [part["output"] for part in chain["parts"]] == ["b1/project", "b2/project"]
    assert all(part["column_sliding_cols"] >= 3 for part in chain["parts"])
    assert chain["scratch_bytes"] == next(u.scratch for u in p.units if u.kind == "chain")


def test_planner_uses_only_strips_layouts_the_replay_proves(monkeypatch):
    """A strips layout whose edge rows would land in bytes the right strip still reads is not used: the planner
    replays the unit alone before taking it, and keeps the whole-width chain (a larger arena)."""
    g, p, unit, lay = _strips_plan()
    bad = replace(lay, edge_dst=(lay.edge_dst[0] + lay.hole_bytes, lay.edge_dst[1]))
    monkeypatch.setattr(strips, "layout", lambda graph, u: bad)
    fallback = plan(g, "streamed")
    assert not any(u.strips for u in fallback.units)
    assert fallback.arena_bytes > p.arena_bytes
    replay(g, fallback)


def test_metadata_records_the_strips():
    """metadata.json marks a chain run in column strips, with the strips' scratch; the C parameters carry the
    layout (both strips' columns, the pieces, the scratch offsets)."""
    import json
    g, p, unit, lay = _strips_plan()
    files = render(lower(g, p, load_target("host")), {"target": "host"})
    chain = next(u for u in json.loads(files["metadata.json"])["plan"]["units"] if u["kind"] == "chain")
    assert chain["column_strips"] == 2 and chain["scratch_bytes"] == lay.scratch == unit.scratch
    model_c = files["mnv2_model.c"].decode()
    assert "mnv2_strips_s8(" in model_c and f".group_bytes = {lay.group_bytes}," in model_c
    assert f".at_row = {lay.at_row}," in model_c
