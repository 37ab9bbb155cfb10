"""Hebbian plasticity rules: the nine variants of Najarro & Risi (NeurIPS 2020).

Every rule updates a synapse ``w_ij`` (``i`` pre-synaptic, ``j`` post-synaptic) from the
activations ``o_i`` and ``o_j`` with per-synapse coefficients. Each variant is a special
case of one canonical form::

    dw_ij = a_ij * o_i * o_j + b_ij * o_i + c_ij * o_j + d_ij

so a rule only says how its ``k`` coefficient columns map to ``(a, b, c, d)``, and one
batched kernel (:mod:`hebb_agents.network`) applies all of them.

==========================  ===  ===========================================  ==========================
rule                         k   update                                        columns (file order)
==========================  ===  ===========================================  ==========================
``A``                        1   A*oi*oj                                       A
``AD``                       2   A*oi*oj + D                                   A, D
``AD_lr``                    3   eta*(A*oi*oj + D)                             A, D, eta
``ABC``                      3   A*oi*oj + B*oi + C*oj                         A, B, C
``ABC_lr``                   4   eta*(A*oi*oj + B*oi + C*oj)                   A, B, C, eta
``ABCD``                     4   A*oi*oj + B*oi + C*oj + D                     A, B, C, D
``ABCD_lr``                  5   eta*(A*oi*oj + B*oi + C*oj + D)               A, B, C, eta, D
``ABCD_lr_D_out``            5   eta*(A*oi*oj + B*oi + C*oj) + D               A, B, C, eta, D
``ABCD_lr_D_in_and_out``     6   eta*(A*oi*oj + B*oi + C*oj + D_in) + D_out    A, B, C, eta, D_in, D_out
==========================  ===  ===========================================  ==========================

The column order is the one of the 2020 reference implementation's coefficient files, so
its ``(n_synapses, k)`` arrays load without reordering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class CanonicalTerms(NamedTuple):
    """The rule rewritten as ``dw = a*oi*oj + b*oi + c*oj + d``; ``None`` marks an absent term."""

    a: np.ndarray | None
    b: np.ndarray | None
    c: np.ndarray | None
    d: np.ndarray | None


@dataclass(frozen=True)
class HebbianRule:
    """A named plasticity rule: its coefficient columns and their meaning."""

    name: str
    columns: tuple[str, ...]
    # Which columns are scaled by the learning rate ``eta`` (empty: the rule has no eta).
    eta_scaled: tuple[str, ...]
    # Columns added after the ``eta`` scaling (``D`` of ABCD_lr_D_out, ``D_out``).
    unscaled_offset: str | None = None

    @property
    def k(self) -> int:
        """Number of coefficients per synapse."""
        return len(self.columns)

    def canonical(self, coefficients: np.ndarray) -> CanonicalTerms:
        """Map coefficients ``(..., k)`` in file order to the canonical ``(a, b, c, d)`` terms.

        Each returned term has the leading shape of ``coefficients`` (the ``k`` axis removed).
        """
        if coefficients.shape[-1] != self.k:
            raise ValueError(
                f"rule {self.name!r} takes {self.k} coefficients per synapse {self.columns}, "
                f"got an array whose last axis is {coefficients.shape[-1]}"
            )
        col = {name: coefficients[..., idx] for idx, name in enumerate(self.columns)}
        eta = col.get("eta")

        def scaled(name: str) -> np.ndarray | None:
            if name not in col:
                return None
            return col[name] * eta if (eta is not None and name in self.eta_scaled) else col[name]

        a, b, c = scaled("A"), scaled("B"), scaled("C")
        d = scaled("D_in") if "D_in" in col else (None if self.unscaled_offset == "D" else scaled("D"))
        if self.unscaled_offset is not None:
            offset = col[self.unscaled_offset]
            d = offset if d is None else d + offset
        return CanonicalTerms(a, b, c, d)

    def delta(self, coefficients: np.ndarray, pre: np.ndarray, post: np.ndarray) -> np.ndarray:
        """Weight change of one layer, written out term by term (reference math, not the fast path).

        ``coefficients`` (..., n_in, n_out, k), ``pre`` (..., n_in), ``post`` (..., n_out).
        """
        a, b, c, d = self.canonical(coefficients)
        oi = pre[..., :, None]
        oj = post[..., None, :]
        dw = np.zeros(np.broadcast_shapes(coefficients.shape[:-1], oi.shape, oj.shape))
        if a is not None:
            dw = dw + a * oi * oj
        if b is not None:
            dw = dw + b * oi
        if c is not None:
            dw = dw + c * oj
        if d is not None:
            dw = dw + d
        return dw


RULES: dict[str, HebbianRule] = {
    rule.name: rule
    for rule in (
        HebbianRule("A", ("A",), eta_scaled=()),
        HebbianRule("AD", ("A", "D"), eta_scaled=()),
        HebbianRule("AD_lr", ("A", "D", "eta"), eta_scaled=("A", "D")),
        HebbianRule("ABC", ("A", "B", "C"), eta_scaled=()),
        HebbianRule("ABC_lr", ("A", "B", "C", "eta"), eta_scaled=("A", "B", "C")),
        HebbianRule("ABCD", ("A", "B", "C", "D"), eta_scaled=()),
        HebbianRule("ABCD_lr", ("A", "B", "C", "eta", "D"), eta_scaled=("A", "B", "C", "D")),
        HebbianRule(
            "ABCD_lr_D_out", ("A", "B", "C", "eta", "D"), eta_scaled=("A", "B", "C"), unscaled_offset="D"
        ),
        HebbianRule(
            "ABCD_lr_D_in_and_out",
            ("A", "B", "C", "eta", "D_in", "D_out"),
            eta_scaled=("A", "B", "C", "D_in"),
            unscaled_offset="D_out",
        ),
    )
}


def get_rule(name: str | HebbianRule) -> HebbianRule:
    """Look up a rule by name; unknown names fail with the list of accepted ones."""
    if isinstance(name, HebbianRule):
        return name
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown Hebbian rule {name!r}; accepted: {', '.join(RULES)}") from None
