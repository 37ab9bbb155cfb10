"""The numba kernel of :class:`hebb_agents.network.HebbianNetwork`'s plastic update (the ``fast`` extra).

Imported only when the numba kernel is used. Module-level functions, so numba's disk cache serves every
later process (a function defined inside another is keyed on its closure, which differs per process,
and compiled again every time).
"""

from __future__ import annotations

import numba
import numpy as np


# The update is compiled without fast-math, so every product and sum rounds exactly as the numpy
# kernel's passes do and both kernels give bit-identical weights. The max |w| of a layer is taken
# on the weights' bit patterns with the sign bit cleared: for floats that are not NaN these order
# as the values do, so the maximum is the same number, and an integer max vectorises where a float
# one does not (2.3x faster here). A NaN weight has the largest pattern, so the layer becomes NaN
# as numpy's maximum makes it, and a diverging member still reaches the rollout's check.
@numba.njit(error_model="numpy", nogil=True, cache=True)
def max_abs_bits(bits, sign_off):  # pragma: no cover - compiled
    top = bits[0] & sign_off
    for k in range(1, bits.shape[0]):
        top = max(top, bits[k] & sign_off)
    return top


@numba.njit(error_model="numpy", nogil=True, cache=True)
def network_update(w, a, b, c, d, acts, table, max_abs, w_bits, sign_off, top_bits, top):  # pragma: no cover
    # w, a, b, c, d: (P, num_synapses); acts: (P, sum(layer_sizes)) all layers' activations;
    # table rows: n_in (with bias), n_out, first synapse, first pre unit, first post unit, n_in
    # without bias. One call per step for all members and layers; rows are 1-D slices so the
    # inner loop is contiguous and vectorises. w_bits: w viewed as integers of its width;
    # top_bits / top: one scratch value seen as integer / as float.
    for p in range(w.shape[0]):
        for layer in range(table.shape[0]):
            n_in, n_out, start, pre_start, post_start, n_act = table[layer]
            q = acts[p, post_start : post_start + n_out]
            for i in range(n_in):
                oi = acts[p, pre_start + i] if i < n_act else np.float32(1.0)
                row = start + i * n_out
                wr, ar, br = w[p, row : row + n_out], a[p, row : row + n_out], b[p, row : row + n_out]
                cr, dr = c[p, row : row + n_out], d[p, row : row + n_out]
                for j in range(n_out):
                    # Same association as the numpy passes: ((w + (a*oj + b)*oi) + c*oj) + d.
                    wr[j] = ((wr[j] + (ar[j] * q[j] + br[j]) * oi) + cr[j] * q[j]) + dr[j]
            if max_abs:
                # A second pass over the member's layer (still in cache) keeps the first vectorised.
                stop = start + n_in * n_out
                top_bits[0] = max_abs_bits(w_bits[p, start:stop], sign_off)
                scale = top[0]
                if scale != 0:
                    segment = w[p, start:stop]
                    for k in range(segment.shape[0]):
                        segment[k] = segment[k] / scale


def compile_now() -> None:
    """Type and compile the float32 update (or load it from the cache) on an empty population: a numba
    that cannot compile it fails here, where ``auto`` can still fall back, not at a rollout's first step."""
    empty = np.zeros((0, 1), np.float32)
    bits = empty.view(np.int32)
    sign_off = np.int32(np.iinfo(np.int32).max)
    top = np.zeros(1, np.float32)
    table = np.zeros((0, 6), np.int64)
    terms = (empty, empty, empty, empty, empty)  # w, a, b, c, d
    network_update(*terms, empty, table, True, bits, sign_off, top.view(np.int32), top)
