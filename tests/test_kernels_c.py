"""The portable C kernels against the Python definitions: firmware/mnv2_requant.h against codegen/requant.py, and
every rendered kernel (templates/kernels/) against the numpy int8 interpreter codegen/reference.py, op by op.

Two builds run the same kernel cases: the kernels as a shared library called through ctypes, and a standalone C
driver built with AddressSanitizer + UndefinedBehaviorSanitizer that reads one call (parameters and arrays, each in
its own exactly sized heap block, so any out-of-bounds read or write is caught) from a binary file.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import jinja2
import numpy as np
import pytest

from codegen import reference, requant
from codegen.graph import QParams, frozen_array

from quant_fixtures import GraphBuilder, random_quant_graph

ROOT = Path(__file__).resolve().parents[1]
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

STRICT = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-Wconversion", "-Wshadow", "-Wsign-conversion",
          "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wundef", "-Wcast-qual"]
SANITIZE = ["-std=c99", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
            "-g", "-O1"]
SAN_ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def gcc(args: list, cwd: Path) -> None:
    r = subprocess.run(["gcc", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"gcc {' '.join(map(str, args))}\n{r.stdout}{r.stderr}"


def render_kernels(dst: Path) -> None:
    """Render the kernel templates exactly as the generator does, next to a copy of the requant header."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROOT / "templates")), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    provenance = "/*\n * test build of the portable kernels\n */"
    (dst / "mnv2_kernels.h").write_text(env.get_template("kernels/mnv2_kernels.h.j2").render(provenance=provenance))
    (dst / "mnv2_kernels.c").write_text(env.get_template("kernels/portable.c.j2").render(provenance=provenance))
    shutil.copy(ROOT / "firmware" / "mnv2_requant.h", dst / "mnv2_requant.h")


