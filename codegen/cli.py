"""The `mnv2-codegen` command line: parses options, runs a stage, prints results; user errors on one line."""
from __future__ import annotations

import argparse
import json
import re
import sys

from . import __version__
from .errors import UserError

PROG = "mnv2-codegen"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UserError(f"{message} (see `{self.prog} --help`)")


def parse_resolution(text: str) -> tuple[int, int]:
    """'96' -> (96, 96); '128x96' -> (height 128, width 96)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is not N or HxW")
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) else h


def parse_alpha(text: str) -> float:
    try:
        a = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha {text!r} is not a number") from None
    if not 0.0 < a <= 1.4:
        raise argparse.ArgumentTypeError(f"alpha {a:g} is outside (0, 1.4]")
    return a


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def parse_size(text: str, minimum: int = 1) -> int:
    """'327680', '320K', '320KiB', '1M' -> bytes (K = 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} is not N, NK or NM (bytes, KiB, MiB)")
    v = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if v < minimum:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive")
    return v


def parse_size_or_zero(text: str) -> int:
    return parse_size(text, minimum=0)


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sram", type=parse_size, metavar="BYTES", help="override the target chip's SRAM (e.g. 256K)")
    p.add_argument("--flash", type=parse_size, metavar="BYTES", help="override the target chip's flash (e.g. 2M)")
    p.add_argument("--stack", type=parse_size, metavar="BYTES",
                   help="override the stack the firmware reserves (e.g. 4K; default: the target file's stack_bytes)")
    p.add_argument("--no-fit-check", dest="fit_check", action="store_false",
                   help="generate and run even when the model does not fit the chip's SRAM, flash or stack")
    _speed_options(p)


