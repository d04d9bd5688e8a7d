"""Generated firmware on emulated boards (QEMU) against the numpy int8 reference: 0 mismatching output elements.

One firmware image per (target, model) embeds all test inputs and runs in one QEMU process; the built firmware and
its run are shared by the tests of that pair (module-scoped fixture)."""
import json
import re
import subprocess

import numpy as np
import pytest

from codegen.checkpoint import bundled_checkpoints
from codegen.emulate import run_firmware
from codegen.errors import UserError
from codegen.generate import generate, run_emulated
from codegen.lower import classic_kernels, dw_fixed_channels, dwh_channels
from codegen.pipeline import CalibOptions, compile_front
from codegen.profile import symbols
from codegen.reference import run_int8
from codegen.resources import resource_dir
from codegen.targets import load_target
from codegen.verify import verification_inputs
from test_targets import MCU_TARGETS, toolchain_missing

ALPHAS = (0.35, 0.5, 0.75, 1.0)
CALIB = CalibOptions(samples=32)
INPUTS = 5  # per firmware image: 3 uniformly random int8 inputs + 2 synthetic test images (the requirement: >= 5)

_fronts: dict = {}


def front(alpha, resolution, checkpoint_factory):
    """The compiled front end and the test inputs + reference outputs, once per model (shared by all targets)."""
    key = (alpha, resolution)
    if key not in _fronts:
        bundled = bundled_checkpoints()
        weights = None if alpha in bundled else str(checkpoint_factory(alpha))  # still training: random weights
        c = compile_front(alpha if weights is None else None, weights, resolution, CALIB)
        g = c.quant_graph
        rand, data = verification_inputs(g, 3, seed=11)
        x = np.concatenate([rand, data])[:INPUTS]
        _fronts[key] = (c, x, run_int8(g, x))
    return _fronts[key]


def emulate(target, alpha, resolution, checkpoint_factory, tmp_path_factory):
    if reason := toolchain_missing(target):
        pytest.skip(reason)
    c, x, want = front(alpha, resolution, checkpoint_factory)
    out = tmp_path_factory.mktemp(f"{target}-a{alpha:g}-r{resolution[0]}") / "proj"
    gen = generate(target, None, None, None, CALIB, str(out), fit_check=False, test_inputs=x, compiled=c)
    return gen, run_emulated(gen), want


@pytest.fixture(scope="module", params=[(t, a) for t in MCU_TARGETS for a in ALPHAS],
                ids=lambda p: f"{p[0]}-a{p[1]:g}")
def fw96(request, checkpoint_factory, tmp_path_factory):
    target, alpha = request.param
    return emulate(target, alpha, (96, 96), checkpoint_factory, tmp_path_factory)


def test_bit_exact_96(fw96):
    gen, run, want = fw96
    got = run.outputs
    assert got.shape == want.shape and len(got) >= 5
    assert int((got != want).sum()) == 0
    assert len(np.unique(want)) > 5
    # the chip's linker script reserves the target's stack_bytes: the run must stay inside it
    assert 256 < run.stack_used <= run.stack_reserved == gen.target.stack_bytes, (run.stack_used, run.stack_reserved)


