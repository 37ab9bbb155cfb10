"""The physics of many MuJoCo envs stepped by one compiled call: what a lockstep ES spends its time on.

An :class:`~hebb_envs.locomotion.EnvBatch` step holds each env's action for ``frame_skip`` physics
steps, computes the contact forces Gymnasium reports (``mj_rnePostConstraint``) and reads a few
arrays of each env's ``MjData`` before and after. Done from Python that is a loop of binding calls
and array views per env, which on HalfCheetah cost as much again as a fifth of the physics.
:func:`step_physics` does it in one call: a numba function that calls libmujoco's ``mj_step`` and
``mj_rnePostConstraint`` through their C addresses on each env's ``MjModel`` / ``MjData`` and copies
the requested values out. These are the same C calls on the same data as the bindings make, so every
value is identical (tested against the Python loop, which stays as the fallback).

Which path runs: ``HEBB_ENV_KERNEL`` = ``auto`` (default: compiled when numba is installed and the
library the bindings load is found), ``numba`` (compiled, or an error saying why not) or ``python``.

A MuJoCo *error* (not a warning) inside a compiled call cannot be turned into a Python exception as
the bindings do; MuJoCo then ends the process. MuJoCo raises errors for broken models or exhausted
memory, not for diverging states (those are warnings and a reset, see ``_physics_diverged``).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import mujoco
import numpy as np

ENV_KERNELS = ("auto", "numba", "python")


class Region(NamedTuple):
    """``length`` consecutive float64 values of the ``MjData`` array ``field`` (flattened), from ``start``."""

    field: str
    start: int
    length: int

    def read(self, data: mujoco.MjData) -> np.ndarray:
        """The values as a view (the Python path)."""
        return getattr(data, self.field).reshape(-1)[self.start : self.start + self.length]

    def address(self, data: mujoco.MjData) -> int:
        """Where the values start in memory (the compiled path)."""
        array = getattr(data, self.field)
        if array.dtype != np.float64 or not array.flags.c_contiguous:
            raise ValueError(f"MjData.{self.field} is not a contiguous float64 array")
        return array.ctypes.data + 8 * self.start


def resolve_env_kernel(kernel: str | None = None) -> str:
    """``numba`` or ``python``: the path :func:`step_physics` takes (see the module docstring)."""
    name = kernel if kernel is not None else os.environ.get("HEBB_ENV_KERNEL", "auto")
    if name not in ENV_KERNELS:
        raise ValueError(f"unknown env kernel {name!r} (HEBB_ENV_KERNEL); accepted: {', '.join(ENV_KERNELS)}")
    if name == "python":
        return name
    reason = _compiled_unavailable()
    if reason is None:
        return "numba"
    if name == "numba":
        raise ValueError(f"env kernel 'numba' is unavailable: {reason}")
    return "python"


class Layout:
    """What a group step reads: ``before`` and ``after`` regions of each env's data, and the number of
    actuators. Build one per env structure and keep it: the envs cache their addresses against it."""

    def __init__(self, before: Sequence[Region], after: Sequence[Region], n_actuators: int) -> None:
        self.before, self.after = tuple(before), tuple(after)
        self.n_actuators = n_actuators
        self.before_lengths = np.array([r.length for r in self.before], dtype=np.int64)
        self.after_lengths = np.array([r.length for r in self.after], dtype=np.int64)
        # address columns: model, data, ctrl, then the before and after regions
        self.control = Region("ctrl", 0, n_actuators)
        self.before_columns = slice(3, 3 + len(self.before))
        self.after_columns = slice(3 + len(self.before), 3 + len(self.before) + len(self.after))


def step_physics(
    envs: Sequence[Any], actions: np.ndarray, layout: Layout, kernel: str = "python"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step each env's physics once with its action row and read the ``layout``'s regions.

    ``envs`` have ``model``, ``data`` and ``frame_skip`` (all the same ``frame_skip``). Returns
    ``(values_before (n, sum of lengths), values_after (n, ...), time_before (n,), time_after (n,))``.
    """
    frame_skip = envs[0].frame_skip
    if kernel == "numba":
        n = len(envs)
        values_before = np.empty((n, int(layout.before_lengths.sum())))
        values_after = np.empty((n, int(layout.after_lengths.sum())))
        starts, ends = np.empty(n), np.empty(n)
        functions = _compiled()
        addresses = _addresses(envs, layout)
        functions.step(
            functions.mj_step,
            functions.mj_rne_post_constraint,
            functions.mj_get_state,
            addresses,
            actions,
            frame_skip,
            layout.before_columns.start,
            layout.before_lengths,
            values_before,
            layout.after_lengths,
            values_after,
            starts,
            ends,
            int(mujoco.mjtState.mjSTATE_TIME),  # mj_getState's signature for the clock alone
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


# env -> (layout, model, data, address row). Kept beside the env, not in it: a copied env (copy.deepcopy
# copies MjModel and MjData) must never inherit the raw addresses of the original's.
_ADDRESSES: weakref.WeakKeyDictionary[Any, tuple[Layout, Any, Any, list[int]]] = weakref.WeakKeyDictionary()


def _addresses(envs: Sequence[Any], layout: Layout) -> np.ndarray:
    """``(n, 3 + regions)`` addresses: each env's ``MjModel``, ``MjData``, ``ctrl`` and regions.

    Cached per env for as long as it keeps its model, data and the layout.
    """
    rows = []
    for env in envs:
        model, data = env.model, env.data
        cache = _ADDRESSES.get(env)
        if cache is None or cache[0] is not layout or cache[1] is not model or cache[2] is not data:
            regions = (layout.control, *layout.before, *layout.after)
            row = [model._address, data._address, *(r.address(data) for r in regions)]
            cache = _ADDRESSES[env] = (layout, model, data, row)
        rows.append(cache[3])
    return np.array(rows, dtype=np.uint64)


def _library_path() -> str | None:
    """The libmujoco the bindings load (it sits beside them in the ``mujoco`` package)."""
    folder = os.path.dirname(mujoco.__file__)
    for pattern in ("libmujoco.so*", "libmujoco*.dylib", "mujoco.dll"):
        found = sorted(glob.glob(os.path.join(folder, pattern)))
        if found:
            return found[0]
    return None


def _compiled_unavailable() -> str | None:
    """Why the compiled path cannot run here, or None."""
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install 'hebb-agents[fast]')"
    if _library_path() is None:
        return f"no libmujoco found beside the mujoco bindings in {os.path.dirname(mujoco.__file__)}"
    try:
        _compiled()
    except Exception as error:  # e.g. a numba release that does not support this numpy
        return f"{type(error).__name__}: {error}"
    return None


