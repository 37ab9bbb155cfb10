"""``ESTrainer``: ask -> evaluate -> tell, with checkpoints, exact resume and a per-generation log.

A run lives in one output folder:

- ``config.json``     the :class:`TrainConfig`, written with each checkpoint (``--resume`` reads the
  checkpoint's own copy and warns where this file was edited);
- ``progress.csv``    one row per generation (fitness min/mean/max, best so far, sigma, lr,
  env-steps, wall time);
- ``checkpoint.npz``  the optimiser's full state after the last saved generation (atomic write);
- ``best.npz``        the best individual seen so far, as a loadable policy;
- ``policy.npz``      the current ES centre, as a loadable policy.

Rollouts depend only on ``(seed, generation, member)`` and the optimiser state is saved whole,
so ``N`` generations straight equal ``N/2``, a kill, a resume and ``N/2`` more. An interrupt
(Ctrl-C, or SIGTERM where the caller turns it into ``KeyboardInterrupt`` as ``hebb train`` does)
is honoured only between the parts of a generation that change the optimiser's state: the
trainer then saves the last finished generation, stops its workers and re-raises.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from hebb_agents.backends import BACKENDS, Backend, Candidates, make_backend
from hebb_agents.checkpoint import (
    atomic_write,
    check_new_run_folder,
    hold_run_folder,
    load_checkpoint,
    save_checkpoint,
    split_state,
)
from hebb_agents.es import OPTIMIZERS, OpenES
from hebb_agents.options import check_decay, check_positive, constructor_keywords
from hebb_agents.policy import POLICIES
from hebb_agents.rollout import (
    FITNESS_AUTO,
    EvalResult,
    LockstepEvaluator,
    RolloutSpec,
    parse_lockstep_size,
    resolve_fitness,
)

CSV_COLUMNS = (
    "generation",
    "fitness_min",
    "fitness_mean",
    "fitness_max",
    "best_so_far",
    "sigma",
    "lr",
    "env_steps",
    "wall_time",
    "eval_time",
    "es_time",
)


@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver them (main thread only).

    Keeps an optimiser update, its log row or a checkpoint from being cut in half by Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        held.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler not installed from Python; the default is the closest we can restore
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


@contextlib.contextmanager
def noise_drawn_meanwhile(es: OpenES, backend: Backend | None = None) -> Iterator[None]:
    """Draw ``es``'s noise for the coming ``tell`` in a thread while the block runs, and with a
    ``backend``, the next generation's noise where its workers can read it
    (:meth:`~hebb_agents.backends.Backend.share_noise`).

    The driver only waits while its workers evaluate a generation, and the draw is most of
    ``tell``'s time (~90 % for HalfCheetah's 53,760 coefficients at population 200): drawn
    meanwhile, it leaves the generation's serial part. Drawn ahead and shared, the next
    generation's noise leaves the workers' part too (they would draw their rows again before they
    start). The block must not use ``es``. A draw that fails is left to ``tell`` (which draws again
    and raises in the caller's thread) or to the workers.
    """

    def draw() -> None:
        with contextlib.suppress(BaseException):
            es.noise()
            if backend is not None:
                backend.share_noise(es)

    thread = threading.Thread(target=draw, name="es-noise", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with _deferred_signals():  # a Ctrl-C here must not leave the draw running beside tell
            thread.join()


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON round-trips through ``config.json``).

    :param env_id: Gymnasium environment id.
    :param env_kwargs: keyword arguments for ``gym.make``.
    :param policy: ``hebbian`` or ``static``.
    :param policy_config: policy keyword arguments (hidden, rule, init, normalisation, sharing, bias).
    :param generations: number of ES generations.
    :param popsize: ES population (even, antithetic pairs).
    :param sigma: initial noise standard deviation.
    :param lr: initial learning rate.
    :param lr_decay, lr_min, sigma_decay, sigma_min: per-generation multiplicative decay and floor.
    :param optimizer: ``sgd`` (the reference) or ``adam``.
    :param weight_decay: L2 fitness penalty coefficient (reference: 0.01 * mean(h^2)).
    :param episodes: episodes per evaluation.
    :param max_steps: cap on steps per episode (``None`` or 0: the environment's limit).
    :param fitness: ``return``, ``distance``, an ``info`` key summed over the episode, or ``auto``
        (``None`` in a file): ``distance`` where the env reports ``info["x_position"]``, else
        ``return``, chosen when a trainer is built (which then holds the choice).
    :param early_stop: ``none``, ``locomotion`` or ``negative_reward``.
    :param backend: ``serial``, ``process`` or ``ray``.
    :param workers: worker count for ``process`` / ``ray`` (``None``: all cores).
    :param lockstep_size: members a worker steps together (``auto``, ``all`` or a number, see
        :class:`~hebb_agents.rollout.RolloutSpec`); does not change results without an encoder.
    :param compiled_episodes: run each member's whole episode as one compiled call (see
        :mod:`hebb_agents.compiled_episodes`): faster, but its forward pass rounds differently, so
        results differ from the default path's.
    :param ray_address: address of a running Ray cluster (``ray`` backend only).
    :param seed: fixes ES noise, initial coefficients, weight draws and environment resets.
    :param checkpoint_every: save ``checkpoint.npz`` every this many generations (and at the end).
    :param tensorboard: also log to TensorBoard under ``out_dir/tb``.
    """

    env_id: str = "CartPole-v1"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    policy: str = "hebbian"
    policy_config: dict[str, Any] = field(default_factory=dict)
    generations: int = 30
    popsize: int = 64
    sigma: float = 0.1
    lr: float = 0.2
    lr_decay: float = 0.995
    lr_min: float = 0.001
    sigma_decay: float = 0.999
    sigma_min: float = 0.01
    optimizer: str = "sgd"
    weight_decay: float = 0.01
    episodes: int = 1
    max_steps: int | None = None
    fitness: str = FITNESS_AUTO
    early_stop: str = "none"
    backend: str = "process"
    workers: int | None = None
    lockstep_size: int | str = "auto"
    compiled_episodes: bool = False
    ray_address: str | None = None
    seed: int = 0
    checkpoint_every: int = 10
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for name in ("generations", "popsize", "episodes", "checkpoint_every", "max_steps", "workers"):
            value = getattr(self, name)
            optional = name in ("max_steps", "workers")
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 10.0 from a hand-written config means 10
                setattr(self, name, value)
            if not (_is_integer(value) or (optional and value is None)):
                accepted = "an integer" + (" or None" if optional else "")
                raise ValueError(f"{name} must be {accepted}, got {value!r}")
        if self.max_steps == 0:
            self.max_steps = None  # 0, as on the command line (and TOML has no null): the env's own cap
        for name in ("env_kwargs", "policy_config"):
            given = getattr(self, name)
            try:  # a mapping, or (key, value) pairs as older configs stored them
                setattr(self, name, dict(given))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a dict (a JSON object), got {given!r}") from None
        if not isinstance(self.env_id, str):
            raise ValueError(f"env_id must be a string, got {self.env_id!r}")
        for name in ("tensorboard", "compiled_episodes"):
            if getattr(self, name) not in (True, False):  # bool, numpy bool, 0 or 1
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; accepted: {', '.join(BACKENDS)}")
        if self.generations < 0:
            raise ValueError(f"generations must be >= 0, got {self.generations}")
        if self.popsize < 2 or self.popsize % 2:  # checked here, not only when the ES is built
            hint = f"; use {self.popsize + 1}" if self.popsize > 2 else ""
            raise ValueError(
                "popsize must be an even integer >= 2 (the ES samples antithetic pairs), "
                f"got {self.popsize}{hint}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; accepted: {', '.join(POLICIES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        self.lockstep_size = parse_lockstep_size(self.lockstep_size)
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not _is_integer(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.fitness is None:  # null in a settings file
            self.fitness = FITNESS_AUTO
        if not isinstance(self.fitness, str):
            raise ValueError(
                f"fitness must be a name (auto, return, distance or an info key), got {self.fitness!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or None (all cores), got {self.workers}")
        self.rollout_spec()  # checks episodes, max_steps, early_stop
        # the ES checks these again; checked here too so that a settings file's error names the file
        check_positive("sigma", self.sigma)
        check_positive("lr", self.lr)
        for name in ("lr_decay", "sigma_decay"):
            check_decay(name, getattr(self, name))
        for name in ("lr_min", "sigma_min", "weight_decay"):
            check_positive(name, getattr(self, name), allow_zero=True)

    def rollout_spec(self) -> RolloutSpec:
        return RolloutSpec(
            env_id=self.env_id,
            env_kwargs=dict(self.env_kwargs),
            policy=self.policy,
            policy_config=dict(self.policy_config),
            episodes=self.episodes,
            max_steps=self.max_steps,
            fitness=self.fitness,
            early_stop=self.early_stop,
            lockstep_size=self.lockstep_size,
            compiled_episodes=self.compiled_episodes,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            policy_keys = set().union(*(constructor_keywords(policy) for policy in POLICIES.values()))
            misplaced = [key for key in unknown if key in policy_keys]
            hint = f" ({', '.join(misplaced)}: policy settings, given in policy_config)" if misplaced else ""
            raise ValueError(
                f"unknown training options {unknown}{hint}; accepted: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Build from a JSON or TOML settings file (see :func:`read_config_file`); fields it leaves
        out take their defaults."""
        return cls.from_dict(read_config_file(path))


CONFIG_SUFFIXES = (".json", ".toml")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings a ``.json`` or ``.toml`` file gives, checked as :class:`TrainConfig` checks them.

    Keys are :class:`TrainConfig` field names (a run's ``config.json`` is such a file; TOML, which has
    no null, leaves ``None`` fields out). Returns only the keys the file sets, so a caller can layer
    them between defaults and explicit options; errors name the file.
    """
    path = Path(path)
    if path.suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"{path}: settings files are {' or '.join(CONFIG_SUFFIXES)}, got {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such settings file")
    decode, errors = json.loads, (UnicodeDecodeError, json.JSONDecodeError)
    if path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # the same parser, as a package (a dependency on 3.10)
            import tomli as tomllib
        decode, errors = tomllib.loads, (UnicodeDecodeError, tomllib.TOMLDecodeError)
    try:
        data = decode(path.read_bytes().decode("utf-8"))  # as TOML requires, whatever the locale
    except OSError as err:  # a folder, no permission, ...
        raise ValueError(f"{path}: cannot read the settings file ({err})") from None
    except errors as err:
        raise ValueError(f"{path}: not readable {path.suffix[1:].upper()} ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of training settings, got {type(data).__name__}")
    try:
        checked = TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return {key: getattr(checked, key) for key in data}  # as TrainConfig holds them (pairs made dicts)


def _warn_if_config_edited(config_file: Path, saved: dict[str, Any]) -> None:
    """Warn where a run's ``config.json`` says otherwise than its checkpoint, whose settings a resumed
    run keeps (and writes back to ``config.json``)."""
    if not config_file.is_file():
        return  # rewritten from the checkpoint at the next save
    try:
        written = json.loads(config_file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        written = err
    except OSError as err:  # unreadable here (permissions): left as it is, rewritten at the next save
        warnings.warn(f"cannot read {config_file} ({err}); it is rewritten from the checkpoint", stacklevel=3)
        return
    if not isinstance(written, dict):
        kept = config_file.with_name("config.unreadable.json")
        number = 1
        while kept.exists():
            kept, number = config_file.with_name(f"config.unreadable.{number}.json"), number + 1
        config_file.replace(kept)  # an edit gone wrong is still someone's edit: kept, not overwritten
        warnings.warn(
            f"{config_file} is not a JSON object of settings ({written}); moved to {kept.name}, and "
            "config.json is rewritten from the checkpoint, whose settings a resumed run keeps",
            stacklevel=3,
        )
        return
    edited = sorted(key for key in set(written) | set(saved) if written.get(key) != saved.get(key))
    if edited:
        warnings.warn(
            f"{config_file} differs from the checkpoint in {edited}; resuming keeps the checkpoint's "
            "settings and rewrites config.json (pass changeable ones as overrides)",
            stacklevel=3,
        )


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class GenerationStats:
    """One row of ``progress.csv``."""

    generation: int
    fitness_min: float
    fitness_mean: float
    fitness_max: float
    best_so_far: float
    sigma: float
    lr: float
    env_steps: int
    wall_time: float
    eval_time: float
    es_time: float


Callback = Callable[[GenerationStats, "ESTrainer"], bool | None]


class ESTrainer:
    """Evolves a policy's parameters with OpenAI-ES on an environment.

    :param config: the run's :class:`TrainConfig`.
    :param out_dir: folder for the config, log and checkpoints (``None``: keep nothing on disk).
    :param callbacks: called after every generation with the stats and the trainer; returning
        ``False`` stops training.
    :param progress: show a progress bar.

    A trainer with an output folder holds it (:func:`~hebb_agents.checkpoint.hold_run_folder`)
    from its construction (or :meth:`resume`) until :meth:`close` (or until it is collected):
    another process training into the same folder meanwhile is refused before it reads or writes
    anything there. A ``train()`` after ``close()`` takes the folder again and refuses to go on if
    another run saved there meanwhile.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = False,
    ) -> None:
        self.config = replace(config)  # its own copy: building settles choices such as an auto fitness
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._release_folder: Callable[[], None] | None = None
        if self.out_dir is not None:  # resume() sets out_dir after building
            self._hold_folder(hold_run_folder(self.out_dir))
        try:
            if self.out_dir is not None:
                check_new_run_folder(self.out_dir, "es")
            self._build(self.config, callbacks, progress)
        except BaseException:
            self.close()  # lets the folder go
            raise

    def _hold_folder(self, release: Callable[[], None]) -> None:
        """Keep the output folder until :meth:`close` (or until this trainer is collected)."""
        self._release_folder = release
        weakref.finalize(self, release)

    def _build(self, config: TrainConfig, callbacks: Sequence[Callback], progress: bool) -> None:
        self.callbacks = list(callbacks)
        self.progress = progress
        # auto becomes the run's choice (saved, kept on resume); an info key is checked before any worker
        config.fitness = resolve_fitness(config.fitness, config.env_id, config.env_kwargs)
        self.spec = config.rollout_spec()
        # A local evaluator builds the policy (checks env id and options before any worker starts).
        probe = LockstepEvaluator(self.spec)
        self.policy = probe.policy
        for env in probe.envs:
            env.close()
        init = self.policy.initial_params(np.random.default_rng([config.seed, 1]))
        self.es = OpenES(
            self.policy.num_params,
            popsize=config.popsize,
            sigma=config.sigma,
            lr=config.lr,
            lr_decay=config.lr_decay,
            lr_min=config.lr_min,
            sigma_decay=config.sigma_decay,
            sigma_min=config.sigma_min,
            optimizer=config.optimizer,
            weight_decay=config.weight_decay,
            init=init,
            seed=config.seed,
        )
        self.generation = 0
        self.saved_generation: int | None = None  # generation held by checkpoint.npz, if any
        self.env_steps = 0
        self.wall_time = 0.0
        self.best_fitness = -np.inf
        self.best_params: np.ndarray | None = None
        self.history: list[GenerationStats] = []
        self._backend: Backend | None = None
        self._tb = None
        self._committing = False  # inside _commit: the optimiser state may be half-updated

    # ------------------------------------------------------------------ run
    def train(self, generations: int | None = None) -> list[GenerationStats]:
        """Run until ``config.generations`` (or ``generations`` more); returns this call's stats.

        Ends by stopping the workers; the output folder stays held until :meth:`close`.
        """
        target = self.config.generations if generations is None else self.generation + generations
        if self.out_dir is not None and self._release_folder is None:  # let go by close()
            self._hold_folder(hold_run_folder(self.out_dir))
            self._check_folder_unchanged()
        try:
            if self.generation < target:
                self.backend  # noqa: B018 - start the workers (or fail: no cluster, bad count) before writing
        except BaseException:
            self.close()
            raise
        return self._train(target)

    def _check_folder_unchanged(self) -> None:
        """After taking the folder again: refuse if another run saved there meanwhile."""
        assert self.out_dir is not None
        path = self.out_dir / "checkpoint.npz"
        on_disk = int(load_checkpoint(path)[1]["generation"]) if path.exists() else None
        if on_disk != self.saved_generation:
            self.close()
            raise ValueError(
                f"{self.out_dir} moved on since this trainer let it go (its checkpoint is at generation "
                f"{on_disk}, this trainer's at {self.saved_generation}); resume it with ESTrainer.resume"
            )

    def _train(self, target: int) -> list[GenerationStats]:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            log = self.out_dir / "progress.csv"
            if self.generation == 0 and log.exists():  # a fresh run: keep, don't extend, an old log
                log.replace(log.with_name("progress.previous.csv"))
        stats_this_call: list[GenerationStats] = []
        bar = None
        redirect = contextlib.ExitStack()
        if self.progress:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            bar = tqdm(total=target, initial=self.generation, unit="gen")
            # notices (a worker restarted) print on their own line above the bar, not inside it
            redirect.enter_context(logging_redirect_tqdm())  # the root logger's console handlers
        try:
            while self.generation < target:
                stats = self.step()
                stats_this_call.append(stats)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(mean=f"{stats.fitness_mean:.2f}", best=f"{stats.best_so_far:.2f}")
                last = self.generation >= target
                if self.out_dir is not None and (self.generation % self.config.checkpoint_every == 0 or last):
                    self.save()
                if any(cb(stats, self) is False for cb in self.callbacks):
                    if self.out_dir is not None:
                        self.save()
                    break
        except KeyboardInterrupt:
            # The optimiser holds the last finished generation (see _deferred_signals): save it
            # first, then stop the workers; a second Ctrl-C meanwhile waits until both are done.
            with _deferred_signals():
                if self._unsaved_generation():
                    self.save()
                if self._backend is not None:
                    self._backend.abort()
                    self._backend = None
            raise
        except Exception:
            # A failure the backend could not recover from (workers lost beyond their retries, a
            # cluster gone): the optimiser still holds the last finished generation, so save it for
            # --resume before the error propagates; a failing save must not hide the first error.
            whole = not self._committing  # an error inside tell may leave the optimiser half-updated
            if whole and self._unsaved_generation():
                try:
                    self.save()
                except Exception as save_error:
                    warnings.warn(f"could not save generation {self.generation}: {save_error}", stacklevel=2)
            raise
        finally:
            redirect.close()
            if bar is not None:
                bar.close()
            self._stop()  # the folder stays held until close()
        return stats_this_call

    def _unsaved_generation(self) -> bool:
        """Whether a finished generation is not on disk yet (and there is a folder to save it to)."""
        return self.out_dir is not None and self.generation not in (0, self.saved_generation)

    def step(self) -> GenerationStats:
        """One generation: ask, evaluate every candidate, tell."""
        start = time.perf_counter()
        # Workers rebuild their candidates from (mean, sigma, noise seed): no (P, n) matrix is shipped.
        candidates = Candidates.from_es(self.es)
        asked = time.perf_counter()
        with noise_drawn_meanwhile(self.es, self.backend):
            result = self.backend.evaluate_candidates(candidates, self.config.seed, self.generation)
        evaluated = time.perf_counter()
        with _deferred_signals():  # the generation's results land whole, or not at all
            # cleared only once the commit is whole: an error inside it leaves the flag set, so train()
            # does not save a half-updated optimiser
            self._committing = True
            stats = self._commit(result, start, asked, evaluated)
            self._committing = False
            return stats

    def _commit(self, result: EvalResult, start: float, asked: float, evaluated: float) -> GenerationStats:
        """Tell the optimiser a generation's fitness; update counters, best and log."""
        sigma, lr = float(self.es.sigma), float(self.es.lr)
        finite = np.where(np.isfinite(result.fitness), result.fitness, -np.inf)
        top = int(np.argmax(finite))
        if finite[top] > self.best_fitness:
            self.best_fitness = float(finite[top])
            self.best_params = self.es.candidate(top)  # before tell(): it moves the mean
        self.es.tell(result.fitness)
        told = time.perf_counter()
        self.generation += 1
        self.env_steps += int(result.env_steps)
        self.wall_time += told - start
        valid = result.fitness[np.isfinite(result.fitness)]
        stats = GenerationStats(
            generation=self.generation,
            fitness_min=float(valid.min()) if valid.size else float("nan"),
            fitness_mean=float(valid.mean()) if valid.size else float("nan"),
            fitness_max=float(valid.max()) if valid.size else float("nan"),
            best_so_far=self.best_fitness,
            sigma=sigma,
            lr=lr,
            env_steps=self.env_steps,
            wall_time=self.wall_time,
            eval_time=evaluated - asked,
            es_time=(asked - start) + (told - evaluated),
        )
        self.history.append(stats)
        self._log(stats)
        return stats

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            extra = {"address": self.config.ray_address} if self.config.backend == "ray" else {}
            self._backend = make_backend(self.config.backend, self.spec, workers=self.config.workers, **extra)
        return self._backend

    def close(self) -> None:
        """Stop workers, flush logs and let the output folder go."""
        self._stop()
        if self._release_folder is not None:
            self._release_folder()
            self._release_folder = None

    def _stop(self) -> None:
        """Stop workers and flush logs."""
        if getattr(self, "_backend", None) is not None:
            self._backend.close()
            self._backend = None
        if getattr(self, "_tb", None) is not None:
            self._tb.close()
            self._tb = None

    # ------------------------------------------------------------------ logging
    def _log(self, stats: GenerationStats) -> None:
        if self.out_dir is None:
            return
        path = self.out_dir / "progress.csv"
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(CSV_COLUMNS)
            writer.writerow([getattr(stats, c) for c in CSV_COLUMNS])
        if self.config.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            for name in ("fitness_min", "fitness_mean", "fitness_max", "best_so_far", "sigma", "lr"):
                self._tb.add_scalar(f"es/{name}", getattr(stats, name), stats.generation)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write ``checkpoint.npz`` (optimiser state), ``policy.npz`` (centre) and ``best.npz``."""
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir to save to")
        with _deferred_signals():
            self._save(self.out_dir)
            self.saved_generation = self.generation

    def _save(self, out_dir: Path) -> None:
        es_arrays, es_scalars = split_state(self.es.state_dict())
        arrays = {f"es/{key}": value for key, value in es_arrays.items()}
        if self.best_params is not None:
            arrays["best_params"] = self.best_params
        meta = {
            "kind": "es_trainer",
            "config": asdict(self.config),
            "generation": self.generation,
            "env_steps": self.env_steps,
            "wall_time": self.wall_time,
            "best_fitness": self.best_fitness if np.isfinite(self.best_fitness) else None,
            "es_state": es_scalars,
        }
        save_checkpoint(out_dir / "checkpoint.npz", arrays, meta)
        # written with each checkpoint, so it always says what the checkpoint holds
        config_text = json.dumps(asdict(self.config), indent=2).encode()
        atomic_write(out_dir / "config.json", lambda handle: handle.write(config_text))
        run_info = {
            "env_id": self.config.env_id,
            "env_kwargs": self.config.env_kwargs,
            "max_steps": self.config.max_steps,
            "seed": self.config.seed,
            "generation": self.generation,
        }
        self.policy.set_params(self.es.mean)
        self.policy.save(out_dir / "policy.npz", extra=run_info)
        if self.best_params is not None:
            self.policy.set_params(self.best_params)
            self.policy.save(out_dir / "best.npz", extra={**run_info, "fitness": self.best_fitness})

    @classmethod
    def resume(
        cls, out_dir: str | Path, callbacks: Sequence[Callback] = (), progress: bool = False, **overrides: Any
    ) -> ESTrainer:
        """Continue the run saved in ``out_dir`` exactly where its last checkpoint left it.

        ``overrides`` may change fields that do not alter the search (``generations``, ``backend``,
        ``workers``, ``lockstep_size``, ``ray_address``, ``checkpoint_every``, ``tensorboard``).
        """
        out_dir = Path(out_dir)
        path = out_dir / "checkpoint.npz"
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
        release = hold_run_folder(out_dir)  # before anything is read: another run may be writing
        try:
            trainer = cls._resumed(out_dir, callbacks, progress, overrides)
        except BaseException:
            release()
            raise
        trainer._hold_folder(release)
        return trainer

    @classmethod
    def _resumed(
        cls, out_dir: Path, callbacks: Sequence[Callback], progress: bool, overrides: dict[str, Any]
    ) -> ESTrainer:
        path = out_dir / "checkpoint.npz"
        arrays, meta = load_checkpoint(path)
        if meta.get("kind") != "es_trainer":
            raise ValueError(f"{path} is not an ES trainer checkpoint (kind={meta.get('kind')!r})")
        allowed = {
            "generations",
            "backend",
            "workers",
            "lockstep_size",
            "ray_address",
            "checkpoint_every",
            "tensorboard",
        }
        changed = sorted(set(overrides) - allowed)
        if changed:
            raise ValueError(
                f"cannot change {changed} when resuming; changeable: {', '.join(sorted(allowed))}"
            )
        _warn_if_config_edited(out_dir / "config.json", meta["config"])
        config = TrainConfig.from_dict({**meta["config"], **overrides})
        trainer = cls(config, callbacks=callbacks, progress=progress)
        trainer.out_dir = out_dir  # the run's own folder: not the new-run check of __init__
        state = dict(meta["es_state"])
        state.update({key[3:]: value for key, value in arrays.items() if key.startswith("es/")})
        trainer.es.load_state_dict(state)
        trainer.generation = trainer.saved_generation = int(meta["generation"])
        trainer.env_steps = int(meta["env_steps"])
        trainer.wall_time = float(meta["wall_time"])
        best = meta.get("best_fitness")
        trainer.best_fitness = -np.inf if best is None else float(best)
        trainer.best_params = arrays.get("best_params")
        trainer._truncate_log()
        return trainer

    def _truncate_log(self) -> None:
        """Drop log rows written after the checkpoint, so the resumed run does not repeat them."""
        assert self.out_dir is not None
        path = self.out_dir / "progress.csv"
        if not path.exists():
            return
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        # whole rows of finished generations only: a kill can leave a row cut off (or the file empty)
        kept = [
            row
            for row in rows
            if len(row) == len(CSV_COLUMNS) and row[0].isdigit() and int(row[0]) <= self.generation
        ]
        text = io.StringIO(newline="")
        csv.writer(text).writerows([list(CSV_COLUMNS), *kept])
        atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))
