"""Profiling: executed instructions per kernel call (one per layer/unit) of an MCU firmware on its emulated board.

Method: a QEMU TCG plugin (firmware/qemu/mnv2_profile_plugin.c, built here for the host) counts every executed guest
instruction and records each transition of the program counter between `mnv2_invoke`, the harness's `main` and all
other code. The generated `mnv2_invoke` calls one kernel per unit in the order of `schedule.steps`, so each excursion
from `mnv2_invoke` into a kernel symbol (addresses from the ELF's symbol table) is one unit, callees included.
Exact: the units plus the overhead (mnv2_invoke's own argument setup, the input/output memcpy) add up to the
instructions of the whole `mnv2_invoke` call, which the harness also measures with the board's counter.
Counts are instructions, not cycles (QEMU models no pipeline, caches or wait states).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .emit import KERNELS
from .emulate import default_timeout, run_firmware
from .errors import UserError
from .lower import Schedule
from .resources import resource_dir
from .targets import Target

PLUGIN_SOURCE = "qemu/mnv2_profile_plugin.c"
PLUGIN_SLOWDOWN = 3.0  # time limit factor over a plain run (measured ~1.5x)
REGION_OTHER, REGION_INVOKE, REGION_MAIN = 0, 1, 2


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int


def tool_for(target: Target, tool: str) -> str:
    """The toolchain's binutils program: arm-none-eabi-size -> arm-none-eabi-nm."""
    if not target.size or not target.size.endswith("size"):
        raise UserError(f"target {target.name} names no binutils `size` tool to derive `{tool}` from")
    return target.size[: -len("size")] + tool


def symbols(elf: Path, target: Target) -> dict[str, Symbol]:
    """Function symbols of the ELF with their sizes (Thumb bit cleared)."""
    nm = tool_for(target, "nm")
    if shutil.which(nm) is None:
        raise UserError(f"profiling needs '{nm}' (the target's binutils; run scripts/setup.sh as root)")
    p = subprocess.run([nm, "-S", "--defined-only", str(elf)], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise UserError(f"{nm} {elf} failed: {(p.stderr or p.stdout).strip()[:200]}")
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            out[parts[3]] = Symbol(parts[3], int(parts[0], 16) & ~1, int(parts[1], 16))
    return out


def build_plugin(directory: Path) -> Path:
    """Compiles the plugin for the host into `directory` (again only when its source changed)."""
    src = resource_dir("firmware") / PLUGIN_SOURCE
    directory.mkdir(parents=True, exist_ok=True)
    lib, copy = directory / "mnv2_profile_plugin.so", directory / "mnv2_profile_plugin.c"
    if lib.is_file() and copy.is_file() and copy.read_bytes() == src.read_bytes():
        return lib
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise UserError("profiling builds a QEMU plugin for the host: no host C compiler (cc/gcc) found")
    copy.write_bytes(src.read_bytes())
    p = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(lib), str(copy)],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise UserError(f"building the QEMU profiling plugin failed: {(p.stderr or p.stdout).strip()[:300]}")
    return lib


def parse_trace(text: str) -> list[tuple[int, int, int]]:
    """Plugin records -> [(pc, instructions executed before, region)], plus a final (0, total, -1) when present."""
    records = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            records.append((int(parts[0], 16), int(parts[1]), int(parts[2])))
        elif len(parts) == 2 and parts[0] == "end":
            records.append((0, int(parts[1]), -1))
    return records


def attribute(records: list[tuple[int, int, int]], syms: dict[str, Symbol], schedule: Schedule) -> dict:
    """The first `mnv2_invoke` call in the trace -> instructions per step, the overhead and the total."""
    by_address = {s.address: s.name for s in syms.values()}
    start = next((i for i, r in enumerate(records) if r[2] == REGION_INVOKE), None)
    if start is None:
        raise UserError("profile: the firmware never entered mnv2_invoke")
    end = next((i for i in range(start + 1, len(records)) if records[i][2] in (REGION_MAIN, -1)), None)
    if end is None:
        raise UserError("profile: mnv2_invoke did not return to main within the trace")
    total = records[end][1] - records[start][1]
    calls, own, other = [], 0, {}
    for (pc, before, region), nxt in zip(records[start:end], records[start + 1:end + 1]):
        n = nxt[1] - before
        if region == REGION_INVOKE:
            own += n
        else:
            name = by_address.get(pc, f"0x{pc:x}")
            calls.append((name, n))
    functions = {fn for fn, _ in KERNELS.values()}
    kernel_calls = [(name, n) for name, n in calls if name in functions]
    for name, n in calls:
        if name not in functions:
            other[name] = other.get(name, 0) + n
    steps = schedule.steps
    if len(kernel_calls) != len(steps):
        raise UserError(f"profile: {len(kernel_calls)} kernel calls in the trace, but the schedule has "
                        f"{len(steps)} steps")
    layers = []
    for s, (name, n) in zip(steps, kernel_calls):
        if name != KERNELS[s.kernel][0]:
            raise UserError(f"profile: step {s.op} should call {KERNELS[s.kernel][0]}, the trace shows {name}")
        layers.append({"name": s.op, "kernel": s.kernel, "function": name, "macs": s.macs, "instructions": n,
                       "instructions_per_mac": round(n / s.macs, 3) if s.macs else None})
    overhead = {"mnv2_invoke (own code: call setup)": own, **other}
    return {"total_instructions": total, "layers": layers, "layer_sum": sum(n for _, n in kernel_calls),
            "overhead": {"instructions": total - sum(n for _, n in kernel_calls), "parts": overhead}}


def profile(elf: Path, schedule: Schedule, target: Target, work: Path, timeout: float | None = None) -> dict:
    """Runs the firmware once under the plugin; returns per-layer instructions and the totals (the first input)."""
    if not target.is_mcu or target.emulator is None:
        raise UserError(f"profile runs firmware on an emulated board; target {target.name} has none "
                        f"(choose an MCU target: see `mnv2-codegen targets`)")
    syms = symbols(elf, target)
    for need in ("mnv2_invoke", "main"):
        if need not in syms or syms[need].size == 0:
            raise UserError(f"profile: symbol {need} (with its size) not found in {elf}")
    inv, main = syms["mnv2_invoke"], syms["main"]
    lib = build_plugin(work)
    trace = work / "trace.txt"
    trace.unlink(missing_ok=True)
    spec = (f"file={lib},inv=0x{inv.address:x}:0x{inv.address + inv.size:x},"
            f"main=0x{main.address:x}:0x{main.address + main.size:x},out={trace}")
    limit = timeout or PLUGIN_SLOWDOWN * default_timeout(schedule.macs, 1)
    try:
        run = run_firmware(target, elf, limit, extra=("-plugin", spec))
    except UserError as e:
        raise UserError(f"profile run failed: {e}") from None
    if not trace.is_file():
        raise UserError(f"profile: the QEMU plugin wrote no trace ({trace}); does {target.emulator.command} "
                        f"support -plugin?")
    result = attribute(parse_trace(trace.read_text()), syms, schedule)
    macs = schedule.macs
    result.update(macs=macs, instructions_per_mac=round(result["total_instructions"] / macs, 3),
                  harness_instructions=run.instructions[0] if run.instructions else None,
                  emulator=f"{target.emulator.command} -M {target.emulator.machine}", core=target.core,
                  outputs=run.outputs)
    return result
