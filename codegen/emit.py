"""Emission: Schedule -> a standalone C project directory, rendered only from Jinja templates, written atomically.

Contract: the same Schedule and options give byte-identical files; the directory is written into a temporary sibling
and renamed into place, so a failure leaves nothing half-written; an existing directory is replaced only when its
metadata.json says this tool generated it (or with force=True).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .errors import UserError
from .export import export_tflite
from .lower import Schedule, c_name, classic_kernels, dw_fixed_channels, dwh_channels
from .quantize import normalize
from .reference import quantize_input
from .resources import resource_dir

METADATA_SCHEMA = "mnv2-codegen-metadata/1"
GENERATOR = "mnv2-codegen"
# kernel family -> (C function, parameter struct type); the C side is templates/kernels/.
KERNELS = {"conv": ("mnv2_conv_s8", "mnv2_conv_params_t"), "depthwise": ("mnv2_depthwise_s8", "mnv2_dw_params_t"),
           "add": ("mnv2_add_s8", "mnv2_add_params_t"), "avgpool": ("mnv2_avgpool_s8", "mnv2_avgpool_params_t"),
           "fc": ("mnv2_fc_s8", "mnv2_fc_params_t"), "block": ("mnv2_block_s8", "mnv2_block_params_t"),
           "chain": ("mnv2_chain_s8", "mnv2_chain_params_t"), "strips": ("mnv2_strips_s8", "mnv2_strips_params_t")}
MODEL_SOURCES = ("mnv2_model.c", "mnv2_weights.c", "mnv2_kernels.c")
# metadata.json keys that the build fills in afterwards (measured from the built firmware): not part of the
# "these are the same files" comparison of write_project.
MEASURED_KEYS = ("fit", "stack")
BYTES_PER_LINE = 24
INTS_PER_LINE = 8


def _c_bytes(values: np.ndarray) -> list[str]:
    """int8 array -> lines of adjacent string literals of \\xHH escapes (exactly values.size bytes in all)."""
    raw = np.ascontiguousarray(values, dtype=np.int8).tobytes()
    if not raw:
        return ['""']
    return ['"' + "".join(f"\\x{b:02x}" for b in raw[i:i + BYTES_PER_LINE]) + '"'
            for i in range(0, len(raw), BYTES_PER_LINE)]


def _c_ints(values: np.ndarray) -> list[str]:
    """int32 array -> lines of comma-terminated decimal literals (INT32_MIN written as an expression)."""
    def lit(v: int) -> str:
        return "(-2147483647 - 1)" if v == -(1 << 31) else str(v)
    vals = [lit(int(v)) for v in np.asarray(values).reshape(-1)]
    return [", ".join(vals[i:i + INTS_PER_LINE]) + "," for i in range(0, len(vals), INTS_PER_LINE)]


def _c_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True, autoescape=False)
    env.filters.update(c_bytes=_c_bytes, c_ints=_c_ints, c_int_lines=_c_ints, c_string=_c_string)
    return env


def model_hash(schedule: Schedule) -> str:
    """sha256 of the exported .tflite: every weight and quantization parameter of the model."""
    return hashlib.sha256(export_tflite(schedule.graph)).hexdigest()


def pixel_table(schedule: Schedule) -> np.ndarray:
    """[3][256] int8: each channel's pixel value -> quantized input, through the same code as the verifier."""
    g = schedule.graph
    q = g.qparams[g.input]
    pixels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None, None]  # (1, 1, 256, 3)
    return quantize_input(normalize(pixels, g.info), q.scale, q.zero_point)[0, 0].T


def _offset_macro(tensor: str) -> str:
    return f"MNV2_{c_name(tensor).upper()}_OFFSET"


def firmware_files(target) -> dict[str, bytes]:
    """{project path: bytes} of the hand-written firmware an MCU project needs (firmware/ of the compiler)."""
    root = resource_dir("firmware")
    out = {}
    for sub in ("include", "common", target.arch):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out[f"firmware/{p.relative_to(root).as_posix()}"] = p.read_bytes()
    out["firmware/mnv2_mcu.h"] = (root / "mnv2_mcu.h").read_bytes()
    return out


