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

    v = sub.add_parser("verify", help="check the int8 reference bit-exact against TFLM and tflite-runtime")
    _model_options(v)
    v.add_argument("--samples", type=positive_int, default=20, help="random inputs and as many dataset images")
    v.add_argument("--accuracy-samples", type=int, default=1000, metavar="N",
                   help="synthetic test images for float vs int8 top-1 (0: skip)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


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
    result.update(verify_oracles(c.quant_graph, np.concatenate([rand, data]), progress=progress))
    if args.accuracy_samples > 0 and tuple(c.info.class_names) == dataset.CLASS_NAMES:
        images, labels = dataset.make_split("test", args.accuracy_samples, c.info.resolution)
        result.update(accuracy(c.model, c.quant_graph, images, labels, progress=progress))
    exact = all(result[k]["mismatches"] == 0 for k in ("reference_vs_tflm", "reference_vs_tflite"))
    result["bit_exact"] = exact
    if args.json:
        print(json.dumps(result))
    else:
        n = 2 * args.samples
        for key, label in (("reference_vs_tflm", "TFLM"), ("reference_vs_tflite", "tflite-runtime REF")):
            r = result[key]
            print(f"reference vs {label:<19} {r['mismatches']} mismatching of {r['elements']} output elements "
                  f"({n} inputs), max |diff| {r['max_abs_diff']}")
        if "float_top1" in result:
            print(f"top-1 on {result['top1_samples']} held-out images: float {result['float_top1']:.2f}%, "
                  f"int8 {result['int8_top1']:.2f}% (drop {result['float_top1'] - result['int8_top1']:.2f} pp)")
        print("bit-exact" if exact else "MISMATCH")
    return 0 if exact else 1


COMMANDS = {"train": cmd_train, "quantize": cmd_quantize, "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    try:
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
