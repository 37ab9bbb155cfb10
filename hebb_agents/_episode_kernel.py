"""A whole episode of one Hebbian member on a damaged locomotion env, compiled (numba; imported only
when :mod:`hebb_agents.compiled_episodes` runs).

Not cached on disk: numba's cache would not notice a change in the functions it calls from other
modules (the plastic update, the env step), so every process compiles it once, on first use.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from hebb_agents._plasticity_kernel import network_update
from hebb_envs._step_kernel import locomotion_step


@numba.njit(inline="always", error_model="numpy")
def tanh(x):  # pragma: no cover - compiled
    """float32 ``tanh`` computed in float64 with no library call, so that a loop of it vectorises
    (libm's ``tanhf`` is a call per value, 17-27 ns here). ``exp(-2|x|)`` is ``exp(r) ** 32`` for
    ``r = -2|x| / 32`` in ``[-0.625, 0]``, from its Taylor polynomial of degree 12 (relative error
    about 1e-11 at worst, after the five squarings), then ``(1 - e) / (1 + e)``; below 0.01 the odd
    series. Both are far inside float32's precision: rounded to float32 they matched the correctly
    rounded value for every one of 2.2M inputs (tested). NaN stays NaN; the sign of zero is kept."""
    a = abs(np.float64(x))
    r = -2.0 * min(a, 10.0) / 32.0  # tanh(10) is 1 in float32
    e = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))))  # fmt: skip
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    a2 = a * a
    series = a * (1.0 + a2 * (-1.0 / 3 + a2 * (2.0 / 15 + a2 * (-17.0 / 315))))
    t = series if a < 0.01 else (1.0 - e) / (1.0 + e)
    t = a if a != a else t  # NaN in, NaN out
    return np.float32(math.copysign(t, np.float64(x)))


@numba.njit(error_model="numpy")
def run_episode(
    w,
    a,
    b,
    c,
    d,
    table,
    max_abs,
    w_bits,
    sign_off,
    top_bits,
    top,
    acts,
    obs,
    centre,
    half,
    low,
    high,
    functions,
    addresses,
    sizes,
    settings,
    limit,
    stop_after,
    stop_streak,
    totals,
):  # pragma: no cover - compiled
    """Run one member's episode from the reset observation ``obs`` (float64, overwritten) to its end.

    ``w``, ``a``-``d``: the member's ``(1, num_synapses)`` weights (initial, updated in place) and rule
    terms; ``table`` ... ``top``: as :func:`hebb_agents._plasticity_kernel.network_update`; ``acts``
    ``(1, units)`` float32 scratch; ``centre`` ... ``high``: the action mapping (float32);
    ``functions`` ... ``settings``: the env's :class:`hebb_envs.locomotion.StepProgram`; past
    ``stop_after`` steps, ``stop_streak`` consecutive steps backwards end the episode. Writes the
    return and the last ``x_position`` into ``totals`` and returns (steps taken, whether the network's
    output stopped being finite).
    """
    n_layers = table.shape[0]
    n_obs = table[0, 5]
    last_post, n_act = table[n_layers - 1, 4], table[n_layers - 1, 1]
    widest = 0
    for layer in range(n_layers):
        widest = max(widest, table[layer, 1])
    sums = np.empty(widest, np.float32)
    action = np.empty(n_act, np.float32)
    scratch = np.empty(2)
    total = 0.0
    x_last = totals[1]
    streak = 0
    steps = 0
    while steps < limit:
        for k in range(n_obs):
            acts[0, k] = np.float32(obs[k])
        # forward pass: inputs in order, each row of weights added to every output (1-D slices, so
        # the inner loop vectorises)
        for layer in range(n_layers):
            n_in, n_out, start, pre_start, post_start, n_pre = table[layer]
            post = sums[:n_out]
            post[:] = 0.0
            for i in range(n_in):
                oi = acts[0, pre_start + i] if i < n_pre else np.float32(1.0)
                weights = w[0, start + i * n_out : start + (i + 1) * n_out]
                for j in range(n_out):
                    post[j] += oi * weights[j]
            for j in range(n_out):
                acts[0, post_start + j] = tanh(post[j])
        finite = True
        for j in range(n_act):
            out = acts[0, last_post + j]
            finite = finite and np.isfinite(out)
            action[j] = min(max(centre[j] + half[j] * out, low[j]), high[j])  # used only if all finite
        if not finite:
            totals[0], totals[1] = total, x_last
            return steps, True
        network_update(w, a, b, c, d, acts, table, max_abs, w_bits, sign_off, top_bits, top)
        reward, x_velocity, x_last, terminated = locomotion_step(
            functions, addresses, sizes, settings, action, obs, steps, scratch
        )
        steps += 1
        total += reward
        streak = streak + 1 if x_velocity < 0 else 0
        if terminated or (steps > stop_after and streak >= stop_streak):
            break
    totals[0], totals[1] = total, x_last
    return steps, False