def _speed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speed-flash", type=parse_size_or_zero, metavar="BYTES",
                   help="flash the Arm DSP kernels may add for weights pre-widened to int16 and residual ADD tables, "
                        "fewer instructions per MAC (default: half of the flash the model leaves free; 0: none)")
    p.add_argument("--speed-sram", type=parse_size_or_zero, default=0, metavar="BYTES",
                   help="arena bytes the Arm DSP kernels may add for int16 depthwise line buffers, fewer "
                        "instructions per MAC (default 0: the smallest arena)")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=parse_alpha, help="width multiplier; selects the bundled checkpoint")
    p.add_argument("--resolution", type=parse_resolution, help="input size N or HxW (default: the checkpoint's)")
    p.add_argument("--weights", metavar="CKPT", help="a checkpoint (ours, or a torchvision-layout state_dict)")
    p.add_argument("--calib", metavar="DIR", help="calibration image directory (default: the synthetic dataset)")
    p.add_argument("--calib-method", choices=("minmax", "percentile"), default="minmax")
    p.add_argument("--calib-samples", type=positive_int, default=200, metavar="N")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Compile a trained MobileNetV2 to int8 and static C code.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    t = sub.add_parser("train", help="train a MobileNetV2 on the synthetic dataset or an ImageFolder directory")
    t.add_argument("--alpha", type=parse_alpha, required=True)
    t.add_argument("--resolution", type=parse_resolution, default=(96, 96))
    t.add_argument("--data", metavar="DIR", help="ImageFolder root (default: the built-in synthetic dataset)")
    t.add_argument("--epochs", type=positive_int, default=8)
    t.add_argument("--batch", type=positive_int, default=64)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--train-size", type=positive_int, default=12000, help="synthetic training images")
    t.add_argument("--test-size", type=positive_int, default=2000, help="synthetic held-out images")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--activation", choices=("relu6", "relu"), default="relu6")
    t.add_argument("--nonlinear-bottleneck", action="store_true", help="activation after the projection too")
    t.add_argument("--no-residual", action="store_true")
    t.add_argument("--expansion", type=positive_int, default=6, help="expansion factor t")
    t.add_argument("--fp32", action="store_true", help="store float32 (default: fp16 storage)")
    t.add_argument("-o", "--output", required=True, metavar="CKPT")

    q = sub.add_parser("quantize", help="quantize to int8 and export a .tflite")
    _model_options(q)
    q.add_argument("-o", "--output", required=True, metavar="FILE.tflite")

    g = sub.add_parser("generate", help="the main job (also without a command): generate, build, run, check")
    _generate_options(g)

    v = sub.add_parser("verify", help="check the int8 reference bit-exact against TFLM and tflite-runtime")
    _model_options(v)
    v.add_argument("--target", help="also compare the generated C built for this target")
    v.add_argument("--asan", action="store_true", help="build with AddressSanitizer + UBSan (host)")
    v.add_argument("-o", "--output", metavar="DIR", help="project directory (default build/<target>-a<alpha>-r<res>)")
    v.add_argument("--force", action="store_true", help="overwrite an output directory not generated by this tool")
    v.add_argument("--samples", type=positive_int, default=20, help="random inputs and as many dataset images")
    v.add_argument("--accuracy-samples", type=int, default=1000, metavar="N",
                   help="synthetic test images for float vs int8 top-1 (0: skip)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    l = sub.add_parser("targets", help="list the targets: core, chip, SRAM, flash, emulated board")
    l.add_argument("--json", action="store_true", help="print one JSON list")
    e = sub.add_parser("eval", help="top-1 of the generated C model on the held-out split, next to the float model")
    _model_options(e)
    e.add_argument("--target", default="host")
    e.add_argument("--samples", type=positive_int, default=1000)
    e.add_argument("-o", "--output", metavar="DIR")
    e.add_argument("--force", action="store_true")
    e.add_argument("--json", action="store_true")
    r = sub.add_parser("report", help="memory report: per-block analysis, planned peak vs layer by layer and TFLM")
    _model_options(r)
    r.add_argument("--target", help="also check the arena against this target's SRAM")
    r.add_argument("--sram", type=parse_size, metavar="BYTES", help="override the target's SRAM (e.g. 256K)")
    _plan_option(r)
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--plot", metavar="FILE", help="draw live memory along the network (PNG, SVG or PDF)")
    r.add_argument("--no-tflm", action="store_true", help="skip measuring TFLM's arena")
    pr = sub.add_parser("profile", help="instructions per layer on the emulated board (QEMU plugin), MACs, "
                                        "instructions per MAC")
    pr.add_argument("--target", required=True, help="an MCU target with an emulator (see `targets`)")
    _model_options(pr)
    pr.add_argument("-o", "--output", metavar="DIR", help="project directory (default build/<target>-a<alpha>-r<res>)")
    pr.add_argument("--force", action="store_true", help="overwrite an output directory not generated by this tool")
    _plan_option(pr)
    _speed_options(pr)
    pr.add_argument("--json", action="store_true", help="print one JSON object")
    f = sub.add_parser("flash", help="flash a generated project onto a board (pyOCD for Cortex-M, ESP-IDF/esptool "
                                     "for ESP32)")
    f.add_argument("--target", required=True, help="the target the project was generated for")
    f.add_argument("directory", metavar="DIR", help="the generated project directory")
    f.add_argument("--port", help="serial port (ESP32) or debug probe unique ID (pyOCD); default: autodetect")
    f.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    return parser


def _generate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="host", help="target name (see targets/); default host")
    _model_options(p)
    p.add_argument("-o", "--output", metavar="DIR", help="project directory (default build/<target>-a<alpha>-r<res>)")
    p.add_argument("--force", action="store_true", help="overwrite an output directory not generated by this tool")
    p.add_argument("--image", metavar="FILE", help="image for the check inference (default: a bundled sample)")
    p.add_argument("--asan", action="store_true", help="build with AddressSanitizer + UBSan and arena guard bytes")
    _plan_option(p)
    _fit_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _plan_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", choices=("streamed", "layerwise"), default="streamed",
                   help="memory plan: streamed blocks with overlapped buffers (default) or layer by layer")


def _calib(args):
    from .pipeline import CalibOptions
    return CalibOptions(directory=args.calib, method=args.calib_method, samples=args.calib_samples)


