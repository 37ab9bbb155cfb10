"""OpenAI evolution strategy: Salimans et al., "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning" (2017), https://arxiv.org/abs/1703.03864.

The optimiser maximises a fitness of a flat parameter vector ``h`` (here: all Hebbian coefficients,
see :mod:`hebb_agents.rules` for their layout). Each generation it samples ``popsize`` candidates
``h + sigma * eps_i`` with ``eps_i ~ N(0, I)``, receives their fitness ``F_i`` and moves along the
estimated gradient ``1 / (popsize * sigma) * sum_i F_i * eps_i`` (plain SGD, as the 2020 reference
implementation does, or Adam). It is pure array math: ``ask`` returns candidates, ``tell`` takes
their fitness; environments, workers and files live elsewhere (:mod:`hebb_agents.trainer`).

Noise regeneration
------------------
All randomness is a pure function of the run's ``entropy`` (from ``seed``), the generation number
and a row index, never of a hidden generator that advances:

* :func:`generation_seed` ``(entropy, generation) -> int`` names the generation's noise;
* :func:`noise_row` ``(generation_seed, row, num_params)`` draws one ``eps`` row from its own
  stream, so any row is rebuilt without drawing the rows before it;
* :func:`candidate` ``(mean, sigma, generation_seed, index)`` rebuilds candidate ``index`` bit for
  bit as :meth:`OpenES.ask` made it.

A worker therefore needs only ``(mean, sigma, generation_seed, index)`` (a few numbers plus the
mean it already holds) instead of a shipped vector, and a run resumed from :meth:`OpenES.state_dict`
draws the same noise as the run that never stopped. With antithetic sampling, candidate ``2j`` is
``mean + sigma * eps_j`` and candidate ``2j + 1`` is ``mean - sigma * eps_j`` (rows interleaved in
pairs); without it, candidate ``i`` is ``mean + sigma * eps_i``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from hebb_agents.options import check_decay, check_positive

# SB3 style: a schedule maps the remaining progress (1 at the first generation, 0 at the last) to a value.
Schedule = Callable[[float], float]

OPTIMIZERS = ("sgd", "adam")
DTYPES = ("float32", "float64")
STATE_FORMAT = "hebb_agents.OpenES/1"

# Spawn keys under the run's entropy: one stream for the initial mean, one per generation for noise.
_INIT_KEY = 0
_NOISE_KEY = 1


def linear_schedule(start: float, end: float) -> Schedule:
    """A schedule going linearly from ``start`` (first generation) to ``end`` (last generation)."""
    start, end = float(start), float(end)

    def schedule(progress_remaining: float) -> float:
        return end + (start - end) * progress_remaining

    return schedule


def generation_seed(entropy: int, generation: int) -> int:
    """The 64-bit seed of one generation's noise, derived from the run's ``entropy``."""
    words = np.random.SeedSequence(entropy, spawn_key=(_NOISE_KEY, int(generation))).generate_state(
        2, np.uint32
    )
    return int(words[0]) | (int(words[1]) << 32)


def noise_row(
    gen_seed: int,
    row: int,
    num_params: int,
    dtype: np.dtype | str = np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Noise row ``eps_row ~ N(0, I)`` (num_params,) of a generation; every row has its own stream.
    ``out``: a ``(num_params,)`` array of that dtype to draw into (the same values)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(gen_seed, spawn_key=(int(row),))))
    return rng.standard_normal(num_params, dtype=np.dtype(dtype), out=out)


def noise_for(
    gen_seed: int,
    n_rows: int,
    num_params: int,
    dtype: np.dtype | str = np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """All noise rows of a generation: (n_rows, num_params); ``n_rows`` is popsize/2 when antithetic.
    ``out``: a C-contiguous ``(n_rows, num_params)`` array of that dtype to draw into."""
    shape, dtype = (n_rows, num_params), np.dtype(dtype)
    if out is None:
        out = np.empty(shape, dtype=dtype)  # (n_rows, num_params)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous {dtype} array of shape {shape}, got {out.dtype} {out.shape}"
        )
    for row in range(n_rows):
        noise_row(gen_seed, row, num_params, dtype, out=out[row])
    return out


def candidate_noise_index(index: int, antithetic: bool) -> tuple[int, int]:
    """Which noise row candidate ``index`` uses and with which sign (+1 or -1)."""
    if antithetic:
        return index // 2, (1 if index % 2 == 0 else -1)
    return index, 1


def candidate(
    mean: np.ndarray, sigma: float, gen_seed: int, index: int, *, antithetic: bool = True
) -> np.ndarray:
    """Rebuild candidate ``index`` of a generation from the mean, sigma and the generation seed.

    Bit-identical to row ``index`` of :meth:`OpenES.ask` for the same inputs.
    """
    mean = np.asarray(mean)
    row, sign = candidate_noise_index(index, antithetic)
    scaled = np.asarray(sigma, dtype=mean.dtype) * noise_row(gen_seed, row, mean.shape[0], mean.dtype)
    return mean + scaled if sign > 0 else mean - scaled


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Centred ranks in [-0.5, 0.5] (float64); ties share their mean rank, non-finite values rank last."""
    values = np.where(np.isfinite(fitness), fitness, -np.inf).astype(np.float64)
    size = values.shape[0]
    if size == 1:
        return np.zeros(1)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], size]
    ranks = np.empty(size)
    ranks[order] = ((starts + ends - 1) / 2.0)[group]
    return ranks / (size - 1) - 0.5


