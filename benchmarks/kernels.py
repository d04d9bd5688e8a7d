"""Kernel benchmark: executed instructions per inference and per MAC of each MCU target's selected kernels against
the portable kernels on the same emulated board, per layer and in total, plus the flash split (code vs weights),
all measured in this run.

Run: .venv/bin/python benchmarks/kernels.py [--targets cortex-m7 cortex-m55] [--models 0.35@96 0.35@144 1.0@224]
     [--no-layers] [--speed-sram BYTES] [--speed-flash BYTES] [--json]
For each (target, model) the firmware is generated and built twice, once with the target's `kernels` and once with
`kernels = "portable"` (the target overridden in memory, nothing on disk changes), and run once on the target's
QEMU board under the profiling plugin (codegen/profile.py) on the bundled sample image: the instructions per
inference are the board counter's for the `mnv2_invoke` call (QEMU -icount: instructions, not cycles), the
per-layer figures the plugin's (one kernel call per unit of the plan; layers + call overhead == the whole call).
Each run's output is checked bit-exact against the numpy int8 reference.
Flash: `size -A` of the board ELF: code = .text + .rodata (kernels, model glue, parameter structs, harness),
weights = .weights (the .inputs section of test images is not counted). Arena: the memory plan's (the smallest,
unless --speed-sram lets the Arm DSP kernels' int16 depthwise rows make it larger). --speed-flash: generate's flash
budget for the speed copies of the targets' own kernels (default: the target's, half of the free flash).
A model whose alpha has no bundled checkpoint runs with random weights (the test suite's random MobileNetV2,
tests/conftest.py; marked "random weights"): the kernels' instruction counts hardly depend on the weight values.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from codegen import generate as gen_mod  # noqa: E402
from codegen.checkpoint import bundled_checkpoints  # noqa: E402
from codegen.generate import generate  # noqa: E402
from codegen.lower import relu_floor  # noqa: E402
from codegen.profile import profile  # noqa: E402
from codegen.pipeline import CalibOptions, compile_front  # noqa: E402
from codegen.reference import run_int8  # noqa: E402
from codegen.targets import load_target  # noqa: E402

CALIB = CalibOptions(samples=8)
DEFAULT_TARGETS = ("cortex-m7", "cortex-m55")
DEFAULT_MODELS = ("0.35@96", "0.35@144")  # 1.0@224 on request (a portable run takes minutes of QEMU)


def flash_split(elf: Path, size_tool: str) -> dict:
    out = subprocess.run([size_tool, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    return {"code_bytes": sections.get(".text", 0) + sections.get(".rodata", 0),
            "weights_bytes": sections.get(".weights", 0), "model_code_bytes": model_code(elf.with_suffix(".map"))}


# The objects of the generated kernels and model (the rest of the board ELF's code is the harness: main, startup,
# the -nostdlib libc, the stack probe).
MODEL_OBJECTS = ("mnv2_kernels.o", "mnv2_model.o")


def model_code(link_map: Path) -> int:
    """Bytes of .text* and .rodata* input sections that the linker kept (non-zero address) from MODEL_OBJECTS, read
    from the GNU ld map file next to the ELF."""
    lines = link_map.read_text().split("Linker script and memory map", 1)[1].splitlines()
    total = 0
    for i, line in enumerate(lines):
        if re.fullmatch(r" \.(text|rodata)\S*", line.rstrip()) and i + 1 < len(lines):
            line = line.rstrip() + " " + lines[i + 1].strip()  # a long section name: its address on the next line
        m = re.match(r" \.(?:text|rodata)\S*\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$", line)
        if m and int(m.group(1), 16) and m.group(3).rsplit("/", 1)[-1] in MODEL_OBJECTS:
            total += int(m.group(2), 16)
    return total


def measure(target_name: str, kernels: str, compiled, work: Path, speed_sram: int = 0,
            speed_flash: int | None = None) -> dict:
    """Build and run the firmware of `compiled` for the target with `kernels` (and generate's `speed_sram`,
    `speed_flash`);
    instructions, MACs, flash, arena."""
    base = load_target(target_name)
    variant = dataclasses.replace(base, kernels=kernels)
    original = gen_mod.load_target
    gen_mod.load_target = lambda name: variant if name == target_name else original(name)
    try:
        g = generate(target_name, None, None, None, CALIB, str(work / f"{target_name}-{kernels}"), force=True,
                     fit_check=False, compiled=compiled, speed_sram=speed_sram, speed_flash=speed_flash)
    finally:
        gen_mod.load_target = original
    start = time.monotonic()
    prof = profile(g.elf, g.schedule, variant, g.variant / "profile")
    seconds = time.monotonic() - start
    want = run_int8(compiled.quant_graph, g.test_inputs)
    insns = prof["harness_instructions"]
    macs = g.schedule.macs
    qg = compiled.quant_graph
    dw_macs = sum(int(np.prod(qg.shapes[op.output])) * op.weight.shape[0] * op.weight.shape[1]
                  for op in qg.ops if op.kind == "depthwise")
    requantized = [op for op in qg.ops if op.kind in ("conv", "depthwise", "dense")]
    outputs = sum(int(np.prod(qg.shapes[op.output])) for op in requantized)
    floor_outputs = sum(int(np.prod(qg.shapes[op.output])) for op in requantized
                        if op.kind != "dense" and relu_floor(op))
    layers = [{k: layer[k] for k in ("name", "kernel", "macs", "instructions")} for layer in prof["layers"]]
    return {"kernels": kernels, "instructions": insns, "macs": macs, "instructions_per_mac": insns / macs,
            "depthwise_macs": dw_macs, "requantized_outputs": outputs, "relu_floor_outputs": floor_outputs,
            "layers": layers, "overhead_instructions": prof["overhead"]["instructions"],
            "bit_exact": bool(np.array_equal(prof["outputs"], want)), "qemu_seconds": round(seconds, 2),
            "arena_bytes": g.schedule.plan.arena_bytes, "speed_sram": speed_sram, "speed_flash": speed_flash,
            **flash_split(g.elf, variant.size)}


def print_layers(r: dict) -> None:
    """Per-layer table of one (target, model): selected vs portable instructions."""
    s, p = r["selected"], r["portable"]
    print(f"\n{r['target']}, alpha {r['model'].replace('@', ' @ ')}: instructions per layer, {s['kernels']} vs "
          f"portable")
    print("| layer | kernel | MACs | instructions | instr/MAC | portable | speedup |")
    print("|---|---|---|---|---|---|---|")
    for a, b in zip(s["layers"], p["layers"]):
        per = f"{a['instructions'] / a['macs']:.2f}" if a["macs"] else "-"
        print(f"| {a['name']} | {a['kernel']} | {a['macs']:,} | {a['instructions']:,} | {per} | "
              f"{b['instructions']:,} | {b['instructions'] / a['instructions']:.2f}x |")
    print(f"| call overhead (input / output copies) | | | {s['overhead_instructions']:,} | | "
          f"{p['overhead_instructions']:,} | |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="alpha@resolution, e.g. 1.0@224")
    ap.add_argument("--no-layers", action="store_true", help="leave out the per-layer tables")
    ap.add_argument("--speed-sram", type=int, default=0, metavar="BYTES",
                    help="generate's --speed-sram for the targets' own kernels (default 0: the smallest arena)")
    ap.add_argument("--speed-flash", type=int, default=None, metavar="BYTES",
                    help="generate's --speed-flash for the targets' own kernels (default: the target's budget)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mnv2-bench-") as tmp:
        for model in args.models:
            alpha, res = float(model.split("@")[0]), int(model.split("@")[1])
            weights = None
            if alpha not in bundled_checkpoints():
                sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
                from conftest import random_model, synthetic_info  # the test suite's random model

                from codegen.checkpoint import save_checkpoint
                info = synthetic_info(alpha, (res, res))
                weights = str(Path(tmp) / f"random-a{alpha:g}.pt")
                save_checkpoint(random_model(info), info, weights)
                model += " (random weights)"
            compiled = compile_front(alpha if weights is None else None, weights, (res, res), CALIB)
            for t in args.targets:
                selected = load_target(t).kernels
                fast = measure(t, selected, compiled, Path(tmp), args.speed_sram, args.speed_flash)
                port = measure(t, "portable", compiled, Path(tmp)) if selected != "portable" else fast
                rows.append({"target": t, "model": model, "selected": fast, "portable": port,
                             "speedup": port["instructions"] / fast["instructions"]})
    if args.json:
        print(json.dumps(rows))
        return 0 if all(r["selected"]["bit_exact"] and r["portable"]["bit_exact"] for r in rows) else 1
    print("| target | model | kernels | instr/inference | instr/MAC | portable instr/MAC | speedup | code | weights "
          "| arena | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, p = r["selected"], r["portable"]
        opts = ([f"--speed-sram {s['speed_sram']:,}"] if s["speed_sram"] else []) + (
            [f"--speed-flash {s['speed_flash']:,}"] if s["speed_flash"] is not None else [])
        kernels = s["kernels"] + (f" ({', '.join(opts)})" if opts else "")
        print(f"| {r['target']} | alpha {r['model'].replace('@', ' @ ')} | {kernels} | {s['instructions']:,} | "
              f"{s['instructions_per_mac']:.4f} | {p['instructions_per_mac']:.2f} | {r['speedup']:.2f}x | "
              f"{s['code_bytes']:,} B (portable {p['code_bytes']:,} B) | {s['weights_bytes']:,} B | "
              f"{s['arena_bytes']:,} B | "
              f"{'yes' if s['bit_exact'] and p['bit_exact'] else 'NO'} |")
    print("Kernels + model code (their objects' .text and .rodata in the link map, without the harness): " + ", ".join(
        f"{r['target']} {r['model']} {r['selected']['model_code_bytes']:,} B" for r in rows))
    print("Per inference: " + ", ".join(sorted({
        f"{r['model']}: {r['selected']['macs']:,} MACs ({r['selected']['depthwise_macs']:,} depthwise), "
        f"{r['selected']['requantized_outputs']:,} requantized outputs "
        f"({r['selected']['relu_floor_outputs']:,} of them ReLU outputs at zero point -128)" for r in rows})))
    if not args.no_layers:
        for r in rows:
            print_layers(r)
    return 0 if all(r["selected"]["bit_exact"] and r["portable"]["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
