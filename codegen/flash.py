"""Flashing a generated project onto a board with its ecosystem's tools (pyOCD for Cortex-M, ESP-IDF/esptool for ESP32).

The target file's `[flash]` table says how (`tool = "pyocd" | "esp-idf" | "none"`); `flash_commands` is the pure
part (the argv lists to run), `flash` checks tools, builds what is missing and runs them. Neither pyOCD nor esptool
is a dependency of the compiler: `pip install 'mnv2-codegen[flash]'` installs both.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .errors import UserError

# ESP-IDF builds into this folder of the project (SCons already owns build/<target>/).
IDF_BUILD_DIR = "build/esp-idf"
IDF_PROJECT_NAME = "mnv2_example"  # project() in templates/espidf/CMakeLists.txt.j2
PYOCD_PACKAGE = "pyocd (pip install pyocd, or pip install 'mnv2-codegen[flash]')"
ESPTOOL_PACKAGE = "esptool (pip install esptool, or pip install 'mnv2-codegen[flash]')"
IDF_HINT = ("ESP-IDF is needed to build the image: install it (https://docs.espressif.com/projects/esp-idf/en/stable/"
            "get-started/), run `. $IDF_PATH/export.sh`, then run this again")
NO_PROBE_MARKERS = ("No available debug probes", "No connected debug probes", "No target device available")
NO_SERIAL_MARKERS = ("No serial ports found", "Could not open", "could not open port", "No such file or directory: '/dev")
FLASH_TIMEOUT_S = 600


@dataclass(frozen=True)
class FlashPlan:
    tool: str  # the program that must be on PATH
    package: str  # how to install it
    commands: tuple[tuple[str, ...], ...]
    cwd: Path
    image: Path | None  # what gets written
    build_chip: bool = False  # link the chip image with SCons first (`scons chip`)


def flash_config(project: Path) -> tuple[str, dict]:
    """(target name, its [flash] table) from the project's own copy of the target file."""
    path = Path(project) / "target.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{project} is not a generated project (no target.toml); run `mnv2-codegen generate "
                        f"--target T -o {project}` first") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid ({e})") from None
    name = data["name"]
    if "flash" not in data:  # generated before targets had [flash]: the compiler's own target file
        from .targets import load_target
        data = tomllib.loads(load_target(name).file_text())
    return name, dict(data.get("flash", {}))


def _port(port: str | None) -> tuple[str, ...]:
    return ("-p", port) if port else ()


def flash_commands(target: str, cfg: Mapping, project: Path, port: str | None = None,
                   idf_available: bool = False, esptool: str = "esptool") -> FlashPlan:
    """The commands that flash `project` for `target` (pure: looks only at which files exist)."""
    project = Path(project)
    tool = cfg.get("tool", "none")
    if tool == "pyocd":
        if "pyocd_target" not in cfg:
            raise UserError(f"target {target}: [flash] needs pyocd_target (see `pyocd list --targets`)")
        elf = project / "build" / target / "mnv2_chip.elf"
        return FlashPlan("pyocd", PYOCD_PACKAGE,
                         (("pyocd", "flash", "--no-wait", "-t", cfg["pyocd_target"], *(("-u", port) if port else ()),
                           str(elf)),), project, elf, build_chip=True)
    if tool == "esp-idf":
        chip = cfg.get("idf_target")
        if not chip:
            raise UserError(f"target {target}: [flash] needs idf_target (esp32, esp32s3, esp32c3, ...)")
        if not (project / "CMakeLists.txt").is_file():
            raise UserError(f"{project} has no ESP-IDF project (CMakeLists.txt); regenerate it with this version")
        if idf_available:
            cmds = []
            if not (project / "sdkconfig").is_file():
                cmds.append(("idf.py", "-B", IDF_BUILD_DIR, "set-target", chip))
            cmds.append(("idf.py", "-B", IDF_BUILD_DIR, *_port(port), "flash"))
            return FlashPlan("idf.py", "ESP-IDF (idf.py, with IDF_PATH set)", tuple(cmds), project,
                             project / IDF_BUILD_DIR / f"{IDF_PROJECT_NAME}.bin")
        for build in (project / IDF_BUILD_DIR, project / "build"):  # ours, or a user's plain `idf.py build`
            if (build / "flash_args").is_file():
                return FlashPlan(esptool, ESPTOOL_PACKAGE,
                                 ((esptool, "--chip", chip, *_port(port), "write_flash", "@flash_args"),),
                                 build, build / f"{IDF_PROJECT_NAME}.bin")
            app = build / f"{IDF_PROJECT_NAME}.bin"
            if app.is_file():
                offset = f"0x{int(cfg.get('app_offset', 0x10000)):x}"
                return FlashPlan(esptool, ESPTOOL_PACKAGE,
                                 ((esptool, "--chip", chip, *_port(port), "write_flash", offset, str(app)),),
                                 project, app)
        raise UserError(f"no ESP-IDF image in {project / IDF_BUILD_DIR}; {IDF_HINT}")
    note = cfg.get("note", "")
    raise UserError(f"target {target} has no flashing tool configured{': ' + note if note else ''}")