def _standardise(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance; all-equal values give zeros (no information, no update)."""
    std = values.std()
    if not np.isfinite(std) or std == 0.0:
        return np.zeros_like(values)
    return (values - values.mean()) / std


class OpenES:
    """OpenAI-ES with antithetic sampling, centred-rank shaping, SGD or Adam, and an L2 fitness penalty.

    Fitness is maximised. Defaults are the 2020 Hebbian reference's settings.

    :param num_params: length of the flat parameter vector.
    :param popsize: candidates per generation; even when ``antithetic`` (pairs ``mean +- sigma*eps``).
    :param sigma: noise scale (> 0), or a :data:`Schedule` of the remaining progress.
    :param lr: learning rate (> 0), or a :data:`Schedule`; SGD steps ``lr / (popsize*sigma) * eps.T @ w``.
    :param lr_decay: factor applied to ``lr`` after every generation, in (0, 1]; ignored for a schedule.
    :param lr_min: floor of the decayed ``lr`` (>= 0).
    :param sigma_decay: factor applied to ``sigma`` after every generation, in (0, 1].
    :param sigma_min: floor of the decayed ``sigma`` (>= 0).
    :param optimizer: ``"sgd"`` (the reference) or ``"adam"`` (ascent on the same gradient estimate).
    :param weight_decay: L2 fitness penalty: candidate ``h`` scores ``F - weight_decay * mean(h**2)``,
        the reference's ``-0.01 * mean(h^2)``; 0 disables it.
    :param antithetic: sample mirrored pairs ``mean +- sigma*eps`` (halves the noise, lowers variance).
    :param rank_shaping: replace fitness by centred ranks in [-0.5, 0.5] before standardising; with
        ``False`` the raw (penalised) fitness is standardised.
    :param init: initial mean: ``None`` (zeros), a float ``s`` (seeded draw from N(0, s^2)), or an
        array (num_params,).
    :param seed: integer seed of all noise; ``None`` draws fresh OS entropy (kept in the state).
    :param dtype: ``"float32"`` (default; halves memory and time) or ``"float64"``.
    :param total_generations: required with schedules, which see ``1 - generation / total_generations``.
    :param adam_betas: Adam's moment decay rates.
    :param adam_eps: Adam's denominator guard.
    """

    def __init__(
        self,
        num_params: int,
        popsize: int = 200,
        sigma: float | Schedule = 0.1,
        lr: float | Schedule = 0.2,
        lr_decay: float = 0.995,
        lr_min: float = 0.001,
        sigma_decay: float = 0.999,
        sigma_min: float = 0.01,
        optimizer: str = "sgd",
        weight_decay: float = 0.01,
        antithetic: bool = True,
        rank_shaping: bool = True,
        init: None | float | np.ndarray = None,
        seed: int | None = None,
        dtype: str | np.dtype | type = "float32",
        total_generations: int | None = None,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
    ) -> None:
        if isinstance(num_params, bool) or not isinstance(num_params, (int, np.integer)) or num_params < 1:
            raise ValueError(f"num_params must be a positive integer, got {num_params!r}")
        if isinstance(popsize, bool) or not isinstance(popsize, (int, np.integer)) or popsize < 2:
            raise ValueError(f"popsize must be an integer >= 2, got {popsize!r}")
        if antithetic and popsize % 2 != 0:
            raise ValueError(
                f"antithetic sampling needs an even popsize (mirrored pairs), got {popsize}; "
                f"use {popsize + 1} or antithetic=False"
            )
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        try:
            self._dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}") from None
        if self._dtype.name not in DTYPES:
            raise ValueError(f"unsupported dtype {self._dtype.name!r}; accepted: {', '.join(DTYPES)}")
        if total_generations is not None and (
            isinstance(total_generations, bool)
            or not isinstance(total_generations, (int, np.integer))
            or total_generations < 1
        ):
            raise ValueError(
                f"total_generations must be a positive integer or None, got {total_generations!r}"
            )
        for name, value in (("lr", lr), ("sigma", sigma)):
            if callable(value) and total_generations is None:
                raise ValueError(f"{name} is a schedule: pass total_generations so progress can be computed")
        if len(adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {adam_betas!r}")

        self.num_params = int(num_params)
        self.popsize = int(popsize)
        self.antithetic = bool(antithetic)
        self.rank_shaping = bool(rank_shaping)
        self.optimizer = optimizer
        self.weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        self.lr_decay = check_decay("lr_decay", lr_decay)
        self.sigma_decay = check_decay("sigma_decay", sigma_decay)
        self.lr_min = check_positive("lr_min", lr_min, allow_zero=True)
        self.sigma_min = check_positive("sigma_min", sigma_min, allow_zero=True)
        self.total_generations = None if total_generations is None else int(total_generations)
        self.adam_betas = (float(adam_betas[0]), float(adam_betas[1]))
        self.adam_eps = check_positive("adam_eps", adam_eps)

        self._lr_schedule: Schedule | None = lr if callable(lr) else None
        self._sigma_schedule: Schedule | None = sigma if callable(sigma) else None
        self._generation = 0
        self._lr = self._scheduled("lr", self._lr_schedule) if callable(lr) else check_positive("lr", lr)
        self._sigma = (
            self._scheduled("sigma", self._sigma_schedule)
            if callable(sigma)
            else check_positive("sigma", sigma)
        )

        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self._entropy = int(np.random.SeedSequence(None if seed is None else int(seed)).entropy)

        self._mean = self._initial_mean(init)  # (num_params,)
        self._adam_m = np.zeros(self.num_params, self._dtype)  # (num_params,)
        self._adam_v = np.zeros(self.num_params, self._dtype)  # (num_params,)
        self._adam_t = 0
        # Noise of the current generation, kept from ask() for tell(); rebuilt from the seed if absent.
        self._noise: np.ndarray | None = None  # (n_rows, num_params)
        self._noise_generation = -1
        self._next_noise: tuple[int, np.ndarray] | None = None  # (generation seed, noise) drawn ahead

    # ------------------------------------------------------------------ properties
    @property
    def mean(self) -> np.ndarray:
        """The current solution (num_params,): a copy, so callers cannot change the search state."""
        return self._mean.copy()

    @property
    def generation(self) -> int:
        """Number of completed ``tell`` calls."""
        return self._generation

    @property
    def lr(self) -> float:
        """Learning rate of the next ``tell``."""
        return self._lr

    @property
    def sigma(self) -> float:
        """Noise scale of the current generation's candidates."""
        return self._sigma

    @property
    def dtype(self) -> np.dtype:
        """Floating dtype of the mean, the noise and the candidates."""
        return self._dtype

    @property
    def entropy(self) -> int:
        """Root of all of this run's randomness (the seed, or fresh OS entropy when seed=None)."""
        return self._entropy

    @property
    def generation_seed(self) -> int:
        """Seed of the current generation's noise (see :func:`candidate`)."""
        return generation_seed(self._entropy, self._generation)

    @property
    def n_noise_rows(self) -> int:
        """Noise rows per generation: popsize/2 with antithetic pairs, else popsize."""
        return self.popsize // 2 if self.antithetic else self.popsize

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> np.ndarray:
        """Candidates of the current generation (popsize, num_params); the same until ``tell``."""
        eps = self._current_noise()  # (n_rows, num_params)
        scaled = np.asarray(self._sigma, dtype=self._dtype) * eps  # (n_rows, num_params)
        candidates = np.empty((self.popsize, self.num_params), self._dtype)  # (popsize, num_params)
        if self.antithetic:
            np.add(self._mean, scaled, out=candidates[0::2])
            np.subtract(self._mean, scaled, out=candidates[1::2])
        else:
            np.add(self._mean, scaled, out=candidates)
        return candidates

    def noise(self) -> np.ndarray:
        """The current generation's noise rows ``(n_rows, num_params)``, read-only.

        Drawn once per generation from its seed and kept for :meth:`ask` and :meth:`tell`. A driver
        whose workers rebuild their own candidates can draw it while it waits for them, from
        another thread (as long as nothing else uses the optimiser meanwhile): ``tell`` then only
        does its arithmetic.
        """
        eps = self._current_noise().view()
        eps.flags.writeable = False
        return eps

    @property
    def next_generation_seed(self) -> int:
        """The seed of the next generation's noise (it does not depend on this generation's fitness)."""
        return generation_seed(self._entropy, self._generation + 1)

    def draw_next_noise(self, out: np.ndarray | None = None) -> np.ndarray:
        """Draw the next generation's noise rows now (into ``out``, a C-contiguous ``(n_rows,
        num_params)`` array of the ES dtype, if given) and keep them for it: a driver can draw them
        while its workers evaluate this generation and share them with the workers. Returns them."""
        seed = self.next_generation_seed
        noise = noise_for(seed, self.n_noise_rows, self.num_params, self._dtype, out=out)
        self._next_noise = (seed, noise)
        return noise

    def candidate(self, index: int) -> np.ndarray:
        """Candidate ``index`` of the current generation, rebuilt alone (equals ``ask()[index]``)."""
        if not 0 <= index < self.popsize:
            raise ValueError(f"candidate index must be in [0, {self.popsize}), got {index!r}")
        return candidate(self._mean, self._sigma, self.generation_seed, index, antithetic=self.antithetic)

    def tell(self, fitness: np.ndarray) -> None:
        """Update the mean from the fitness (popsize,) of ``ask()``'s candidates, in their order.

        NaN and +-inf count as the worst fitness. If no two candidates differ, the mean stays put.
        """
        fitness = np.asarray(fitness, dtype=np.float64)
        if fitness.shape != (self.popsize,):
            raise ValueError(
                f"fitness must have shape ({self.popsize},) (one per candidate), got {fitness.shape}"
            )
        eps = self._current_noise()  # (n_rows, num_params)
        if self.weight_decay > 0.0:
            fitness = fitness - self.weight_decay * self._mean_squares(eps)
        if self.rank_shaping:
            weights = _standardise(centered_ranks(fitness))  # (popsize,)
        else:
            finite = np.isfinite(fitness)
            worst = fitness[finite].min() if finite.any() else 0.0
            weights = _standardise(np.where(finite, fitness, worst))  # (popsize,)
        # Antithetic pairs share a noise row: its weight is F(+eps) - F(-eps).
        row_weights = weights[0::2] - weights[1::2] if self.antithetic else weights  # (n_rows,)
        gradient = row_weights.astype(self._dtype) @ eps  # (num_params,) == eps.T @ w, one matmul
        gradient *= np.asarray(1.0 / (self.popsize * self._sigma), dtype=self._dtype)
        self._step(gradient)

        self._generation += 1
        self._noise = None
        self._noise_generation = -1
        self._advance_schedules()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray | int | float | str]:
        """Everything needed to continue the run exactly: arrays plus JSON-safe scalars.

        The entropy is a decimal string (it may exceed 64 bits); noise is a function of
        (entropy, generation), so no generator state is needed.
        """
        state: dict[str, np.ndarray | int | float | str] = {
            "format": STATE_FORMAT,
            "num_params": self.num_params,
            "popsize": self.popsize,
            "antithetic": int(self.antithetic),
            "optimizer": self.optimizer,
            "dtype": self._dtype.name,
            "entropy": str(self._entropy),
            "generation": self._generation,
            "lr": self._lr,
            "sigma": self._sigma,
            "mean": self._mean.copy(),
        }
        if self.optimizer == "adam":
            state["adam_m"] = self._adam_m.copy()
            state["adam_v"] = self._adam_v.copy()
            state["adam_t"] = self._adam_t
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the configuration it names must match this optimiser's."""
        required = ["format", "num_params", "popsize", "antithetic", "optimizer", "dtype", "entropy"]
        required += ["generation", "lr", "sigma", "mean"]
        if self.optimizer == "adam":
            required += ["adam_m", "adam_v", "adam_t"]
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"OpenES state is missing {missing}; it has {sorted(state)}")
        if str(state["format"]) != STATE_FORMAT:
            raise ValueError(f"OpenES state format {state['format']!r} is not {STATE_FORMAT!r}")
        expected = {
            "num_params": self.num_params,
            "popsize": self.popsize,
            "antithetic": int(self.antithetic),
            "optimizer": self.optimizer,
            "dtype": self._dtype.name,
        }
        for key, value in expected.items():
            found = state[key]
            found = int(found) if isinstance(value, int) else str(found)
            if found != value:
                raise ValueError(f"OpenES state has {key}={found!r} but this optimiser has {key}={value!r}")
        mean = np.asarray(state["mean"])
        if mean.shape != (self.num_params,):
            raise ValueError(f"OpenES state mean has shape {mean.shape}, expected ({self.num_params},)")
        self._entropy = int(state["entropy"])
        self._generation = int(state["generation"])
        self._lr = float(state["lr"])
        self._sigma = float(state["sigma"])
        self._mean = mean.astype(self._dtype, copy=True)
        if self.optimizer == "adam":
            for key in ("adam_m", "adam_v"):
                if np.shape(state[key]) != (self.num_params,):
                    raise ValueError(
                        f"OpenES state {key} has shape {np.shape(state[key])}, expected ({self.num_params},)"
                    )
            self._adam_m = np.asarray(state["adam_m"]).astype(self._dtype, copy=True)
            self._adam_v = np.asarray(state["adam_v"]).astype(self._dtype, copy=True)
            self._adam_t = int(state["adam_t"])
        self._noise = None
        self._noise_generation = -1
        self._next_noise = None

    # ------------------------------------------------------------------ internals
    def _initial_mean(self, init: None | float | np.ndarray) -> np.ndarray:
        if init is None:
            return np.zeros(self.num_params, self._dtype)
        if isinstance(init, (int, float, np.integer, np.floating)) and not isinstance(init, bool):
            scale = check_positive("init (scale of the N(0, scale^2) initial draw)", init, allow_zero=True)
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(self._entropy, spawn_key=(_INIT_KEY,)))
            )
            return (
                rng.standard_normal(self.num_params, dtype=self._dtype) * np.asarray(scale, self._dtype)
            ).astype(self._dtype)
        if isinstance(init, np.ndarray):
            if init.shape != (self.num_params,):
                raise ValueError(f"init array must have shape ({self.num_params},), got {init.shape}")
            if not np.isfinite(init).all():
                raise ValueError("init array contains NaN or inf")
            return init.astype(self._dtype, copy=True)
        raise ValueError(
            f"init must be None (zeros), a float scale (N(0, scale^2) draw) or an array "
            f"({self.num_params},), got {type(init).__name__}"
        )

    def _current_noise(self) -> np.ndarray:
        generation = self._generation  # read once: the noise is labelled with the generation it was drawn for
        if self._noise is None or self._noise_generation != generation:
            seed = generation_seed(self._entropy, generation)
            ahead = self._next_noise
            if ahead is not None and ahead[0] == seed:
                noise = ahead[1]  # drawn ahead by draw_next_noise, from the same seed
                self._next_noise = None
            else:
                noise = noise_for(seed, self.n_noise_rows, self.num_params, self._dtype)
            self._noise, self._noise_generation = noise, generation
        return self._noise

    def _mean_squares(self, eps: np.ndarray) -> np.ndarray:
        """mean(h_i**2) of every candidate (popsize,) from the noise, without building the candidates."""
        mean = self._mean.astype(np.float64)
        sigma = self._sigma
        base = float(mean @ mean)
        cross = 2.0 * sigma * (eps @ self._mean).astype(np.float64)  # (n_rows,)
        square = sigma**2 * np.einsum("ij,ij->i", eps, eps, dtype=np.float64)  # (n_rows,)
        if self.antithetic:
            out = np.empty(self.popsize)
            out[0::2] = base + cross + square
            out[1::2] = base - cross + square
        else:
            out = base + cross + square
        return out / self.num_params

    def _step(self, gradient: np.ndarray) -> None:
        if self.optimizer == "sgd":
            self._mean += np.asarray(self._lr, self._dtype) * gradient
            return
        beta1, beta2 = self.adam_betas
        self._adam_t += 1
        self._adam_m *= np.asarray(beta1, self._dtype)
        self._adam_m += np.asarray(1.0 - beta1, self._dtype) * gradient
        self._adam_v *= np.asarray(beta2, self._dtype)
        self._adam_v += np.asarray(1.0 - beta2, self._dtype) * gradient * gradient
        step_size = self._lr * math.sqrt(1.0 - beta2**self._adam_t) / (1.0 - beta1**self._adam_t)
        denom = np.sqrt(self._adam_v) + np.asarray(self.adam_eps, self._dtype)
        self._mean += np.asarray(step_size, self._dtype) * self._adam_m / denom

    def _progress_remaining(self) -> float:
        assert self.total_generations is not None
        return max(0.0, 1.0 - self._generation / self.total_generations)

    def _scheduled(self, name: str, schedule: Schedule) -> float:
        value = float(schedule(self._progress_remaining()))
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"{name} schedule returned {value!r} at generation {self._generation}; it must be > 0"
            )
        return value

    def _advance_schedules(self) -> None:
        if self._lr_schedule is not None:
            self._lr = self._scheduled("lr", self._lr_schedule)
        elif self._lr > self.lr_min:
            self._lr = max(self._lr * self.lr_decay, self.lr_min)
        if self._sigma_schedule is not None:
            self._sigma = self._scheduled("sigma", self._sigma_schedule)
        elif self._sigma > self.sigma_min:
            self._sigma = max(self._sigma * self.sigma_decay, self.sigma_min)
