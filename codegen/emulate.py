"""Running MCU firmware on its emulated board (QEMU, always under a time limit): outputs and instruction counts."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .targets import Target

# Exit statuses of the firmware (firmware/mnv2_mcu.h).
EXIT_FAULT = 3
EXIT_GUARD = 4
# Time limit: a floor, plus the slowest emulation seen (about 50M instructions/s, -icount, a busy machine) for an
# assumed 30 instructions per multiply-accumulate of the portable kernels.
TIMEOUT_FLOOR_S = 60.0
INSTRUCTIONS_PER_MAC = 30
SLOWEST_INSTRUCTIONS_PER_S = 50e6

_OUTPUT = re.compile(r"^mnv2 output (\d+) ([0-9a-f]*)$")
_COUNT = re.compile(r"^mnv2 count (\d+) ticks=(\d+) instructions=(\d+)$")
_BEGIN = re.compile(r"^mnv2 begin inputs=(\d+) output_size=(\d+)$")
_STACK = re.compile(r"^mnv2 stack used=(\d+) reserved=(\d+)$")


@dataclass(frozen=True)
class EmulatorRun:
    outputs: np.ndarray  # int8 (N, K)
    instructions: tuple[int, ...]  # per inference
    ticks: tuple[int, ...]
    seconds: float
    log: str
    stack_used: int  # bytes: the deepest stack of the run (painted stack, firmware/common/mnv2_stack.c)
    stack_reserved: int  # bytes the linker reserves for the stack (the target's stack_bytes)


def command(target: Target, elf: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The QEMU command line; `extra` options (e.g. a `-plugin`) go before `-kernel`."""
    emu = target.emulator
    return [emu.command, "-M", emu.machine, "-nographic", "-monitor", "none", "-icount",
            f"shift={emu.icount_shift}", *emu.args, *extra, "-kernel", str(elf)]


def default_timeout(macs: int, inputs: int) -> float:
    return TIMEOUT_FLOOR_S + macs * INSTRUCTIONS_PER_MAC * inputs / SLOWEST_INSTRUCTIONS_PER_S


def run_firmware(target: Target, elf: Path, timeout: float, extra: tuple[str, ...] = ()) -> EmulatorRun:
    """Runs `elf` on the target's board; a fault, a guard-byte failure, a timeout or unparsable output is a
    one-line UserError."""
    if target.emulator is None:
        raise UserError(f"target {target.name} has no emulator")
    if shutil.which(target.emulator.command) is None:
        raise UserError(f"cannot run target {target.name}: emulator '{target.emulator.command}' not found "
                        f"(run scripts/setup.sh as root, or apt-get install qemu-system-arm qemu-system-misc)")
    cmd = command(target, elf, extra)
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UserError(f"{target.emulator.machine}: {Path(elf).name} did not finish within {timeout:.0f} s "
                        f"(hung firmware?); command: {' '.join(cmd)}") from None
    seconds = time.monotonic() - start
    log = (p.stderr or "") + (p.stdout or "")  # semihosting output arrives on QEMU's stderr
    lines = [ln.strip() for ln in log.splitlines()]
    where = f"{target.emulator.machine}: {Path(elf).name}"
    if p.returncode == EXIT_FAULT:
        fault = next((ln for ln in lines if ln.startswith("mnv2 fault")), "no fault report")
        raise UserError(f"{where} crashed ({fault[len('mnv2 '):]}), exit status {EXIT_FAULT}")
    if p.returncode == EXIT_GUARD:
        raise UserError(f"{where}: arena guard bytes overwritten (exit status {EXIT_GUARD})")
    if p.returncode != 0:
        tail = next((ln for ln in reversed(lines) if ln), "no output")
        raise UserError(f"{where} failed with exit status {p.returncode}: {tail[:200]}")
    begin = next((m for m in map(_BEGIN.match, lines) if m), None)
    if begin is None or "mnv2 end" not in lines:
        raise UserError(f"{where} exited without its complete report (begin/end lines missing)")
    n, k = int(begin.group(1)), int(begin.group(2))
    outputs = np.zeros((n, k), dtype=np.int8)
    ticks, insns, seen = [0] * n, [0] * n, set()
    for ln in lines:
        if m := _OUTPUT.match(ln):
            i, data = int(m.group(1)), bytes.fromhex(m.group(2))
            if i >= n or len(data) != k:
                raise UserError(f"{where}: malformed output line for input {i}")
            outputs[i] = np.frombuffer(data, dtype=np.int8)
            seen.add(i)
        elif m := _COUNT.match(ln):
            i = int(m.group(1))
            ticks[i], insns[i] = int(m.group(2)), int(m.group(3))
    if seen != set(range(n)):
        raise UserError(f"{where}: outputs for {n - len(seen)} of {n} inputs missing")
    stack = next((m for m in map(_STACK.match, lines) if m), None)
    if stack is None:
        raise UserError(f"{where} exited without its stack report")
    return EmulatorRun(outputs, tuple(insns), tuple(ticks), seconds, log, int(stack.group(1)), int(stack.group(2)))
