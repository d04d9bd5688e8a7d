"""The main job: weights -> int8 -> memory plan -> C project -> build -> one checked inference, and its summary."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import fit as fitcheck
from .build import build
from .emit import check_output_dir, render, update_metadata, write_project
from .emulate import EmulatorRun, default_timeout, run_firmware
from .errors import UserError
from .lower import DWH2_FIXED_MAX, DWH_FIXED_MAX, PADDED_KERNELS, Schedule, dwh_candidates, dwh_channels, lower
from .memory import padded_blocks, plan, replay
from .pipeline import CalibOptions, Compiled, compile_front
from .reference import run_int8
from .run import CModel, run_host_program
from .targets import Target, load_target
from .verify import quantize_images

SAMPLE_IMAGE = Path(__file__).parent / "samples" / "star.png"


@dataclass(frozen=True)
class Generated:
    compiled: Compiled
    schedule: Schedule
    target: Target
    project: Path
    variant: Path
    written: bool  # False: the directory already held these exact files
    test_inputs: np.ndarray | None = None  # MCU: the int8 inputs embedded in the firmware (N, H, W, C)
    fit: dict | None = None  # MCU: codegen.fit's verdict (measured from the ELF where the size tool exists)
    sram_offer: "SramOffer | None" = None  # generated with no speed_sram: what a larger arena would buy

    @property
    def elf(self) -> Path:
        """MCU: the firmware linked for the emulated board."""
        return self.variant / "mnv2_board.elf"


def default_output(target: str, info) -> Path:
    h, w = info.resolution
    res = f"{h}" if h == w else f"{h}x{w}"
    return Path("build") / f"{target}-a{info.alpha:g}-r{res}"


def options_record(target: str, alpha, resolution, weights, calib: CalibOptions, sram=None, flash=None,
                   fit_check: bool = True, inputs: str | None = None, stack=None, speed_flash=None,
                   speed_sram: int = 0) -> dict:
    """What the provenance header and metadata.json record; weights by content hash, not by path."""
    rec = {"target": target}
    if alpha is not None:
        rec["alpha"] = f"{alpha:g}"
    if resolution is not None:
        rec["resolution"] = f"{resolution[0]}x{resolution[1]}"
    if weights:
        rec["weights_sha256"] = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    else:
        rec["weights"] = "bundled"
    rec["calibration"] = calib.method if calib.directory is None else f"{calib.method} on a user directory"
    rec["calib_samples"] = str(calib.samples)
    if sram is not None:
        rec["sram"] = str(sram)
    if flash is not None:
        rec["flash"] = str(flash)
    if stack is not None:
        rec["stack"] = str(stack)
    if speed_flash is not None:
        rec["speed_flash"] = str(speed_flash)
    if speed_sram:
        rec["speed_sram"] = str(speed_sram)
    if not fit_check:
        rec["fit_check"] = "off"
    if inputs is not None:
        rec["test_inputs"] = inputs
    return rec



@dataclass(frozen=True)
class SramOffer:
    """What `--speed-sram extra` would buy over the smallest arena: int16 mid rows for the depthwise ops `blocks`."""
    extra: int  # arena bytes
    blocks: tuple  # depthwise op names


def sram_offer(smallest: tuple, most: tuple) -> SramOffer | None:
    """What the (plan, schedule) with no bound on the arena (`most`) holds as int16 mid rows beyond the smallest
    arena's (`smallest`): None where nothing (targets without the interleaved depthwise among them)."""
    more = tuple(sorted(most[1].dwh - smallest[1].dwh, key=lambda n: (len(n), n)))
    return SramOffer(most[0].arena_bytes - smallest[0].arena_bytes, more) if more else None


def plan_and_lower(graph, strategy: str, target, speed_flash: int | None = None, speed_sram: int | None = 0) -> tuple:
    """(memory plan, schedule) for the target: on targets with the interleaved depthwise (PADDED_KERNELS) the plan
    pads the mid rows of the blocks it may take, then of those that the lowering gave it (their streams within the
    flash budget) alone; of those, the blocks whose mid rows may be int16 (lower.dwh_candidates) with an arena at
    most `speed_sram` bytes larger (0: as it is; None: any) get them (most outputs first). Stride-2 blocks have no int8
    interleaved kernel: lowered onto it only with int16 rows, they are padded only where they get them."""
    return plans_and_lower(graph, strategy, target, speed_flash, (speed_sram,))[0]


