"""Where rollouts run: ``serial`` (this process), ``process`` (persistent local workers) and
``ray`` (actors on a cluster, optional extra).

Every backend splits a population into contiguous slices, hands each slice to a worker that
keeps its environments between generations, and concatenates the results. Results depend
only on ``(seed, generation, member index)``, never on the split, so all backends agree.
A worker that dies mid-generation is restarted and its slice re-run; the generation is not lost.

Two ways to say what to evaluate:

- :meth:`Backend.evaluate` ``(params (P, n), seed, generation)``: ships each worker its rows of the
  candidate matrix (``P * n`` floats per generation, 88 MB at 200 x 110,720);
- :meth:`Backend.evaluate_candidates` ``(Candidates, seed, generation)``: ships only the ES centre,
  sigma and the generation's noise seed (``n`` floats plus three numbers); each worker rebuilds
  its own candidates as :func:`hebb_agents.es.candidate` does, bit-identical to ``OpenES.ask()``,
  so the noise of a generation is drawn in parallel and never crosses a pipe.

The ``process`` backend can also take the noise off its workers' path: :meth:`Backend.share_noise`
draws the next generation's noise rows (the driver does it while the workers evaluate this
generation, see :func:`hebb_agents.trainer.noise_drawn_meanwhile`) into a file in memory
(``/dev/shm`` where there is one, else the temporary folder) that the workers map and read instead
of drawing (the same values, from the same seeds); ``tell`` uses the same rows. A worker that
cannot read the file draws the rows itself.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from hebb_agents.es import candidate_noise_index, noise_row
from hebb_agents.rollout import EvalResult, LockstepEvaluator, RolloutSpec

BACKENDS = ("serial", "process", "ray")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
logger = logging.getLogger(__name__)


def split_population(popsize: int, parts: int) -> list[np.ndarray]:
    """Member indices of each of ``parts`` contiguous, near-equal slices (empty slices dropped)."""
    return [s for s in np.array_split(np.arange(popsize), max(1, parts)) if s.size]


@dataclass(frozen=True)
class Candidates:
    """One ES generation's population, described by what changed instead of by its vectors.

    Candidate ``i`` is ``mean +- sigma * eps`` with ``eps`` drawn from ``noise_seed`` (see
    :func:`hebb_agents.es.candidate`); :meth:`rows` rebuilds any of them bit for bit as
    ``OpenES.ask()`` made them.

    :param mean: the ES centre ``(num_params,)``, in the ES dtype.
    :param sigma: the generation's noise scale.
    :param noise_seed: the generation's noise seed (``OpenES.generation_seed``).
    :param popsize: number of candidates.
    :param antithetic: candidates ``2j`` and ``2j + 1`` share noise row ``j`` with opposite signs.
    :param noise_file: a ``.npy`` file on this machine holding the generation's noise rows (drawn by
        the driver, see :meth:`Backend.share_noise`), read instead of drawing them; ``None``: draw.
    """

    mean: np.ndarray
    sigma: float
    noise_seed: int
    popsize: int
    antithetic: bool = True
    noise_file: str | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.mean) != 1:
            raise ValueError(f"mean must be a vector (num_params,), got shape {np.shape(self.mean)}")
        if self.popsize < 1:
            raise ValueError(f"popsize must be >= 1, got {self.popsize}")

    @classmethod
    def from_es(cls, es: Any) -> Candidates:
        """The current generation of an :class:`hebb_agents.es.OpenES`."""
        return cls(es.mean, float(es.sigma), int(es.generation_seed), int(es.popsize), bool(es.antithetic))

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Candidates ``indices`` as a matrix ``(len(indices), num_params)``.

        Computed as :func:`hebb_agents.es.candidate` does (``mean +- sigma * eps``), drawing each
        noise row once for the two members of an antithetic pair.
        """
        mean = np.asarray(self.mean)
        out = np.empty((len(indices), mean.shape[0]), mean.dtype)  # (len(indices), num_params)
        shared = self._shared_noise(mean)
        sigma = np.asarray(self.sigma, dtype=mean.dtype)
        # one row of buffers for all rows: allocations of this size are fresh pages every time
        scaled = np.empty_like(mean)  # (num_params,)
        eps = np.empty_like(mean) if shared is None else None  # drawn rows land here
        drawn = -1  # noise row held in `scaled` (sigma * eps), none yet
        for row, index in enumerate(indices):
            if not 0 <= index < self.popsize:
                raise ValueError(f"candidate index must be in [0, {self.popsize}), got {index}")
            noise, sign = candidate_noise_index(int(index), self.antithetic)
            if noise != drawn:
                if shared is not None:
                    np.multiply(sigma, shared[noise], out=scaled)
                else:
                    noise_row(self.noise_seed, noise, mean.shape[0], mean.dtype, out=eps)
                    np.multiply(sigma, eps, out=scaled)
                drawn = noise
            if sign > 0:
                np.add(mean, scaled, out=out[row])
            else:
                np.subtract(mean, scaled, out=out[row])
        return out

    def _shared_noise(self, mean: np.ndarray) -> np.ndarray | None:
        """The noise rows of :attr:`noise_file` (memory-mapped), or None where they cannot be read."""
        if self.noise_file is None:
            return None
        rows = self.popsize // 2 if self.antithetic else self.popsize
        try:
            shared = np.load(self.noise_file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):  # gone or unreadable: draw instead (the same values)
            return None
        if shared.shape != (rows, mean.shape[0]) or shared.dtype != mean.dtype:
            return None
        return shared