@dataclass(frozen=True)
class _Functions:
    step: Callable[..., None]
    mj_step: int
    mj_rne_post_constraint: int
    mj_get_state: int


_FUNCTIONS: _Functions | None = None


def _compiled() -> _Functions:
    """Compile (once per process; cached on disk) the group step, and find libmujoco's functions."""
    global _FUNCTIONS
    if _FUNCTIONS is not None:
        return _FUNCTIONS
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    path = _library_path()
    if path is None:
        raise RuntimeError("libmujoco not found")
    library = ctypes.CDLL(path)  # the library the bindings already loaded: one MuJoCo, one state
    addresses = {
        name: ctypes.cast(getattr(library, name), ctypes.c_void_p).value
        for name in ("mj_step", "mj_rnePostConstraint", "mj_getState")
    }

    @intrinsic
    def call_with_model_and_data(typingctx, function, model, data):  # pragma: no cover - compiled
        """Call ``void function(const mjModel*, mjData*)``, all three given as addresses."""

        def codegen(context, builder, signature, args):
            pointer = cgutils.voidptr_t
            function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer])
            target = builder.inttoptr(args[0], function_type.as_pointer())
            builder.call(target, [builder.inttoptr(args[1], pointer), builder.inttoptr(args[2], pointer)])
            return context.get_dummy_value()

        return types.void(function, model, data), codegen

    @intrinsic
    def float64_array(typingctx, address, length):  # pragma: no cover - compiled
        """A 1-D float64 array of ``length`` values at ``address`` (no copy)."""
        array_type = types.Array(types.float64, 1, "C")

        def codegen(context, builder, signature, args):
            array = context.make_array(array_type)(context, builder)
            data = builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float64)))
            shape = cgutils.pack_array(builder, [args[1]])
            strides = cgutils.pack_array(builder, [context.get_constant(types.intp, 8)])
            context.populate_array(array, data=data, shape=shape, strides=strides, itemsize=8, meminfo=None)
            return array._getvalue()

        return array_type(address, length), codegen

    @intrinsic
    def call_get_state(typingctx, function, model, data, destination, signature):  # pragma: no cover
        """Call ``void mj_getState(const mjModel*, const mjData*, mjtNum* state, int sig)``."""

        def codegen(context, builder, signature_, args):
            pointer = cgutils.voidptr_t
            function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer, pointer, ir.IntType(32)])
            target = builder.inttoptr(args[0], function_type.as_pointer())
            pointers = [builder.inttoptr(value, pointer) for value in args[1:4]]
            builder.call(target, [*pointers, builder.trunc(args[4], ir.IntType(32))])
            return context.get_dummy_value()

        return types.void(function, model, data, destination, signature), codegen

    @numba.njit(cache=True)
    def copy_regions(row, addresses, first_column, lengths, out):  # pragma: no cover - compiled
        column = 0
        for r in range(lengths.shape[0]):
            values = float64_array(addresses[row, first_column + r], lengths[r])
            for k in range(lengths[r]):
                out[row, column + k] = values[k]
            column += lengths[r]

    @numba.njit(cache=True)
    def step(
        mj_step,
        mj_rne_post_constraint,
        mj_get_state,
        addresses,
        actions,
        frame_skip,
        first_before,
        before_lengths,
        values_before,
        after_lengths,
        values_after,
        starts,
        ends,
        time_only,
    ):  # pragma: no cover - compiled
        # addresses rows: model, data, ctrl, the before regions, then the after regions
        n_actuators = actions.shape[1]
        first_after = first_before + before_lengths.shape[0]
        for row in range(addresses.shape[0]):
            model, data = addresses[row, 0], addresses[row, 1]
            call_get_state(mj_get_state, model, data, starts.ctypes.data + 8 * row, time_only)
            copy_regions(row, addresses, first_before, before_lengths, values_before)
            ctrl = float64_array(addresses[row, 2], n_actuators)
            for j in range(n_actuators):
                ctrl[j] = actions[row, j]  # float32 -> float64 is exact, as numpy's assignment
            for _ in range(frame_skip):
                call_with_model_and_data(mj_step, model, data)
            call_with_model_and_data(mj_rne_post_constraint, model, data)
            copy_regions(row, addresses, first_after, after_lengths, values_after)
            call_get_state(mj_get_state, model, data, ends.ctypes.data + 8 * row, time_only)

    _FUNCTIONS = _Functions(
        step, addresses["mj_step"], addresses["mj_rnePostConstraint"], addresses["mj_getState"]
    )
    return _FUNCTIONS
