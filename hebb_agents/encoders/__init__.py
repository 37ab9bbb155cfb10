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

from hebb_agents.encoders.base import PolicyEncoder, TorchPolicyEncoder
from hebb_agents.encoders.lsh import LSHAttention, LSHSelfAttention, full_shared_qk_attention
from hebb_agents.encoders.reversible import ReversibleBlock, ReversibleSequence, reformer_stack

__all__ = [
    "LSHAttention",
    "LSHSelfAttention",
    "PolicyEncoder",
    "ReversibleBlock",
    "ReversibleSequence",
    "TorchPolicyEncoder",
    "full_shared_qk_attention",
    "reformer_stack",
]