def cmd_train(args) -> int:
    from .train import TrainConfig, train
    cfg = TrainConfig(alpha=args.alpha, resolution=args.resolution, data=args.data, train_size=args.train_size,
                      test_size=args.test_size, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                      activation=args.activation, linear_bottleneck=not args.nonlinear_bottleneck,
                      residual=not args.no_residual, expansion=args.expansion)
    summary = train(cfg, args.output, half=not args.fp32, command=" ".join([PROG] + sys.argv[1:]))
    print(f"float top-1 {summary['float_top1']:.2f}% on {summary['test_size']} held-out images "
          f"({summary['minutes']} min); wrote {args.output}")
    return 0


def cmd_quantize(args) -> int:
    from .export import write_tflite
    from .pipeline import compile_front
    c = compile_front(args.alpha, args.weights, args.resolution, _calib(args), progress=True)
    write_tflite(c.quant_graph, args.output)
    print(f"wrote {args.output}: alpha {c.info.alpha:g}, {c.info.resolution[0]}x{c.info.resolution[1]}, "
          f"{len(c.info.class_names)} classes, calibration {c.quant_graph.calibration}")
    return 0


def cmd_verify(args) -> int:
    import numpy as np

    from . import dataset
    from .pipeline import compile_front
    from .verify import accuracy, verification_inputs, verify_oracles
    progress = not args.json
    c = compile_front(args.alpha, args.weights, args.resolution, _calib(args), progress=progress)
    rand, data = verification_inputs(c.quant_graph, args.samples)
    result = {"alpha": c.info.alpha, "resolution": list(c.info.resolution), "samples": args.samples,
              "random_samples": args.samples, "calibration": c.quant_graph.calibration}
    inputs = np.concatenate([rand, data])
    result.update(verify_oracles(c.quant_graph, inputs, progress=progress))
    if args.target:
        from .generate import c_model, generate
        from .reference import run_int8
        from .verify import compare
        from .targets import load_target
        if load_target(args.target).is_mcu:  # all inputs in one firmware image, one emulator run
            from .generate import run_emulated
            gen = generate(args.target, args.alpha, args.weights, args.resolution, _calib(args), args.output,
                           args.force, fit_check=False, test_inputs=inputs, compiled=c)
            run = run_emulated(gen)
            got = run.outputs
            result["emulator"] = {"machine": gen.target.emulator.machine, "seconds": round(run.seconds, 2),
                                  "instructions_per_inference": list(run.instructions)}
        else:
            gen = generate(args.target, args.alpha, args.weights, args.resolution, _calib(args), args.output,
                           args.force, args.asan)
            got = c_model(gen).predict(inputs)
        result["c_vs_reference"] = compare(got, run_int8(c.quant_graph, inputs))
        result["target"] = gen.target.name
    if args.accuracy_samples > 0 and tuple(c.info.class_names) == dataset.CLASS_NAMES:
        images, labels = dataset.make_split("test", args.accuracy_samples, c.info.resolution)
        result.update(accuracy(c.model, c.quant_graph, images, labels, progress=progress))
    exact = all(result[k]["mismatches"] == 0 for k in ("reference_vs_tflm", "reference_vs_tflite", "c_vs_reference")
                if k in result)
    result["bit_exact"] = exact
    if args.json:
        print(json.dumps(result))
    else:
        n = 2 * args.samples
        for key, label in (("reference_vs_tflm", "TFLM"), ("reference_vs_tflite", "tflite-runtime REF"),
                           ("c_vs_reference", f"generated C ({args.target})")):
            if key not in result:
                continue
            r = result[key]
            print(f"{'reference vs ' + label if key != 'c_vs_reference' else label + ' vs reference':<34} {r['mismatches']} mismatching of {r['elements']} output elements "
                  f"({n} inputs), max |diff| {r['max_abs_diff']}")
        if "float_top1" in result:
            print(f"top-1 on {result['top1_samples']} held-out images: float {result['float_top1']:.2f}%, "
                  f"int8 {result['int8_top1']:.2f}% (drop {result['float_top1'] - result['int8_top1']:.2f} pp)")
        print("bit-exact" if exact else "MISMATCH")
    return 0 if exact else 1