@pytest.fixture(scope="module")
def csrc(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kernels")
    render_kernels(d)
    return d


# ------------------------------------------------------------------------------------------------ requant twin
REQUANT_DRIVER = r"""
#include <stdio.h>
#include <stdint.h>
#include "mnv2_requant.h"

int main(void)
{
    int op;
    long long a, b, c, r;
    while (scanf("%d %lld %lld %lld", &op, &a, &b, &c) == 4) {
        switch (op) {
        case 0: r = mnv2_srdhm((int32_t)a, (int32_t)b); break;
        case 1: r = mnv2_rdbp((int32_t)a, (int)b); break;
        case 2: r = mnv2_mbqm((int32_t)a, (int32_t)b, (int)c); break;
        case 3: r = mnv2_mbqm_lt1((int32_t)a, (int32_t)b, (int)c); break;
        case 4: r = mnv2_clamp((int32_t)a, (int32_t)b, (int32_t)c); break;
        default: return 2;
        }
        printf("%lld\n", r);
    }
    return 0;
}
"""

EDGES = [INT32_MIN, INT32_MIN + 1, INT32_MIN + 2, -(1 << 30) - 1, -(1 << 30), -(1 << 30) + 1, -65536, -12345, -3, -2,
         -1, 0, 1, 2, 3, 12345, 65536, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, INT32_MAX - 1, INT32_MAX]


def requant_cases(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cases [n, 4] = op, a, b, c) and the expected results from codegen.requant."""
    rows = []
    rand = lambda n: rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)  # noqa: E731
    # srdhm: every pair of edges, random pairs, random against edges
    e = np.array(EDGES, np.int64)
    a, b = np.meshgrid(e, e)
    rows.append(np.stack([np.zeros(a.size, np.int64), a.ravel(), b.ravel(), np.zeros(a.size, np.int64)], 1))
    n = 3000
    rows.append(np.stack([np.zeros(n, np.int64), rand(n), np.concatenate([rand(n - 500), rng.choice(e, 500)]),
                          np.zeros(n, np.int64)], 1))
    # rdbp: edges x every exponent 0..31, random values and exponents
    x, ex = np.meshgrid(e, np.arange(32))
    rows.append(np.stack([np.ones(x.size, np.int64), x.ravel(), ex.ravel(), np.zeros(x.size, np.int64)], 1))
    rows.append(np.stack([np.ones(n, np.int64), rand(n), rng.integers(0, 32, n), np.zeros(n, np.int64)], 1))
    # mbqm / mbqm_lt1: edges x multipliers x every shift, then random
    mults = np.array([0, 1 << 30, (1 << 30) + 1, INT32_MAX, *rng.integers(1 << 30, 1 << 31, 4)], np.int64)
    for op, shifts in ((2, np.arange(-31, 31)), (3, np.arange(-31, 1))):
        xx, mm, ss = (v.ravel() for v in np.meshgrid(e, mults, shifts))
        rows.append(np.stack([np.full(xx.size, op), xx, mm, ss], 1))
        small = rng.integers(-(1 << 20), 1 << 20, n // 2)  # accumulator-sized values, so positive shifts do not wrap
        xs = np.concatenate([rand(n - n // 2), small])
        rows.append(np.stack([np.full(n, op), xs, rng.integers(1 << 30, 1 << 31, n), rng.choice(shifts, n)], 1))
    # clamp
    lo = rng.integers(-200, 50, n)
    rows.append(np.stack([np.full(n, 4), rand(n) >> rng.integers(0, 32, n), lo, lo + rng.integers(0, 200, n)], 1))
    cases = np.concatenate(rows).astype(np.int64)

    op, a, b, c = cases.T
    expected = np.empty(len(cases), np.int64)
    for k, fn in enumerate((lambda: requant.saturating_rounding_doubling_high_mul(a[s], b[s]),
                            lambda: requant.rounding_divide_by_pot(a[s], b[s]),
                            lambda: requant.multiply_by_quantized_multiplier(a[s], b[s], c[s]),
                            lambda: requant.multiply_by_quantized_multiplier_smaller_than_one(a[s], b[s], c[s]),
                            lambda: np.clip(a[s], b[s], c[s]))):
        s = op == k
        expected[s] = fn()
    assert ((expected >= INT32_MIN) & (expected <= INT32_MAX)).all()
    return cases, expected


@pytest.fixture(scope="module")
def requant_data():
    return requant_cases(np.random.default_rng(20240531))


@pytest.mark.parametrize("sanitize", [False, True], ids=["O2-strict", "asan-ubsan"])
def test_requant_header_is_bit_exact_twin(csrc, tmp_path, requant_data, sanitize):
    (tmp_path / "driver.c").write_text(REQUANT_DRIVER)
    flags = SANITIZE if sanitize else ["-O2", *STRICT]
    gcc([*flags, f"-I{csrc}", "driver.c", "-o", "driver"], tmp_path)
    cases, expected = requant_data
    stdin = "\n".join(" ".join(map(str, row)) for row in cases.tolist()) + "\n"
    r = subprocess.run([str(tmp_path / "driver")], input=stdin, capture_output=True, text=True, env=SAN_ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    got = np.array(r.stdout.split(), np.int64)
    assert got.shape == expected.shape
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, [(cases[i].tolist(), int(got[i]), int(expected[i])) for i in bad[:10]]


# ------------------------------------------------------------------------------------------------ kernel runners
KINDS = {"conv": 0, "depthwise": 1, "add": 2, "avgpool": 3, "dense": 4}
FIELDS = {
    "conv": ["in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "kernel", "stride", "pad_top", "pad_left",
             "in_zp", "out_zp", "act_min", "act_max", "fast"],
    "depthwise": ["in_h", "in_w", "channels", "out_h", "out_w", "kernel", "stride", "pad_top", "pad_left",
                  "in_zp", "out_zp", "act_min", "act_max", "fast"],
    "add": ["size", "in1_zp", "in2_zp", "left_shift", "in1_mult", "in1_shift", "in2_mult", "in2_shift",
            "out_mult", "out_shift", "out_zp", "act_min", "act_max"],
    "avgpool": ["h", "w", "channels", "act_min", "act_max"],
    "dense": ["in_n", "out_n", "in_zp", "mult", "shift", "out_zp", "act_min", "act_max"],
}
STRUCTS = {kind: type(f"{kind}_params", (ctypes.Structure,), {"_fields_": [(f, ctypes.c_int32) for f in fields]})
           for kind, fields in FIELDS.items()}
FUNCS = {"conv": "mnv2_conv_s8", "depthwise": "mnv2_depthwise_s8", "add": "mnv2_add_s8",
         "avgpool": "mnv2_avgpool_s8", "dense": "mnv2_fc_s8"}

KERNEL_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "mnv2_kernels.h"

static FILE *f;

static int32_t read_i32(void)
{
    int32_t v;
    if (fread(&v, sizeof v, 1, f) != 1) exit(3);
    return v;
}

/* length -1: NULL; otherwise a heap block of exactly that many bytes */
static void *read_array(void)
{
    int32_t n = read_i32();
    void *p;
    if (n < 0) return NULL;
    p = malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) exit(4);
    return p;
}

#define LOAD(s) do { if ((size_t)np * 4 != sizeof(s)) return 5; memcpy(&(s), params, sizeof(s)); } while (0)

int main(int argc, char **argv)
{
    int32_t kind, np, na, out_len, i, params[32];
    void *a[8];
    int8_t *out;
    if (argc != 2 || !(f = fopen(argv[1], "rb"))) return 2;
    kind = read_i32(); np = read_i32(); na = read_i32(); out_len = read_i32();
    if (np > 32 || na > 8) return 6;
    for (i = 0; i < np; ++i) params[i] = read_i32();
    for (i = 0; i < na; ++i) a[i] = read_array();
    fclose(f);
    out = malloc((size_t)out_len);
    switch (kind) {
    case 0: { mnv2_conv_params_t s; LOAD(s); mnv2_conv_s8(&s, a[0], out, a[1], a[2], a[3], a[4]); break; }
    case 1: { mnv2_dw_params_t s; LOAD(s); mnv2_depthwise_s8(&s, a[0], out, a[1], a[2], a[3], a[4]); break; }
    case 2: { mnv2_add_params_t s; LOAD(s); mnv2_add_s8(&s, a[0], a[1], out); break; }
    case 3: { mnv2_avgpool_params_t s; LOAD(s); mnv2_avgpool_s8(&s, a[0], out); break; }
    case 4: { mnv2_fc_params_t s; LOAD(s); mnv2_fc_s8(&s, a[0], out, a[1], a[2]); break; }
    default: return 7;
    }
    fwrite(out, 1, (size_t)out_len, stdout);
    for (i = 0; i < na; ++i) free(a[i]);
    free(out);
    return 0;
}
"""


class CtypesRunner:
    """The rendered kernels built -O2 with the strict warning set into a shared library."""

    def __init__(self, csrc: Path, build: Path):
        lib = build / "libmnv2_kernels.so"
        gcc(["-shared", "-fPIC", "-O2", *STRICT, f"-I{csrc}", csrc / "mnv2_kernels.c", "-o", lib], build)
        self.lib = ctypes.CDLL(str(lib))
        for kind, name in FUNCS.items():
            getattr(self.lib, name).restype = None

    def __call__(self, kind: str, params: dict, arrays: list, out_len: int) -> np.ndarray:
        s = STRUCTS[kind](**params)
        out = np.full(out_len, 0x5A, np.int8)
        ptrs = [None if a is None else a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
        args = [ctypes.byref(s), ptrs[0]]
        if kind == "add":
            args += [ptrs[1]]
            rest = []
        else:
            rest = ptrs[1:]
        args += [out.ctypes.data_as(ctypes.c_void_p), *rest]
        getattr(self.lib, FUNCS[kind])(*args)
        return out


class SanitizedRunner:
    """The rendered kernels linked into a standalone driver built with ASan + UBSan (one process per call)."""

    def __init__(self, csrc: Path, build: Path):
        (build / "kdriver.c").write_text(KERNEL_DRIVER)
        self.exe = build / "kdriver"
        self.build = build
        self.n = 0
        gcc([*SANITIZE, "-Wall", "-Wextra", "-Werror", f"-I{csrc}", "kdriver.c",
             csrc / "mnv2_kernels.c", "-o", self.exe], build)

    def __call__(self, kind: str, params: dict, arrays: list, out_len: int) -> np.ndarray:
        values = [int(params[f]) for f in FIELDS[kind]]
        blob = [struct.pack("<4i", KINDS[kind], len(values), len(arrays), out_len),
                np.array(values, "<i4").tobytes()]
        for a in arrays:
            data = b"" if a is None else a.tobytes()
            blob += [struct.pack("<i", -1 if a is None else len(data)), data]
        self.n += 1
        path = self.build / f"call{self.n}.bin"
        path.write_bytes(b"".join(blob))
        r = subprocess.run([str(self.exe), str(path)], capture_output=True, env=SAN_ENV)
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-4000:]
        assert len(r.stdout) == out_len
        return np.frombuffer(r.stdout, np.int8)


@pytest.fixture(scope="module", params=["ctypes", "asan-ubsan"])
def run_kernel(request, csrc, tmp_path_factory):
    build = tmp_path_factory.mktemp(request.param)
    return (CtypesRunner if request.param == "ctypes" else SanitizedRunner)(csrc, build)


# ------------------------------------------------------------------------------------------------ graph -> kernel calls
def i8(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int8).reshape(-1)


def i32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int32).reshape(-1)


