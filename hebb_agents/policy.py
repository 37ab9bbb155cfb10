"""Gymnasium-facing agents: :class:`HebbianPolicy` (random weights + evolved rules) and
:class:`StaticPolicy` (evolved fixed weights, the paper's baseline).

Both are batched over a population axis ``P`` and share one interface, so the ES trainer,
the rollout code and deployment are the same code path (a deployed agent is ``P = 1``):

- ``num_params`` / ``set_params(params (P, n) or (n,))`` / ``get_params()`` for the ES;
- ``reset(seed)`` starts an episode (fresh random weights for the Hebbian agent);
- ``act(obs)`` maps observations to actions (and applies plasticity);
- ``predict(obs, state, episode_start, deterministic)`` is Stable-Baselines3's signature, so
  ``stable_baselines3.common.evaluation.evaluate_policy(policy, env)`` works unchanged;
- ``save(path)`` / ``load(path)`` write and check a self-describing checkpoint (no pickle).

Actions: for ``Box`` spaces the network's tanh outputs in ``[-1, 1]`` are mapped linearly to the
bounds; for ``Discrete`` spaces the action is the argmax of the outputs (tanh by default, linear with
``output_activation="linear"``). The activated output that chose the action is the one the plastic
update sees.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from hebb_agents.network import HebbianNetwork, StaticNetwork, population_matrix
from hebb_agents.options import check_int, constructor_keywords


def member_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (e.g. generation, member, episode).

    Every random draw of an individual goes through one of these, so the result of a
    population does not depend on how it is split between workers.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *map(int, keys)]))


class ParamsNotLoadedError(ValueError, RuntimeError):
    """A policy was used before it held evolved vectors.

    A ``ValueError`` like the project's other errors; also a ``RuntimeError`` because ``reset``
    raised that before, so existing handlers keep working.
    """


def _space_to_json(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "low": np.asarray(space.low, dtype=np.float64).reshape(-1).tolist(),
            "high": np.asarray(space.high, dtype=np.float64).reshape(-1).tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise ValueError(f"unsupported space {space}; accepted: Box, Discrete")


def space_from_json(spec: dict[str, Any]) -> gym.Space:
    """Rebuild a space written by a checkpoint."""
    if spec.get("type") == "Box":
        shape = tuple(spec["shape"])
        low = np.asarray(spec["low"], dtype=spec["dtype"]).reshape(shape)
        high = np.asarray(spec["high"], dtype=spec["dtype"]).reshape(shape)
        return gym.spaces.Box(low=low, high=high, shape=shape, dtype=spec["dtype"])
    if spec.get("type") == "Discrete":
        return gym.spaces.Discrete(spec["n"], start=spec.get("start", 0))
    raise ValueError(f"malformed space in checkpoint metadata: {spec!r}; accepted types: Box, Discrete")


def _layer_sizes(hidden: Any) -> tuple[int, ...]:
    """``hidden`` as a tuple of positive ints; anything else is a ``ValueError`` that says so."""
    if isinstance(hidden, np.ndarray) and hidden.ndim == 1:
        hidden = hidden.tolist()
    if isinstance(hidden, Sequence) and not isinstance(hidden, (str, bytes)):
        try:
            return tuple(check_int("hidden", size) for size in hidden)
        except ValueError:
            pass
    raise ValueError(
        f"hidden must be a sequence of positive layer sizes, e.g. (128, 64) or (); got {hidden!r}"
    )


class EvolvablePolicy(abc.ABC):
    """Shared machinery of the evolved policies (population axis, action mapping, SB3 predict)."""

    kind: str = ""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden: Sequence[int] = (128, 64),
        encoder: Any | None = None,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.hidden = _layer_sizes(hidden)
        # A JSON spec ({"type": "lsh", ...}) builds the encoder and makes the policy saveable.
        self.encoder_spec: dict[str, Any] | None = None
        if isinstance(encoder, dict):
            from hebb_agents.encoders import make_encoder

            self.encoder_spec = dict(encoder)
            encoder = make_encoder(encoder, observation_space)
        self.encoder = encoder
        built_for = getattr(encoder, "obs_shape", None)  # encoders that know their observations say so
        if built_for is not None and tuple(built_for) != tuple(observation_space.shape or ()):
            raise ValueError(
                f"the encoder ({type(encoder).__name__}) was built for observations of shape "
                f"{tuple(built_for)}; this policy's observation space is {observation_space}"
            )
        if encoder is None:
            if not isinstance(observation_space, gym.spaces.Box):
                raise ValueError(
                    f"observation space {observation_space} is not supported without an encoder; "
                    "accepted: Box (or pass encoder=...)"
                )
            self.obs_dim = int(np.prod(observation_space.shape))
        else:
            self.obs_dim = int(encoder.feature_dim)
        if isinstance(action_space, gym.spaces.Box):
            self.act_dim = int(np.prod(action_space.shape))
            low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
            high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                raise ValueError("Box action spaces must be bounded for tanh outputs to map to them")
            self._action_centre = ((high + low) / 2).astype(np.float32)
            self._action_half = ((high - low) / 2).astype(np.float32)
            self._action_low = action_space.low.reshape(-1)
            self._action_high = action_space.high.reshape(-1)
        elif isinstance(action_space, gym.spaces.Discrete):
            self.act_dim = int(action_space.n)
        else:
            raise ValueError(f"unsupported action space {action_space}; accepted: Box, Discrete")
        self.layer_sizes = (self.obs_dim, *self.hidden, self.act_dim)
        self._rng = np.random.default_rng()
        self._episode_started = False  # every member has drawn its initial weights since set_params
        self.last_output: np.ndarray | None = None  # (P, act_dim) activations that acted

    # -------------------------------------------------------------- subclasses
    @property
    @abc.abstractmethod
    def network(self) -> HebbianNetwork | StaticNetwork:
        """The batched network."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (spaces excluded)."""

    @abc.abstractmethod
    def initial_params(self, rng: np.random.Generator) -> np.ndarray:
        """A starting point ``(num_params,)`` for the ES."""

    # -------------------------------------------------------------- parameters
    @property
    def num_network_params(self) -> int:
        return self.network.num_params

    @property
    def num_encoder_params(self) -> int:
        return 0 if self.encoder is None else int(self.encoder.num_params)

    @property
    def num_params(self) -> int:
        """Length of one evolved vector: network parameters, then encoder parameters."""
        return self.num_network_params + self.num_encoder_params

    @property
    def population(self) -> int:
        return self.network.population

    def _loaded_params(self, action: str) -> np.ndarray:
        """The loaded vectors ``(P, num_params)``, or a clear error naming how to load them."""
        params = getattr(self, "_params", None)
        if params is None:
            raise ParamsNotLoadedError(
                f"cannot {action} a {type(self).__name__} that holds no parameters yet; load them first "
                "with set_params(...) (e.g. set_params(policy.initial_params(rng)) for a fresh start), "
                "EvolvablePolicy.load(path), or the trainer"
            )
        return params

    def set_params(self, params: np.ndarray) -> None:
        """Load evolved vectors ``(P, num_params)`` (or one ``(num_params,)``) for ``P`` members."""
        owner = f"{type(self).__name__} with layers {self.layer_sizes}"
        params = population_matrix(params, self.num_params, np.dtype(np.float32), owner)
        self._params = params
        self.network.set_params(params[:, : self.num_network_params])
        self._encoder_params = params[:, self.num_network_params :] if self.num_encoder_params else None
        self._episode_started = False  # new vectors: no member has its initial weights yet

    def select(self, members: np.ndarray) -> None:
        """Keep only the ``members`` rows with their plastic state (drops finished members)."""
        if self.encoder is not None:
            raise NotImplementedError("members cannot be dropped from a policy with a stateful encoder")
        self._params = self._loaded_params("select members of")[members]
        self.network.select(members)

    def get_params(self) -> np.ndarray:
        """The evolved vectors ``(P, num_params)`` currently loaded."""
        return self._loaded_params("get the parameters of").copy()

    # -------------------------------------------------------------- episodes
    def reset(self, seed: int | Sequence[int] | None = None, members: np.ndarray | None = None) -> None:
        """Start an episode for every member (or ``members``): fresh weights, cleared encoder state.

        ``seed`` is one int (members get independent streams derived from it), one int per member,
        or ``None`` to continue the policy's own random stream.
        """
        self._loaded_params("reset")
        index = np.arange(self.population) if members is None else np.asarray(members)
        if seed is None:
            rngs = list(self._rng.spawn(len(index)))
        elif np.ndim(seed) == 0:
            self._rng = np.random.default_rng(int(seed))
            rngs = [member_rng(int(seed), int(p)) for p in index]
        else:
            if len(seed) != len(index):
                raise ValueError(f"need one seed per member ({len(index)}), got {len(seed)}")
            rngs = [np.random.default_rng(int(s)) for s in seed]
        self.network.reset(rngs, members=index if members is not None else None)
        if self.encoder is not None:
            self.encoder.reset(self.population, members=None if members is None else index)
        if members is None:
            self._episode_started = True

    def features(self, obs: np.ndarray) -> np.ndarray:
        """Network inputs ``(P, obs_dim)`` for a batch of observations."""
        if self.encoder is not None:
            features = self.encoder.encode(obs, self._encoder_params)
            if np.shape(features) != (self.population, self.obs_dim):
                raise ValueError(
                    f"the encoder ({type(self.encoder).__name__}) returned features of shape "
                    f"{np.shape(features)}, but declares feature_dim={self.obs_dim} (the input layer's size) "
                    f"for {self.population} member(s): (P, feature_dim) = {(self.population, self.obs_dim)}"
                )
            return features
        obs = np.asarray(obs, dtype=np.float32)
        if obs.size != self.population * self.obs_dim:
            raise ValueError(
                f"this policy takes observations of shape {self.observation_space.shape} "
                f"({self.obs_dim} values), one per member ({self.population}); got an array of shape "
                f"{obs.shape} (an observation of another environment?)"
            )
        return obs.reshape(self.population, self.obs_dim)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for one observation per member; a single unbatched observation when ``P = 1``."""
        self._loaded_params("act with")
        obs = np.asarray(obs)
        single = obs.shape == tuple(self.observation_space.shape or ()) and self.population == 1
        batch = obs[None] if single else obs
        if batch.shape[0] != self.population:
            raise ValueError(
                f"expected a batch of {self.population} observations of shape "
                f"{self.observation_space.shape}, got {obs.shape}"
            )
        out = self.network.step(self.features(batch))  # (P, act_dim)
        self.last_output = out
        actions = self.to_actions(out)
        return actions[0] if single else actions

    @property
    def action_mapping(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(centre, half_range, low, high)`` of a ``Box`` action space: :meth:`to_actions` maps an
        output ``o`` to ``clip(centre + half_range * o, low, high)``."""
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(f"action_mapping needs a Box action space, got {self.action_space}")
        return self._action_centre, self._action_half, self._action_low, self._action_high

    def to_actions(self, out: np.ndarray) -> np.ndarray:
        """Map activated outputs ``(P, act_dim)`` to environment actions."""
        if isinstance(self.action_space, gym.spaces.Discrete):
            return np.argmax(out, axis=1) + int(self.action_space.start)
        actions = (self._action_centre + self._action_half * out).astype(self.action_space.dtype, copy=False)
        # a saturated tanh (exactly +-1) can round past a bound by one float step: clip, as two ufunc
        # calls (np.clip's Python wrapper costs as much again per step; NaN passes through both ways)
        np.maximum(actions, self._action_low, out=actions)
        np.minimum(actions, self._action_high, out=actions)
        return actions.reshape((out.shape[0], *self.action_space.shape))

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Stable-Baselines3's ``predict``: restarts a member's weights where its episode starts.

        With one loaded vector and ``n`` vectorised environments the vector is copied to ``n``
        members, each with its own plastic weights. The policy has no stochastic head, so
        ``deterministic`` changes nothing.
        """
        loaded = self._loaded_params("predict with")
        observation = np.asarray(observation)
        obs_shape = tuple(self.observation_space.shape or ())
        vectorised = observation.shape != obs_shape
        batch = observation if vectorised else observation[None]
        n = batch.shape[0]
        if self.population != n:
            base = loaded[:1]  # what is copied to each vectorised environment
            if loaded.shape[0] != 1 and not np.all(loaded == base):
                raise ValueError(f"policy holds {loaded.shape[0]} members but got {n} observations")
            self.set_params(np.repeat(base, n, axis=0))
            self.reset()
        elif not self._episode_started:  # vectors loaded since the last reset: start the episode
            self.reset()
        elif episode_start is not None and np.any(episode_start):
            self.reset(members=np.flatnonzero(np.asarray(episode_start).reshape(-1)))
        actions = self.act(batch)
        return (actions if vectorised else actions[0]), state

    # -------------------------------------------------------------- persistence
    def metadata(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this policy."""
        meta = {
            "policy": self.kind,
            "config": self.config(),
            "observation_space": _space_to_json(self.observation_space),
            "action_space": _space_to_json(self.action_space),
            "layer_sizes": list(self.layer_sizes),
            "num_params": self.num_params,
        }
        return meta

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the first member's vector and the configuration (npz or safetensors, no pickle)."""
        from hebb_agents.checkpoint import save_checkpoint

        params = self._loaded_params("save")
        if self.config().get("sharing") == "custom":
            raise ValueError("cannot save a policy with custom sharing maps; use a named sharing mode")
        if self.encoder is not None and self.encoder_spec is None:
            raise ValueError(
                f"cannot save a policy whose encoder ({type(self.encoder).__name__}) was passed as "
                "an object; "
                "build it from a spec, e.g. encoder={'type': 'lsh', 'window': 64}, so it can be rebuilt"
            )
        meta = {**self.metadata(), **(extra or {})}
        return save_checkpoint(path, {"params": params[0]}, meta)

    @classmethod
    def load(cls, path: str | Path) -> EvolvablePolicy:
        """Rebuild a saved policy and load its vector, checking its shape.

        ``EvolvablePolicy.load`` takes either kind; ``HebbianPolicy.load`` / ``StaticPolicy.load``
        refuse the other kind.
        """
        from hebb_agents.checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(path)
        policy = policy_from_metadata(meta, arrays.get("params"), source=str(path))
        if not isinstance(policy, cls):
            raise ValueError(
                f"{path} holds a {policy.kind} policy ({type(policy).__name__}), not a {cls.__name__}; "
                f"load it with {type(policy).__name__}.load or EvolvablePolicy.load"
            )
        return policy