def cmd_generate(args) -> int:
    from . import fit as fitcheck
    from .generate import generate, run_one, stack_message
    gen = generate(args.target, args.alpha, args.weights, args.resolution, _calib(args), args.output, args.force,
                   args.asan, progress=not args.json, sram=args.sram, flash=args.flash, stack=args.stack,
                   fit_check=args.fit_check, image=args.image, strategy=args.plan, speed_flash=args.speed_flash,
                   speed_sram=args.speed_sram)
    s, g = gen.schedule, gen.compiled.quant_graph
    summary = {"project": str(gen.project), "target": gen.target.name, "alpha": g.info.alpha,
               "resolution": list(g.info.resolution), "parameters": s.weight_count, "macs": s.macs,
               "flash_bytes": s.param_bytes, "arena_bytes": s.plan.arena_bytes}
    if gen.sram_offer:
        summary["speed_sram_offer"] = {"bytes": gen.sram_offer.extra, "blocks": list(gen.sram_offer.blocks)}
    if not gen.target.builds_here:
        return _espidf_summary(args, gen, summary)
    summary.update(run_one(gen, args.image))
    if gen.fit is not None:
        summary["fit"] = {k: v for k, v in gen.fit.items() if k != "sections"}
    stack = summary.get("stack")
    if stack is not None and args.fit_check and stack["used"] > stack["reserved"]:
        raise UserError(stack_message(gen, stack["used"], stack["reserved"]))
    if args.json:
        print(json.dumps(summary))
    else:
        h, w = g.info.resolution
        print(f"{gen.project}: MobileNetV2 alpha {g.info.alpha:g} {h}x{w}, target {gen.target.name} "
              f"({'regenerated' if gen.written else 'unchanged'}, built)")
        print(f"  parameters    {s.weight_count:>12,}")
        print(f"  MACs          {s.macs:>12,}")
        wide = (f"; {s.widened_bytes:,} of them speed copies: widened weights, ADD tables (--speed-flash)"
                if s.widened_bytes else "")
        print(f"  flash (const) {s.param_bytes:>12,} bytes (weights, biases, requantization constants{wide})")
        rows = f"; int16 depthwise rows within --speed-sram {args.speed_sram:,}" if args.speed_sram else ""
        print(f"  arena (SRAM)  {s.plan.arena_bytes:>12,} bytes ({s.plan.strategy} plan: input image, activations and "
              f"scratch{rows})")
        if gen.sram_offer:
            o = gen.sram_offer
            names = ", ".join(b.split("/")[0].lstrip("b") for b in o.blocks)
            room = ("" if gen.fit is None or gen.fit["sram"]["needed"] + o.extra <= gen.fit["sram"]["available"]
                    else "; more than the chip's SRAM")
            blocks = "blocks" if len(o.blocks) > 1 else "block"
            print(f"  speed         --speed-sram {o.extra:,} would hold the depthwise rows of {blocks} {names} as int16 "
                  f"(fewer instructions; arena {s.plan.arena_bytes + o.extra:,} bytes{room})")
        if gen.fit is not None:
            verdict = "fits" if gen.fit["fits"] else "DOES NOT FIT (--no-fit-check)"
            print(f"  chip          {gen.target.chip}: {verdict}; {fitcheck.summary(gen.fit)} "
                  f"[{gen.fit['source']}]")
        where = f" on {summary['emulator']} (emulated)" if "emulator" in summary else ""
        print(f"  inference     {summary['image']}{where}: class {summary['top_class']} ({summary['top_name']}), "
              f"{'bit-exact with the reference' if summary['bit_exact'] else 'MISMATCH against the reference'}")
        if "instructions" in summary:
            print(f"  instructions  {summary['instructions'][0]:>12,} per inference ({gen.target.core}, "
                  f"{gen.target.emulator.machine} -icount; instructions, not cycles)")
        if stack is not None:
            print(f"  stack         {stack['used']:>12,} bytes used of {stack['reserved']:,} reserved (measured on "
                  f"{summary['emulator']}: the deepest point of the run)")
    return 0 if summary.get("bit_exact", True) else 1