class WorkersLost(RuntimeError):
    """Workers (processes, Ray actors) died more often than a backend re-runs their slices: the
    generation is lost, the run can resume from its last checkpoint."""


class Backend(abc.ABC):
    """Evaluates a population ``(P, n)`` for a generation; subclasses decide where."""

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def evaluate(self, params: np.ndarray, seed: int, generation: int) -> EvalResult:
        """Fitness and statistics of every member of ``params``."""

    def evaluate_candidates(self, candidates: Candidates, seed: int, generation: int) -> EvalResult:
        """Fitness of every candidate of an ES generation; equals ``evaluate(es.ask(), ...)``.

        This default builds the matrix here; parallel backends override it so that workers
        rebuild their own rows from the seed.
        """
        return self.evaluate(candidates.rows(np.arange(candidates.popsize)), seed, generation)

    def share_noise(self, es: Any) -> None:  # noqa: B027 (an optional hook)
        """Draw ``es``'s next generation's noise where this backend's workers can read it (see the
        module docstring), and keep it in ``es`` for that generation; backends that cannot share it
        do nothing (their workers draw their own rows)."""

    def close(self) -> None:  # noqa: B027 (an optional hook: the serial backend holds nothing)
        """Release workers."""

    def abort(self) -> None:
        """Release workers at once, dropping any work in flight (after an interrupt)."""
        self.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialBackend(Backend):
    """One lockstep batch in this process."""

    def __init__(self, spec: RolloutSpec) -> None:
        super().__init__(spec)
        self.evaluator = LockstepEvaluator(spec)

    def evaluate(self, params: np.ndarray, seed: int, generation: int) -> EvalResult:
        return self.evaluator.evaluate(params, np.arange(params.shape[0]), seed, generation)


