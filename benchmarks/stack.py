"""Stack benchmark: the stack each MCU firmware uses at its deepest point, against the stack its target reserves.

Run: .venv/bin/python benchmarks/stack.py [--targets cortex-m4 cortex-m7 cortex-m33 cortex-m55 esp32-c3]
     [--models 0.35@96 0.75@96 1.0@224] [--json]
For each (target, model) the firmware is generated and built with the target's kernels and run once on the target's
QEMU board on the bundled sample image; the harness paints the free stack before the inference and reports the
deepest point reached (firmware/common/mnv2_stack.c). The fit check is off here, so that a model whose weights exceed
the chip's flash is still measured; the stack reservation is the target file's `stack_bytes` (the chip linker
script's). 0.75 @ 96 and 1.0 @ 224 run a chained plan (two blocks' kernel frames on the stack at once).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codegen.generate import generate, run_emulated  # noqa: E402
from codegen.pipeline import CalibOptions, compile_front  # noqa: E402
from codegen.targets import load_target  # noqa: E402

DEFAULT_TARGETS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55", "esp32-c3")
DEFAULT_MODELS = ("0.35@96", "0.75@96", "1.0@224")
CALIB = CalibOptions(samples=8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="alpha@resolution, e.g. 1.0@224")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            alpha, res = model.split("@")
            c = compile_front(float(alpha), None, (int(res), int(res)), CALIB)
            for target in args.targets:
                out = Path(tmp) / f"{target}-{model}"
                gen = generate(target, None, None, None, CALIB, str(out), fit_check=False, compiled=c)
                run = run_emulated(gen)
                rows.append({"target": target, "model": model, "kernels": load_target(target).kernels,
                             "plan_units": sorted({u.kind for u in gen.schedule.plan.units}),
                             "stack_used": run.stack_used, "stack_reserved": run.stack_reserved})
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| target | kernels | model | stack used | reserved | share |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        chained = " (chained plan)" if "chain" in r["plan_units"] else ""
        print(f"| {r['target']} | {r['kernels']} | alpha {r['model'].replace('@', ' @ ')}{chained} | "
              f"{r['stack_used']:,} B | {r['stack_reserved']:,} B | {100 * r['stack_used'] / r['stack_reserved']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
