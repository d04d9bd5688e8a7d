"""Building a generated project with SCons (the target's compiler and flags come from its target.toml)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .errors import UserError
from .targets import Target


def variant_dir(project: Path, target: Target, asan: bool = False) -> Path:
    return Path(project) / "build" / f"{target.name}{'-asan' if asan else ''}"


def build(project: Path, target: Target, asan: bool = False, jobs: int = 2, what: tuple[str, ...] = ()) -> Path:
    """Runs SCons in `project` (its default targets, or `what`: e.g. ("chip",) for an MCU project's chip image);
    returns the variant directory. A second call with nothing changed does nothing."""
    if shutil.which(target.cc) is None:
        how = "e.g. `apt-get install gcc`" if target.kind == "host" else "run scripts/setup.sh as root"
        raise UserError(f"cannot build for target {target.name}: compiler command '{target.cc}' not found "
                        f"(install it: {how})")
    cmd = [sys.executable, "-m", "SCons", "-Q", "-j", str(jobs), f"asan={int(asan)}", *what]
    p = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        first_error = next((ln for ln in tail if "error" in ln.lower() or "overflow" in ln.lower()),
                           tail[-1] if tail else "unknown error")
        raise UserError(f"build of {project} failed: {first_error.strip()[:300]}")
    return variant_dir(project, target, asan)
