"""Targets as data: reads `targets/<name>.toml` (the same files the SCons build reads)."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .resources import resource_dir


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


def targets_dir() -> Path:
    return resource_dir("targets")


def known_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def load_target(name: str) -> Target:
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown target {name!r} (known: {', '.join(known_targets())})")
    try:
        data = tomllib.loads(path.read_text())
        return Target(name=data["name"], description=data["description"], kind=data["kind"], cc=data["cc"],
                      cflags=tuple(data["cflags"]), ldflags=tuple(data.get("ldflags", ())),
                      kernels=data["kernels"], sram_bytes=int(data.get("sram_bytes", 0)),
                      flash_bytes=int(data.get("flash_bytes", 0)), chip=data.get("chip", "none"), path=path)
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"target file {path}: invalid ({e})") from None