class HebbianPolicy(EvolvablePolicy):
    """Random-weight network rewired every step by evolved Hebbian rules.

    :param observation_space: a ``Box`` (or anything, with an ``encoder``).
    :param action_space: ``Box`` (bounded) or ``Discrete``.
    :param hidden: hidden layer sizes; the reference used (128, 64).
    :param rule: plasticity rule name, see :mod:`hebb_agents.rules` (default the paper's ``ABCD_lr``).
    :param init: initial weight scheme drawn every episode (``uniform`` U(-0.1, 0.1)).
    :param normalisation: ``max_abs`` (default), ``standardise`` or ``none``.
    :param sharing: rule sharing: ``per_synapse`` (default), ``per_post``, ``per_pre``, ``per_layer``.
    :param bias: add a constant-1 input to every layer.
    :param encoder: optional front end: a :class:`hebb_agents.encoders.base.PolicyEncoder`, or a
        JSON spec such as ``{"type": "lsh", "window": 64, "evolvable": True}`` (needed to save).
    :param output_activation: ``tanh`` (default; what the reference's continuous control uses, and
        what ``Box`` actions need) or ``linear`` (``Discrete`` actions only: the argmax is the same,
        but the plastic update sees the linear outputs, as the reference's network before its tanh).
    """

    kind = "hebbian"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden: Sequence[int] = (128, 64),
        rule: str = "ABCD_lr",
        init: str = "uniform",
        normalisation: str = "max_abs",
        sharing: str = "per_synapse",
        bias: bool = False,
        encoder: Any | None = None,
        output_activation: str = "tanh",
    ) -> None:
        super().__init__(observation_space, action_space, hidden, encoder)
        if output_activation != "tanh" and not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"output_activation={output_activation!r} needs Discrete actions; Box actions map tanh "
                "outputs to their bounds (accepted here: tanh)"
            )
        self._network = HebbianNetwork(
            self.layer_sizes,
            rule=rule,
            init=init,
            normalisation=normalisation,
            sharing=sharing,
            bias=bias,
            output_activation=output_activation,
        )

    @property
    def network(self) -> HebbianNetwork:
        return self._network

    @property
    def rule(self) -> str:
        return self._network.rule.name

    def config(self) -> dict[str, Any]:
        net = self._network
        return {
            "hidden": list(self.hidden),
            "rule": net.rule.name,
            "init": net.init,
            "normalisation": net.normalisation,
            "sharing": net.sharing if isinstance(net.sharing, str) else "custom",
            "bias": net.bias,
            **({"encoder": self.encoder_spec} if self.encoder_spec else {}),
            # only when not the default: checkpoints of default policies stay as they were
            **({"output_activation": net.output_activation} if net.output_activation != "tanh" else {}),
        }

    @property
    def coefficients(self) -> np.ndarray:
        """The first member's Hebbian coefficients, flat in the documented layout."""
        return self._loaded_params("read the coefficients of")[0, : self._network.num_coefficients].copy()

    @coefficients.setter
    def coefficients(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float32).reshape(-1)
        n = self._network.num_coefficients
        if value.size != n:
            raise ValueError(
                f"rule {self.rule!r} on layers {self.layer_sizes} takes {n} coefficients, got {value.size}"
            )
        params = self._params.copy() if hasattr(self, "_params") else self.initial_params(self._rng)[None]
        params[:, :n] = value
        self.set_params(params)

    def coefficients_by_layer(self) -> list[np.ndarray]:
        """The first member's coefficient tables per layer, each ``(n_rows, k)`` (no population axis).

        ``n_rows`` is the number of rules the layer's sharing gives it: ``n_in * n_out`` for
        ``per_synapse``, where row ``i * n_out + j`` is synapse ``i -> j``. For the per-synapse
        ``(n_in, n_out, k)`` arrays of the README's coefficient layout use
        :meth:`coefficients_per_synapse`.
        """
        params = self._loaded_params("read the coefficients of")
        tables = self._network.split_coefficients(params[:1, : self._network.num_coefficients])
        return [table[0].copy() for table in tables]

    def coefficients_per_synapse(self) -> list[np.ndarray]:
        """The first member's coefficients per layer as ``(n_in, n_out, k)``: ``W[i, j]`` is synapse i -> j.

        Shared rules (``per_post``, ``per_pre``, ``per_layer``) are repeated over the synapses that
        use them; with a bias, ``n_in`` counts the constant input as the last row.
        """
        tables = self.coefficients_by_layer()
        return [table[mapping] for table, mapping in zip(tables, self._network.sharing_maps)]

    def initial_params(self, rng: np.random.Generator) -> np.ndarray:
        """Coefficients ~ N(0, 0.1) (reference: N(0, 1) scaled down for stability), co-evolved
        initial weights ~ U(-0.1, 0.1), then the encoder's own initial parameters."""
        parts = [rng.normal(0.0, 0.1, self._network.num_coefficients)]
        if self._network.num_init_weights:
            parts.append(rng.uniform(-0.1, 0.1, self._network.num_init_weights))
        if self.num_encoder_params:
            parts.append(np.asarray(self.encoder.initial_params(), dtype=np.float64))
        return np.concatenate(parts).astype(np.float32)


