"""Argument checks of the envs and wrappers: each error names the argument, the value and what is accepted.

``bool`` is an ``int`` in Python, so ``True`` would pass a bare ``int(x) == x`` test as 1; these checks
reject it, reject ``None`` and strings with a ``ValueError`` (not ``int()``'s ``TypeError``), and accept
a float only when it is a whole number (``64.0`` means 64, ``2.5`` is refused rather than truncated).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

# The most one env or wrapper allocates for one array (a memory episode, a history ring buffer): a bad
# argument is refused with a ValueError instead of dying in numpy's allocator.
MAX_ARRAY_BYTES = 2**30


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int if it is a whole number in ``[low, high]`` (no upper bound if ``high`` is None)."""
    accepted = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    whole = not isinstance(value, (bool, np.bool_)) and (
        isinstance(value, numbers.Integral)
        or (isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    )
    if not whole or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {accepted}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (Python's or numpy's); ``1``, ``"yes"`` or ``None`` are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool (True or False), got {value!r}")
    return bool(value)


def check_real(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number (not a bool, a string or None)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def size_text(n_bytes: int) -> str:
    """``n_bytes`` in the largest binary unit that keeps it >= 1 (``"24.0 MiB"``)."""
    size, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            break
        size /= 1024
    return f"{size:.1f} {unit}"