def kernel_call(graph, op, tensors: dict, no_bias: bool = False) -> tuple[str, dict, list, int]:
    """The kernel, parameter struct and arrays the generated C would use for one QuantGraph op."""
    qp, shapes = graph.qparams, graph.shapes
    out_len = int(np.prod(shapes[op.output]))
    if op.kind in ("conv", "depthwise"):
        (in_h, in_w, in_c), (out_h, out_w, out_c) = shapes[op.input], shapes[op.output]
        common = dict(in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w, stride=op.stride, pad_top=op.padding[0],
                      pad_left=op.padding[2], in_zp=qp[op.input].zero_point, out_zp=qp[op.output].zero_point,
                      act_min=op.act_min, act_max=op.act_max, fast=0)  # fast: the Arm DSP kernels' flag
        if op.kind == "conv":
            params = dict(common, in_c=in_c, out_c=out_c, kernel=op.weight.shape[1])
        else:
            params = dict(common, channels=in_c, kernel=op.weight.shape[0])
        bias = None if no_bias else i32(op.bias)
        arrays = [i8(tensors[op.input]), i8(op.weight), bias, i32(op.multiplier), i8(op.shift)]
    elif op.kind == "add":
        a, b = op.inputs
        params = dict(size=out_len, in1_zp=qp[a].zero_point, in2_zp=qp[b].zero_point, left_shift=op.left_shift,
                      in1_mult=op.input_multipliers[0], in1_shift=op.input_shifts[0],
                      in2_mult=op.input_multipliers[1], in2_shift=op.input_shifts[1],
                      out_mult=op.output_multiplier, out_shift=op.output_shift, out_zp=qp[op.output].zero_point,
                      act_min=op.act_min, act_max=op.act_max)
        arrays = [i8(tensors[a]), i8(tensors[b])]
    elif op.kind == "avgpool":
        h, w, c = shapes[op.input]
        params = dict(h=h, w=w, channels=c, act_min=op.act_min, act_max=op.act_max)
        arrays = [i8(tensors[op.input])]
    elif op.kind == "dense":
        params = dict(in_n=op.weight.shape[1], out_n=op.weight.shape[0], in_zp=qp[op.input].zero_point,
                      mult=op.multiplier, shift=op.shift, out_zp=qp[op.output].zero_point,
                      act_min=op.act_min, act_max=op.act_max)
        arrays = [i8(tensors[op.input]), i8(op.weight), None if no_bias else i32(op.bias)]
    else:
        raise TypeError(op.kind)
    return op.kind, params, arrays, out_len


