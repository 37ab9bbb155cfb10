"""Where rollouts run: ``serial`` (this process), ``process`` (persistent local workers) and
``ray`` (actors on a cluster, optional extra).

Every backend splits a population into contiguous slices, hands each slice to a worker that
keeps its environments between generations, and concatenates the results. Results depend
only on ``(seed, generation, member index)``, never on the split, so all backends agree.
A worker that dies mid-generation is restarted and its slice re-run; the generation is not lost.
"""

from __future__ import annotations

import abc
import logging
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from hebb_agents.rollout import EvalResult, LockstepEvaluator, RolloutSpec

BACKENDS = ("serial", "process", "ray")
logger = logging.getLogger(__name__)


def split_population(popsize: int, parts: int) -> list[np.ndarray]:
    """Member indices of each of ``parts`` contiguous, near-equal slices (empty slices dropped)."""
    return [s for s in np.array_split(np.arange(popsize), max(1, parts)) if s.size]


class Backend(abc.ABC):
    """Evaluates a population ``(P, n)`` for a generation; subclasses decide where."""

    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def evaluate(self, params: np.ndarray, seed: int, generation: int) -> EvalResult:
        """Fitness and statistics of every member of ``params``."""

    def close(self) -> None:
        """Release workers."""

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
    """Worker loop: build environments once, then evaluate slices until told to stop."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    evaluator = LockstepEvaluator(spec)
    conn.send(("ready", os.getpid()))
    while True:
        message = conn.recv()
        if message is None:
            break
        params, member_ids, seed, generation = message
        try:
            conn.send(("ok", evaluator.evaluate(params, member_ids, seed, generation)))
        except Exception as err:  # reported to the parent, which raises it
            conn.send(("error", f"{type(err).__name__}: {err}"))


class ProcessBackend(Backend):
    """Persistent local worker processes, each stepping its slice of the population in lockstep.

    :param workers: number of processes (default: the machine's cores).
    :param max_retries: how many times a slice is re-run after its worker died.
    """

    def __init__(self, spec: RolloutSpec, workers: int | None = None, max_retries: int = 3) -> None:
        super().__init__(spec)
        self.num_workers = int(workers or os.cpu_count() or 1)
        if self.num_workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.max_retries = max_retries
        self._ctx = mp.get_context("spawn")
        self._workers: list[tuple[Any, Connection] | None] = [None] * self.num_workers
        for index in range(self.num_workers):
            self._start(index)

    def _start(self, index: int) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(self.spec, child), daemon=True)
        process.start()
        child.close()
        status, _ = parent.recv()
        if status != "ready":
            raise RuntimeError(f"worker {index} failed to start")
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
        self._start(index)

    def evaluate(self, params: np.ndarray, seed: int, generation: int) -> EvalResult:
        slices = split_population(params.shape[0], self.num_workers)
        results: dict[int, EvalResult] = {}
        retries = 0
        pending = list(range(len(slices)))
        while pending:
            for index in pending:
                self._send(index, (params[slices[index]], slices[index], seed, generation))
            failed = []
            for index in pending:
                outcome = self._receive(index)
                if outcome is None:
                    failed.append(index)
                else:
                    results[index] = outcome
            if failed:
                retries += 1
                if retries > self.max_retries:
                    raise RuntimeError(f"workers {failed} died {retries} times in generation {generation}")
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
            self._workers[index][1].send(message)  # type: ignore[index]

    def _receive(self, index: int) -> EvalResult | None:
        worker = self._workers[index]
        assert worker is not None
        try:
            status, payload = worker[1].recv()
        except (EOFError, ConnectionResetError, OSError):
            return None
        if status == "error":
            raise RuntimeError(f"worker {index} failed: {payload}")
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
