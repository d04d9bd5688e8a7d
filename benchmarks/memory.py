"""Memory benchmark: planned arena vs layer-by-layer vs TFLM's arena, for the issue's three reference models.

Run: .venv/bin/python benchmarks/memory.py [--json]
All figures are computed in this one run: our plan (codegen.memory), the layer-by-layer greedy plan of the same
graph, and TFLM's arena for the exported .tflite of the same model (tflite-micro's allocation report, "head" =
activations). Sizes count the int8 input image, activations and scratch. "Arm DSP plan": the plan of the targets
whose kernels take the interleaved depthwise (codegen.lower's PADDED_KERNELS: mid rows of its blocks two pixels
longer), what their firmware's arena is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codegen.pipeline import CalibOptions, compile_front  # noqa: E402
from codegen.memory import plan  # noqa: E402
from codegen.report import build_report, tflm_arena  # noqa: E402

MODELS = ((0.35, 96, 40), (0.35, 144, 80), (1.0, 224, 165))  # alpha, resolution, goal (KiB)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for alpha, res, goal in MODELS:
        g = compile_front(alpha, None, (res, res), CalibOptions(samples=8)).quant_graph
        r = build_report(g, tflm=tflm_arena(g))
        rows.append({"alpha": alpha, "resolution": res, "goal_kib": goal, "peak_bytes": r["peak_bytes"],
                     "layerwise_peak_bytes": r["layerwise_peak_bytes"], "paper_bound_bytes": r["paper_bound_bytes"],
                     "tflm_arena_bytes": r["tflm_arena_bytes"], "ratio_layerwise": r["ratio_layerwise"],
                     "ratio_tflm": r["ratio_tflm"], "meets_goal": r["peak_bytes"] <= goal * 1024,
                     "arm_dsp_peak_bytes": plan(g, padded_rows=True).arena_bytes})
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| model | planned peak | goal | layer by layer | paper 5.1 bound | TFLM arena | vs layer by layer | vs TFLM "
          "| Arm DSP plan |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kib = lambda n: f"{n / 1024:.1f} KiB"  # noqa: E731
        print(f"| alpha {r['alpha']:g} @ {r['resolution']}x{r['resolution']} | {kib(r['peak_bytes'])} | "
              f"<= {r['goal_kib']} KiB {'met' if r['meets_goal'] else 'NOT met'} | {kib(r['layerwise_peak_bytes'])} | "
              f"{kib(r['paper_bound_bytes'])} | {kib(r['tflm_arena_bytes'])} | {r['ratio_layerwise']:.2f}x | "
              f"{r['ratio_tflm']:.2f}x | {r['arm_dsp_peak_bytes']:,} B |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
