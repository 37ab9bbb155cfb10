"""Damaged Ant and HalfCheetah: Gymnasium's v5 MuJoCo environments with a swappable body.

Each environment is Gymnasium's own ``AntEnv`` / ``HalfCheetahEnv`` (same observation, reward terms and
reset noise); only ``self.model`` is swapped for a damaged model built by :mod:`hebb_envs.morphology`, so
a damaged env steps as fast as the stock one. The intact body is the model Gymnasium itself loads.
``step`` does Gymnasium's arithmetic on the same values with less Python around the physics call (an
ES evaluates hundreds of thousands of steps per generation): observations, rewards, terminations and
``info`` equal Gymnasium's own ``step`` bit for bit (tested), at 8-14 us less per HalfCheetah step and
70-80 us less per Ant step (two measurements on a 2-vCPU machine).

Damage changes values, never the model's structure (MuJoCo's ``signature`` is checked), so one
``MjData`` serves every body: switching the body keeps the physical state as it is, and an env costs no
more memory with 17 possible bodies than with one (an Ant ``MjData`` holds a 14 MiB arena). Damaged
models come from the process-wide cache of :func:`hebb_envs.morphology.build_model` and are shared by
every env using that body: treat ``env.unwrapped.model`` of a damaged env as read-only (runtime edits
would reach every env with that body).

``damage=`` accepts:

- ``None`` or ``"intact"``: the stock body;
- a catalogue name (``"front_left_short"``), a :class:`DamageSpec`, a *tuple* of ``DamageSpec``
  (combined into one morphology), a dict ``{"limb", "kind", "scale"}`` or a name in the form
  ``info["damage"]`` reports (``"front_left:shorten:0.5+back_right:paralyse:0"``; ``:0`` may be left
  out): that body every episode;
- a split name (``"seen"``, ``"unseen"``, ``"all"``, Ant also ``"paper_seen"`` / ``"paper_unseen"``) or a
  *list* whose items are any of the above: one member is drawn uniformly per episode from the env's
  generator, so ``reset(seed=s)`` fixes the draw as well as the initial state.

``reset(options={"damage": ...})`` overrides the body for that one episode (it draws no body, so the
same seed gives another initial state than a pooled episode that happened to draw that body);
:meth:`set_damage` changes it immediately, keeping the physical state (used by
:class:`hebb_envs.wrappers.MidEpisodeDamage`).

``info`` keeps Gymnasium's terms (``x_position``, ``x_velocity``, ``reward_forward``, ...) and adds
``damage`` (the morphology's name) and ``x_progress`` (metres along +x since reset), so agents can be
judged on distance rather than on the Ant's +1 per step healthy bonus.

Observation and action sizes never depend on the damage.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import numbers
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from hebb_envs._checks import check_bool, check_int
from hebb_envs.batch_physics import Layout, Region, mujoco_functions, resolve_env_kernel, step_physics
from hebb_envs.morphology import (
    DamageLike,
    Morphology,
    build_model,
    draw_from_pool,
    resolve_damage,
    resolve_pool,
    stock_xml_path,
)
from hebb_envs.rendering import load_triton_before_opengl


@contextlib.contextmanager
def without_settotalmass_warning() -> Iterator[None]:
    """Drop MuJoCo's deprecation warning for ``settotalmass`` while Gymnasium compiles its own XML.

    Stock HalfCheetah-v5's XML uses the attribute, so MuJoCo 4 prints the warning for every env
    (every worker, every run); the damaged models never use it (see :mod:`hebb_envs.morphology`).
    ``hebb_agents`` builds Gymnasium's own MuJoCo envs inside it too.
    Any other MuJoCo warning is still printed, in MuJoCo's own format.
    """

    def handler(message: str) -> None:
        if "settotalmass" not in message:
            print(f"WARNING: {message}", file=sys.stderr)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


BatchStep = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]
"""``(obs (n, obs_dim), reward (n,), terminated (n,), truncated (n,), info)``, Gymnasium's vector form."""


