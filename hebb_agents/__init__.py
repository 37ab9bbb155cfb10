"""hebb_agents: evolved Hebbian plasticity rules in random networks.

Importing the package also registers the ``hebb/`` environments of :mod:`hebb_envs`.
"""

from __future__ import annotations

try:
    import hebb_envs  # noqa: F401  (registers the hebb/ environment ids)
except ImportError as _error:
    # MuJoCo could not load the OpenGL backend MUJOCO_GL names: the package still imports (CartPole
    # and other non-MuJoCo work needs no GL), the error comes back wherever an env is built, and
    # the ``hebb`` command reports it in one line.
    if "MUJOCO_GL" not in str(_error):
        raise

__version__ = "0.1.0"

from hebb_agents.es import OpenES  # noqa: E402
from hebb_agents.network import HebbianNetwork, StaticNetwork  # noqa: E402
from hebb_agents.policy import EvolvablePolicy, HebbianPolicy, StaticPolicy  # noqa: E402
from hebb_agents.rules import RULES, get_rule  # noqa: E402
from hebb_agents.trainer import ESTrainer, TrainConfig  # noqa: E402

__all__ = [
    "RULES",
    "ESTrainer",
    "EvolvablePolicy",
    "HebbianNetwork",
    "HebbianPolicy",
    "OpenES",
    "StaticNetwork",
    "StaticPolicy",
    "TrainConfig",
    "__version__",
    "get_rule",
]