def test_instruction_count_and_fit_96(fw96):
    gen, run, _ = fw96
    macs = gen.schedule.macs
    assert len(run.instructions) == len(gen.test_inputs)
    for n in run.instructions:  # at most 16 int8 MACs per instruction (a Helium VMLADAV), at most a few dozen
        assert macs < 16 * n < 1600 * macs, (n, macs)  # instructions per MAC (the portable kernels)
    meta = json.loads((gen.project / "metadata.json").read_text())
    assert "measured" in meta["fit"]["source"] and meta["options"]["fit_check"] == "off"
    assert meta["fit"]["sram"]["parts"]["arena"] == gen.schedule.plan.arena_bytes
    if gen.target.kernels == "arm_dsp":
        # the projection on the raw pixel pair (mnv2_dsp_pair_run_raw) is linked exactly when a depthwise layer is
        # wider than MNV2_DSP_WIDE_MAX (read from the kernel template): the generator's MNV2_MODEL_MID_MAX gate keeps
        # its code out of the narrower models (alpha 0.35, 0.5) and in those that need it (0.75: 720, 1.0:
        # 960 channels, whose bit-exactness test_bit_exact_96 checks)
        template = (resource_dir("templates") / "kernels" / "arm_dsp.c.j2").read_text()
        wide_max = int(re.search(r"#define MNV2_DSP_WIDE_MAX (\d+)", template).group(1))
        g = gen.schedule.graph
        widest = max(g.shapes[op.input][2] for op in g.ops if op.kind == "depthwise")
        linked = symbols(gen.elf, gen.target)
        assert ("mnv2_dsp_pair_run_raw" in linked) == (widest > wide_max), (widest, wide_max)
        # the builders of weights widened on the stack exactly where a block widens a stage at run time (lower.py's
        # runtime_widening): at alpha 0.35 on the cortex-m7 every such stage has generated ones, on the cortex-m4
        # (no flash for them) some have not
        stack_ww = "mnv2_widen_stream" in linked or "mnv2_dw_stream" in linked
        assert stack_ww == gen.schedule.runtime_widening, stack_ww
        if g.info.alpha == 0.35 and gen.target.name in ("cortex-m7", "cortex-m4"):
            assert gen.schedule.runtime_widening == (gen.target.name == "cortex-m4")
        # the classic stream kernels likewise exactly when a layer's shifts are out of uniform_scale's reach (the
        # generator's MNV2_MODEL_ONE_CLASSIC / _DW_CLASSIC gates; the kernel tests, without them, compile both)
        classic = classic_kernels(g)
        assert ("mnv2_dsp_one_run_c" in linked) == classic["one"], classic
        assert ("mnv2_dsp_dw3_run_w_c" in linked) == classic["dw"], classic
        # the depthwise stream's fixed-width copies exactly for the generator's channel counts (dw_fixed_channels,
        # the layers on the interleaved depthwise left out)
        fixed = sorted(int(m.group(1)) for name in linked if (m := re.fullmatch(r"mnv2_dsp_dw3_run_w(\d+)", name)))
        assert fixed == list(dw_fixed_channels(g, gen.schedule.dwi)) and fixed, fixed
        # and the generic copy exactly where a block's depthwise stream has a channel count with none of its own: at
        # alpha 0.35 on the cortex-m7 none (block 7's 96 channels on the stride-2 int16-row kernel)
        generic = bool(gen.schedule.dw_stream_channels - set(fixed))
        assert ("mnv2_dsp_dw3_run_w" in linked) == generic, sorted(gen.schedule.dw_stream_channels)
        if gen.target.name == "cortex-m7" and g.info.alpha == 0.35:
            assert not generic
        # the interleaved depthwise on 3 x 3 stride-1 blocks of even width, where both their streams fit the flash
        # budget: at alpha 0.35 on the cortex-m7 all ten (48 x 48 to 6 x 6); of stride 2 on widths 4k with int16 rows
        even = {op.name for op in g.ops if op.kind == "depthwise" and op.stride == 1 and g.shapes[op.input][1] % 2 == 0}
        four = {op.name for op in g.ops if op.kind == "depthwise" and op.stride == 2 and g.shapes[op.input][1] % 4 == 0}
        assert gen.schedule.dwi <= even | four and gen.schedule.dwi & four <= gen.schedule.dwh, sorted(gen.schedule.dwi)
        if gen.target.name == "cortex-m7" and g.info.alpha == 0.35:
            assert gen.schedule.dwi & even == even and len(even) == 10, sorted(gen.schedule.dwi)
        # its int16-row kernels exactly for the channel counts of the blocks the plan gave int16 mid rows
        # (dwh_channels): at alpha 0.35 on the cortex-m7 all but block 1's (at the arena's peak)
        dwh = sorted(int(m.group(1)) for name in linked if (m := re.fullmatch(r"mnv2_dsp_dwh_run_(\d+)", name)))
        assert dwh == list(dwh_channels(g, gen.schedule.dwh)) and gen.schedule.dwh <= gen.schedule.dwi, dwh
        dwh2 = sorted(int(m.group(1)) for name in linked if (m := re.fullmatch(r"mnv2_dsp_dwh2_run_(\d+)", name)))
        assert dwh2 == list(dwh_channels(g, gen.schedule.dwh, 2)), dwh2
        # the int8 rows' widening exactly where a block's stage A does not write its int16 rows itself (lower.py's
        # dwh_relayout): at alpha 0.35 on the cortex-m7 every stage A does (block 3 on the one-pixel stream)
        assert ("mnv2_dwh_relayout" in linked) == gen.schedule.dwh_relayout, gen.schedule.dwh_relayout
        assert not gen.schedule.dwh_relayout or dwh
        # the projection's per-channel paths (mnv2_block_proj_pair / _one, mnv2_block_out) exactly where a block may
        # leave the pixel-pair kernels (lower.py's slow_proj, MNV2_DSP_SLOW_PROJ): not at alphas 0.35 and 0.5, at
        # 0.75 and 1.0 (blocks 15-17's 720 / 960 mid channels, past MNV2_DSP_WIDE_MAX), which then run bit-exact;
        # a block reaching them without them would stop the run (a trap: MNV2_EXIT_FAULT)
        assert ("mnv2_block_proj_one" in linked) == gen.schedule.slow_proj == (g.info.alpha > 0.5), g.info.alpha
        if gen.target.name == "cortex-m7" and g.info.alpha == 0.35:
            assert len(gen.schedule.dwh) == 11 and "b1/dw" not in gen.schedule.dwh, sorted(gen.schedule.dwh)
            assert dwh2 == [48, 96], dwh2
            assert not gen.schedule.dwh_relayout


