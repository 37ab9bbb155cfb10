"""Long-horizon recall task for history encoders.

An episode has three phases, and the observation says which one is running:

1. **cue** (``cue_steps`` steps): one of ``n_symbols`` symbols is shown one-hot;
2. **delay** (``delay`` steps): distractors fill the symbol channels; actions are ignored and pay 0;
3. **query** (one step): the symbol channels are blank and the query flag is up; the action taken on
   this observation is scored (+1 if it names the cue, 0 otherwise) and the episode terminates.

An episode therefore lasts exactly ``cue_steps + delay + 1`` steps and always terminates by itself
(never truncates). A policy that sees only the current observation cannot know the cue at the query
step and scores 1/K on average; one that remembers the cue scores 1.

Observation layout, float32 in [0, 1], shape ``(n_symbols + 2,)``::

    [symbol channels (n_symbols) | cue flag | query flag]

Distractors (``distractor=``):

- ``"symbols"`` (default): a random one-hot symbol every delay step, drawn from the same alphabet as the
  cue, so only the cue flag tells the cue apart from a distractor (the hard case);
- ``"uniform"``: independent U(0, 1) noise in every symbol channel;
- ``"zeros"``: blank symbol channels (pure delay, no distraction).

Two action variants: ``Discrete(n_symbols)`` (the action is the answer) and, with ``continuous=True``,
``Box(-1, 1, (n_symbols,))`` where the answer is ``argmax(action)`` (first index on ties).

The whole episode's observations are drawn at ``reset`` (one vectorised numpy call), so a step is an
array lookup; a 4,096-step delay costs a few microseconds per step. That array takes ``4 (K + 2)`` bytes
per step, so ``delay`` is bounded by :data:`MAX_DELAY` (2**20 steps: 24 MiB and a reset of 25-150 ms at
K = 4) and the whole array by 1 GiB (:data:`hebb_envs._checks.MAX_ARRAY_BYTES`), which bounds
``n_symbols`` and ``cue_steps`` too; a larger request is a ``ValueError`` at construction, not a
``MemoryError`` at the first reset.

``hebb/Memory-v0`` is :class:`MemoryTask` (discrete unless ``continuous=True`` is passed, as runs of
earlier versions may have saved); ``hebb/MemoryContinuous-v0`` is :class:`MemoryContinuousTask`, which
refuses ``continuous=False`` (``gym.make`` would otherwise merge it over the id's own setting and
hand back the discrete task under the continuous id) and names ``hebb/Memory-v0`` instead.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hebb_envs._checks import MAX_ARRAY_BYTES, check_bool, check_int, check_real, size_text

DISTRACTORS = ("symbols", "uniform", "zeros")
# The longest delay: 2**20 steps, 16,384 times the default's 64 and far beyond what a history encoder
# attends over (thousands of steps), while an episode array at K = 4 stays at 24 MiB (see the module doc).
MAX_DELAY = 2**20


class MemoryTask(gym.Env):
    """Recall a cue shown at the start of the episode after a long, noisy delay.

    ================  =====  ==========  =========================================================
    parameter         type   default     meaning
    ================  =====  ==========  =========================================================
    n_symbols         int    4           K, number of cue symbols (>= 2); chance score is 1/K
    delay             int    64          steps between the end of the cue and the query, in
                                         [0, MAX_DELAY = 2**20]
    cue_steps         int    1           steps during which the cue is visible (>= 1)
    distractor        str    "symbols"   what fills the delay: "symbols", "uniform" or "zeros"
    continuous        bool   False       Box(-1, 1, (K,)) actions answered by argmax instead of
                                         Discrete(K)
    correct_reward    float  1.0         reward for the right answer at the query step
    wrong_reward      float  0.0         reward for a wrong answer at the query step
    render_mode       str    None        None or "rgb_array" (the current observation as a strip of
                                         grey cells, 16 px each)
    ================  =====  ==========  =========================================================

    Integers may be given as whole floats (``64.0``), never as bools; the episode array
    ``(cue_steps + delay + 1, K + 2)`` float32 must fit in 1 GiB.

    ``info`` carries ``phase`` ("cue", "delay", "query" for the observation just returned), ``cue``
    (the symbol to recall), ``step`` and, on the final step, ``answer`` and ``correct``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        n_symbols: int = 4,
        delay: int = 64,
        cue_steps: int = 1,
        distractor: str = "symbols",
        continuous: bool = False,
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.n_symbols = check_int("n_symbols", n_symbols, 2)
        self.delay = check_int("delay", delay, 0, MAX_DELAY)
        self.cue_steps = check_int("cue_steps", cue_steps, 1)
        if not isinstance(distractor, str) or distractor not in DISTRACTORS:
            raise ValueError(f"unknown distractor {distractor!r}; accepted: {', '.join(DISTRACTORS)}")
        self.distractor = distractor
        self.continuous = check_bool("continuous", continuous)
        self.correct_reward = check_real("correct_reward", correct_reward)
        self.wrong_reward = check_real("wrong_reward", wrong_reward)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; accepted: None, rgb_array")
        self.render_mode = render_mode
        episode_bytes = (self.cue_steps + self.delay + 1) * (self.n_symbols + 2) * 4
        if episode_bytes > MAX_ARRAY_BYTES:
            raise ValueError(
                f"n_symbols={n_symbols!r}, cue_steps={cue_steps!r}, delay={delay!r} need a (cue_steps + "
                f"delay + 1, n_symbols + 2) float32 episode array of {size_text(episode_bytes)}, drawn at "
                f"every reset; accepted: at most {size_text(MAX_ARRAY_BYTES)}"
            )

        self.episode_length = self.cue_steps + self.delay + 1
        self.observation_space = spaces.Box(0.0, 1.0, (self.n_symbols + 2,), dtype=np.float32)
        if self.continuous:
            self.action_space = spaces.Box(-1.0, 1.0, (self.n_symbols,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(self.n_symbols)

        self._cue_flag = self.n_symbols
        self._query_flag = self.n_symbols + 1
        self._observations: np.ndarray | None = None  # (episode_length, K + 2)
        self._cue = 0
        self._t = 0

    def _phase(self, t: int) -> str:
        if t < self.cue_steps:
            return "cue"
        if t < self.cue_steps + self.delay:
            return "delay"
        return "query"

    def _draw_episode(self) -> np.ndarray:
        """All observations of one episode, row t is what the agent sees before its t-th action."""
        k, rng = self.n_symbols, self.np_random
        obs = np.zeros((self.episode_length, k + 2), dtype=np.float32)  # (T, K + 2)
        obs[: self.cue_steps, self._cue] = 1.0
        obs[: self.cue_steps, self._cue_flag] = 1.0
        delay_rows = slice(self.cue_steps, self.cue_steps + self.delay)
        if self.delay and self.distractor == "symbols":
            symbols = rng.integers(0, k, size=self.delay)  # (delay,)
            obs[delay_rows][np.arange(self.delay), symbols] = 1.0
        elif self.delay and self.distractor == "uniform":
            obs[delay_rows, :k] = rng.random((self.delay, k), dtype=np.float32)
        obs[-1, self._query_flag] = 1.0
        return obs

    def _info(self) -> dict[str, Any]:
        return {"phase": self._phase(self._t), "cue": self._cue, "step": self._t}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with a new cue (drawn from the env's seeded generator)."""
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(0, self.n_symbols))
        self._observations = self._draw_episode()
        self._t = 0
        return self._observations[0].copy(), self._info()

    def _answer(self, action: Any) -> int:
        if self.continuous:
            a = np.asarray(action, dtype=np.float32).reshape(-1)
            if a.shape != (self.n_symbols,):
                raise ValueError(f"action must have shape ({self.n_symbols},), got {np.shape(action)}")
            return int(np.argmax(a))
        value, n = np.asarray(action), self.n_symbols
        if value.size != 1 or value.dtype.kind not in "iu" or not 0 <= int(value.reshape(())) < n:
            raise ValueError(f"action must be an integer in [0, {n}) (Discrete({n})), got {action!r}")
        return int(value.reshape(()))

    def render(self) -> np.ndarray | None:
        """The current observation as an ``(16, 16 * (K + 2), 3)`` uint8 image (``rgb_array`` mode)."""
        if self.render_mode != "rgb_array":
            return None
        if self._observations is None:
            row = np.zeros(self.observation_space.shape, dtype=np.float32)
        else:
            row = self._observations[min(self._t, self.episode_length - 1)]
        cells = np.repeat(np.repeat((row * 255).astype(np.uint8)[None, :], 16, axis=0), 16, axis=1)
        return np.repeat(cells[:, :, None], 3, axis=2)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one step; only the action taken on the query observation is scored."""
        if self._observations is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.episode_length:
            raise RuntimeError("episode has terminated; call reset()")
        answer = self._answer(action)  # checked at every step: a wrong action fails now, not after the delay
        at_query = self._t == self.episode_length - 1
        self._t += 1
        if not at_query:
            return self._observations[self._t].copy(), 0.0, False, False, self._info()
        correct = answer == self._cue
        reward = self.correct_reward if correct else self.wrong_reward
        info = {"phase": "done", "cue": self._cue, "step": self._t, "answer": answer, "correct": correct}
        # The final observation is the query row again: there is no next phase to show.
        return self._observations[-1].copy(), reward, True, False, info


class MemoryContinuousTask(MemoryTask):
    """``hebb/MemoryContinuous-v0``: :class:`MemoryTask` with Box actions (``continuous=True``, fixed)."""

    def __init__(self, continuous: bool = True, **kwargs: Any) -> None:
        if not check_bool("continuous", continuous):
            raise ValueError(
                "hebb/MemoryContinuous-v0 has Box actions and accepts only continuous=True (or no "
                f"continuous), got continuous={continuous!r}; use gym.make('hebb/Memory-v0') instead"
            )
        super().__init__(continuous=True, **kwargs)


__all__ = ["DISTRACTORS", "MAX_DELAY", "MemoryContinuousTask", "MemoryTask"]
