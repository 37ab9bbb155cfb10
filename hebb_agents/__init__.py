"""hebb_agents: evolved Hebbian plasticity rules in random networks.

Importing the package also registers the ``hebb/`` environments of :mod:`hebb_envs`.
"""

from __future__ import annotations

import hebb_envs  # noqa: F401  (registers the hebb/ environment ids)

__version__ = "0.1.0"
