"""Ray backend: the population's slices run on Ray actors, on one machine or a cluster.

Each actor holds one :class:`~hebb_agents.rollout.LockstepEvaluator` (its environments and
policy persist across generations) and steps its slice of the population in lockstep, exactly
as a :class:`~hebb_agents.backends.ProcessBackend` worker does, so for the same seed the result
equals the process and serial backends'. With :meth:`RayBackend.evaluate_candidates` the ES
centre goes into Ray's object store once per generation (one copy per node) and every actor
rebuilds its own candidates from the generation's noise seed.

An actor that dies mid-generation (its process killed, its node lost) is replaced by a new
actor and only its slice is re-run; when the cluster has no free CPU for a replacement, the
slice is queued on a surviving actor instead, which then serves both slices.

Install with ``pip install 'hebb-agents[ray]'``; ``hebb train --backend ray --address auto``
(or ``ray://head:10001``) runs on a cluster, ``--address`` left out starts a local Ray.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import numpy as np

from hebb_agents.backends import Backend, Candidates, WorkersLost, split_population
from hebb_agents.rollout import EvalResult, LockstepEvaluator, RolloutSpec

logger = logging.getLogger(__name__)

# Environment variables an actor copies from the driver, so workers everywhere pick the same kernel.
FORWARDED_ENV = ("HEBB_KERNEL", "HEBB_ENV_KERNEL")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray backend needs Ray: pip install 'hebb-agents[ray]' (or use backend 'process')"
        ) from None
    return ray


class EvaluatorActor:
    """What runs inside one Ray actor: a persistent lockstep evaluator."""

    def __init__(self, spec: RolloutSpec, env_vars: dict[str, str]) -> None:
        os.environ.update(env_vars)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.evaluator = LockstepEvaluator(spec)

    def pid(self) -> int:
        """Process id (for monitoring and for tests)."""
        return os.getpid()

    def evaluate(
        self, payload: np.ndarray | Candidates, member_ids: np.ndarray, seed: int, generation: int
    ) -> EvalResult:
        """Evaluate members ``member_ids``: given their rows ``(len, n)`` or the generation's candidates."""
        params = payload.rows(member_ids) if isinstance(payload, Candidates) else payload
        return self.evaluator.evaluate(params, member_ids, seed, generation)


def init_keeping_sigterm(ray: Any, **init_kwargs: Any) -> None:
    """``ray.init(**init_kwargs)``, keeping a SIGTERM handler the caller installed.

    ``ray.init`` replaces the SIGTERM handler with one that exits at once; ``hebb train``'s own
    (stop like Ctrl-C, saving the last finished generation) must survive it. Without a Python
    handler of the caller's, Ray's stays.
    """
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main else None
    ray.init(**init_kwargs)
    if callable(previous):
        signal.signal(signal.SIGTERM, previous)


FREED_CPU_WAIT_S = 30.0  # how long the only actor's replacement waits for the lost actor's CPU


