"""Evaluate a saved or in-memory agent: episodes with fixed seeds, returns and forward progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hebb_agents.policy import EvolvablePolicy
from hebb_agents.rollout import make_env


@dataclass
class EpisodeStats:
    """Per-episode results of one agent on one environment configuration."""

    returns: np.ndarray  # (episodes,)
    distances: np.ndarray  # (episodes,) final minus initial x position; NaN if the env has none
    lengths: np.ndarray  # (episodes,)

    def summary(self) -> dict[str, float]:
        """Mean and standard deviation of return, distance and length."""
        out = {}
        for name in ("returns", "distances", "lengths"):
            values = getattr(self, name)
            out[f"{name}_mean"] = float(np.mean(values))
            out[f"{name}_std"] = float(np.std(values))
        return out


def run_episodes(
    policy: EvolvablePolicy,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> EpisodeStats:
    """Run ``episodes`` episodes of a single agent (its first member); episode ``e`` uses seed ``seed + e``.

    The agent's weights are reset at every episode start, as during training.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_env(env_id, **(env_kwargs or {}))
    params = policy.get_params()[:1]
    policy.set_params(params)
    returns, distances, lengths = [], [], []
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            policy.reset(seed + episode)
            x0 = info.get("x_position", np.nan)
            x = x0
            total, steps, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(policy.act(obs))
                total += float(reward)
                steps += 1
                x = info.get("x_position", x)
                done = terminated or truncated or (max_steps is not None and steps >= max_steps)
            returns.append(total)
            distances.append(x - x0)
            lengths.append(steps)
    finally:
        env.close()
    return EpisodeStats(np.array(returns), np.array(distances, dtype=float), np.array(lengths))