def metadata(schedule: Schedule, options: dict, digest: str, files: list[str] | None = None,
             fit: dict | None = None, test_inputs: list | None = None) -> dict:
    g, plan = schedule.graph, schedule.plan
    t = schedule.target
    qi, qo = g.qparams[g.input], g.qparams[g.output]
    return {
        "schema": METADATA_SCHEMA, "generator": GENERATOR, "version": __version__, "model_sha256": digest,
        "options": options,
        "target": {"name": t.name, "kind": t.kind, "core": t.core, "kernels": t.kernels, "chip": t.chip,
                   "sram_bytes": t.sram_bytes, "flash_bytes": t.flash_bytes,
                   **({"emulator": {"command": t.emulator.command, "machine": t.emulator.machine,
                                    "counter": t.emulator.counter, "icount_shift": t.emulator.icount_shift,
                                    "instructions_per_tick": str(t.emulator.instructions_per_tick)}}
                      if t.emulator is not None else {}),
                   **({"stack_bytes": t.stack_bytes} if t.is_mcu else {}),
                   **({"idf_target": t.idf_target} if t.idf_target else {})},
        "model": {"alpha": g.info.alpha, "resolution": list(g.info.resolution), "activation": g.info.activation,
                  "linear_bottleneck": g.info.linear_bottleneck, "residual": g.info.residual,
                  "expansion": g.info.expansion, "calibration": g.calibration,
                  "mean": list(g.info.mean), "std": list(g.info.std)},
        "class_names": list(g.info.class_names),
        "input": {"shape": list(g.shapes[g.input]), "dtype": "int8", "scale": qi.scale, "zero_point": qi.zero_point},
        "output": {"shape": list(g.shapes[g.output]), "dtype": "int8", "scale": qo.scale,
                   "zero_point": qo.zero_point},
        "macs": schedule.macs, "param_bytes": schedule.param_bytes, "widened_bytes": schedule.widened_bytes,
        "weights": schedule.weight_count,
        "arena_bytes": plan.arena_bytes,
        "layers": [{"name": s.op, "kernel": s.kernel, "inputs": [list(g.shapes[t]) for t in s.inputs],
                    "output": list(g.shapes[s.output]), "macs": s.macs,
                    "param_bytes": sum(a.values.nbytes for a in s.arrays), "summary": s.summary}
                   for s in schedule.steps],
        "plan": {"strategy": plan.strategy, "arena_bytes": plan.arena_bytes,
                 "units": [_unit_record(u) for u in plan.units],
                 "buffers": [{"name": b.name, "offset": b.offset, "size": b.size, "first": b.first, "last": b.last}
                             for b in plan.buffers]},
        "files": sorted(files if files is not None else
                        ["mnv2_model.h", "mnv2_weights.h", "mnv2_kernels.h", "mnv2_requant.h", *MODEL_SOURCES,
                         "host/main.c", "SConstruct", "target.toml", "metadata.json"]),
        **({"test_inputs": [x["label"] for x in test_inputs]} if test_inputs is not None else {}),
        **({"fit": fit} if fit is not None else {}),
    }


def _unit_record(unit) -> dict:
    """A plan unit for metadata.json: kind, ops, output, scratch; a block's column-sliding window width; a chain's
    ring rows and its two blocks."""
    rec = {"kind": unit.kind, "ops": list(unit.ops), "output": unit.output, "scratch_bytes": unit.scratch}
    if unit.kind == "block":
        rec["column_sliding_cols"] = unit.cs_cols
    if unit.kind == "chain":
        rec["ring_rows"] = unit.ring_rows
        rec["column_strips"] = 2 if unit.strips else 1
        rec["parts"] = [_unit_record(part) for part in unit.parts]
    return rec