def plans_and_lower(graph, strategy: str, target, speed_flash: int | None, speed_srams: tuple) -> list:
    """plan_and_lower for each of `speed_srams`, from one padded plan and schedule."""
    padded = target.kernels in PADDED_KERNELS
    strides = {op.name: getattr(op, "stride", 1) for op in graph.ops}
    # stride-2 blocks take the interleaved depthwise on int16 rows only: padded wide to be lowered onto it
    stride2 = frozenset(u.b for u in padded_blocks(plan(graph, strategy, padded_rows=padded))
                        if strides[u.b] == 2) if padded else frozenset()
    base = plan(graph, strategy, padded_rows=padded, wide_rows=stride2)
    base_schedule = lower(graph, base, target, widen_budget=speed_flash)
    s1, s2 = base_schedule.dwi - stride2, base_schedule.dwh & stride2  # the stride-2 ones lowered onto it
    if {u.b for u in padded_blocks(base)} != s1:
        base = plan(graph, strategy, padded_rows=s1)
        base_schedule = lower(graph, base, target, widen_budget=speed_flash)
    out = []
    for speed_sram in speed_srams:
        mem_plan, schedule = base, base_schedule
        wide = frozenset()  # int16 mid rows (FAST_DWH) where the plan's arena stays within speed_sram
        for b in dwh_candidates(graph, schedule.dwi | s2):
            stride, more = strides[b], wide | {b}
            if (len(dwh_channels(graph, more, stride)) <= (DWH_FIXED_MAX if stride == 1 else DWH2_FIXED_MAX)
                    and (speed_sram is None or plan(graph, strategy, padded_rows=s1 | (more & stride2),
                                                    wide_rows=more).arena_bytes <= base.arena_bytes + speed_sram)):
                wide = more
        while wide:
            mem_plan = plan(graph, strategy, padded_rows=s1 | (wide & stride2), wide_rows=wide)
            schedule = lower(graph, mem_plan, target, widen_budget=speed_flash)
            if schedule.dwh == wide:
                break
            assert schedule.dwh < wide, "int16 mid rows only on the interleaved depthwise"
            wide = schedule.dwh  # a stride-2 block the lowering left (its streams past the flash budget): unpadded
        out.append((mem_plan, schedule))
    return out


def generate(target_name: str, alpha, weights, resolution, calib: CalibOptions, output: str | None,
             force: bool = False, asan: bool = False, progress: bool = False, sram: int | None = None,
             flash: int | None = None, fit_check: bool = True, test_inputs: np.ndarray | None = None,
             compiled: Compiled | None = None, image: Path | None = None,
             strategy: str = "streamed", stack: int | None = None, speed_flash: int | None = None,
             speed_sram: int = 0) -> Generated:
    """Compile, emit and build. MCU targets: the firmware embeds `test_inputs` (int8 (N, H, W, C); default the
    bundled sample image) and is checked against the chip's SRAM and flash (sizes overridable by `sram`/`flash`,
    the stack reservation by `stack`) before and after the build, unless `fit_check` is False. `speed_flash`: the
    flash widened weights may add (codegen.lower; None: its default); `speed_sram`: the arena bytes int16 mid rows may
    add (plan_and_lower). `compiled` reuses an earlier front end."""
    target = load_target(target_name).with_sizes(sram, flash, stack)
    if output:
        check_output_dir(Path(output), force)
    if compiled is None:
        compiled = compile_front(alpha, weights, resolution, calib, progress=progress)
    # MCU targets with the interleaved depthwise: the plan with no bound on the arena too, for what it would buy
    offered = target.is_mcu and not speed_sram and target.kernels in PADDED_KERNELS
    plans = plans_and_lower(compiled.quant_graph, strategy, target, speed_flash, (speed_sram, None)[:1 + offered])
    mem_plan, schedule = plans[0]
    replay(compiled.quant_graph, mem_plan)  # every plan is checked, not trusted
    offer = sram_offer(*plans) if offered else None
    g = compiled.quant_graph
    h, w = g.info.resolution
    what = f"MobileNetV2 alpha {g.info.alpha:g} {h}x{w}"
    labelled, fit, inputs_note = None, None, None
    if target.is_mcu:
        if test_inputs is None:
            src = Path(image) if image else SAMPLE_IMAGE
            test_inputs = quantize_images(g, load_image(src, g.info.resolution))
            labels = [f"image {src.name}"]
            inputs_note = "image " + (src.name if image is None else f"sha256 {hashlib.sha256(src.read_bytes()).hexdigest()[:16]}")
        else:
            test_inputs = np.asarray(test_inputs, dtype=np.int8)
            labels = [f"test input {i}" for i in range(len(test_inputs))]
            inputs_note = f"{len(test_inputs)} given inputs, sha256 {hashlib.sha256(test_inputs.tobytes()).hexdigest()[:16]}"
        labelled = list(zip(labels, test_inputs))
        fit = fitcheck.estimate(schedule, target, test_inputs.nbytes)
        if fit_check and not fit["fits"]:
            raise UserError(fitcheck.message(fit, what, target))
    options = options_record(target_name, alpha, resolution, weights, calib, sram, flash, fit_check, inputs_note,
                             stack, speed_flash, speed_sram)
    files = render(schedule, options, test_inputs=labelled, fit=fit)
    project = Path(output) if output else default_output(target_name, compiled.info)
    written = write_project(files, project, force=force)
    if not target.builds_here:  # ESP-IDF builds it (its toolchain is not here): generated and fit-checked only
        return Generated(compiled, schedule, target, project, project / "build" / target.name, written,
                         test_inputs, fit, offer)
    variant = build(project, target, asan=asan)
    if target.is_mcu:
        measured = fitcheck.measure(variant / "mnv2_board.elf", schedule, target, test_inputs.nbytes)
        fit = measured or fit
        update_metadata(project, fit=fit)
        if fit_check and not fit["fits"]:
            raise UserError(fitcheck.message(fit, what, target))
        if fit_check:
            build(project, target, what=("chip",))  # the image for the real chip's memory map
    return Generated(compiled, schedule, target, project, variant, written, test_inputs, fit, offer)


