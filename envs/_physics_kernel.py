"""The compiled group step of :mod:`hebb_envs.batch_physics` (imported only where numba is installed).

Module-level functions, so numba's disk cache serves every later process (functions defined inside
another function are keyed on their closure, which differs per process, and recompile every time).
libmujoco's functions arrive as addresses at run time: nothing process-specific is compiled in.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _call_with_model_and_data(typingctx, function, model, data):  # pragma: no cover - compiled
    """Call ``void function(const mjModel*, mjData*)``, all three given as addresses."""

    def codegen(context, builder, signature, args):
        pointer = cgutils.voidptr_t
        function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer])
        target = builder.inttoptr(args[0], function_type.as_pointer())
        builder.call(target, [builder.inttoptr(args[1], pointer), builder.inttoptr(args[2], pointer)])
        return context.get_dummy_value()

    return types.void(function, model, data), codegen


@intrinsic
def _call_get_state(typingctx, function, model, data, destination, signature):  # pragma: no cover
    """Call ``void mj_getState(const mjModel*, const mjData*, mjtNum* state, int sig)``."""

    def codegen(context, builder, signature_, args):
        pointer = cgutils.voidptr_t
        function_type = ir.FunctionType(ir.VoidType(), [pointer, pointer, pointer, ir.IntType(32)])
        target = builder.inttoptr(args[0], function_type.as_pointer())
        pointers = [builder.inttoptr(value, pointer) for value in args[1:4]]
        builder.call(target, [*pointers, builder.trunc(args[4], ir.IntType(32))])
        return context.get_dummy_value()

    return types.void(function, model, data, destination, signature), codegen


@intrinsic
def _float64_array(typingctx, address, length):  # pragma: no cover - compiled
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
def _copy_regions(row, addresses, first_column, lengths, out):  # pragma: no cover - compiled
    column = 0
    for r in range(lengths.shape[0]):
        values = _float64_array(addresses[row, first_column + r], lengths[r])
        for k in range(lengths[r]):
            out[row, column + k] = values[k]
        column += lengths[r]


@numba.njit(cache=True)
def group_step(
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
    """Step every env (a row of ``addresses``: model, data, ctrl, before regions, after regions).

    Per env: its clock into ``starts``, the before regions, its controls from ``actions`` (float64),
    ``frame_skip`` calls of ``mj_step``, ``mj_rnePostConstraint``, the after regions, its clock into
    ``ends``. The GIL stays held: a Python warning handler MuJoCo calls meanwhile needs it.
    """
    n_actuators = actions.shape[1]
    first_after = first_before + before_lengths.shape[0]
    for row in range(addresses.shape[0]):
        model, data = addresses[row, 0], addresses[row, 1]
        _call_get_state(mj_get_state, model, data, starts.ctypes.data + 8 * row, time_only)
        _copy_regions(row, addresses, first_before, before_lengths, values_before)
        ctrl = _float64_array(addresses[row, 2], n_actuators)
        for j in range(n_actuators):
            ctrl[j] = actions[row, j]
        for _ in range(frame_skip):
            _call_with_model_and_data(mj_step, model, data)
        _call_with_model_and_data(mj_rne_post_constraint, model, data)
        _copy_regions(row, addresses, first_after, after_lengths, values_after)
        _call_get_state(mj_get_state, model, data, ends.ctypes.data + 8 * row, time_only)


def compile_now() -> None:
    """Type and compile the step (or load it from the cache) on an empty batch: fails here, not mid-run."""
    empty = np.zeros((0, 3), dtype=np.uint64)
    group_step(
        0, 0, 0, empty, np.zeros((0, 1)), 1, 3, np.zeros(0, np.int64), np.zeros((0, 0)),
        np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1,
    )  # fmt: skip
