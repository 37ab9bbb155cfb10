"""Observation-history encoders: a window of past observations -> one feature vector.

- :class:`HistoryEncoder`: ``(B, L, obs_dim) -> (B, out_dim)``; a linear embedding plus a
  sinusoidal embedding of each token's age (steps before the newest), a reversible stack of
  LSH self-attention + chunked feed-forward blocks, then pooling.
- :class:`LSHHistoryExtractor`: the same as a Stable-Baselines3 ``BaseFeaturesExtractor`` for
  ``Box`` observations of shape ``(L, *obs_shape)`` (as produced by
  :class:`hebb_envs.history.ObservationHistory`).
- :class:`LSHPolicyEncoder`: the same as a Hebbian-policy front end; it keeps each member's
  last ``L`` observations itself and runs the encoder on them.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from hebb_agents.encoders.base import TorchPolicyEncoder
from hebb_agents.encoders.reversible import reformer_stack
from hebb_agents.options import check_bool, check_int, check_optional_int, check_options, constructor_keywords

POOLINGS = ("last", "mean", "attention")
POSITIONS = ("sinusoidal", "learned", "none")


def sinusoidal_embedding(positions: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``(L,)`` positions -> ``(L, dim)`` sin/cos features at geometrically spaced frequencies.

    Built on ``positions``' device, computed in float32 and returned in ``dtype`` (default float32).
    """
    half = (dim + 1) // 2
    steps = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = torch.exp(-math.log(10_000.0) * steps / half)
    angles = positions.float()[:, None] * freqs[None]  # (L, half)
    features = torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :dim]
    return features if dtype is None else features.to(dtype)


