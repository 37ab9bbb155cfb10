"""Front ends for the Hebbian policy: observations of a whole population in, features out.

:class:`PolicyEncoder` is the interface ``HebbianPolicy(encoder=...)`` calls: numpy in, numpy out,
batched over the population axis ``P``. An encoder's weights are either fixed random weights
(seeded; ``num_params == 0``) or co-evolved by the ES beside the Hebbian coefficients, as the
reference co-evolves its CNN; then each member brings its own flat parameter vector.

:class:`TorchPolicyEncoder` turns any ``torch.nn.Module`` into such an encoder. Co-evolved
weights run through ``torch.func.functional_call`` under ``torch.vmap`` over the population,
so P members with P different weight sets cost one batched call, not a Python loop.

Flat parameter order: the module's ``named_parameters()`` order, each tensor flattened in C
(row-major) order; :meth:`TorchPolicyEncoder.parameter_layout` lists names, shapes and offsets.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from hebb_agents.options import check_bool


class PolicyEncoder(abc.ABC):
    """What the Hebbian policy needs from a front end.

    Attributes:
        feature_dim: size of the feature vector fed to the Hebbian layers.
        num_params: number of evolvable parameters per member (0 when the weights are fixed).
    """

    feature_dim: int
    num_params: int

    @abc.abstractmethod
    def initial_params(self) -> np.ndarray:
        """``(num_params,)`` float32: the ES starting centre (the seeded random weights, flat)."""

    @abc.abstractmethod
    def reset(self, population: int, members: np.ndarray | None = None) -> None:
        """Start of an episode for ``population`` members (or only the ``members`` indices):
        clear their per-member state."""

    @abc.abstractmethod
    def encode(self, obs: np.ndarray, params: np.ndarray | None) -> np.ndarray:
        """Features ``(P, feature_dim)`` float32 for observations ``(P, *obs_shape)``.

        ``params`` is ``(P, num_params)`` (each member's co-evolved weights) or None for the
        fixed weights.
        """


class TorchPolicyEncoder(PolicyEncoder):
    """A :class:`PolicyEncoder` around a module mapping ``(N, *in_shape)`` to ``(N, feature_dim)``.

    Args:
        module: the network; its current weights are the fixed weights and the ES centre.
        feature_dim: width of the module's output.
        evolvable: if True, ``num_params`` is the module's parameter count and ``encode`` takes
            per-member weights; if False, ``num_params == 0`` and the weights stay fixed.
        preprocess: optional numpy-to-tensor step applied to ``(P, *obs_shape)`` first.

    The module runs in eval mode under ``torch.no_grad`` (the ES needs no gradients).
    """

    def __init__(
        self,
        module: nn.Module,
        feature_dim: int,
        evolvable: bool = False,
        preprocess: Callable[[np.ndarray], Tensor] | None = None,
    ) -> None:
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.feature_dim = int(feature_dim)
        self.evolvable = check_bool("evolvable", evolvable)
        self._names = [name for name, _ in module.named_parameters()]
        self._shapes = [tuple(p.shape) for _, p in module.named_parameters()]
        self._sizes = [math.prod(s) for s in self._shapes]
        self._total = int(sum(self._sizes))
        self.num_params = self._total if self.evolvable else 0
        self._preprocess = preprocess
        self.population = 0

    def parameter_layout(self) -> list[tuple[str, tuple[int, ...], int]]:
        """``(name, shape, offset)`` of every tensor in the flat parameter vector."""
        offsets = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(int)
        return [(n, s, int(o)) for n, s, o in zip(self._names, self._shapes, offsets)]

    def initial_params(self) -> np.ndarray:
        if not self.evolvable:
            return np.zeros(0, dtype=np.float32)
        flat = [p.detach().reshape(-1) for p in self.module.parameters()]
        return torch.cat(flat).numpy().astype(np.float32)

    def reset(self, population: int, members: np.ndarray | None = None) -> None:
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population!r}")
        self.population = int(population)

    def _to_tensor(self, obs: np.ndarray) -> Tensor:
        if self._preprocess is not None:
            return self._preprocess(obs)
        return torch.as_tensor(np.asarray(obs, dtype=np.float32))

    def _unflatten(self, params: Tensor) -> dict[str, Tensor]:
        """``(P, num_params)`` -> {name: (P, *shape)}."""
        chunks = params.split(self._sizes, dim=1)
        return {
            name: chunk.reshape(params.shape[0], *shape)
            for name, shape, chunk in zip(self._names, self._shapes, chunks)
        }

    def run(self, x: Tensor, params: np.ndarray | None) -> Tensor:
        """Apply the module to ``x`` ``(P, ...)``: fixed weights, or one weight set per member."""
        if params is None or self._total == 0:
            return self.module(x)
        if not self.evolvable:
            raise ValueError("this encoder is not evolvable (evolvable=False); pass params=None")
        weights = torch.as_tensor(np.asarray(params, dtype=np.float32))
        if weights.shape != (x.shape[0], self._total):
            raise ValueError(
                f"params must have shape (P, num_params) = {(x.shape[0], self._total)}, "
                f"got {tuple(weights.shape)}"
            )

        def one(member_weights: dict[str, Tensor], member_x: Tensor) -> Tensor:
            return torch.func.functional_call(self.module, member_weights, (member_x[None],))[0]

        return torch.vmap(one, randomness="same")(self._unflatten(weights), x)

    def encode(self, obs: np.ndarray, params: np.ndarray | None) -> np.ndarray:
        with torch.no_grad():
            features = self.run(self._to_tensor(obs), params)
        return features.numpy().astype(np.float32, copy=False)


__all__ = ["PolicyEncoder", "TorchPolicyEncoder"]