def _worker_main(spec: RolloutSpec, conn: Connection) -> None:
    """Worker loop: build environments once, then evaluate slices until told to stop.

    Ctrl-C in a terminal reaches the whole process group: workers ignore it and leave the
    decision to the parent, which stops them. A parent that is gone (its end of the pipe closed)
    ends the loop quietly.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    evaluator = LockstepEvaluator(spec)
    try:
        conn.send(("ready", os.getpid()))
        while True:
            message = conn.recv()
            if message is None:
                break
            kind, payload, member_ids, seed, generation = message
            try:
                # "candidates": rebuild this slice's vectors from (mean, sigma, noise seed) here.
                params = payload.rows(member_ids) if kind == "candidates" else payload
                reply: tuple = ("ok", evaluator.evaluate(params, member_ids, seed, generation))
            except Exception as err:  # reported to the parent, which raises it
                reply = ("error", (type(err).__name__, str(err)))
            conn.send(reply)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away


class ProcessBackend(Backend):
    """Persistent local worker processes, each stepping its slice of the population in lockstep.

    :param workers: number of processes (default: the machine's cores).
    :param max_retries: how many times a slice is re-run after its worker died (and how many
        times a replacement that dies while starting is started again).
    """

    def __init__(self, spec: RolloutSpec, workers: int | None = None, max_retries: int = 3) -> None:
        super().__init__(spec)
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 (or None for all cores), got {workers}")
        self.num_workers = int(workers or os.cpu_count() or 1)
        self.max_retries = max_retries
        self._ctx = mp.get_context("spawn")
        self._workers: list[tuple[Any, Connection] | None] = [None] * self.num_workers
        self._noise_folder: Path | None = None  # files of noise drawn by share_noise, by seed
        try:
            for index in range(self.num_workers):
                self._start(index)
        except BaseException:  # e.g. Ctrl-C while workers start: none may outlive this
            self.abort()
            raise

    def _start(self, index: int) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(self.spec, child), daemon=True)
        # A worker is one core: its BLAS must not start a thread per CPU. The pool size is read
        # when the child imports numpy, so it has to be in the environment the child starts with.
        saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
        for name in _THREAD_VARIABLES:
            os.environ.setdefault(name, "1")
        # Started with SIGINT ignored, so that a Ctrl-C while the worker imports cannot reach it
        # (spawned children keep an ignored signal; the worker keeps ignoring it, see _worker_main).
        ignore = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignore else None
        try:
            process.start()
        finally:
            if ignore:
                signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        child.close()
        try:
            try:
                status, _ = parent.recv()
            except (EOFError, ConnectionResetError, OSError):
                raise WorkersLost(f"worker {index} died while starting") from None
            if status != "ready":
                raise RuntimeError(f"worker {index} failed to start")
        except BaseException:  # not ready (or Ctrl-C while waiting): it must not outlive us
            process.kill()
            process.join(timeout=5)
            parent.close()
            raise
        self._workers[index] = (process, parent)

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (for monitoring, and for tests that kill one)."""
        return [w[0].pid for w in self._workers if w is not None]

    def _restart(self, index: int) -> None:
        old = self._workers[index]
        if old is not None:
            process, conn = old
            conn.close()
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
        logger.warning("worker %d died; restarting it and re-running its slice", index)
        for attempt in range(self.max_retries + 1):  # a replacement may die while it starts
            try:
                self._start(index)
                return
            except WorkersLost:
                if attempt == self.max_retries:
                    raise
                logger.warning("worker %d died while starting; starting it again", index)

    def evaluate(self, params: np.ndarray, seed: int, generation: int) -> EvalResult:
        params = np.asarray(params)
        return self._run(params.shape[0], lambda s: ("params", params[s], s, seed, generation), generation)

    def evaluate_candidates(self, candidates: Candidates, seed: int, generation: int) -> EvalResult:
        shared = self._noise_path(candidates.noise_seed)
        if candidates.noise_file is None and shared is not None and shared.exists():
            candidates = replace(candidates, noise_file=str(shared))
        try:
            return self._run(
                candidates.popsize, lambda s: ("candidates", candidates, s, seed, generation), generation
            )
        finally:
            if shared is not None:  # the driver's ES keeps its rows mapped for tell; no worker needs the file
                with contextlib.suppress(OSError):  # (a mapped file stays where the system forbids it)
                    shared.unlink(missing_ok=True)

    def share_noise(self, es: Any) -> None:
        """Draw the next generation's noise into a ``.npy`` file the workers map (see the module
        docstring); it is removed once that generation is evaluated, the folder when the backend
        closes."""
        if self._noise_folder is None:
            # in memory where the system offers it (a disk-backed folder pays for write-back)
            memory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            _remove_orphaned_noise(Path(memory or tempfile.gettempdir()))
            self._noise_folder = Path(tempfile.mkdtemp(prefix=f"{_NOISE_PREFIX}{os.getpid()}-", dir=memory))
        path = self._noise_path(es.next_generation_seed)
        assert path is not None
        partial = path.with_suffix(".partial.npy")
        shape, dtype = (es.n_noise_rows, es.num_params), es.mean.dtype
        rows = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=shape)
        es.draw_next_noise(out=rows)
        rows.flush()
        os.replace(partial, path)  # whole or absent: a worker never maps a file still being drawn

    def _noise_path(self, noise_seed: int) -> Path | None:
        return None if self._noise_folder is None else self._noise_folder / f"noise-{noise_seed:016x}.npy"

    def _remove_noise_folder(self) -> None:
        if self._noise_folder is not None:
            shutil.rmtree(self._noise_folder, ignore_errors=True)
            self._noise_folder = None

    def _run(self, popsize: int, message: Any, generation: int) -> EvalResult:
        """Send every worker its slice's ``message(slice)``, collect, re-run the slices of dead workers."""
        slices = split_population(popsize, self.num_workers)
        results: dict[int, EvalResult] = {}
        retries = 0
        pending = list(range(len(slices)))
        while pending:
            for index in pending:
                self._send(index, message(slices[index]))
            failed, errors = [], []
            for index in pending:  # read every reply before raising, so no pipe keeps a stale one
                try:
                    outcome = self._receive(index)
                except (ValueError, RuntimeError) as err:
                    errors.append(err)
                    continue
                if outcome is None:
                    failed.append(index)
                else:
                    results[index] = outcome
            if errors:
                raise errors[0]
            if failed:
                retries += 1
                if retries > self.max_retries:
                    raise WorkersLost(f"workers {failed} died {retries} times in generation {generation + 1}")
                for index in failed:
                    self._restart(index)
            pending = failed
        return EvalResult.concatenate([results[i] for i in range(len(slices))])

    def _send(self, index: int, message: tuple) -> None:
        worker = self._workers[index]
        try:
            assert worker is not None
            worker[1].send(message)
        except (BrokenPipeError, OSError, AssertionError):
            self._restart(index)
            try:
                self._workers[index][1].send(message)  # type: ignore[index]
            except (BrokenPipeError, OSError):
                pass  # died again at once: its reply is missing, and the slice is re-run

    def _receive(self, index: int) -> EvalResult | None:
        worker = self._workers[index]
        assert worker is not None
        try:
            status, payload = worker[1].recv()
        except (EOFError, ConnectionResetError, OSError):
            return None
        if status == "error":
            name, text = payload
            # Bad input (an unknown info key, a wrong shape) stays a ValueError for the caller.
            raise (ValueError if name == "ValueError" else RuntimeError)(f"worker {index}: {name}: {text}")
        return payload

    def close(self) -> None:
        for worker in self._workers:
            if worker is None:
                continue
            process, conn = worker
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
            conn.close()
        self._workers = [None] * self.num_workers
        self._remove_noise_folder()

    def abort(self) -> None:
        """Kill the workers now: their slices in flight are of no use after an interrupt."""
        for worker in self._workers:
            if worker is not None:
                process, conn = worker
                process.kill()
                process.join(timeout=5)
                conn.close()
        self._workers = [None] * self.num_workers
        self._remove_noise_folder()


_NOISE_PREFIX = "hebb-noise-"  # then the driver's process id: hebb-noise-<pid>-<random>


def _remove_orphaned_noise(folder: Path) -> None:
    """Remove the shared-noise folders of drivers that are gone (killed before they could)."""
    for path in folder.glob(f"{_NOISE_PREFIX}*-*"):
        pid = path.name[len(_NOISE_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: is it alive (as far as this user can tell)?
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OSError):
            pass  # alive under another user, or unknown: not ours to remove


def make_backend(name: str, spec: RolloutSpec, workers: int | None = None, **kwargs: Any) -> Backend:
    """Build a backend by name: ``serial``, ``process`` or ``ray``."""
    if name == "serial":
        return SerialBackend(spec)
    if name == "process":
        return ProcessBackend(spec, workers=workers)
    if name == "ray":
        from hebb_agents.ray_backend import RayBackend

        return RayBackend(spec, workers=workers, **kwargs)
    raise ValueError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)}")