def render(schedule: Schedule, options: dict, test_inputs: list[tuple[str, np.ndarray]] | None = None,
           fit: dict | None = None) -> dict[str, bytes]:
    """{relative path: file bytes} of the whole project. MCU targets embed `test_inputs` ((label, int8 HWC input)
    pairs, at least one) in their harness; `fit` (codegen.fit) is recorded in metadata.json."""
    env = environment()
    g, plan = schedule.graph, schedule.plan
    digest = model_hash(schedule)
    opts = " ".join(f"{k}={v}" for k, v in options.items())
    provenance = (f"/* Generated by {GENERATOR} {__version__}. Do not edit: regenerate instead.\n"
                  f" * model sha256 {digest}\n"
                  f" * alpha {g.info.alpha:g}, {g.info.resolution[0]}x{g.info.resolution[1]}, "
                  f"{len(g.info.class_names)} classes, calibration {g.calibration}\n"
                  f" * options: {_c_string(opts).replace('*/', '* /')}\n */")
    provenance_py = "\n".join("# " + line.strip(" /*").rstrip() if line.strip(" /*") else "#"
                              for line in provenance.splitlines())
    qi, qo = g.qparams[g.input], g.qparams[g.output]
    h, w, c = g.shapes[g.input]
    steps = []
    for s in schedule.steps:
        fn, ptype = KERNELS[s.kernel]
        steps.append(dict(op=s.op, summary=s.summary, params=s.params, kernel=s.kernel, function=fn,
                          params_symbol=f"mnv2_{s.cname}_params", in_macros=[_offset_macro(t) for t in s.inputs],
                          out_macro=_offset_macro(s.output), args=s.args,
                          scratch_macro=_offset_macro(f"{s.output}/scratch") if s.scratch else None))
    arrays = [a for s in schedule.steps for a in s.arrays]
    ctx = dict(provenance=provenance, provenance_py=provenance_py, target=schedule.target.name,
               input=dict(h=h, w=w, c=c, size=h * w * c, scale=repr(float(np.float32(qi.scale))),
                          zero_point=qi.zero_point),
               output=dict(size=g.shapes[g.output][0], scale=repr(float(np.float32(qo.scale))),
                           zero_point=qo.zero_point),
               arena_bytes=plan.arena_bytes, plan_strategy=plan.strategy, macs=schedule.macs,
               class_names=list(g.info.class_names), pixel_table=pixel_table(schedule), steps=steps, arrays=arrays,
               kernel_params={k: v[1] for k, v in KERNELS.items()},
               buffers=[dict(macro=_offset_macro(b.name), name=b.name, offset=b.offset, size=b.size, first=b.first,
                             last=b.last) for b in plan.buffers],
               input_macro=_offset_macro(g.input), output_macro=_offset_macro(g.output),
               model_sources=list(MODEL_SOURCES))
    files = {
        "mnv2_model.h": env.get_template("model/mnv2_model.h.j2").render(ctx),
        "mnv2_model.c": env.get_template("model/mnv2_model.c.j2").render(ctx),
        "mnv2_weights.h": env.get_template("model/mnv2_weights.h.j2").render(ctx),
        "mnv2_weights.c": env.get_template("model/mnv2_weights.c.j2").render(ctx),
        "mnv2_kernels.h": env.get_template("kernels/mnv2_kernels.h.j2").render(provenance=provenance),
        "mnv2_kernels.c": env.get_template(f"kernels/{schedule.target.kernels}.c.j2").render(
            provenance=provenance, mid_max=max((g.shapes[op.input][2] for op in g.ops if op.kind == "depthwise"),
                                               default=0), classic=classic_kernels(g),
            dw_fixed=list(dw_fixed_channels(g, schedule.dwi)), dwi=bool(schedule.dwi),
            dw_generic=bool(schedule.dw_stream_channels - set(dw_fixed_channels(g, schedule.dwi))),
            dwh=list(dwh_channels(g, schedule.dwh)), dwh2=list(dwh_channels(g, schedule.dwh, 2)),
            dwh_relayout=schedule.dwh_relayout,
            runtime_ww=schedule.runtime_widening, slow_proj=schedule.slow_proj),
        "SConstruct": env.get_template("project/SConstruct.j2").render(ctx),
    }
    inputs = None
    if schedule.target.is_mcu:
        if not test_inputs:
            raise ValueError("an MCU project needs at least one test input")
        inputs = [dict(label=label, data=np.asarray(x, dtype=np.int8).reshape(-1)) for label, x in test_inputs]
        if any(x["data"].size != h * w * c for x in inputs):
            raise ValueError(f"test inputs must hold {h * w * c} int8 values each")
        if schedule.target.builds_here:  # the emulated board's harness (ESP-IDF-only chips get main/ instead)
            files["mcu/main.c"] = env.get_template("mcu/main.c.j2").render(ctx, test_inputs=inputs)
        else:
            del files["SConstruct"]  # nothing here builds it: ESP-IDF does (CMakeLists.txt)
    else:
        files["host/main.c"] = env.get_template("host/main.c.j2").render(ctx)
    out = {k: v.encode() for k, v in files.items()}
    out["mnv2_requant.h"] = (resource_dir("firmware") / "mnv2_requant.h").read_bytes()
    out["target.toml"] = schedule.target.file_text().encode()
    if schedule.target.is_mcu and schedule.target.builds_here:
        out.update(firmware_files(schedule.target))
    if schedule.target.idf_target:
        from .espidf import render_espidf
        out.update(render_espidf(env, dict(ctx, model_sha256=digest), out, schedule, inputs[0]["label"],
                                 inputs[0]["data"]))
    names = sorted([*out, "metadata.json"])
    out["metadata.json"] = (json.dumps(metadata(schedule, options, digest, names, fit, inputs), indent=1)
                            + "\n").encode()
    return out


def _same_file(rel: str, old: bytes, new: bytes) -> bool:
    if old == new:
        return True
    if rel != "metadata.json":
        return False
    try:
        a, b = json.loads(old), json.loads(new)
    except ValueError:
        return False
    for k in MEASURED_KEYS:
        a.pop(k, None)
        b.pop(k, None)
    return a == b


def update_metadata(out_dir: Path, **entries) -> None:
    """Adds measured entries (MEASURED_KEYS) to a written project's metadata.json, atomically."""
    path = Path(out_dir) / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(entries)
    tmp = path.with_name(".metadata.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path)


def is_ours(directory: Path) -> bool:
    try:
        meta = json.loads((directory / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def check_output_dir(out_dir: Path, force: bool = False) -> None:
    """An existing output must be a directory this tool generated (or empty), unless `force`."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"output {out_dir} exists and is not a directory")
        if not force and not is_ours(out_dir) and any(out_dir.iterdir()):
            raise UserError(f"output directory {out_dir} exists and was not generated by {GENERATOR}; "
                            f"choose another -o or pass --force")


def write_project(files: dict[str, bytes], out_dir: Path, force: bool = False) -> bool:
    """Writes atomically; returns False when the directory already held exactly these files (then it is left alone,
    build outputs included, so an unchanged model does not rebuild)."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    if out_dir.exists():
        if all((out_dir / k).is_file() and _same_file(k, (out_dir / k).read_bytes(), v) for k, v in files.items()):
            return False
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for rel, data in sorted(files.items()):
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.rmdir(old)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return True