class StaticPolicy(EvolvablePolicy):
    """The paper's baseline: the same network with fixed weights evolved directly by the ES."""

    kind = "static"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        hidden: Sequence[int] = (128, 64),
        bias: bool = False,
        encoder: Any | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, hidden, encoder)
        self._network = StaticNetwork(self.layer_sizes, bias=bias)

    @property
    def network(self) -> StaticNetwork:
        return self._network

    def config(self) -> dict[str, Any]:
        config = {"hidden": list(self.hidden), "bias": self._network.bias}
        return {**config, **({"encoder": self.encoder_spec} if self.encoder_spec else {})}

    def initial_params(self, rng: np.random.Generator) -> np.ndarray:
        """Weights ~ U(-0.1, 0.1) (the Hebbian agent's default start), then encoder parameters."""
        parts = [rng.uniform(-0.1, 0.1, self._network.num_params)]
        if self.num_encoder_params:
            parts.append(np.asarray(self.encoder.initial_params(), dtype=np.float64))
        return np.concatenate(parts).astype(np.float32)


POLICIES: dict[str, type[EvolvablePolicy]] = {"hebbian": HebbianPolicy, "static": StaticPolicy}


def make_policy(
    kind: str, observation_space: gym.Space, action_space: gym.Space, **config: Any
) -> EvolvablePolicy:
    """Build a policy by kind name (``hebbian`` or ``static``)."""
    if kind not in POLICIES:
        raise ValueError(f"unknown policy kind {kind!r}; accepted: {', '.join(POLICIES)}")
    cls = POLICIES[kind]
    if cls is StaticPolicy:
        unused = set(config) - {"hidden", "bias", "encoder"}
        if unused:
            raise ValueError(f"static policies take no {sorted(unused)} (those are Hebbian options)")
    accepted = sorted(constructor_keywords(cls, ("observation_space", "action_space")))
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(f"unknown {kind} policy option(s) {unknown}; accepted: {', '.join(accepted)}")
    try:
        return cls(observation_space, action_space, **config)
    except TypeError as err:  # a value of the wrong type, e.g. "hidden": "big"
        raise ValueError(f"bad {kind} policy options {config}: {err}") from err


