"""Host benchmark: x86 instructions of one inference of our host build against TFLM's reference kernels
(tflite-micro) on the same exported model and the same input, both counted by callgrind in one run.

Run: .venv/bin/python benchmarks/host_vs_tflm.py [--alpha 0.35] [--resolution 96]
Ours: `mnv2_host` (the generated project's host simulator, portable kernels, -O2), callgrind restricted to
`mnv2_invoke`. TFLM: the tflite-micro Python package's interpreter, restricted to its `InterpreterWrapper::Invoke`
(the kernels and the interpreter's own dispatch; Python excluded). Outputs are compared byte for byte.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codegen.export import export_tflite  # noqa: E402
from codegen.generate import SAMPLE_IMAGE, generate, load_image  # noqa: E402
from codegen.oracles import tflm_arena_estimate  # noqa: E402
from codegen.pipeline import CalibOptions  # noqa: E402
from codegen.verify import quantize_images  # noqa: E402

TFLM_SCRIPT = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[3]))
x = np.fromfile(sys.argv[2], dtype=np.int8)
it.set_input(x.reshape(it.get_input_details(0)["shape"]), 0)
it.invoke()
np.asarray(it.get_output(0)).astype(np.int8).tofile(sys.argv[4])
"""


def callgrind(cmd: list[str], toggle: str, out: Path) -> int:
    p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--toggle-collect={toggle}",
                        *cmd], capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode != 0 or not m or int(m.group(1)) == 0:
        raise SystemExit(f"callgrind run failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.35)
    ap.add_argument("--resolution", type=int, default=96)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen = generate("host", args.alpha, None, (args.resolution, args.resolution), CalibOptions(), str(tmp / "proj"))
        g = gen.compiled.quant_graph
        model = export_tflite(g)
        (tmp / "m.tflite").write_bytes(model)
        quantize_images(g, load_image(SAMPLE_IMAGE, g.info.resolution))[0].tofile(tmp / "x.raw")
        (tmp / "tflm.py").write_text(TFLM_SCRIPT)
        ours = callgrind([str(gen.variant / "mnv2_host"), str(tmp / "x.raw"), str(tmp / "ours.raw")], "mnv2_invoke",
                         tmp / "ours.cg")
        theirs = callgrind([sys.executable, str(tmp / "tflm.py"), str(tmp / "m.tflite"), str(tmp / "x.raw"),
                            str(tflm_arena_estimate(model)), str(tmp / "tflm.raw")], "*InterpreterWrapper*Invoke*",
                           tmp / "tflm.cg")
        same = (tmp / "ours.raw").read_bytes() == (tmp / "tflm.raw").read_bytes()
        macs = gen.schedule.macs
        print(f"alpha {args.alpha:g} @ {args.resolution}x{args.resolution}, {macs:,} MACs, x86 instructions per "
              f"inference (callgrind):")
        print(f"  ours (host build, mnv2_invoke)          {ours:>14,}  ({ours / macs:.2f} per MAC)")
        print(f"  TFLM reference kernels (Invoke)         {theirs:>14,}  ({theirs / macs:.2f} per MAC)")
        print(f"  ratio TFLM / ours                       {theirs / ours:>14.2f}x")
        print(f"  outputs identical: {'yes' if same else 'NO'}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
