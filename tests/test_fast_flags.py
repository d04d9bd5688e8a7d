"""codegen/lower.py's short-path flags (rq_fast_ok, conv_fast, dw_fast, block_fast: the params' `fast`, which the Arm
DSP kernels trust instead of checking the constants at every call) against the C conditions the kernels checked at
run time before (tests/fast_flags_ref.h, the kernel test's oracle), on random layers drawn around every boundary of
those conditions; and the MNV2_FAST_* bits against lower.py's."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from codegen import lower
from test_kernels_arm import ROOT, render

RNG_SEED = 20261124
CASES = 600
I32_MIN, I32_MAX = -2 ** 31, 2 ** 31 - 1


def _consts(rng, n: int, terms: int) -> tuple:
    """(bias or None, mult, shift) of n channels, mostly inside the short requantization's conditions, with one
    channel (any of them, the last n % 4 too) often pushed to or past a boundary."""
    mult = rng.integers(0, 2 ** 31, n)
    shift = rng.integers(-22, 0, n)
    bias = None if rng.integers(8) == 0 else rng.integers(-40000, 40001, n)
    j, kind = rng.integers(n), rng.integers(10)
    room = (1 << 30) - 2 - terms * lower.ACC_TERM_MAX
    if kind == 1:
        mult[j] = rng.choice([-1, I32_MIN, 0, I32_MAX])
    elif kind == 2:
        shift[j] = rng.choice([-23, -22, -1, 0, 1, -31, 30])
    elif kind in (3, 4, 5) and bias is not None:
        bias[j] = np.clip(rng.choice([room, room + 1, room - 1, -room - 1, -room - 2, -room]), I32_MIN, I32_MAX)
    return bias, mult, shift


def _pick(rng, good, bad, p_bad: float = 0.15):
    return int(rng.choice(bad)) if rng.random() < p_bad else int(good)


def _block_case(rng, big: int = 0) -> tuple[dict, tuple, bool]:
    a_kernel = int(rng.choice([0, 1, 3]))
    in_c = int(rng.choice([int(rng.integers(1, 40)), 3555, 3556, 32000, 32001])) if rng.random() < 0.1 else \
        int(rng.integers(1, 40))
    in_c = 1 if a_kernel == 3 and in_c > 3556 else in_c
    mid_c = big or int(rng.integers(1, 13))
    out_c = int(rng.integers(1, 9))
    p = dict(a_kernel=a_kernel, in_c=in_c, mid_c=mid_c, out_c=out_c, b_kernel=int(rng.choice([3, 3, 1, 5])),
             mid_act_min=_pick(rng, -128, [-127, 0]), mid_act_max=_pick(rng, 127, [126, 0]),
             dw_zp=_pick(rng, -128, [-127, 0, 5]), dw_act_min=_pick(rng, -128, [-127, 0]),
             dw_act_max=_pick(rng, 127, [126]), proj_act_min=_pick(rng, -128, [-127]),
             proj_act_max=_pick(rng, 127, [126]), residual=int(rng.integers(2)),
             add_left_shift=_pick(rng, 20, [19, 21, 22]), add_act_min=_pick(rng, -128, [-127]),
             add_act_max=_pick(rng, 127, [126]))
    for name in ("add_in_shift", "add_proj_shift", "add_out_shift"):
        p[name] = _pick(rng, rng.integers(-22, 1), [1, 0, -1, -22, -23, -31, -32, -33, 200, 240, -200])
    for name in ("add_in_mult", "add_proj_mult", "add_out_mult"):
        p[name] = _pick(rng, rng.integers(1 << 30, 1 << 31), [0, -1, I32_MIN, I32_MAX], 0.1)
    a = _consts(rng, mid_c, a_kernel * a_kernel * in_c) if a_kernel else None
    b = _consts(rng, mid_c, p["b_kernel"] ** 2)
    c = _consts(rng, out_c, mid_c)
    return p, (a, b, c), bool(rng.integers(2))


def _c_array(name: str, ctype: str, values) -> str:
    return f"static const {ctype} {name}[] = {{{', '.join(str(int(v)) for v in values)}}};\n"


def _c_consts(name: str, consts) -> tuple[str, str]:
    """Definitions of a stage's arrays and its mnv2_stage_w_t initializer."""
    if consts is None:
        return "", "{0, 0, 0, 0}"
    bias, mult, shift = consts
    text = _c_array(f"{name}_m", "int32_t", mult) + _c_array(f"{name}_s", "int8_t", shift)
    if bias is not None:
        text += _c_array(f"{name}_b", "int32_t", bias)
    return text, f"{{0, {name + '_b' if bias is not None else '0'}, {name}_m, {name}_s}}"