class HistoryEncoder(nn.Module):
    """Encode an observation history ``(B, L, obs_dim)`` (oldest first) into ``(B, out_dim)``.

    Args:
        obs_dim: width of one observation.
        d_model: token width inside the encoder.
        depth: number of reversible (attention, feed-forward) blocks.
        heads: attention heads.
        bucket_size: LSH chunk length.
        n_hashes: LSH rounds.
        causal: tokens attend only to older tokens (the newest sees the whole window).
        ff_mult: feed-forward hidden width as a multiple of ``d_model``.
        ff_chunks: sequence chunks for the feed-forward (memory, same result).
        attn_dropout, ff_dropout: dropout probabilities.
        reversible: train with activation recomputation (memory flat in depth).
        pooling: "last" (the newest token's state: with causal attention it has seen the whole
            window through LSH attention), "mean" (over unmasked tokens) or "attention" (a
            learned query attending to every token with full softmax, ``O(L)``).
        position: "sinusoidal" (of the age, so windows of any length share one meaning of
            "k steps ago"), "learned" (needs ``max_len``) or "none".
        max_len: longest window for learned position embeddings.
        out_dim: feature width (default ``d_model``); features pass through ``tanh``.
        lsh_seed: fix the LSH rotations (same hashes every call) or None to redraw them on every
            call, in ``eval()`` too, so that the features are random rather than a function of
            the history. The seed is a constructor argument, not part of the ``state_dict``.

    Sizes (``obs_dim``, ``d_model``, ``depth``, ``heads``, ``bucket_size``, ``n_hashes``, ``ff_mult``,
    ``ff_chunks``, ``max_len``, ``out_dim``) are ints >= 1 (any integer type). With ``causal`` an
    early token's state can still change when a later observation changes: later tokens move the
    chunk boundaries of LSH attention's sorted sequence (see
    :class:`~hebb_agents.encoders.lsh.LSHAttention`); ``pooling="last"`` is not affected.
    """

    def __init__(
        self,
        obs_dim: int,
        d_model: int = 32,
        depth: int = 1,
        heads: int = 2,
        bucket_size: int = 32,
        n_hashes: int = 2,
        causal: bool = True,
        ff_mult: int = 2,
        ff_chunks: int = 1,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        reversible: bool = True,
        pooling: str = "last",
        position: str = "sinusoidal",
        max_len: int | None = None,
        out_dim: int | None = None,
        lsh_seed: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; accepted: {', '.join(POOLINGS)}")
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; accepted: {', '.join(POSITIONS)}")
        max_len = check_optional_int("max_len", max_len)
        if position == "learned" and max_len is None:
            raise ValueError('position="learned" needs max_len (the longest window, an int >= 1)')
        self.obs_dim = check_int("obs_dim", obs_dim)
        self.d_model = check_int("d_model", d_model)
        self.out_dim = self.d_model if out_dim is None else check_int("out_dim", out_dim)
        depth = check_int("depth", depth)
        ff_mult = check_int("ff_mult", ff_mult)
        ff_chunks = check_int("ff_chunks", ff_chunks)
        lsh_seed = check_optional_int("lsh_seed", lsh_seed, minimum=None)
        causal = check_bool("causal", causal)
        reversible = check_bool("reversible", reversible)
        self.pooling = pooling
        self.position = position
        self.max_len = max_len
        self.embed = nn.Linear(self.obs_dim, self.d_model)
        if max_len is not None and position == "learned":
            self.age_embedding = nn.Embedding(max_len, self.d_model)
        self.stack = reformer_stack(
            self.d_model,
            depth,
            ff_mult=ff_mult,
            ff_chunks=ff_chunks,
            ff_dropout=ff_dropout,
            reversible=reversible,
            heads=heads,
            bucket_size=bucket_size,
            n_hashes=n_hashes,
            causal=causal,
            attn_dropout=attn_dropout,
            seed=lsh_seed,
        )
        self.norm = nn.LayerNorm(self.d_model)
        if pooling == "attention":
            self.pool_query = nn.Parameter(torch.randn(self.d_model) / math.sqrt(self.d_model))
        self.head = nn.Linear(self.d_model, self.out_dim)

    def forward(self, history: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``history`` ``(B, L, obs_dim)`` (newest last); mask ``(B, L)`` True = no observation."""
        if history.dim() != 3 or history.shape[-1] != self.obs_dim:
            raise ValueError(f"expected history (B, L, {self.obs_dim}), got {tuple(history.shape)}")
        length = history.shape[1]
        x = self.embed(history)  # (B, L, d)
        ages = torch.arange(length - 1, -1, -1, device=history.device)
        if self.position == "sinusoidal":
            x = x + sinusoidal_embedding(ages, self.d_model, dtype=x.dtype)
        elif self.position == "learned":
            if length > self.age_embedding.num_embeddings:
                raise ValueError(f"window of {length} is longer than max_len={self.max_len}")
            x = x + self.age_embedding(ages)
        h = self.stack(torch.cat([x, x], dim=-1), key_padding_mask=key_padding_mask)
        h1, h2 = h.chunk(2, dim=-1)
        h = self.norm((h1 + h2) / 2)  # (B, L, d)
        if self.pooling == "last":
            pooled = h[:, -1]
        elif self.pooling == "mean":
            keep = (
                torch.ones_like(h[..., 0])
                if key_padding_mask is None
                else (~key_padding_mask).to(h.dtype)  # (B, L)
            )
            pooled = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        else:
            scores = h @ self.pool_query / math.sqrt(self.d_model)  # (B, L)
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask, -1e9)
            pooled = (torch.softmax(scores, dim=-1)[..., None] * h).sum(1)
        return torch.tanh(self.head(pooled))


class LSHHistoryExtractor(BaseFeaturesExtractor):
    """Stable-Baselines3 features extractor over an observation history.

    Use ``policy_kwargs=dict(features_extractor_class=LSHHistoryExtractor,
    features_extractor_kwargs=dict(features_dim=64, d_model=32, ...))`` with an environment
    wrapped in ``ObservationHistory``. The observation space must be a ``Box`` of shape
    ``(L, *obs_shape)``; trailing axes are flattened into ``obs_dim``. With ``fill_flag`` the last
    channel of each row is ``ObservationHistory(flag_fill=True)``'s flag, and flagged rows (steps
    before the episode began) are masked out of attention and pooling. Other keyword arguments go
    to :class:`HistoryEncoder` (:meth:`options` lists every accepted name); with
    ``position="learned"``, ``max_len`` defaults to L.

    Notes for SB3 users:

    - Set ``lsh_seed``: with the default ``lsh_seed=None`` the LSH rotations are redrawn on every
      forward, in ``eval()`` too, so ``model.predict(obs, deterministic=True)`` is not a pure
      function of the observation. The seed is a constructor argument (it lives in
      ``features_extractor_kwargs``), not part of the ``state_dict``.
    - ``fill_flag`` reads the raw last column (flagged where ``> 0.5``). Under ``VecNormalize`` with
      ``norm_obs=True`` that column is normalised and the mask is misread: use ``norm_obs=False``,
      or leave ``fill_flag`` (and ``ObservationHistory``'s ``flag_fill``) off with ``VecNormalize``.
    - The wrapper's option is ``ObservationHistory(flag_fill=...)``, the extractor's ``fill_flag``.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 64,
        fill_flag: bool = False,
        **encoder_kwargs: Any,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) < 2:
            raise ValueError(
                "LSHHistoryExtractor needs a Box observation of shape (L, *obs_shape), "
                f"got {observation_space}"
            )
        check_options("LSHHistoryExtractor", encoder_kwargs, self.options())
        features_dim = check_int("features_dim", features_dim)
        fill_flag = check_bool("fill_flag", fill_flag)
        if observation_space.shape[0] < 1:
            raise ValueError(
                f"LSHHistoryExtractor needs a history of at least one step (L >= 1), got shape "
                f"{observation_space.shape}"
            )
        super().__init__(observation_space, features_dim)
        self.window = int(observation_space.shape[0])
        self.fill_flag = fill_flag
        self.row_size = int(np.prod(observation_space.shape[1:]))
        obs_dim = self.row_size - int(self.fill_flag)
        if obs_dim < 1:
            need = "an observation plus the fill flag" if self.fill_flag else "an observation"
            raise ValueError(f"LSHHistoryExtractor needs rows of {need}, got {observation_space}")
        self.encoder = _window_encoder(
            "LSHHistoryExtractor", obs_dim, self.window, features_dim, encoder_kwargs
        )

    @classmethod
    def options(cls) -> set[str]:
        """Keyword arguments the constructor accepts besides ``observation_space``."""
        return _options_passing_on(cls)

    def forward(self, observations: Tensor) -> Tensor:
        expected = tuple(self._observation_space.shape)
        if tuple(observations.shape[1:]) != expected:
            raise ValueError(
                f"LSHHistoryExtractor expected observations (B, {', '.join(map(str, expected))}), "
                f"got {tuple(observations.shape)}"
            )
        history = observations.reshape(observations.shape[0], self.window, self.row_size).float()
        if self.fill_flag:
            return self.encoder(history[..., :-1], key_padding_mask=history[..., -1] > 0.5)
        return self.encoder(history)


def _window_encoder(
    owner: str, obs_dim: int, window: int, out_dim: int, encoder_kwargs: dict[str, Any]
) -> HistoryEncoder:
    """The :class:`HistoryEncoder` of a front end with a fixed ``window``: learned positions get
    ``max_len = window`` unless given, and a ``max_len`` shorter than the window is refused here
    rather than at the first call."""
    if encoder_kwargs.get("position") == "learned":
        encoder_kwargs = {"max_len": window, **encoder_kwargs}
    encoder = HistoryEncoder(obs_dim, out_dim=out_dim, **encoder_kwargs)
    if encoder.position == "learned" and encoder.max_len is not None and encoder.max_len < window:
        raise ValueError(
            f"{owner}: window of {window} is longer than max_len={encoder.max_len} "
            "(learned positions need max_len >= window; leave it out to use the window)"
        )
    return encoder


def _options_passing_on(cls: type) -> set[str]:
    """``cls``'s own keyword arguments (besides ``observation_space``) and the
    :class:`HistoryEncoder` arguments it passes on (it sets obs_dim and out_dim itself)."""
    own = constructor_keywords(cls, ["observation_space"])
    return own | constructor_keywords(HistoryEncoder, ("obs_dim", "out_dim"))


class _MaskedHistory(nn.Module):
    """Adapter: the policy encoder's single tensor input ``(N, L, obs_dim + 1)``.

    The last channel flags steps before the episode began; it becomes the padding mask, so one
    tensor carries both and ``TorchPolicyEncoder`` can vmap it.
    """

    def __init__(self, encoder: HistoryEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, packed: Tensor) -> Tensor:
        return self.encoder(packed[..., :-1], key_padding_mask=packed[..., -1] > 0.5)


class LSHPolicyEncoder(TorchPolicyEncoder):
    """Hebbian-policy front end: each member's last ``window`` observations through a HistoryEncoder.

    Args:
        observation_space: the environment's ``Box`` observation space (one observation).
        window: L, observations kept per member (the current one included).
        evolvable: co-evolve the encoder weights (flat, ``named_parameters`` order, C order) or
            keep fixed random ones.
        seed: seed of the random weights and of the (fixed) LSH rotations.
        feature_dim: width of the features fed to the Hebbian layers.
        encoder_kwargs: more :class:`HistoryEncoder` arguments (d_model, depth, heads, ...;
            :meth:`options` lists every accepted name); with ``position="learned"``, ``max_len``
            defaults to ``window``.

    Histories live in a ring buffer ``(P, 2 * window, obs_dim)``: a step writes two rows per
    member and reads a contiguous window, no shifting. Steps before the episode began are
    masked out of attention.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        window: int = 64,
        evolvable: bool = False,
        seed: int = 0,
        feature_dim: int = 32,
        **encoder_kwargs: Any,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box):
            raise ValueError(f"LSHPolicyEncoder needs a Box observation space, got {observation_space}")
        check_options("LSHPolicyEncoder", encoder_kwargs, self.options())
        self.window = check_int("window", window)
        seed = check_int("seed", seed, minimum=None)
        feature_dim = check_int("feature_dim", feature_dim)
        evolvable = check_bool("evolvable", evolvable)
        self.obs_shape = tuple(observation_space.shape)
        self.obs_dim = int(np.prod(self.obs_shape))
        if self.obs_dim < 1:
            raise ValueError(
                f"LSHPolicyEncoder needs observations of at least one value, got {observation_space}"
            )
        encoder_kwargs.setdefault("lsh_seed", seed)
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG stream untouched
            torch.manual_seed(seed)
            encoder = _window_encoder(
                "LSHPolicyEncoder", self.obs_dim, self.window, feature_dim, encoder_kwargs
            )
            net = _MaskedHistory(encoder)
        super().__init__(net, feature_dim, evolvable=evolvable)
        self._buffer = np.zeros((0, 2 * self.window, self.obs_dim + 1), dtype=np.float32)
        self._pos = self.window - 1

    @classmethod
    def options(cls) -> set[str]:
        """Keyword arguments the constructor accepts besides ``observation_space``."""
        return _options_passing_on(cls)

    def reset(self, population: int, members: np.ndarray | None = None) -> None:
        """Clear every member's history, or only ``members``' (their episodes restart alone)."""
        if members is not None and population == self.population:
            self._buffer[members] = 0.0
            self._buffer[members, :, -1] = 1.0
            return
        super().reset(population)
        # Last channel = 1 marks "no observation yet" (masked in attention).
        self._buffer = np.zeros((population, 2 * self.window, self.obs_dim + 1), dtype=np.float32)
        self._buffer[..., -1] = 1.0
        self._pos = self.window - 1

    def encode(self, obs: np.ndarray, params: np.ndarray | None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[1:] != self.obs_shape:
            raise ValueError(
                f"expected observations (P, *obs_shape) = {(self.population, *self.obs_shape)}, got "
                f"{obs.shape} (an observation of another environment?)"
            )
        if obs.shape[0] != self.population:
            raise ValueError(
                f"expected observations of {self.population} members (call reset(P) first), got {obs.shape}"
            )
        self._pos = (self._pos + 1) % self.window
        row = self._buffer[:, self._pos]
        row[:, :-1] = obs.reshape(self.population, -1)
        row[:, -1] = 0.0  # an observation is present
        self._buffer[:, self._pos + self.window] = row
        packed = torch.from_numpy(self._buffer[:, self._pos + 1 : self._pos + 1 + self.window])
        with torch.no_grad():
            features = self.run(packed, params)
        return features.numpy().astype(np.float32, copy=False)


__all__ = [
    "POOLINGS",
    "POSITIONS",
    "HistoryEncoder",
    "LSHHistoryExtractor",
    "LSHPolicyEncoder",
    "sinusoidal_embedding",
]
