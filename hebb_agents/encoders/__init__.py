"""Encoders that turn observations into features: LSH attention over long histories, reversible
Reformer blocks, and the front ends of the Hebbian policy.

- :mod:`~hebb_agents.encoders.lsh`: ``LSHAttention`` / ``LSHSelfAttention`` (Reformer LSH attention);
- :mod:`~hebb_agents.encoders.reversible`: reversible residual blocks with replayed randomness;
- :mod:`~hebb_agents.encoders.history`: ``HistoryEncoder``, the SB3 ``LSHHistoryExtractor`` and
  the Hebbian-policy front end ``LSHPolicyEncoder`` (imports Stable-Baselines3);
- :mod:`~hebb_agents.encoders.conv`: ``ConvEncoder``, the reference's CarRacing CNN front end;
- :mod:`~hebb_agents.encoders.base`: the ``PolicyEncoder`` interface ``HebbianPolicy`` calls.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from hebb_agents.encoders.base import PolicyEncoder, TorchPolicyEncoder
from hebb_agents.encoders.lsh import LSHAttention, LSHSelfAttention, full_shared_qk_attention
from hebb_agents.encoders.reversible import ReversibleBlock, ReversibleSequence, reformer_stack
from hebb_agents.options import check_options, constructor_keywords

__all__ = [
    "ENCODER_TYPES",
    "ConvEncoder",
    "HistoryEncoder",
    "LSHHistoryExtractor",
    "LSHPolicyEncoder",
    "LSHAttention",
    "LSHSelfAttention",
    "PolicyEncoder",
    "ReversibleBlock",
    "ReversibleSequence",
    "TorchPolicyEncoder",
    "full_shared_qk_attention",
    "make_encoder",
    "reformer_stack",
]

ENCODER_TYPES = ("lsh", "conv")
# Importable from here, loaded on first use: history imports Stable-Baselines3, conv is torch-only.
_LAZY = {
    "HistoryEncoder": "history",
    "LSHHistoryExtractor": "history",
    "LSHPolicyEncoder": "history",
    "ConvEncoder": "conv",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def make_encoder(spec: dict, observation_space: object) -> PolicyEncoder:
    """Build a policy front end from a JSON spec, e.g. ``{"type": "lsh", "window": 64}``.

    ``lsh`` takes :class:`~hebb_agents.encoders.history.LSHPolicyEncoder`'s keyword arguments,
    ``conv`` those of :class:`~hebb_agents.encoders.conv.ConvEncoder` (and image observations
    ``(H, W, 3)``). A spec is what a checkpoint stores, so a policy built from one can be saved and
    rebuilt. Every bad spec (unknown option, value of the wrong type or range, observation space
    the encoder cannot read) raises a ValueError naming it.
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(
            f"an encoder spec is a dict with a 'type' ({', '.join(ENCODER_TYPES)}), got {spec!r}"
        )
    kind = spec["type"]
    kwargs = {key: value for key, value in spec.items() if key != "type"}
    if kind == "lsh":
        import gymnasium as gym

        from hebb_agents.encoders.history import LSHPolicyEncoder

        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(f"the 'lsh' encoder reads Box observations, got {observation_space}")
        # LSHPolicyEncoder passes what it does not take to HistoryEncoder (obs_dim and out_dim it sets)
        check_options(f"{kind!r} encoder", kwargs, LSHPolicyEncoder.options())
        return _build(kind, lambda: LSHPolicyEncoder(observation_space, **kwargs), kwargs)
    if kind == "conv":
        from hebb_agents.encoders.conv import ConvEncoder, check_frame_space

        check_options(f"{kind!r} encoder", kwargs, constructor_keywords(ConvEncoder))
        check_frame_space(observation_space)
        return _build(kind, lambda: ConvEncoder(**kwargs), kwargs)
    raise ValueError(f"unknown encoder type {kind!r}; accepted: {', '.join(ENCODER_TYPES)}")


def _build(kind: str, build: Callable[[], PolicyEncoder], kwargs: dict) -> PolicyEncoder:
    """``build()``, with a bad value (``"window": "x"``, ``"max_len": -1``) reported as a bad option."""
    try:
        return build()
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad {kind!r} encoder options {kwargs}: {err}") from err