def _program(blocks: list) -> str:
    """A host program printing ref_block_fast, ref_conv_fast and ref_dw_fast of each case, one line each."""
    defs, body = [], []
    for i, (p, stages, lut) in enumerate(blocks):
        inits = []
        for k, consts in enumerate(stages):
            text, init = _c_consts(f"c{i}_{k}", consts)
            defs.append(text)
            inits.append(init)
        fields = "".join(f"p.{k} = {v}; " for k, v in p.items())
        b_bias, b_mult, b_shift = (f"c{i}_1_b" if stages[1][0] is not None else "0"), f"c{i}_1_m", f"c{i}_1_s"
        c_bias, c_mult, c_shift = (f"c{i}_2_b" if stages[2][0] is not None else "0"), f"c{i}_2_m", f"c{i}_2_s"
        body.append(
            f"    {{\n        mnv2_block_params_t p;\n        mnv2_conv_params_t cp;\n"
            f"        const mnv2_stage_w_t st[3] = {{{', '.join(inits)}}};\n"
            f"        memset(&p, 0, sizeof p);\n        memset(&cp, 0, sizeof cp);\n        {fields}\n"
            f"        memcpy(p.stage, st, sizeof st);\n        p.add_lut = {'lut' if lut else '0'};\n"
            f"        cp.in_c = {p['mid_c']}; cp.out_c = {p['out_c']}; cp.kernel = 1; "
            f"cp.act_min = {p['proj_act_min']}; cp.act_max = {p['proj_act_max']};\n"
            f"        printf(\"%d %d %d\\n\", ref_block_fast(&p), ref_conv_fast(&cp, {c_bias}, {c_mult}, {c_shift}),\n"
            f"               ref_dw_fast({p['mid_c']}, {p['b_kernel']}, {p['dw_zp']}, {p['dw_act_min']}, "
            f"{p['dw_act_max']}, {b_bias}, {b_mult}, {b_shift}));\n    }}\n")
    return ("#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n#include \"mnv2_kernels.h\"\n"
            "#include \"fast_flags_ref.h\"\n\nstatic const int32_t lut[1] = {0};\n\n" + "".join(defs)
            + "\nint main(void)\n{\n" + "".join(body) + "    return 0;\n}\n")


def _python_flags(p: dict, stages: tuple, lut: bool) -> tuple[int, int, int]:
    conv = dict(in_c=p["mid_c"], kernel=1, act_min=p["proj_act_min"], act_max=p["proj_act_max"])
    return (lower.block_fast(p, stages, lut), lower.conv_fast(conv, *stages[2]),
            int(lower.dw_fast(p["mid_c"], p["b_kernel"], p["dw_zp"], p["dw_act_min"], p["dw_act_max"], *stages[1])))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler")
def test_flags_match_the_c_conditions(tmp_path):
    rng = np.random.default_rng(RNG_SEED)
    blocks = [_block_case(rng) for _ in range(CASES)] + [_block_case(rng, big) for big in (32000, 32001)]
    render("portable", tmp_path / "k")
    (tmp_path / "flags.c").write_text(_program(blocks))
    subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path / 'k'}",
                    f"-I{ROOT / 'tests'}", "-o", str(tmp_path / "flags"), str(tmp_path / "flags.c")], check=True,
                   capture_output=True, timeout=300)
    out = subprocess.run([str(tmp_path / "flags")], check=True, capture_output=True, text=True, timeout=60).stdout
    got = [tuple(int(v) for v in line.split()) for line in out.splitlines()]
    expected = [_python_flags(*case) for case in blocks]
    assert len(got) == len(expected)
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not bad, bad[:5]
    # the cases reach both sides of every condition
    flags = np.array(expected)
    for bit in (lower.FAST_A, lower.FAST_DW, lower.FAST_PROJ, lower.FAST_ADD, lower.FAST_ADD_LUT):
        assert 0 < np.count_nonzero(flags[:, 0] & bit) < len(flags), bit
    assert 0 < flags[:, 1].sum() < len(flags) and 0 < flags[:, 2].sum() < len(flags)


def test_fast_bits_match_the_header():
    header = (ROOT / "templates" / "kernels" / "mnv2_kernels.h.j2").read_text()
    bits = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define MNV2_FAST_(\w+) (\d+)", header)}
    assert bits == {"A": lower.FAST_A, "DW": lower.FAST_DW, "PROJ": lower.FAST_PROJ, "ADD": lower.FAST_ADD,
                    "ADD_LUT": lower.FAST_ADD_LUT, "DWI": lower.FAST_DWI, "DWH": lower.FAST_DWH}
