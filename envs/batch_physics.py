"""The physics of many MuJoCo envs stepped by one compiled call: what a lockstep ES spends its time on.

An :class:`~hebb_envs.locomotion.EnvBatch` step holds each env's action for ``frame_skip`` physics
steps, computes the contact forces Gymnasium reports (``mj_rnePostConstraint``) and reads a few
arrays of each env's ``MjData`` before and after. From Python that is a loop of binding calls and
array views per env: on HalfCheetah, ~7 µs per env against ~45 µs of physics.
:func:`step_physics` does it in one call: a numba function that calls libmujoco's ``mj_step`` and
``mj_rnePostConstraint`` through their C addresses on each env's ``MjModel`` / ``MjData`` and copies
the requested values out. These are the same C calls on the same data as the bindings make, so every
value is identical (tested against the Python loop, which stays as the fallback).

Which path runs: ``HEBB_ENV_KERNEL`` = ``auto`` (default: compiled when numba is installed and the
library the bindings load is found), ``numba`` (compiled, or an error saying why not) or ``python``.

A MuJoCo *error* (not a warning) inside a compiled call cannot be turned into a Python exception as
the bindings do; MuJoCo then ends the process. MuJoCo raises errors for broken models or exhausted
memory, not for diverging states (those are warnings and a reset, see ``_physics_diverged``); a
Python callback installed in ``mujoco.set_mjcb_*`` that raises would end it too.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import mujoco
import numpy as np

ENV_KERNELS = ("auto", "numba", "python")
_TIME_ONLY = int(mujoco.mjtState.mjSTATE_TIME)  # mj_getState's signature for the clock alone


class Region(NamedTuple):
    """``length`` consecutive float64 values of the ``MjData`` array ``field`` (flattened), from ``start``."""

    field: str
    start: int
    length: int

    def read(self, data: mujoco.MjData) -> np.ndarray:
        """The values as a view (the Python path; checked once per env, with its addresses)."""
        return getattr(data, self.field).reshape(-1)[self.start : self.start + self.length]

    def address(self, data: mujoco.MjData) -> int:
        """Where the values start in memory (the compiled path)."""
        return self._checked(data).ctypes.data + 8 * self.start

    def _checked(self, data: mujoco.MjData) -> np.ndarray:
        array = getattr(data, self.field)
        if array.dtype != np.float64 or not array.flags.c_contiguous:
            raise ValueError(f"MjData.{self.field} is not a contiguous float64 array")
        if self.start < 0 or self.length < 0 or self.start + self.length > array.size:
            raise ValueError(
                f"region {self.start}:{self.start + self.length} lies outside MjData.{self.field}, "
                f"which holds {array.size} values"
            )
        return array


def resolve_env_kernel(kernel: str | None = None) -> str:
    """``numba`` or ``python``: the path :func:`step_physics` takes (see the module docstring)."""
    name = kernel if kernel is not None else os.environ.get("HEBB_ENV_KERNEL", "auto")
    if name not in ENV_KERNELS:
        source = " (HEBB_ENV_KERNEL)" if kernel is None else ""
        raise ValueError(f"unknown env kernel {name!r}{source}; accepted: {', '.join(ENV_KERNELS)}")
    if name == "python":
        return name
    reason = _compiled_unavailable()
    if reason is None:
        return "numba"
    if name == "numba":
        raise ValueError(f"env kernel 'numba' is unavailable: {reason}")
    return "python"


@dataclass(frozen=True, eq=False)
class Layout:
    """What a group step reads: ``before`` and ``after`` regions of each env's data, and the number of
    actuators. Build one per env structure and keep it: the envs cache their addresses against it."""

    before: tuple[Region, ...]
    after: tuple[Region, ...]
    n_actuators: int

    @property
    def control(self) -> Region:
        """The controls the step writes."""
        return Region("ctrl", 0, self.n_actuators)

    @functools.cached_property
    def before_lengths(self) -> np.ndarray:
        """Lengths of the ``before`` regions, as the kernel takes them."""
        return np.array([r.length for r in self.before], dtype=np.int64)

    @functools.cached_property
    def after_lengths(self) -> np.ndarray:
        """Lengths of the ``after`` regions, as the kernel takes them."""
        return np.array([r.length for r in self.after], dtype=np.int64)

    @functools.cached_property
    def widths(self) -> tuple[int, int]:
        """Values read per env before and after the step."""
        return int(self.before_lengths.sum()), int(self.after_lengths.sum())


def step_physics(
    envs: Sequence[Any], actions: np.ndarray, layout: Layout, kernel: str = "python"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step each env's physics once with its action row and read the ``layout``'s regions.

    ``envs`` have ``model``, ``data`` and ``frame_skip`` (all the same ``frame_skip``). Returns
    ``(values_before (n, sum of lengths), values_after (n, ...), time_before (n,), time_after (n,))``.
    """
    if not envs:
        raise ValueError("step_physics needs at least one env")
    if kernel not in ("numba", "python"):
        raise ValueError(f"unknown env kernel {kernel!r}; accepted: numba, python (see resolve_env_kernel)")
    expected = (len(envs), layout.n_actuators)
    if np.shape(actions) != expected:
        raise ValueError(f"actions must have shape {expected} (envs, actuators), got {np.shape(actions)}")
    frame_skip = envs[0].frame_skip
    rows = _address_rows(envs, layout)  # also checks the regions against each env's data, once per env
    if kernel == "numba":
        n = len(envs)
        width_before, width_after = layout.widths
        values_before, values_after = np.empty((n, width_before)), np.empty((n, width_after))
        starts, ends = np.empty(n), np.empty(n)
        functions = _compiled()
        functions.step(
            functions.mj_step,
            functions.mj_rne_post_constraint,
            functions.mj_get_state,
            np.array(rows, dtype=np.uint64),
            np.ascontiguousarray(actions, dtype=np.float64),  # exact, as numpy's assignment to ctrl
            frame_skip,
            3,  # the first region's column in the addresses: after model, data, ctrl
            layout.before_lengths,
            values_before,
            layout.after_lengths,
            values_after,
            starts,
            ends,
            _TIME_ONLY,
        )
        return values_before, values_after, starts, ends
    starts = np.array([env.data.time for env in envs])
    values_before = _read(envs, layout.before)  # the envs are independent: all reads, then all steps
    for env, action in zip(envs, actions):
        data, model = env.data, env.model
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)
        mujoco.mj_rnePostConstraint(model, data)  # contact forces, as Gymnasium computes them
    values_after = _read(envs, layout.after)
    ends = np.array([env.data.time for env in envs])
    return values_before, values_after, starts, ends


