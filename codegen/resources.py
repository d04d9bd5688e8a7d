"""Locates the data directories (templates, targets, firmware) in a source checkout or an installed package."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`templates`, `targets` or `firmware`: installed as `codegen/<name>`, or at the checkout's top level."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mnv2-codegen data directory '{name}' is missing from the installation")