def check_graph(run_kernel, graph, images: int, rng: np.random.Generator) -> int:
    """Run the whole graph in the numpy reference, then every op in C on the reference's own input tensors, and
    compare each output exactly. Returns the number of kernel calls checked."""
    x = rng.integers(-128, 128, size=(images, *graph.shapes[graph.input])).astype(np.int8)
    ref = reference.run_int8(graph, x, keep_all=True)
    calls = 0
    for n in range(images):
        tensors = {name: v[n] for name, v in ref.items()}
        for op in graph.ops:
            kind, params, arrays, out_len = kernel_call(graph, op, tensors)
            got = run_kernel(kind, params, arrays, out_len).reshape(graph.shapes[op.output])
            want = tensors[op.output]
            bad = np.argwhere(got != want)
            assert bad.size == 0, (f"{op.name} ({kind}) image {n}: {len(bad)} of {want.size} differ, first at "
                                   f"{bad[0].tolist()}: C {got[tuple(bad[0])]} vs reference {want[tuple(bad[0])]}; "
                                   f"params {params}")
            calls += 1
    return calls


def random_shifts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly shifts that keep outputs in range, some large positive ones where x << shift wraps around."""
    return np.where(rng.random(n) < 0.7, rng.integers(-12, 5, size=n), rng.integers(5, 31, size=n))


def randomize_requant(op, rng: np.random.Generator):
    """Random Q31 multipliers and shifts (positive ones included) and a random activation range, replacing the
    builder's well-scaled ones."""
    lo = int(rng.integers(-128, 60))
    hi = int(rng.integers(lo, 128))
    if op.kind == "dense":
        return dataclasses.replace(op, multiplier=int(rng.integers(1 << 30, 1 << 31)),
                                   shift=int(random_shifts(rng, 1)[0]), act_min=lo, act_max=hi)
    c = len(op.multiplier)
    mult = rng.integers(1 << 30, 1 << 31, size=c)
    mult[rng.random(c) < 0.1] = INT32_MAX
    return dataclasses.replace(op, multiplier=frozen_array(mult, np.int32),
                               shift=frozen_array(random_shifts(rng, c), np.int32), act_min=lo, act_max=hi)