class EnvBatch:
    """Damaged envs of one class stepped together: what an ES evaluating many bodies at once needs.

    ``step(actions, rows=None)`` steps ``envs[rows]`` (all by default) with one action row each and
    returns :data:`BatchStep`: ``info`` holds one array per key of the envs' own ``step`` (``damage``: a
    list of names). Every value equals what each env's ``step`` gives, bit for bit (tested): the same
    operations on the same operands, with the physics of all envs in one call (compiled where numba
    is installed, see :mod:`hebb_envs.batch_physics`; :attr:`kernel` says which) and the reward
    arithmetic done once for the batch. In the ES's lockstep loop on a 2-vCPU machine that made a
    member-step 1.48x faster than stepping each env on HalfCheetah and 1.16x on Ant (medians,
    ``scripts/profile_lockstep.py``).
    Episodes still start with each env's own ``reset``. Build it with ``AntDamageEnv.batch(envs)`` /
    ``HalfCheetahDamageEnv.batch(envs)``.
    """

    def __init__(
        self, envs: list[Any], step: Callable[[Sequence[Any], np.ndarray, str], BatchStep], kernel: str
    ) -> None:
        self.envs = envs
        self._step = step
        self.kernel = kernel  # how the physics runs: "numba" or "python" (see hebb_envs.batch_physics)

    def step(self, actions: np.ndarray, rows: Sequence[int] | np.ndarray | None = None) -> BatchStep:
        """Step ``envs[rows]`` (every env when ``rows`` is None) with ``actions`` ``(len(rows), nu)``."""
        if rows is None:
            envs = self.envs
        else:
            indices = np.asarray(rows)
            if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
                raise ValueError(
                    f"rows must be a 1-D sequence of env indices, got {indices.dtype} {indices.shape}"
                )
            positions = indices.tolist()
            outside = [row for row in positions if not 0 <= row < len(self.envs)]
            if outside:  # a negative index would alias another row and step one env twice
                raise ValueError(f"rows must be env indices in 0..{len(self.envs) - 1}, got {outside}")
            if len(set(positions)) != len(positions):
                raise ValueError(
                    f"rows must not repeat an env (each is stepped once per call), got {positions}"
                )
            envs = [self.envs[row] for row in positions]
        if not envs:
            raise ValueError("EnvBatch.step needs at least one row to step")
        # one memory order for the per-row sums, whatever layout the caller's array has
        return self._step(envs, np.ascontiguousarray(actions), self.kernel)


def _height_range(value: Any) -> tuple[float, float]:
    """``healthy_z_range`` as two heights, lower first (``inf`` for no bound, as Gymnasium allows)."""
    try:
        low, high = value
        numbers_given = all(
            isinstance(h, numbers.Real) and not isinstance(h, (bool, np.bool_)) and not math.isnan(h)
            for h in (low, high)
        )
    except (TypeError, ValueError):
        numbers_given = False
    if not numbers_given or not low < high:
        raise ValueError(
            f"healthy_z_range must be two heights (low, high), low < high (inf: no bound); got {value!r}"
        )
    return float(low), float(high)


# MuJoCo's warnings for a state it had to reset: positions, velocities or accelerations blown up
_BAD_STATE = [
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
]


def _physics_diverged(data: mujoco.MjData, start: float, step_time: float) -> bool:
    """Whether MuJoCo reset ``data`` during the step that began at time ``start``.

    A state that blows up (NaN, Inf or huge ``qpos``/``qvel``/``qacc``) is never returned: MuJoCo
    warns, resets the data to the model's defaults (time 0) and simulates the step's remaining
    substeps, so the robot reappears at its start pose, healthy. The clock shows it, falling short of
    the step's duration, except in the first step after a reset (it starts at time 0); there the
    warning counters, which a reset clears, show it.
    """
    if data.time < start + 0.5 * step_time:
        return True
    return start < 0.5 * step_time and bool(data.warning.number[_BAD_STATE].any())


class StepProgram(NamedTuple):
    """What the compiled env step (``hebb_envs._step_kernel.locomotion_step``) needs of one env: libmujoco's
    functions, the env's addresses (model, data, arrays read and written), sizes and settings (their
    columns are named in ``hebb_envs._step_kernel``). Valid for the body in use when it was made."""

    functions: np.ndarray  # uint64
    addresses: np.ndarray  # uint64
    sizes: np.ndarray  # int64
    settings: np.ndarray  # float64
    obs_dim: int