def _espidf_summary(args, gen, summary: dict) -> int:
    """A chip only ESP-IDF builds: the project was generated and fit-checked (estimated), not built or run."""
    from . import fit as fitcheck
    t = gen.target
    summary.update(built=False, idf_target=t.idf_target, fit={k: v for k, v in gen.fit.items() if k != "sections"},
                   note=f"ESP-IDF project generated, not built here (no {t.core} toolchain or emulator): "
                        f"cd {gen.project} && idf.py set-target {t.idf_target} && idf.py build")
    if args.json:
        print(json.dumps(summary))
        return 0
    h, w = gen.compiled.info.resolution
    print(f"{gen.project}: MobileNetV2 alpha {gen.compiled.info.alpha:g} {h}x{w}, target {t.name} "
          f"({'regenerated' if gen.written else 'unchanged'}; ESP-IDF project, NOT built here)")
    print(f"  MACs          {summary['macs']:>12,}")
    print(f"  flash (const) {summary['flash_bytes']:>12,} bytes (weights, biases, requantization constants)")
    print(f"  arena (SRAM)  {summary['arena_bytes']:>12,} bytes")
    verdict = "fits" if gen.fit["fits"] else "DOES NOT FIT (--no-fit-check)"
    print(f"  chip          {t.chip}: {verdict}; {fitcheck.summary(gen.fit)} [{gen.fit['source']}]")
    print(f"  ESP-IDF       components/mnv2_model (component), main/ (example app); build it with ESP-IDF: "
          f"cd {gen.project} && idf.py set-target {t.idf_target} && idf.py build")
    print("  verified      the same C: bit-exact on the host and on rv32 under QEMU (target esp32-c3); "
          f"not compiled for {t.core} here")
    return 0