def single_op_graph(rng, size, channels, in_zp, build, random_requant: bool):
    b = GraphBuilder(rng, size, channels)
    b.qparams["input"] = QParams(b.qparams["input"].scale, in_zp)
    build(b)
    g = b.build()
    if random_requant:
        ops = tuple(randomize_requant(op, rng) if op.kind in ("conv", "depthwise", "dense") else op
                    for op in g.ops)
        g = dataclasses.replace(g, ops=ops)
    return g


# ------------------------------------------------------------------------------------------------ kernel tests
def case_id(size, channels, kernel, stride, padding) -> str:
    return f"{size[0]}x{size[1]}x{channels}-k{kernel}s{stride}p{''.join(map(str, padding))}"


CONV_CASES = [
    # (h, w), in_c, out_c, kernel, stride, padding
    ((8, 8), 5, 7, 3, 1, (1, 1, 1, 1)),      # 3x3 s1, even
    ((7, 9), 4, 6, 3, 1, (1, 1, 1, 1)),      # 3x3 s1, odd
    ((8, 8), 3, 8, 3, 2, (1, 1, 1, 1)),      # 3x3 s2, even (PyTorch padding: PAD + VALID in TFLite)
    ((9, 7), 3, 8, 3, 2, (1, 1, 1, 1)),      # 3x3 s2, odd (TFLite SAME)
    ((8, 6), 4, 5, 3, 2, (0, 1, 0, 1)),      # 3x3 s2, TFLite SAME on an even input
    ((6, 5), 6, 4, 3, 1, (0, 0, 0, 0)),      # 3x3 VALID
    ((5, 6), 16, 24, 1, 1, (0, 0, 0, 0)),    # 1x1 s1: the fast path
    ((7, 7), 8, 5, 1, 2, (0, 0, 0, 0)),      # 1x1 s2: general path
    ((6, 7), 3, 4, 5, 2, (2, 2, 2, 2)),      # 5x5, windows reaching two rows into the padding
]


