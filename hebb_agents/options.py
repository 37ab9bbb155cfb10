"""Options given by name (JSON configs, CLI flags), checked against what a class's constructor takes."""

from __future__ import annotations

import inspect
from collections.abc import Iterable


def constructor_keywords(cls: type, given_by_caller: Iterable[str] = ()) -> set[str]:
    """Names a user may set in ``cls(...)``: its named parameters, less ``given_by_caller`` (set by
    the code that builds it, such as the spaces)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in named} - {"self", *given_by_caller}