def build_bare(t, source, elf, *defines):
    """A bare-metal test program linked with the target's firmware for its emulated board (4 KiB stack reserved)."""
    fw = resource_dir("firmware")
    mem = [f"-Wl,--defsym=__{k}=0x{v:x}" for k, v in t.emulator.memory] + ["-Wl,--defsym=__stack_size=4096"]
    cmd = [t.cc, *t.cflags, *defines, "-include", "mnv2_mcu.h", f"-I{fw}", f"-I{fw / 'include'}", *t.ldflags,
           "-T", str(fw / t.arch / "board.ld"), f"-L{fw / 'common'}", *mem, "-o", str(elf), str(source),
           *[str(fw / s) for s in t.firmware], "-lgcc"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


FAULTING_PROGRAM = r"""
#include "mnv2_mcu.h"
int main(void)
{
    mnv2_sh_write0("about to fault\n");
    return *(volatile int *)(uintptr_t)0xFFFFFFF0u; /* no memory there on any of the boards */
}
"""


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m33", "esp32-c3"])
def test_fault_handler_exits_with_a_distinct_code(target, tmp_path):
    """The firmware's fault handler (HardFault on Cortex-M, the trap vector on RISC-V) reports the PC and exits with
    its own status, which the runner turns into one line."""
    if reason := toolchain_missing(target):
        pytest.skip(reason)
    t = load_target(target)
    (tmp_path / "fault.c").write_text(FAULTING_PROGRAM)
    build_bare(t, tmp_path / "fault.c", tmp_path / "fault.elf")
    with pytest.raises(UserError, match=r"crashed \(fault .*pc=[0-9a-f]{8}.*\), exit status 3") as e:
        run_firmware(t, tmp_path / "fault.elf", timeout=60)
    assert "\n" not in str(e.value)


STACK_PROGRAM = r"""
#include "mnv2_mcu.h"
static char line[64];
static void put(const char *s) { mnv2_sh_write0(s); }
static char *dec(char *p, uint32_t v)
{
    char d[12];
    int n = 0;
    do { d[n++] = (char)('0' + (int)(v % 10u)); v /= 10u; } while (v != 0u);
    while (n > 0) { *p++ = d[--n]; }
    return p;
}
__attribute__((noinline)) static uint32_t deep(uint32_t n)
{
    volatile uint8_t buf[DEPTH];
    uint32_t i, s = 0;
    for (i = 0; i < n; ++i) { buf[i] = (uint8_t)i; }
    for (i = 0; i < n; ++i) { s += buf[i]; }
    return s;
}
int main(void)
{
    char *p;
    mnv2_stack_paint();
    put("mnv2 begin inputs=0 output_size=1\n");
    (void)deep(DEPTH);
    p = line;
    { const char *s = "mnv2 stack used="; while (*s) *p++ = *s++; }
    p = dec(p, mnv2_stack_used());
    { const char *s = " reserved="; while (*s) *p++ = *s++; }
    p = dec(p, mnv2_stack_reserved());
    *p++ = '\n';
    *p = 0;
    put(line);
    put("mnv2 end\n");
    return 0;
}
"""


@pytest.mark.parametrize("target", ["cortex-m7", "esp32-c3"])
def test_stack_measurement_sees_a_deep_frame(target, tmp_path):
    """The painted-stack measurement (firmware/common/mnv2_stack.c) of a program whose one frame holds DEPTH bytes:
    at least DEPTH measured, over the reservation when DEPTH exceeds it; a shallow one stays far below."""
    if reason := toolchain_missing(target):
        pytest.skip(reason)
    t = load_target(target)
    (tmp_path / "stack.c").write_text(STACK_PROGRAM)
    used = {}
    for depth in (64, 12288):
        elf = tmp_path / f"stack{depth}.elf"
        build_bare(t, tmp_path / "stack.c", elf, f"-DDEPTH={depth}")
        r = run_firmware(t, elf, timeout=60)
        assert r.stack_reserved == 4096
        used[depth] = r.stack_used
    assert used[64] < 1024 and used[12288] >= 12288, used
    assert used[12288] - used[64] < 12288 + 512, used


@pytest.mark.slow
@pytest.mark.parametrize("target", MCU_TARGETS)
def test_bit_exact_alpha1_at_224(target, checkpoint_factory, tmp_path_factory):
    gen, run, want = emulate(target, 1.0, (224, 224), checkpoint_factory, tmp_path_factory)
    assert run.outputs.shape == want.shape and len(want) >= 5
    assert int((run.outputs != want).sum()) == 0
    assert 256 < run.stack_used <= run.stack_reserved == gen.target.stack_bytes, (run.stack_used, run.stack_reserved)