def idf_present(env: Mapping[str, str] = os.environ, which: Callable = shutil.which) -> bool:
    return bool(env.get("IDF_PATH")) and which("idf.py") is not None


def _fail(plan: FlashPlan, out: str, rc: int) -> UserError:
    text = out.strip()
    if plan.tool == "pyocd" and any(m in text for m in NO_PROBE_MARKERS):
        return UserError("no debug probe found: connect the board's probe (ST-LINK, CMSIS-DAP, J-Link) by USB and "
                         "check `pyocd list`")
    if plan.tool == "pyocd" and ("not recognized" in text.lower() or "unknown target" in text.lower()):
        return UserError(f"pyOCD does not know the target; install its CMSIS pack (`pyocd pack install "
                         f"{plan.commands[0][4]}`) and retry: {text.splitlines()[-1][:200]}")
    if plan.tool != "pyocd" and any(m in text for m in NO_SERIAL_MARKERS):
        return UserError("no ESP32 board found on a serial port: connect it by USB or name the port with --port")
    last = text.splitlines()[-1] if text else "no output"
    return UserError(f"{plan.tool} failed (exit status {rc}): {last[:300]}")


def flash(project: Path, target_name: str, port: str | None = None, dry_run: bool = False,
          env: Mapping[str, str] = os.environ, which: Callable = shutil.which) -> FlashPlan:
    """Builds what is missing, then flashes; returns the plan it ran (or would run, with `dry_run`)."""
    project = Path(project)
    name, cfg = flash_config(project)
    if name != target_name:
        raise UserError(f"{project} was generated for target {name}, not {target_name}")
    esptool = next((t for t in ("esptool", "esptool.py") if which(t)), "esptool")
    plan = flash_commands(name, cfg, project, port, idf_present(env, which), esptool)
    if dry_run:
        return plan
    if which(plan.tool) is None:
        raise UserError(f"'{plan.tool}' not found on PATH: install {plan.package}")
    if plan.build_chip and not plan.image.is_file():  # regenerating replaces the directory, build outputs too
        from .build import build
        from .targets import load_target
        build(project, load_target(name), what=("chip",))  # no-op when up to date
    if plan.tool == "pyocd":  # `pyocd list` answers at once when nothing is attached
        try:
            p = subprocess.run(["pyocd", "list"], capture_output=True, text=True, timeout=60, env=dict(env))
        except subprocess.TimeoutExpired:
            raise UserError("`pyocd list` did not answer within 60 s (probe in use by another program?)") from None
        if any(m in (p.stdout + p.stderr) for m in NO_PROBE_MARKERS):
            raise _fail(plan, p.stdout + p.stderr, p.returncode)
    for cmd in plan.commands:
        try:
            p = subprocess.run(list(cmd), cwd=plan.cwd, capture_output=True, text=True, timeout=FLASH_TIMEOUT_S,
                               env=dict(env))
        except subprocess.TimeoutExpired:
            raise UserError(f"`{' '.join(cmd)}` did not finish within {FLASH_TIMEOUT_S} s") from None
        if p.returncode != 0:
            raise _fail(plan, p.stdout + p.stderr, p.returncode)
    return plan
