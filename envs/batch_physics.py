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


def step_physics(
    envs: Sequence[Any],
    actions: np.ndarray,
    before: Sequence[Region],
    after: Sequence[Region],
    kernel: str = "python",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step each env's physics once with its action row and read ``before`` / ``after`` regions.

    ``envs`` have ``model``, ``data`` and ``frame_skip`` (all the same ``frame_skip``). Returns
    ``(values_before (n, sum of lengths), values_after (n, ...), time_before (n,), time_after (n,))``.
    """
    frame_skip = envs[0].frame_skip
    starts = np.array([env.data.time for env in envs])
    if kernel == "numba":
        values_before = np.empty((len(envs), sum(r.length for r in before)))
        values_after = np.empty((len(envs), sum(r.length for r in after)))
        functions = _compiled()
        models = np.array([env.model._address for env in envs], dtype=np.uint64)
        control = Region("ctrl", 0, envs[0].model.nu)
        addresses = _addresses(envs, (control, *before, *after))  # columns: data, ctrl, before, after
        functions.step(
            functions.mj_step,
            functions.mj_rne_post_constraint,
            models,
            addresses[:, 0],
            addresses[:, 1],
            actions,
            frame_skip,
            addresses[:, 2 : 2 + len(before)],
            np.array([r.length for r in before], dtype=np.int64),
            values_before,
            addresses[:, 2 + len(before) :],
            np.array([r.length for r in after], dtype=np.int64),
            values_after,
        )
    else:
        values_before = _read(envs, before)  # the envs are independent: all reads, then all steps
        for env, action in zip(envs, actions):
            data, model = env.data, env.model
            data.ctrl[:] = action
            mujoco.mj_step(model, data, nstep=frame_skip)
            mujoco.mj_rnePostConstraint(model, data)  # contact forces, as Gymnasium computes them
        values_after = _read(envs, after)
    ends = np.array([env.data.time for env in envs])
    return values_before, values_after, starts, ends


def _read(envs: Sequence[Any], regions: Sequence[Region]) -> np.ndarray:
    """``(n, sum of lengths)``: the regions of every env's data, side by side (the Python path)."""
    columns = [np.array([region.read(env.data) for env in envs]) for region in regions]
    return np.concatenate(columns, axis=1) if columns else np.empty((len(envs), 0))


def _addresses(envs: Sequence[Any], regions: tuple[Region, ...]) -> np.ndarray:
    """``(n, 1 + len(regions))``: each env's ``MjData`` address, then the regions' start addresses;
    cached on each env for as long as it keeps its ``MjData``."""
    rows = []
    for env in envs:
        cache = env.__dict__.get("_region_addresses")
        if cache is None or cache[0] is not env.data:
            cache = env.__dict__["_region_addresses"] = (env.data, {})
        row = cache[1].get(regions)
        if row is None:
            row = cache[1][regions] = [env.data._address, *(r.address(env.data) for r in regions)]
        rows.append(row)
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
        for name in ("mj_step", "mj_rnePostConstraint")
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

    @numba.njit(cache=True)
    def copy_regions(row, addresses, lengths, out):  # pragma: no cover - compiled
        column = 0
        for r in range(lengths.shape[0]):
            values = float64_array(addresses[row, r], lengths[r])
            for k in range(lengths[r]):
                out[row, column + k] = values[k]
            column += lengths[r]

    @numba.njit(cache=True)
    def step(
        mj_step,
        mj_rne_post_constraint,
        models,
        datas,
        ctrls,
        actions,
        frame_skip,
        before,
        before_lengths,
        values_before,
        after,
        after_lengths,
        values_after,
    ):  # pragma: no cover - compiled
        n_actuators = actions.shape[1]
        for row in range(models.shape[0]):
            copy_regions(row, before, before_lengths, values_before)
            ctrl = float64_array(ctrls[row], n_actuators)
            for j in range(n_actuators):
                ctrl[j] = actions[row, j]  # float32 -> float64 is exact, as numpy's assignment
            for _ in range(frame_skip):
                call_with_model_and_data(mj_step, models[row], datas[row])
            call_with_model_and_data(mj_rne_post_constraint, models[row], datas[row])
            copy_regions(row, after, after_lengths, values_after)

    _FUNCTIONS = _Functions(step, addresses["mj_step"], addresses["mj_rnePostConstraint"])
    return _FUNCTIONS
