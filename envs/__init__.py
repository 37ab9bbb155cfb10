"""hebb_envs: Gymnasium environments for testing adaptation (morphology damage, long memory).

Importing this package registers every environment id under the ``hebb/`` namespace, so
``gym.make("hebb_envs:hebb/<Id>")`` works with no prior import. This package never imports
``hebb_agents``.
"""

from __future__ import annotations

__all__: list[str] = []