def cmd_targets(args) -> int:
    from .targets import known_targets, load_target
    rows = []
    for name in known_targets():
        t = load_target(name)
        rows.append({"name": t.name, "kind": t.kind, "core": t.core or "native", "chip": t.chip,
                     "sram_bytes": t.sram_bytes, "flash_bytes": t.flash_bytes,
                     "emulator": f"{t.emulator.command} -M {t.emulator.machine}" if t.emulator else "none",
                     "description": t.description})
    if args.json:
        print(json.dumps(rows))
        return 0

    def size(n: int) -> str:
        if n == 0:
            return "-"
        return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n // 1024} KiB" if n % 1024 == 0 \
            else f"{n} B"
    header = ("target", "core", "chip", "SRAM", "flash", "emulator")
    table = [header] + [(r["name"], r["core"], r["chip"], size(r["sram_bytes"]), size(r["flash_bytes"]),
                         r["emulator"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def cmd_eval(args) -> int:
    from . import dataset
    from .generate import c_model, generate
    from .targets import load_target
    from .train import evaluate
    if load_target(args.target).is_mcu:
        raise UserError(f"eval runs the host build on thousands of images; for {args.target} use "
                        f"`{PROG} verify --target {args.target} --samples N` (emulated, bit-exact check)")
    from .verify import quantize_images
    gen = generate(args.target, args.alpha, args.weights, args.resolution, _calib(args), args.output, args.force,
                   progress=not args.json)
    g = gen.compiled.quant_graph
    if tuple(g.info.class_names) != dataset.CLASS_NAMES:
        raise UserError("eval uses the synthetic test split: the model was not trained on the synthetic dataset")
    images, labels = dataset.make_split("test", args.samples, g.info.resolution)
    c_top1 = 100.0 * float((c_model(gen).predict(quantize_images(g, images)).argmax(1) == labels).mean())
    float_top1 = evaluate(gen.compiled.model, images, labels, g.info)
    result = {"samples": args.samples, "target": gen.target.name, "float_top1": round(float_top1, 2),
              "c_int8_top1": round(c_top1, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"top-1 on {args.samples} held-out images: float {float_top1:.2f}%, generated C (int8, "
              f"{gen.target.name}) {c_top1:.2f}% (drop {float_top1 - c_top1:.2f} pp)")
    return 0


def cmd_report(args) -> int:
    from .pipeline import compile_front
    from .report import build_report, format_json, format_text, plot, tflm_arena
    from .targets import load_target
    from .generate import plan_and_lower
    target = load_target(args.target).with_sizes(args.sram, None) if args.target else None
    c = compile_front(args.alpha, args.weights, args.resolution, _calib(args), progress=not args.json)
    report = build_report(c.quant_graph, args.plan, tflm=None if args.no_tflm else tflm_arena(c.quant_graph),
                          sram_bytes=target.sram_bytes if target else 0,
                          memory_plan=plan_and_lower(c.quant_graph, args.plan, target)[0] if target else None)
    if args.plot:
        plot(report, args.plot)
    print(format_json(report) if args.json else format_text(report))
    return 0


def cmd_profile(args) -> int:
    import numpy as np

    from .generate import generate
    from .profile import profile
    from .reference import run_int8
    from .targets import load_target
    target = load_target(args.target)
    if not target.is_mcu or target.emulator is None:
        raise UserError(f"profile runs firmware on an emulated board; target {args.target} has none "
                        f"(an MCU target with an emulator: see `{PROG} targets`)")
    gen = generate(args.target, args.alpha, args.weights, args.resolution, _calib(args), args.output, args.force,
                   progress=not args.json, fit_check=False, strategy=args.plan, speed_flash=args.speed_flash,
                   speed_sram=args.speed_sram)
    g = gen.compiled.quant_graph
    result = profile(gen.elf, gen.schedule, gen.target, gen.variant / "profile")
    outputs = result.pop("outputs")
    result = {"project": str(gen.project), "target": gen.target.name, "alpha": g.info.alpha,
              "resolution": list(g.info.resolution), **result,
              "bit_exact": bool(np.array_equal(outputs[:1], run_int8(g, gen.test_inputs[:1])))}
    if args.json:
        print(json.dumps(result))
        return 0 if result["bit_exact"] else 1
    h, w = g.info.resolution
    print(f"{gen.project}: MobileNetV2 alpha {g.info.alpha:g} {h}x{w} on {result['emulator']} ({result['core']}); "
          f"executed instructions (not cycles), one inference")
    width = max(len(r["name"]) for r in result["layers"])
    print(f"  {'layer':<{width}}  {'kernel':<9} {'MACs':>12} {'instructions':>14} {'instr/MAC':>9} {'share':>6}")
    total = result["total_instructions"]
    for r in result["layers"]:
        ipm = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] is not None else "-"
        print(f"  {r['name']:<{width}}  {r['kernel']:<9} {r['macs']:>12,} {r['instructions']:>14,} {ipm:>9} "
              f"{100.0 * r['instructions'] / total:>5.1f}%")
    oh = result["overhead"]
    print(f"  {'sum of layers':<{width}}  {'':<9} {result['macs']:>12,} {result['layer_sum']:>14,}")
    print(f"  {'overhead':<{width}}  {'':<9} {'':>12} {oh['instructions']:>14,}   ("
          + ", ".join(f"{k} {v:,}" for k, v in oh["parts"].items() if v) + ")")
    print(f"  {'total (mnv2_invoke)':<{width}}  {'':<9} {result['macs']:>12,} {total:>14,} "
          f"{result['instructions_per_mac']:>9.2f}")
    if result["harness_instructions"] is not None:
        print(f"  harness counter: {result['harness_instructions']:,} instructions for the same call "
              f"(board timer under -icount)")
    print("  output " + ("bit-exact with the reference" if result["bit_exact"] else "MISMATCH against the reference"))
    return 0 if result["bit_exact"] else 1


def cmd_flash(args) -> int:
    from .flash import flash
    plan = flash(args.directory, args.target, port=args.port, dry_run=args.dry_run)
    for cmd in plan.commands:
        print(("would run: " if args.dry_run else "ran: ") + " ".join(cmd) + f"   (in {plan.cwd})")
    if not args.dry_run:
        print(f"flashed {plan.image}")
    return 0


COMMANDS = {"train": cmd_train, "quantize": cmd_quantize, "verify": cmd_verify, "generate": cmd_generate,
            "eval": cmd_eval, "targets": cmd_targets, "report": cmd_report,
            "profile": cmd_profile, "flash": cmd_flash}


def main(argv: list[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        first = next((a for a in argv if not a.startswith("-")), None)
        if argv and argv[0] not in ("-h", "--help", "--version") and (first is None or first not in COMMANDS) \
                and argv[0].startswith("-"):
            argv = ["generate"] + argv  # `mnv2-codegen --target host --alpha 0.35` is the main job
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
