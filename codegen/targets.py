"""Targets as data: reads `targets/<name>.toml` (the same files the generated project's SConstruct reads)."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

from .errors import UserError
from .resources import resource_dir


@dataclass(frozen=True)
class Emulator:
    """How to run a target's firmware on an emulated board (QEMU), and how its instruction counter converts."""
    command: str
    machine: str
    args: tuple[str, ...]
    counter: str  # cmsdk-timer | systick | minstret
    counter_hz: int
    icount_shift: int
    memory: tuple[tuple[str, int], ...]  # the board's windows, for board.ld

    @property
    def instructions_per_tick(self) -> Fraction:
        """Under `-icount shift=N` one instruction is 2^N ns of virtual time; a tick of a counter_hz clock is
        1e9/counter_hz ns."""
        return Fraction(10 ** 9, self.counter_hz) / (1 << self.icount_shift)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str  # host | mcu
    cc: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    kernels: str  # kernel variant: portable | ...
    sram_bytes: int  # 0: unlimited
    flash_bytes: int  # 0: unlimited
    chip: str
    path: Path
    core: str = ""
    arch: str = ""  # firmware family under firmware/ (arm, rv32); "" for the host
    size: str = ""  # the binutils `size` of the toolchain
    libs: tuple[str, ...] = ()
    stack_bytes: int = 0
    firmware: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    chip_memory: tuple[tuple[str, int], ...] = ()
    emulator: Emulator | None = None
    idf_target: str = ""  # ESP-IDF's name of the chip ([espidf] table): the project also gets an ESP-IDF component
    overrides: tuple[tuple[str, int], ...] = field(default=())  # (key, value) set by --sram / --flash

    @property
    def is_mcu(self) -> bool:
        return self.kind == "mcu"

    @property
    def builds_here(self) -> bool:
        """False for a chip only ESP-IDF builds (no emulated stand-in here): the project is generated, not built."""
        return not self.is_mcu or self.emulator is not None

    def with_sizes(self, sram: int | None = None, flash: int | None = None, stack: int | None = None) -> "Target":
        """The same target with its SRAM, flash and/or stack size overridden (the --sram / --flash / --stack
        options)."""
        over = dict(self.overrides)
        for key, value in (("sram_bytes", sram), ("flash_bytes", flash), ("stack_bytes", stack)):
            if value is not None:
                over[key] = int(value)
        return replace(self, sram_bytes=over.get("sram_bytes", self.sram_bytes),
                       flash_bytes=over.get("flash_bytes", self.flash_bytes),
                       stack_bytes=over.get("stack_bytes", self.stack_bytes), overrides=tuple(sorted(over.items())))

    def file_text(self) -> str:
        """The target file as the generated project gets it: the original, with overridden sizes rewritten."""
        text = self.path.read_text()
        for key, value in self.overrides:
            text, n = re.subn(rf"(?m)^{key}\s*=\s*[^#\n]*", f"{key} = {value} ", text, count=1)
            if n != 1:
                text += f"\n{key} = {value}\n"
        return text


def targets_dir() -> Path:
    return resource_dir("targets")


def known_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def _emulator(data: dict | None) -> Emulator | None:
    if not data:
        return None
    return Emulator(command=data["command"], machine=data["machine"], args=tuple(data.get("args", ())),
                    counter=data["counter"], counter_hz=int(data["counter_hz"]),
                    icount_shift=int(data.get("icount_shift", 0)),
                    memory=tuple((k, int(v)) for k, v in data.get("memory", {}).items()))


def load_target(name: str) -> Target:
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown target {name!r} (known: {', '.join(known_targets())})")
    try:
        data = tomllib.loads(path.read_text())
        target = Target(name=data["name"], description=data["description"], kind=data["kind"], cc=data["cc"],
                        cflags=tuple(data["cflags"]), ldflags=tuple(data.get("ldflags", ())),
                        kernels=data["kernels"], sram_bytes=int(data.get("sram_bytes", 0)),
                        flash_bytes=int(data.get("flash_bytes", 0)), chip=data.get("chip", "none"), path=path,
                        core=data.get("core", ""), arch=data.get("arch", ""), size=data.get("size", ""),
                        libs=tuple(data.get("libs", ())), stack_bytes=int(data.get("stack_bytes", 0)),
                        firmware=tuple(data.get("firmware", ())), defines=tuple(data.get("defines", ())),
                        chip_memory=tuple((k, int(v)) for k, v in data.get("chip_memory", {}).items()),
                        emulator=_emulator(data.get("emulator")),
                        idf_target=str(data.get("espidf", {}).get("idf_target", "")))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"target file {path}: invalid ({e})") from None
    if target.kind not in ("host", "mcu"):
        raise UserError(f"target file {path}: kind must be host or mcu, not {target.kind!r}")
    if target.kind == "mcu" and target.emulator is None and not target.idf_target:
        raise UserError(f"target file {path}: an mcu target needs an [emulator] table (or an [espidf] table: "
                        f"a chip that only ESP-IDF builds)")
    if target.kind == "mcu" and target.emulator is not None and (not target.arch or not target.firmware):
        raise UserError(f"target file {path}: an emulated mcu target needs arch and firmware")
    return target