class RayBackend(Backend):
    """Ray actors, each stepping a contiguous slice of the population in lockstep.

    :param spec: what every actor evaluates.
    :param workers: number of actors (default: as many as the cluster's CPUs hold, at the actors'
        ``num_cpus`` each).
    :param address: Ray address to connect to (``auto``, ``ray://host:10001``, ...); ``None``
        connects to the Ray this process already initialised, or starts a local one.
    :param max_retries: how many times one slice may be re-run after losing its actor.
    :param actor_options: extra ``ray.remote`` options for the actors (e.g. ``{"num_cpus": 2}``).
    :param placement_timeout_s: how long actors needing more CPUs than the cluster has may wait for
        new nodes before construction fails with the figures.
    """

    def __init__(
        self,
        spec: RolloutSpec,
        workers: int | None = None,
        address: str | None = None,
        max_retries: int = 3,
        actor_options: dict[str, Any] | None = None,
        placement_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(spec)
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = int(max_retries)
        ray = _import_ray()
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                init_keeping_sigterm(
                    ray, address=address, include_dashboard=False, logging_level=logging.WARNING
                )
            except ConnectionError as error:
                raise ValueError(
                    f"no Ray cluster reachable at address {address!r} ({error}); start one with "
                    "`ray start --head` (and `ray start --address=HEAD:6379` on other nodes), or "
                    "leave --address out for a local Ray instance"
                ) from None
        elif address is not None:
            logger.warning("Ray is already initialised in this process; ignoring address=%r", address)
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        options = {"num_cpus": 1, "max_restarts": 0, **(actor_options or {})}
        self._actor_cpus = float(options["num_cpus"])  # what a new actor waits for
        fitting = int(cluster_cpus // self._actor_cpus) if self._actor_cpus > 0 else int(cluster_cpus)
        count = int(workers) if workers else max(1, fitting)
        needed = count * self._actor_cpus
        # Ray waits, silently, for CPUs a cluster does not have (an autoscaler may still add them):
        # say so now, and give up after placement_timeout_s with the figures
        timeout = None
        if needed > cluster_cpus:
            timeout = placement_timeout_s
            logger.warning(
                "%d Ray workers need %g CPUs (%g each) but the cluster has %g now; waiting up to %g s "
                "for more nodes",
                count,
                needed,
                self._actor_cpus,
                cluster_cpus,
                timeout,
            )
        self._actor_class = ray.remote(**options)(EvaluatorActor)
        self._env_vars = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        self.actors = [self._new_actor() for _ in range(count)]
        self._borrowed: set[int] = set()  # slots whose lost actor a survivor stands in for
        try:
            # Fail here, with the actor's own error, if the spec cannot be built (bad env id, options).
            ray.get([actor.pid.remote() for actor in self.actors], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ValueError(
                f"{count} Ray workers need {needed:g} CPUs ({self._actor_cpus:g} each) but the cluster "
                f"has {cluster_cpus:g} and no more came within {timeout:g} s; accepted: --workers <= "
                f"{max(fitting, 0)} here (or add nodes)"
            ) from None
        except Exception:
            self.close()
            raise

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.spec, self._env_vars)

    @property
    def num_workers(self) -> int:
        return len(self.actors)

    def evaluate(self, params: np.ndarray, seed: int, generation: int) -> EvalResult:
        params = np.asarray(params)
        return self._run(params.shape[0], lambda s: params[s], seed, generation)

    def evaluate_candidates(self, candidates: Candidates, seed: int, generation: int) -> EvalResult:
        shared = self._ray.put(candidates)  # one object-store copy, read by every actor of a node
        return self._run(candidates.popsize, lambda s: shared, seed, generation)

    def _run(self, popsize: int, payload: Any, seed: int, generation: int) -> EvalResult:
        """Submit one slice per actor; a slice whose actor dies is re-run, not the generation."""
        ray = self._ray
        lost = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
        )
        self._restore_borrowed(generation)
        slices = split_population(popsize, len(self.actors))
        owner = list(range(len(slices)))  # actor index running each slice

        def submit(index: int) -> Any:
            part = slices[index]
            return self.actors[owner[index]].evaluate.remote(payload(part), part, seed, generation)

        pending = {submit(index): index for index in range(len(slices))}
        results: dict[int, EvalResult] = {}
        attempts = [0] * len(slices)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            try:
                results[index] = ray.get(ready[0])
            except lost as err:
                attempts[index] += 1
                if attempts[index] > self.max_retries:
                    raise WorkersLost(
                        f"slice {index} lost its actor {attempts[index]} times in generation {generation + 1}"
                    ) from err
                owner[index] = self._replace(owner[index], generation)
                pending[submit(index)] = index
        return EvalResult.concatenate([results[i] for i in range(len(slices))])

    def _replace(self, dead: int, generation: int) -> int:
        """Index of the actor that takes over from actor ``dead``: a new one, or a survivor.

        ``generation`` counts from 0; messages count from 1, as the log and progress bar do.
        """
        lost = self.actors[dead]  # slots it stood in for hold it too: they are no survivors
        survivor = next((i for i, actor in enumerate(self.actors) if actor is not lost), None)
        # A lost actor's CPU is released a moment after the loss is reported: with no survivor to
        # stand in, wait for it rather than fail the run.
        if self._cpu_frees(wait_s=0.0 if survivor is not None else FREED_CPU_WAIT_S):
            logger.warning(
                "actor %d lost in generation %d; re-running its slice on a new actor", dead, generation + 1
            )
            self.actors[dead] = self._new_actor()
            self._borrowed.discard(dead)
            return dead
        if survivor is None:
            raise WorkersLost(
                f"the only actor was lost in generation {generation + 1} and no CPU was free for a new "
                f"one within {FREED_CPU_WAIT_S:g} s"
            )
        logger.warning(
            "actor %d lost in generation %d and no CPU is free; its slice waits for actor %d",
            dead,
            generation + 1,
            survivor,
        )
        self.actors[dead] = self.actors[survivor]  # the survivor serves both slices until a CPU frees
        self._borrowed.add(dead)
        return survivor

    def _cpu_frees(self, wait_s: float) -> bool:
        """Whether a CPU for a new actor is free now, or becomes free within ``wait_s`` seconds."""
        deadline = time.monotonic() + wait_s
        while self._ray.available_resources().get("CPU", 0) < self._actor_cpus:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def _restore_borrowed(self, generation: int) -> None:
        """Give slots served by a survivor their own actor again, as CPUs become free (a lost actor's
        CPU is released a moment after the loss is reported)."""
        for slot in sorted(self._borrowed):
            if self._ray.available_resources().get("CPU", 0) < self._actor_cpus:
                return
            logger.warning("generation %d: slot %d gets a new actor again", generation + 1, slot)
            self.actors[slot] = self._new_actor()
            self._borrowed.discard(slot)

    def close(self) -> None:
        """Kill the actors; shut Ray down if this backend started it."""
        ray = self._ray
        for actor in {id(a): a for a in self.actors}.values():
            try:
                ray.kill(actor)
            except Exception:  # already dead: nothing to release
                pass
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
