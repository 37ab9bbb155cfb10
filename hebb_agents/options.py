"""Options given by name (JSON configs, CLI flags): checked against what a class's constructor takes,
and their values checked with errors that name the option and what it accepts."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterable, Mapping

import numpy as np


def constructor_keywords(cls: type, given_by_caller: Iterable[str] = ()) -> set[str]:
    """Names a user may set in ``cls(...)``: its named parameters, less ``given_by_caller`` (set by
    the code that builds it, such as the spaces)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in named} - {"self", *given_by_caller}


def check_int(name: str, value: object, minimum: int | None = 1) -> int:
    """``value`` as an ``int`` >= ``minimum`` (any int when ``minimum`` is None), else a ValueError.

    Any integer type is accepted (``int``, ``numpy.int64``, ...), and a whole float (``8.0``: JSON
    written by other tools, files saved by earlier versions); ``bool``, ``2.5`` and strings are not.
    """
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
    )
    if whole and not isinstance(value, (bool, np.bool_)) and (minimum is None or value >= minimum):
        return int(value)
    raise ValueError(f"{name} must be {_an_int(minimum)}, got {value!r}")


def check_optional_int(name: str, value: object, minimum: int | None = 1) -> int | None:
    """:func:`check_int`, with None passed through."""
    if value is None:
        return None
    try:
        return check_int(name, value, minimum)
    except ValueError:
        raise ValueError(f"{name} must be {_an_int(minimum)} or None, got {value!r}") from None


def _an_int(minimum: int | None) -> str:
    return "an int" if minimum is None else f"an int >= {minimum}"


def check_bool(name: str, value: object) -> bool:
    """``value`` as a ``bool`` (``True``/``False``, a numpy bool, or 0 and 1 as earlier versions
    and other tools saved them, ``1.0`` included), else a ValueError: a string such as ``"no"``
    would read as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be a boolean (true or false), got {value!r}")


def check_probability(name: str, value: object, one: bool = False) -> float:
    """``value`` as a ``float`` in [0, 1) (a dropout probability; [0, 1] with ``one``, as
    ``torch.nn.Dropout`` takes), else a ValueError."""
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if number and (0.0 <= value < 1.0 or (one and value == 1)):
        return float(value)
    raise ValueError(f"{name} must be a number in [0, 1{']' if one else ')'}, got {value!r}")


def check_positive(name: str, value: object, allow_zero: bool = False) -> float:
    """``value`` as a finite ``float`` > 0 (>= 0 with ``allow_zero``), else a ValueError."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and (number >= 0 if allow_zero else number > 0)):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return number


def check_decay(name: str, value: object) -> float:
    """``value`` as a per-generation multiplicative decay in (0, 1], else a ValueError."""
    number = check_positive(name, value)
    if number > 1.0:
        raise ValueError(f"{name} must be in (0, 1] (1 = no decay), got {value!r}")
    return number


def check_options(owner: str, given: Mapping[str, object] | Iterable[str], accepted: Iterable[str]) -> None:
    """A ValueError naming the unknown keys of ``given`` and listing the ``accepted`` ones."""
    accepted = set(accepted)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(
            f"unknown {owner} option(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