def run_emulated(gen: Generated, timeout: float | None = None) -> EmulatorRun:
    """The MCU firmware on its emulated board: one QEMU run over all embedded inputs; the stack it used is recorded
    in the project's metadata.json."""
    n = len(gen.test_inputs)
    run = run_firmware(gen.target, gen.elf, timeout or default_timeout(gen.schedule.macs, n))
    update_metadata(gen.project, stack={"used": run.stack_used, "reserved": run.stack_reserved,
                                        "source": f"measured on {gen.target.emulator.machine} (painted stack)"})
    return run


def stack_message(gen: Generated, used: int, reserved: int) -> str:
    """One line: the firmware needs more stack than the chip's linker script reserves."""
    return (f"the firmware used {used:,} bytes of stack on {gen.target.emulator.machine}, more than the {reserved:,} "
            f"that target {gen.target.name} reserves for it (stack_bytes in its target file, or --stack): on the chip "
            f"it would overwrite the arena (--no-fit-check skips this check)")


def load_image(path: Path, resolution: tuple[int, int]) -> np.ndarray:
    """An image file -> uint8 (1, H, W, 3) at the model's resolution (RGB, bilinear resize)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((resolution[1], resolution[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)[None]
    except FileNotFoundError:
        raise UserError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image {path}: cannot be read as an image ({e})") from None


def run_one(gen: Generated, image: Path | None = None) -> dict:
    """One inference of the built program on an image (the bundled sample by default), checked against the
    reference. MCU targets run the inputs embedded at generation time on the emulated board."""
    g = gen.compiled.quant_graph
    if gen.target.is_mcu:
        run = run_emulated(gen)
        x, out = gen.test_inputs, run.outputs
        ref = run_int8(g, x)
        top = int(np.argmax(out[0]))
        return {"image": str(image or SAMPLE_IMAGE.name), "inputs": len(x),
                "top_class": top, "top_name": g.info.class_names[top], "bit_exact": bool(np.array_equal(out, ref)),
                "mismatches": int((out != ref).sum()), "instructions": list(run.instructions),
                "stack": {"used": run.stack_used, "reserved": run.stack_reserved},
                "emulator": gen.target.emulator.machine, "emulator_seconds": round(run.seconds, 2)}
    x = quantize_images(g, load_image(image or SAMPLE_IMAGE, g.info.resolution))
    out, _ = run_host_program(gen.variant, x[0])
    ref = run_int8(g, x)[0]
    top = int(np.argmax(out))
    return {"image": str(image or SAMPLE_IMAGE.name), "top_class": top, "top_name": g.info.class_names[top],
            "bit_exact": bool(np.array_equal(out, ref)), "mismatches": int((out != ref).sum())}


def c_model(gen: Generated) -> CModel:
    g = gen.compiled.quant_graph
    return CModel(gen.variant, g.shapes[g.input], g.shapes[g.output][0])
