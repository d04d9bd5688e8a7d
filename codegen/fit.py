"""Fit check: does a model's firmware fit the target chip's SRAM and flash (estimated before, measured after the build)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import UserError
from .lower import Schedule
from .targets import Target

# SRAM beside the arena and the stack: the runtime's own .data/.bss (harness line buffer, counters, output).
RUNTIME_SRAM_ALLOWANCE = 1024
# Code before a build has measured it: the portable kernels, model glue, harness and runtime at -O2, measured at
# about 10 KB (code + constant tables) for alpha 0.35 on Cortex-M7; plus the per-layer parameter structs and calls.
CODE_ESTIMATE_BYTES = 10240
CODE_ESTIMATE_PER_STEP = 48
FLASH_SECTIONS = (".text", ".rodata", ".weights", ".inputs", ".data")
SRAM_SECTIONS = (".data", ".bss")


def estimate(schedule: Schedule, target: Target, input_bytes: int) -> dict:
    """The fit from the schedule alone (code size estimated from the number of layers)."""
    code = CODE_ESTIMATE_BYTES + CODE_ESTIMATE_PER_STEP * len(schedule.steps)
    arena = schedule.plan.arena_bytes
    sram = {"arena": arena, "stack": target.stack_bytes, "runtime": RUNTIME_SRAM_ALLOWANCE}
    flash = {"weights": schedule.param_bytes, "code": code, "test_inputs": input_bytes}
    return _verdict(target, sram, flash, "estimated (code size from the layer count, before building)")


def measure(elf: Path, schedule: Schedule, target: Target, input_bytes: int) -> dict | None:
    """The fit from the built ELF's section sizes (`size -A`); None when the size tool is missing."""
    tool = shutil.which(target.size) if target.size else None
    if tool is None:
        return None
    p = subprocess.run([tool, "-A", str(elf)], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise UserError(f"{target.size} -A {elf} failed: {(p.stderr or p.stdout).strip()[:200]}")
    sections = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    arena = schedule.plan.arena_bytes
    bss = sections.get(".bss", 0)
    sram = {"arena": arena, "stack": target.stack_bytes,
            "runtime": sections.get(".data", 0) + max(0, bss - arena)}
    weights = sections.get(".weights", 0)
    flash = {"weights": weights, "constants": sections.get(".rodata", 0), "code": sections.get(".text", 0),
             "test_inputs": sections.get(".inputs", 0), "data_init": sections.get(".data", 0)}
    fit = _verdict(target, sram, flash, f"measured from {Path(elf).name} ({target.size} -A)")
    fit["sections"] = sections
    return fit


def _verdict(target: Target, sram: dict, flash: dict, source: str) -> dict:
    sram_needed, flash_needed = sum(sram.values()), sum(flash.values())
    sram_ok = target.sram_bytes == 0 or sram_needed <= target.sram_bytes
    flash_ok = target.flash_bytes == 0 or flash_needed <= target.flash_bytes
    return {"source": source, "chip": target.chip, "fits": sram_ok and flash_ok,
            "sram": {"needed": sram_needed, "available": target.sram_bytes, "fits": sram_ok, "parts": sram},
            "flash": {"needed": flash_needed, "available": target.flash_bytes, "fits": flash_ok, "parts": flash}}


def _parts(d: dict) -> str:
    return " + ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in d.items() if v)


def message(fit: dict, what: str, target: Target) -> str:
    """One line: what does not fit, what is needed (and of what), what the chip has."""
    problems = []
    for mem in ("sram", "flash"):
        m = fit[mem]
        if not m["fits"]:
            problems.append(f"{mem.upper() if mem == 'sram' else mem} needs {m['needed']:,} bytes "
                            f"({_parts(m['parts'])}) but the chip has {m['available']:,}")
    return (f"{what} does not fit target {target.name} ({target.chip}): {'; '.join(problems)} "
            f"[{fit['source']}]; use a smaller --alpha/--resolution, --sram/--flash for another chip, "
            f"or --no-fit-check")


def summary(fit: dict) -> str:
    s, f = fit["sram"], fit["flash"]
    return (f"SRAM {s['needed']:,} of {s['available']:,} bytes ({100.0 * s['needed'] / max(1, s['available']):.0f}%), "
            f"flash {f['needed']:,} of {f['available']:,} bytes ({100.0 * f['needed'] / max(1, f['available']):.0f}%)")