class _DamageMixin:
    """The body-swapping part shared by the damaged envs; mixed in before Gymnasium's env class."""

    robot: str
    model: mujoco.MjModel
    data: mujoco.MjData

    def _init_damage(self, damage: Any, termination_grace_steps: int) -> None:
        self._grace_steps = check_int("termination_grace_steps", termination_grace_steps, 0)
        # morphology -> model; the stock body is the one Gymnasium built, damaged ones come from the cache
        self._bodies: dict[Morphology, mujoco.MjModel] = {(): self.model}
        self._pool = resolve_pool(self.robot, damage)  # [(name, specs), ...]
        self._damage_name, self._damage_specs = "intact", ()
        self._elapsed = 0
        self._diverged = False  # MuJoCo reset a blown-up state during the last step
        self._x_start = 0.0
        self._use_body(*self._pool[0], forward=False)  # the first reset computes everything

    @property
    def damage(self) -> str:
        """Name of the body in use (catalogue name, ``intact``, or ``limb:kind:scale+...``)."""
        return self._damage_name

    @property
    def damage_specs(self) -> Morphology:
        """The damages of the body in use (empty tuple = intact)."""
        return self._damage_specs

    @property
    def damage_pool(self) -> tuple[str, ...]:
        """Names of the morphologies an episode is drawn from."""
        return tuple(name for name, _ in self._pool)

    def _body(self, specs: Morphology) -> mujoco.MjModel:
        model = self._bodies.get(specs)
        if model is None:
            model = build_model(self.robot, specs)
            stock = self._bodies[()]
            # Damage edits values, never structure, so the env's one MjData fits every body.
            if model.signature != stock.signature:
                raise RuntimeError(f"damaged {self.robot} model differs in structure from the stock model")
            # offscreen buffer at least as large as this env renders; the cached model is shared, so
            # a larger buffer goes on this env's own copy
            size, needed = model.vis.global_, stock.vis.global_
            if size.offwidth < needed.offwidth or size.offheight < needed.offheight:
                model = copy.copy(model)
                model.vis.global_.offwidth = max(size.offwidth, needed.offwidth)
                model.vis.global_.offheight = max(size.offheight, needed.offheight)
            self._bodies[specs] = model
        return model

    def _use_body(self, name: str, specs: Morphology, forward: bool = True) -> None:
        model = self._body(specs)
        if model is not self.model:
            self.model = model
            if forward:
                # positions of the new geometry and contact forces for the next observation; qpos, qvel,
                # act, ctrl, time and the warm start stay exactly as they were
                mujoco.mj_forward(model, self.data)
                mujoco.mj_rnePostConstraint(model, self.data)
            renderer = self.mujoco_renderer
            renderer.model = model
            for viewer in renderer._viewers.values():
                viewer.model = model
        self._damage_name, self._damage_specs = name, specs

    def step_program(self) -> StepProgram:
        """This env, as a compiled caller steps it (see :class:`StepProgram`); build it again after a
        reset or a body switch. Each compiled step equals :meth:`step` bit for bit (tested), but leaves
        the env's episode counter alone: report the steps taken with :meth:`record_steps`."""
        if self.render_mode == "human":
            raise ValueError("compiled steps cannot render; use render_mode None or rgb_array")
        model, data = self.model, self.data
        for name in ("qpos", "qvel", "ctrl", "xpos", "cfrc_ext"):
            array = getattr(data, name)
            if array.dtype != np.float64 or not array.flags.c_contiguous:
                raise ValueError(f"MjData.{name} is not a contiguous float64 array")
        ant = self.robot == "ant"
        main = self._main_body_id if ant else 0
        addresses = [
            model._address,
            data._address,
            data.ctrl.ctypes.data,
            data.qpos.ctypes.data,
            data.qvel.ctypes.data,
            data.xpos.ctypes.data + 8 * 3 * main,
            data.cfrc_ext.ctypes.data,
            data.warning.number.ctypes.data,
        ]
        sizes = [
            int(ant),
            model.nq,
            model.nv,
            model.nu,
            model.nbody,
            self.frame_skip,
            int(self._exclude_current_positions_from_observation),
            int(ant and self._include_cfrc_ext_in_observation),
            int(ant and self._terminate_when_unhealthy),
            self._grace_steps,
            int((np.float32(1.0) * 0.5).dtype == np.float32),  # NumPy 2's promotion (float32), or 1's
            *_BAD_STATE,
        ]
        low_z, high_z = self._healthy_z_range if ant else (0.0, 0.0)
        low_force, high_force = self._contact_force_range if ant else (0.0, 0.0)
        settings = [
            self.model.opt.timestep * self.frame_skip,
            self._forward_reward_weight,
            self._ctrl_cost_weight,
            self._healthy_reward if ant else 0.0,
            self._contact_cost_weight if ant else 0.0,
            low_z,
            high_z,
            low_force,
            high_force,
        ]
        return StepProgram(
            mujoco_functions(),
            np.array(addresses, dtype=np.uint64),
            np.array(sizes, dtype=np.int64),
            np.array(settings, dtype=np.float64),
            int(self.observation_space.shape[0]),
        )

    def record_steps(self, steps: int) -> None:
        """Count ``steps`` that a compiled caller took (the grace period and ``_elapsed`` read it)."""
        self._elapsed += int(steps)

    def render(self) -> Any:
        """Gymnasium's ``render``, with Triton loaded before the first OpenGL context (see
        :mod:`hebb_envs.rendering`)."""
        if self.render_mode is not None:
            load_triton_before_opengl()
        return super().render()

    def set_damage(self, damage: DamageLike, name: str | None = None) -> str:
        """Switch body now; time, qpos, qvel, act and ctrl carry over unchanged.

        ``name`` overrides the name reported in ``info["damage"]``. Returns the name in use.
        """
        resolved_name, specs = resolve_damage(self.robot, damage)
        self._use_body(resolved_name if name is None else name, specs)
        return self._damage_name

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw this episode's body (from the seeded generator), then reset as Gymnasium does."""
        gym.Env.reset(self, seed=seed)  # seed first: the body draw comes from the same generator
        if options and options.get("damage", None) is not None:
            name, specs = resolve_damage(self.robot, options["damage"])
        else:
            name, specs = draw_from_pool(self._pool, self.np_random)
        if specs != self._damage_specs or name != self._damage_name:
            self._use_body(name, specs, forward=False)  # the reset below recomputes everything
        # Gymnasium's reset on the chosen body (seed=None: seeded above)
        obs, info = super().reset(seed=None, options=options)
        self._elapsed = 0
        self._x_start = float(self.data.qpos[0])
        info["damage"] = self._damage_name
        info["x_progress"] = 0.0
        return obs, info

    def _simulate(self, action: Any) -> None:
        """Gymnasium's ``do_simulation``: hold ``action`` for ``frame_skip`` physics steps; notes in
        ``_diverged`` whether MuJoCo reset a diverged state meanwhile (see :func:`_physics_diverged`)."""
        if np.shape(action) != (self.model.nu,):
            raise ValueError(
                f"Action dimension mismatch. Expected {(self.model.nu,)}, found {np.shape(action)}"
            )
        start = self.data.time
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_rnePostConstraint(self.model, self.data)  # contact forces, as Gymnasium computes them
        self._diverged = _physics_diverged(self.data, start, self.model.opt.timestep * self.frame_skip)

    # ----------------------------------------------------------------- batched stepping
    # Settings the batched arithmetic reads once for the whole batch (subclasses extend it).
    _BATCH_SETTINGS: tuple[str, ...] = (
        "frame_skip",
        "render_mode",
        "_forward_reward_weight",
        "_ctrl_cost_weight",
        "_exclude_current_positions_from_observation",
        "_grace_steps",
    )

    @classmethod
    def batch(cls, envs: Sequence[Any], kernel: str | None = None) -> EnvBatch:
        """Step ``envs`` together: see :class:`EnvBatch`.

        ``envs`` are unwrapped envs of this class built with the same arguments (their bodies may
        differ); a ``ValueError`` names what differs. ``kernel``: how the physics calls run,
        ``auto``, ``numba`` or ``python`` (``None``: the ``HEBB_ENV_KERNEL`` environment variable, see
        :mod:`hebb_envs.batch_physics`); the results are the same.
        """
        kernel = resolve_env_kernel(kernel)
        envs = list(envs)
        if not envs:
            raise ValueError(f"{cls.__name__}.batch needs at least one env")
        first = envs[0]
        if len({id(env) for env in envs}) != len(envs):
            raise ValueError(f"{cls.__name__}.batch needs distinct envs (one would step twice per call)")
        for env in envs:
            if type(env) is not cls:
                raise ValueError(f"{cls.__name__}.batch takes unwrapped {cls.__name__} envs, got {env}")
            differs = [
                name
                for name in cls._BATCH_SETTINGS
                if not np.array_equal(getattr(env, name), getattr(first, name))  # ranges may be arrays
            ]
            if env.model.opt.timestep != first.model.opt.timestep:
                differs.append("timestep")
            if differs:
                raise ValueError(
                    f"{cls.__name__}.batch needs envs built with the same arguments (bodies may differ); "
                    f"these differ: {', '.join(differs)}"
                )
        if len({id(env.data) for env in envs}) != len(envs):
            raise ValueError(f"{cls.__name__}.batch needs envs with their own MjData (one is shared)")
        return EnvBatch(envs, cls._step_batch, kernel)

    @staticmethod
    def _simulate_batch(
        envs: Sequence[Any], actions: np.ndarray, layout: Layout, kernel: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_simulate` for every env in one call (see :mod:`hebb_envs.batch_physics`), reading the
        ``layout``'s regions of each env's data; returns them and which envs diverged."""
        first = envs[0]
        expected = (len(envs), first.model.nu)
        if np.shape(actions) != expected:
            raise ValueError(f"Action dimension mismatch. Expected {expected}, found {np.shape(actions)}")
        values_before, values_after, starts, ends = step_physics(envs, actions, layout, kernel)
        step_time = first.model.opt.timestep * first.frame_skip
        # _physics_diverged for every env: the clock vectorised, the counters read in first steps only
        diverged = ends < starts + 0.5 * step_time
        for row in np.flatnonzero(starts < 0.5 * step_time):
            diverged[row] = _physics_diverged(envs[row].data, starts[row], step_time)
        return values_before, values_after, diverged

    @staticmethod
    def _finish_batch(
        envs: Sequence[Any],
        obs: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        info: dict[str, Any],
        diverged: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """:meth:`_finish_step` for a batch: counters, grace period, divergence, ``damage``,
        ``x_progress``."""
        first = envs[0]
        names, x_starts = [], np.empty(len(envs))
        for row, env in enumerate(envs):
            env._elapsed += 1
            names.append(env._damage_name)
            x_starts[row] = env._x_start
        if first._grace_steps and terminated.any():
            for row in np.flatnonzero(terminated):
                if envs[row]._elapsed <= envs[row]._grace_steps:
                    terminated[row] = False
        terminated |= diverged
        if first.render_mode == "human":
            for env in envs:
                env.render()
        info["damage"] = names
        info["x_progress"] = info["x_position"] - x_starts
        return obs, reward, terminated, np.zeros(len(envs), dtype=bool), info

    def _finish_step(self, obs: np.ndarray, reward: float, terminated: bool, info: dict[str, Any]):
        """The termination grace period, ``damage`` and ``x_progress`` in ``info``, human rendering."""
        self._elapsed += 1
        if terminated and self._elapsed <= self._grace_steps:
            terminated = False  # the grace period forgives the height test
        terminated = terminated or self._diverged  # ... never a state MuJoCo had to reset
        info["damage"] = self._damage_name
        info["x_progress"] = info["x_position"] - self._x_start  # both envs report qpos[0] there
        if self.render_mode == "human":
            self.render()
        # truncated is False: gym.make's TimeLimit wrapper ends episodes, as for Gymnasium's envs
        return obs, reward, terminated, False, info


@functools.cache
def _ant_layout(torso: int, nq: int, nv: int, nbody: int, nu: int) -> Layout:
    """What a batched Ant step reads: torso x, y before; qpos, qvel, torso x, y, contact forces after."""
    torso_xy = Region("xpos", 3 * torso, 2)
    after = (Region("qpos", 0, nq), Region("qvel", 0, nv), torso_xy, Region("cfrc_ext", 0, 6 * nbody))
    return Layout((torso_xy,), after, nu)


@functools.cache
def _cheetah_layout(nq: int, nv: int, nu: int) -> Layout:
    """What a batched HalfCheetah step reads: x before; qpos and qvel after."""
    return Layout((Region("qpos", 0, 1),), (Region("qpos", 0, nq), Region("qvel", 0, nv)), nu)


class AntDamageEnv(_DamageMixin, AntEnv):
    """Gymnasium's Ant-v5 with a damaged body. Limbs and damages: :mod:`hebb_envs.morphology`.

    ========================  ==============  ==========  ==================================================
    parameter                 type            default     meaning
    ========================  ==============  ==========  ==================================================
    damage                    see module doc  None        body, or set of bodies drawn per episode
    use_contact_forces        bool            False       append the 78 contact-force values (Ant-v5's
                                                          default obs, 105) instead of qpos/qvel only (27)
    healthy_z_range           (float, float)  (0.2, 3.0)  torso heights counted healthy; Ant-v5 uses
                                                          (0.2, 1.0)
    terminate_when_unhealthy  bool            True        end the episode when unhealthy (as Ant-v5)
    termination_grace_steps   int             0           steps after reset during which a torso out of
                                                          the healthy range does not terminate
    \\*\\*kwargs                                            any other ``AntEnv`` argument (reward weights,
                                                          ``reset_noise_scale``, ``render_mode``, ...)
    ========================  ==============  ==========  ==================================================

    Why the wider healthy range: with saturated actions, as random or untrained plastic networks produce,
    the Ant hops and its torso passes 1.0 m within a few dozen steps (measured: 20 episodes of random
    bang-bang actions on Ant-v5 ended after 11-89 steps, every one by exceeding z = 1.0), so Ant-v5's
    episodes end before a controller can learn anything. Observed hops stay below ~2.3 m, so (0.2, 3.0)
    leaves termination for a torso below the floor only.
    ``healthy_z_range=(0.2, 1.0)`` restores Ant-v5 exactly; ``termination_grace_steps`` keeps a chosen
    range but ignores start-up transients.

    Unlike Ant-v5, a step whose simulation diverged terminates the episode, grace period or not:
    MuJoCo then resets the state to the start pose (with a warning), and Ant-v5 would go on from there
    as if nothing happened, paying the survival reward.
    """

    robot = "ant"
    # AntEnv arguments this class sets itself (refused in **kwargs)
    fixed_kwargs: tuple[str, ...] = ("xml_file", "include_cfrc_ext_in_observation")

    def __init__(
        self,
        damage: Any = None,
        use_contact_forces: bool = False,
        healthy_z_range: tuple[float, float] = (0.2, 3.0),
        terminate_when_unhealthy: bool = True,
        termination_grace_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        for taken in self.fixed_kwargs:
            if taken in kwargs:
                raise ValueError(
                    f"{taken} is set by AntDamageEnv (the body comes from `damage`, contact forces from "
                    f"`use_contact_forces`); remove it"
                )
        # checked here: Gymnasium takes them as they come and fails, if at all, inside a later step
        use_contact_forces = check_bool("use_contact_forces", use_contact_forces)
        terminate_when_unhealthy = check_bool("terminate_when_unhealthy", terminate_when_unhealthy)
        healthy_z_range = _height_range(healthy_z_range)
        termination_grace_steps = check_int("termination_grace_steps", termination_grace_steps, 0)
        AntEnv.__init__(
            self,
            xml_file=stock_xml_path("ant"),
            healthy_z_range=healthy_z_range,
            terminate_when_unhealthy=terminate_when_unhealthy,
            include_cfrc_ext_in_observation=use_contact_forces,
            **kwargs,
        )
        # Pickle through this class's own arguments (AntEnv registered its own).
        utils.EzPickle.__init__(
            self,
            damage=damage,
            use_contact_forces=use_contact_forces,
            healthy_z_range=healthy_z_range,
            terminate_when_unhealthy=terminate_when_unhealthy,
            termination_grace_steps=termination_grace_steps,
            **kwargs,
        )
        self._init_damage(damage, termination_grace_steps)
        self._main_body_id = self.data.body(self._main_body).id  # the same in every body: structure is fixed

    def step(self, action):
        """Ant-v5's step (observation, reward terms, termination, ``info``) with less Python per call.

        Same arithmetic on the same values as Gymnasium's ``AntEnv.step``, so the results are
        equal bit for bit (tested), at about half its Python cost per step.
        """
        # NumPy scalars and the same operand order throughout: NumPy 2 promotes a Python float next to
        # an np.float32 (a weight given as one) to float32, so Python floats would change rounding.
        data = self.data
        qpos, qvel, xy = data.qpos, data.qvel, data.xpos[self._main_body_id, :2]  # views, updated in place
        xy_before = xy.copy()
        self._simulate(action)
        x_velocity, y_velocity = (xy - xy_before) / (self.model.opt.timestep * self.frame_skip)
        min_z, max_z = self._healthy_z_range
        healthy = np.isfinite(qpos).all() and np.isfinite(qvel).all() and min_z <= qpos[2] <= max_z
        contact_forces = np.clip(data.cfrc_ext, *self._contact_force_range)
        parts = [qpos[2:] if self._exclude_current_positions_from_observation else qpos, qvel]
        if self._include_cfrc_ext_in_observation:
            parts.append(contact_forces[1:].ravel())
        xy_position = qpos[:2]
        reward, info = self._reward_and_info(
            qpos[0],
            qpos[1],
            np.sqrt(xy_position.dot(xy_position)),
            x_velocity,
            y_velocity,
            healthy,
            np.square(action).sum(),  # in the action's dtype, as Gymnasium
            np.square(contact_forces).sum(),
        )
        terminated = (not healthy) and self._terminate_when_unhealthy
        return self._finish_step(np.concatenate(parts), reward, terminated, info)

    def _reward_and_info(
        self,
        x_position: Any,
        y_position: Any,
        distance: Any,
        x_velocity: Any,
        y_velocity: Any,
        healthy: Any,
        ctrl_squares: Any,
        contact_squares: Any,
    ) -> tuple[Any, dict[str, Any]]:
        """Ant-v5's reward terms and ``info``: on one step's scalars, or elementwise on a batch's arrays."""
        healthy_reward = healthy * self._healthy_reward
        forward_reward = x_velocity * self._forward_reward_weight
        ctrl_cost = self._ctrl_cost_weight * ctrl_squares
        contact_cost = self._contact_cost_weight * contact_squares
        info = {
            "x_position": x_position,
            "y_position": y_position,
            "distance_from_origin": distance,
            "x_velocity": x_velocity,
            "y_velocity": y_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        return (forward_reward + healthy_reward) - (ctrl_cost + contact_cost), info

    _BATCH_SETTINGS = (
        *_DamageMixin._BATCH_SETTINGS,
        "_main_body_id",
        "_healthy_z_range",
        "_healthy_reward",
        "_contact_force_range",
        "_contact_cost_weight",
        "_include_cfrc_ext_in_observation",
        "_terminate_when_unhealthy",
    )

    @classmethod
    def _step_batch(cls, envs: Sequence[AntDamageEnv], actions: np.ndarray, kernel: str) -> BatchStep:
        """:meth:`step`'s arithmetic for a batch (see :class:`EnvBatch`), row by row the same operations."""
        first = envs[0]
        nq, nv, nbody = first.model.nq, first.model.nv, first.model.nbody
        layout = _ant_layout(first._main_body_id, nq, nv, nbody, first.model.nu)
        xy_before, values, diverged = cls._simulate_batch(envs, actions, layout, kernel)
        qpos, qvel = values[:, :nq], values[:, nq : nq + nv]
        xy = values[:, nq + nv : nq + nv + 2]
        # the same operations on the same operands as step, one row per env
        x_velocity, y_velocity = ((xy - xy_before) / (first.model.opt.timestep * first.frame_skip)).T
        min_z, max_z = first._healthy_z_range
        z = qpos[:, 2]
        healthy = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1) & (min_z <= z) & (z <= max_z)
        forces = values[:, nq + nv + 2 :].reshape(len(envs), nbody, 6)
        contact_forces = np.clip(forces, *first._contact_force_range)
        squared_forces = np.square(contact_forces).reshape(len(envs), -1)  # rows as step's ravelled sum
        parts = [qpos[:, 2:] if first._exclude_current_positions_from_observation else qpos, qvel]
        if first._include_cfrc_ext_in_observation:
            parts.append(contact_forces[:, 1:].reshape(len(envs), -1))
        reward, info = first._reward_and_info(
            qpos[:, 0],
            qpos[:, 1],
            np.array([np.sqrt(p.dot(p)) for p in qpos[:, :2]]),  # dot per row, as step's
            x_velocity,
            y_velocity,
            healthy,
            np.square(actions).sum(axis=1),
            squared_forces.sum(axis=1),
        )
        terminated = ~healthy & bool(first._terminate_when_unhealthy)
        return cls._finish_batch(envs, np.concatenate(parts, axis=1), reward, terminated, info, diverged)


class HalfCheetahDamageEnv(_DamageMixin, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 with a damaged body. Limbs and damages: :mod:`hebb_envs.morphology`.

    ==========  ==============  =======  ==========================================================
    parameter   type            default  meaning
    ==========  ==============  =======  ==========================================================
    damage      see module doc  None     body, or set of bodies drawn per episode
    \\*\\*kwargs                           any other ``HalfCheetahEnv`` argument
    ==========  ==============  =======  ==========================================================

    HalfCheetah has no healthy range or grace period; unlike HalfCheetah-v5, an episode terminates at
    a step whose simulation diverged (MuJoCo then resets the state to the start pose, with a warning,
    and HalfCheetah-v5 would go on from there).
    """

    robot = "half_cheetah"
    fixed_kwargs: tuple[str, ...] = ("xml_file",)  # HalfCheetahEnv arguments this class sets itself

    def __init__(self, damage: Any = None, **kwargs: Any) -> None:
        if "xml_file" in kwargs:
            raise ValueError(
                "xml_file is set by HalfCheetahDamageEnv (the body comes from `damage`); remove it"
            )
        with without_settotalmass_warning():
            HalfCheetahEnv.__init__(self, xml_file=stock_xml_path("half_cheetah"), **kwargs)
        utils.EzPickle.__init__(self, damage=damage, **kwargs)
        self._init_damage(damage, 0)

    def step(self, action):
        """HalfCheetah-v5's step (observation, reward terms, ``info``) with less Python per call.

        Same arithmetic on the same values as Gymnasium's ``HalfCheetahEnv.step``, so the results
        are equal bit for bit (tested).
        """
        qpos, qvel = self.data.qpos, self.data.qvel  # views, updated in place
        x_before = qpos[0]  # NumPy scalars, as Gymnasium's (see AntDamageEnv.step)
        self._simulate(action)
        # the action's dtype for the control cost, as Gymnasium
        reward, info = self._reward_and_info(x_before, qpos[0], np.square(action).sum())
        position = qpos[1:] if self._exclude_current_positions_from_observation else qpos
        return self._finish_step(np.concatenate((position, qvel)), reward, False, info)

    def _reward_and_info(self, x_before: Any, x_after: Any, ctrl_squares: Any) -> tuple[Any, dict[str, Any]]:
        """HalfCheetah-v5's reward terms and ``info``: on one step's scalars, or elementwise on a batch's
        arrays."""
        x_velocity = (x_after - x_before) / (self.model.opt.timestep * self.frame_skip)
        forward_reward = self._forward_reward_weight * x_velocity
        ctrl_cost = self._ctrl_cost_weight * ctrl_squares
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return forward_reward - ctrl_cost, info

    @classmethod
    def _step_batch(cls, envs: Sequence[HalfCheetahDamageEnv], actions: np.ndarray, kernel: str) -> BatchStep:
        """:meth:`step`'s arithmetic for a batch (see :class:`EnvBatch`), row by row the same operations."""
        first = envs[0]
        nq = first.model.nq
        layout = _cheetah_layout(nq, first.model.nv, first.model.nu)
        before, values, diverged = cls._simulate_batch(envs, actions, layout, kernel)
        x_before, qpos, qvel = before[:, 0], values[:, :nq], values[:, nq:]
        reward, info = first._reward_and_info(x_before, qpos[:, 0], np.square(actions).sum(axis=1))
        position = qpos[:, 1:] if first._exclude_current_positions_from_observation else qpos
        terminated = np.zeros(len(envs), dtype=bool)
        obs = np.concatenate((position, qvel), axis=1)
        return cls._finish_batch(envs, obs, reward, terminated, info, diverged)