@pytest.mark.parametrize("random_requant", [False, True], ids=["scaled", "random-requant"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: case_id(c[0], c[1], *c[3:]))
def test_conv(run_kernel, case, random_requant):
    rng = np.random.default_rng(zlib.crc32(repr((case, random_requant)).encode()))
    size, in_c, out_c, k, stride, padding = case
    in_zp = int(rng.choice([-128, -5, 0, 17, 127]))
    g = single_op_graph(rng, size, in_c, in_zp,
                        lambda b: b.conv(out_c, kernel=k, stride=stride, padding=padding,
                                         activation=str(rng.choice(["none", "relu", "relu6"]))),
                        random_requant)
    check_graph(run_kernel, g, 2, rng)


DW_CASES = [
    ((8, 8), 6, 3, 1, (1, 1, 1, 1)),
    ((7, 5), 5, 3, 1, (1, 1, 1, 1)),
    ((8, 8), 8, 3, 2, (1, 1, 1, 1)),
    ((9, 9), 4, 3, 2, (1, 1, 1, 1)),
    ((8, 6), 7, 3, 2, (0, 1, 0, 1)),
    ((6, 6), 3, 5, 1, (2, 2, 2, 2)),
]


@pytest.mark.parametrize("random_requant", [False, True], ids=["scaled", "random-requant"])
@pytest.mark.parametrize("case", DW_CASES, ids=lambda c: case_id(*c))
def test_depthwise(run_kernel, case, random_requant):
    rng = np.random.default_rng(zlib.crc32(repr((case, random_requant, "dw")).encode()))
    size, c, k, stride, padding = case
    in_zp = int(rng.choice([-128, -3, 0, 40, 127]))
    g = single_op_graph(rng, size, c, in_zp,
                        lambda b: b.depthwise(k, stride, padding, activation=str(rng.choice(["none", "relu6"]))),
                        random_requant)
    check_graph(run_kernel, g, 2, rng)


@pytest.mark.parametrize("seed", range(4))
def test_add(run_kernel, seed):
    """Residual ADD with different input scales and zero points (TFLite's left_shift 20 scheme)."""
    rng = np.random.default_rng(100 + seed)
    b = GraphBuilder(rng, (5, 6), 3)
    a1 = b.conv(8, activation="none", src="input")
    a2 = b.conv(8, activation="none", src="input")
    b.add(a1, a2)
    b.add(a2, b.cur)
    g = b.build()
    # zero points at the extremes and a narrow activation range on one ADD
    qp = dict(g.qparams)
    qp[a1] = QParams(qp[a1].scale, -128 if seed % 2 else 127)
    ops = list(g.ops)
    ops[-1] = dataclasses.replace(ops[-1], act_min=-20, act_max=90)
    check_graph(run_kernel, dataclasses.replace(g, qparams=qp, ops=tuple(ops)), 2, rng)


@pytest.mark.parametrize("size", [(2, 2), (7, 7), (3, 5), (1, 1)])
def test_avgpool(run_kernel, size):
    """Global average pool; with an even count some sums are exact ties, on both signs."""
    rng = np.random.default_rng(size[0] * 10 + size[1])
    b = GraphBuilder(rng, size, 40)
    b.avgpool()
    g = b.build()
    x = rng.integers(-128, 128, size=(3, *size, 40)).astype(np.int8)
    ref = reference.run_int8(g, x, keep_all=True)
    op = g.ops[0]
    for n in range(3):
        for lo, hi in ((-128, 127), (-30, 50)):
            op_n = dataclasses.replace(op, act_min=lo, act_max=hi)
            total = x[n].astype(np.int64).sum(axis=(0, 1))
            want = np.clip(requant.divide_round_half_away(total, size[0] * size[1]), lo, hi)
            if (lo, hi) == (-128, 127):
                np.testing.assert_array_equal(want, ref[op.output][n])
            got = run_kernel(*kernel_call(g, op_n, {g.input: x[n]}))
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("random_requant", [False, True], ids=["scaled", "random-requant"])
def test_fc(run_kernel, random_requant):
    rng = np.random.default_rng(7 + random_requant)
    g = single_op_graph(rng, (3, 3), 37, -128, lambda b: (b.avgpool(), b.dense(11)), random_requant)
    check_graph(run_kernel, g, 3, rng)


@pytest.mark.parametrize("size", [32, 31])
def test_random_graph_every_op(run_kernel, size):
    """The small MobileNetV2-like graph of the export tests: every op kind and padding case, chained."""
    rng = np.random.default_rng(size)
    g = random_quant_graph(rng, size=size)
    assert check_graph(run_kernel, g, 2, rng) == 2 * len(g.ops)


def test_null_bias(run_kernel):
    """bias may be NULL (conv, depthwise, fully connected): the same as an all-zero bias."""
    rng = np.random.default_rng(5)
    b = GraphBuilder(rng, (6, 6), 4)
    b.conv(6, kernel=3, stride=1, padding=(1, 1, 1, 1))
    b.depthwise(3, 2, (1, 1, 1, 1))
    b.conv(5)
    b.avgpool()
    b.dense(3)
    g = b.build()
    g = dataclasses.replace(g, ops=tuple(dataclasses.replace(op, bias=frozen_array(np.zeros_like(op.bias), np.int32))
                                         if hasattr(op, "bias") else op for op in g.ops))
    x = rng.integers(-128, 128, size=(1, 6, 6, 4)).astype(np.int8)
    ref = reference.run_int8(g, x, keep_all=True)
    tensors = {name: v[0] for name, v in ref.items()}
    for op in g.ops:
        kind, params, arrays, out_len = kernel_call(g, op, tensors, no_bias=hasattr(op, "bias"))
        got = run_kernel(kind, params, arrays, out_len)
        np.testing.assert_array_equal(got, tensors[op.output].reshape(-1), err_msg=op.name)


EXTREME_BIAS = [INT32_MAX, INT32_MAX - 1, INT32_MAX - 200, INT32_MIN, INT32_MIN + 1, INT32_MIN + 200, 1 << 30,
                -(1 << 30), 0, 1, -1, 12345]


@pytest.mark.parametrize("out_zp", [127, -128, 0])
def test_extreme_accumulators(run_kernel, out_zp):
    """Accumulators at the int32 limits (zero weights, extreme biases) with multipliers near 1: requantized values
    near INT32_MAX / INT32_MIN must clamp without overflowing when the zero point is added."""
    rng = np.random.default_rng(out_zp + 1000)
    c = len(EXTREME_BIAS)
    bias = np.array(EXTREME_BIAS, np.int32)
    mult = rng.choice(np.array([INT32_MAX, 1 << 30, INT32_MAX - 1]), size=c).astype(np.int32)
    shift = rng.choice(np.array([0, 1, -1, 2, 30, -31]), size=c).astype(np.int8)
    for lo, hi in ((-128, 127), (-10, 20)):
        want = requant.requantize(bias.astype(np.int64), mult.astype(np.int64), shift.astype(np.int64), out_zp, lo, hi)
        x = rng.integers(-128, 128, size=(3, 3, 4)).astype(np.int8)
        common = dict(in_h=3, in_w=3, out_h=3, out_w=3, stride=1, pad_top=1, pad_left=1, in_zp=-7, out_zp=out_zp,
                      act_min=lo, act_max=hi, fast=0)
        conv3 = dict(common, in_c=4, out_c=c, kernel=3)
        conv1 = dict(conv3, kernel=1, pad_top=0, pad_left=0)  # the 1x1 fast path
        for params, w_shape in ((conv3, (c, 3, 3, 4)), (conv1, (c, 1, 1, 4))):
            got = run_kernel("conv", params, [i8(x), np.zeros(w_shape, np.int8).reshape(-1), bias, mult, shift], 9 * c)
            np.testing.assert_array_equal(got.reshape(9, c), np.broadcast_to(want, (9, c)))
        xd = rng.integers(-128, 128, size=(3, 3, c)).astype(np.int8)
        dw = dict(common, channels=c, kernel=3)
        got = run_kernel("depthwise", dw, [i8(xd), np.zeros(9 * c, np.int8), bias, mult, shift], 9 * c)
        np.testing.assert_array_equal(got.reshape(9, c), np.broadcast_to(want, (9, c)))
        for k in range(c):
            fc = dict(in_n=5, out_n=1, in_zp=3, mult=int(mult[k]), shift=int(shift[k]), out_zp=out_zp,
                      act_min=lo, act_max=hi)
            got = run_kernel("dense", fc, [i8(x.reshape(-1)[:5]), np.zeros(5, np.int8), bias[k:k + 1]], 1)
            assert int(got[0]) == int(want[k]), (k, fc)


def test_rendered_sources(csrc):
    """The provenance block opens each rendered file; the header carries the portable marker and the API."""
    h = (csrc / "mnv2_kernels.h").read_text()
    c = (csrc / "mnv2_kernels.c").read_text()
    for text in (h, c):
        assert text.startswith("/*\n * test build of the portable kernels\n */\n")
    assert "#define MNV2_KERNELS_PORTABLE 1" in h
    assert '#include "mnv2_kernels.h"' in c and '#include "mnv2_requant.h"' in c
    for name in FUNCS.values():
        assert f"void {name}(" in h and f"void {name}(" in c
    for text in (h, c, (csrc / "mnv2_requant.h").read_text()):
        includes = {line.split()[1] for line in text.splitlines() if line.startswith("#include")}
        assert includes <= {"<stdint.h>", "<string.h>", '"mnv2_kernels.h"', '"mnv2_requant.h"'}
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments removed
        assert not re.search(r"\b(float|double|malloc|free|alloca)\b", code)