def policy_from_metadata(
    meta: dict[str, Any], params: np.ndarray | None, source: str = "checkpoint"
) -> EvolvablePolicy:
    """Rebuild a policy from checkpoint metadata and check ``params`` against it."""
    if meta.get("kind") == "es_trainer":
        folder = Path(source).parent
        raise ValueError(
            f"{source} is the trainer's checkpoint (optimiser state), not a policy; load "
            f"{folder / 'policy.npz'} or {folder / 'best.npz'} (`hebb eval` takes the run folder {folder})"
        )
    try:
        kind = meta["policy"]
        config = dict(meta["config"])
        obs_space = space_from_json(meta["observation_space"])
        act_space = space_from_json(meta["action_space"])
    except KeyError as missing:
        raise ValueError(
            f"{source}: metadata lacks {missing}; is this a hebb-agents policy checkpoint?"
        ) from None
    policy = make_policy(kind, obs_space, act_space, **config)
    if params is None:
        raise ValueError(f"{source}: no 'params' array in the checkpoint")
    params = np.asarray(params)
    if params.reshape(-1).size != policy.num_params or params.ndim not in (1, 2):
        raise ValueError(
            f"{source}: parameter vector has shape {params.shape} but a {kind} policy with layers "
            f"{policy.layer_sizes} and {config} needs {policy.num_params} values"
        )
    policy.set_params(params.reshape(1, -1))
    policy.reset(0)
    return policy