def _read(envs: Sequence[Any], regions: Sequence[Region]) -> np.ndarray:
    """``(n, sum of lengths)``: the regions of every env's data, side by side (the Python path)."""
    columns = [np.array([region.read(env.data) for env in envs]) for region in regions]
    return np.concatenate(columns, axis=1) if columns else np.empty((len(envs), 0))


# env -> (layout, model, data, address row). Kept beside the env, not in its __dict__, which a copy of the
# env could carry (with a model and data of its own) to step the original's data through raw addresses.
_ADDRESSES: weakref.WeakKeyDictionary[Any, tuple[Layout, Any, Any, list[int]]] = weakref.WeakKeyDictionary()


def _address_rows(envs: Sequence[Any], layout: Layout) -> list[list[int]]:
    """Per env, ``3 + regions`` addresses: its ``MjModel``, ``MjData``, ``ctrl`` and regions.

    Working them out checks the layout against the env (actuators, each region's bounds); cached per
    env for as long as it keeps its model, data and the layout.
    """
    rows = []
    for env in envs:
        model, data = env.model, env.data
        cache = _ADDRESSES.get(env)
        if cache is None or cache[0] is not layout or cache[1] is not model or cache[2] is not data:
            if model.nu != layout.n_actuators:
                raise ValueError(f"layout for {layout.n_actuators} actuators, but the model has {model.nu}")
            regions = (layout.control, *layout.before, *layout.after)
            row = [model._address, data._address, *(r.address(data) for r in regions)]
            cache = _ADDRESSES[env] = (layout, model, data, row)
        rows.append(cache[3])
    return rows


def mujoco_functions() -> np.ndarray:
    """libmujoco's ``mj_step``, ``mj_rnePostConstraint`` and ``mj_getState`` addresses and the
    ``mj_getState`` signature of the clock (uint64), for compiled callers; an error says why not."""
    reason = _compiled_unavailable()
    if reason is not None:
        raise ValueError(f"compiled env steps are unavailable: {reason}")
    functions = _compiled()
    addresses = (functions.mj_step, functions.mj_rne_post_constraint, functions.mj_get_state, _TIME_ONLY)
    return np.array(addresses, dtype=np.uint64)


def _library_path() -> str | None:
    """The libmujoco the bindings load (it sits beside them in the ``mujoco`` package)."""
    folder = os.path.dirname(mujoco.__file__)
    for pattern in ("libmujoco.so*", "libmujoco*.dylib", "mujoco.dll"):
        found = sorted(glob.glob(os.path.join(folder, pattern)))
        if found:
            return found[0]
    return None


@functools.cache
def _compiled_unavailable() -> str | None:
    """Why the compiled path cannot run here, or None (found out once per process)."""
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install 'hebb-agents[fast]')"
    if _library_path() is None:
        return f"no libmujoco found beside the mujoco bindings in {os.path.dirname(mujoco.__file__)}"
    try:
        _compiled()
    except Exception as error:  # e.g. a numba release that does not support this numpy
        reason = f"{type(error).__name__}: {error}"
        warnings.warn(f"compiled env physics unavailable ({reason}); stepping from Python", stacklevel=2)
        return reason
    return None


@dataclass(frozen=True)
class _Functions:
    step: Callable[..., None]
    mj_step: int
    mj_rne_post_constraint: int
    mj_get_state: int


_FUNCTIONS: _Functions | None = None


def _compiled() -> _Functions:
    """The group step (compiled once, then loaded from numba's disk cache) and libmujoco's functions."""
    global _FUNCTIONS
    if _FUNCTIONS is not None:
        return _FUNCTIONS
    from hebb_envs import _physics_kernel

    path = _library_path()
    if path is None:
        raise RuntimeError("libmujoco not found")
    # RTLD_NOLOAD: only the library the bindings already loaded (one MuJoCo, one state), never a second
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 0)
    try:
        library = ctypes.CDLL(path, mode=mode)
    except OSError as error:
        raise RuntimeError(f"{path} is not the library the mujoco bindings loaded ({error})") from None
    addresses = {
        name: ctypes.cast(getattr(library, name), ctypes.c_void_p).value
        for name in ("mj_step", "mj_rnePostConstraint", "mj_getState")
    }
    _physics_kernel.compile_now()
    _FUNCTIONS = _Functions(
        _physics_kernel.group_step,
        addresses["mj_step"],
        addresses["mj_rnePostConstraint"],
        addresses["mj_getState"],
    )
    return _FUNCTIONS
