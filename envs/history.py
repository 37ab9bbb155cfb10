"""Observation history: the agent sees its last ``L`` observations as one array.

:class:`ObservationHistory` keeps a ring buffer of twice the window so that the window is always
one contiguous (or evenly strided) slice of it: a step writes the new observation twice (two
rows) and, with ``copy=False``, returns a view instead of shifting or copying the whole
``(L, *obs_shape)`` window.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hebb_envs._checks import MAX_ARRAY_BYTES, check_bool, check_int, size_text

FILLS = ("zeros", "first")


class ObservationHistory(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace each observation by the window of the last ``length`` observations, oldest first.

    ===========  =====  ========  ===========================================================
    parameter    type   default   meaning
    ===========  =====  ========  ===========================================================
    length       int    required  L, observations in the window (>= 1); row L-1 is the newest
    stride       int    1         keep every ``stride``-th observation: row L-1-i is the one
                                  from ``i * stride`` steps ago, so the window spans
                                  ``(L - 1) * stride + 1`` steps
    fill         str    "zeros"   what stands for the steps before the episode began: "zeros"
                                  (needs 0 inside the observation bounds) or "first" (the
                                  reset observation repeated)
    copy         bool   True      return an independent array each step (Gymnasium's
                                  contract, checked by ``check_env``); ``False`` returns a
                                  read-only view into the ring buffer instead, valid until the
                                  next ``step``: no copy of the window per step, safe inside
                                  vector envs and Stable-Baselines3, which copy observations
                                  into their own buffers. ``reset`` starts a new buffer, so an
                                  episode's last window (e.g. SB3's ``terminal_observation``)
                                  stays valid
    flag_fill    bool   False     append a last column to each row: 1.0 where the row stands
                                  for a step before the episode began, 0.0 for a real
                                  observation (1-D observations only); ``LSHHistoryExtractor(
                                  fill_flag=True)`` masks the flagged rows out of attention
    ===========  =====  ========  ===========================================================

    The observation space is a ``Box`` of shape ``(L, *obs_shape)`` with the wrapped bounds
    repeated along the first axis (``(L, obs_dim + 1)`` with ``flag_fill``, the flag in [0, 1]).
    Works for ``Box`` observation spaces only. Integers may be whole floats (``4.0``), never bools;
    the ring buffer (``2 * ((L - 1) * stride + 1)`` observations) must fit in 1 GiB.
    """

    def __init__(
        self,
        env: gym.Env,
        length: int,
        stride: int = 1,
        fill: str = "zeros",
        copy: bool = True,
        flag_fill: bool = False,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, length=length, stride=stride, fill=fill, copy=copy, flag_fill=flag_fill
        )
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, spaces.Box):
            raise ValueError(f"ObservationHistory needs a Box observation space, got {space!r}")
        length = check_int("length", length, 1)
        stride = check_int("stride", stride, 1)
        copy = check_bool("copy", copy)
        flag_fill = check_bool("flag_fill", flag_fill)
        if not isinstance(fill, str) or fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; accepted: {', '.join(FILLS)}")
        if fill == "zeros" and not (np.all(space.low <= 0) and np.all(space.high >= 0)):
            raise ValueError('fill="zeros" needs 0 inside the observation bounds; use fill="first"')
        if flag_fill and len(space.shape) != 1:
            raise ValueError(f"flag_fill needs 1-D observations (it appends a column), got {space.shape}")
        span = (length - 1) * stride + 1
        row_bytes = (int(np.prod(space.shape)) + flag_fill) * space.dtype.itemsize
        if 2 * span * row_bytes > MAX_ARRAY_BYTES:
            raise ValueError(
                f"length={length}, stride={stride} need a ring buffer of 2 * ((length - 1) * stride + 1) "
                f"observations ({size_text(2 * span * row_bytes)}); accepted: at most "
                f"{size_text(MAX_ARRAY_BYTES)}, i.e. (length - 1) * stride + 1 <= "
                f"{MAX_ARRAY_BYTES // (2 * row_bytes)} for this observation space"
            )
        self.length = length
        self.stride = stride
        self.fill = fill
        self.copy = copy
        self.flag_fill = flag_fill
        low, high = space.low, space.high
        if self.flag_fill:  # the flag column: 1 before the episode began, 0 for a real observation
            low, high = np.append(low, 0).astype(space.dtype), np.append(high, 1).astype(space.dtype)
        self.observation_space = spaces.Box(
            low=np.repeat(low[None], self.length, axis=0),
            high=np.repeat(high[None], self.length, axis=0),
            dtype=space.dtype,
        )
        # span raw steps are needed; each is stored at rows p and p + span of the buffer, so the
        # last span steps are always buffer[p + 1 : p + 1 + span] with the newest at the end.
        self.span = (self.length - 1) * self.stride + 1
        row = self.observation_space.shape[1:]  # one observation (with its flag)
        self._buffer = np.zeros((2 * self.span, *row), dtype=space.dtype)  # (2 * span, *row)
        self._pos = self.span - 1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        # A new buffer, not an overwrite: the last episode's final window may still be held as a
        # view (vector envs keep it as the terminal observation while they reset).
        self._buffer = np.zeros_like(self._buffer)
        values = self._buffer[:, :-1] if self.flag_fill else self._buffer
        if self.fill == "first":
            values[:] = np.asarray(obs, dtype=self._buffer.dtype)
        if self.flag_fill:
            self._buffer[:, -1] = 1  # every row is fill until an observation lands in it
        self._pos = self.span - 1
        return self.observation(obs), info

    def observation(self, observation: Any) -> np.ndarray:
        """Push ``observation`` and return the window ``(L, *obs_shape)``."""
        self._pos = (self._pos + 1) % self.span
        if self.flag_fill:
            observation = np.append(np.asarray(observation, dtype=self._buffer.dtype), 0)
        self._buffer[self._pos] = observation
        self._buffer[self._pos + self.span] = observation
        window = self._buffer[self._pos + 1 : self._pos + 1 + self.span : self.stride]
        if self.copy:
            return window.copy()
        window = window.view()
        window.flags.writeable = False
        return window


__all__ = ["FILLS", "ObservationHistory"]
