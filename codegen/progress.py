"""Progress bars: shown on an interactive terminal only, so logs and one-line errors stay clean."""
from __future__ import annotations

from tqdm import tqdm


def progress(iterable, desc: str, enabled: bool = True, **kwargs):
    """tqdm over `iterable` when `enabled` and stderr is a terminal (tqdm's disable=None); else the iterable."""
    return tqdm(iterable, desc=desc, disable=None if enabled else True, **kwargs)
