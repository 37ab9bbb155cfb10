"""Batched feed-forward networks whose weights change every step by a Hebbian rule.

One population axis ``P`` runs through every array: a single agent is ``P = 1``. Weights of
layer ``l`` are ``(P, n_in, n_out)`` (``i`` pre-synaptic, ``j`` post-synaptic). The forward pass
and the plastic update of all members are array operations; nothing loops over synapses or
members per step.

Coefficient layout (the contract of ARCHITECTURE.md): per layer a table of rule rows
``(n_rows, k)`` (``n_rows = n_in * n_out`` with one rule per synapse, row ``i * n_out + j``),
concatenated over layers and flattened in C order. With shared rules a layer's ``n_rows`` is
its number of rule groups and a sharing map ``(n_in, n_out) -> row`` picks each synapse's row.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hebb_agents.options import check_bool
from hebb_agents.rules import HebbianRule, get_rule

INIT_SCHEMES = (
    "uniform",
    "normal",
    "xavier",
    "kaiming",
    "sparse",
    "big_uniform",
    "ones",
    "zeros",
    "coevolved",
)
NORMALISATIONS = ("max_abs", "none", "standardise")
SHARING = ("per_synapse", "per_post", "per_pre", "per_layer")
ACTIVATIONS = ("tanh", "linear")
KERNELS = ("auto", "numpy", "numba")


def _check_choice(kind: str, value: str, accepted: Sequence[str]) -> str:
    if value not in accepted:
        raise ValueError(f"unknown {kind} {value!r}; accepted: {', '.join(accepted)}")
    return value


def draw_weights(
    scheme: str, n_in: int, n_out: int, rng: np.random.Generator, dtype: np.dtype = np.float32
) -> np.ndarray:
    """Draw one member's initial weights ``(n_in, n_out)`` for a named init scheme."""
    shape = (n_in, n_out)
    if scheme == "uniform":  # the reference default
        w = rng.uniform(-0.1, 0.1, shape)
    elif scheme == "normal":
        w = rng.normal(0.0, 0.024, shape)
    elif scheme == "xavier":
        bound = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-bound, bound, shape)
    elif scheme == "kaiming":  # He et al. uniform for fan-in, gain sqrt(2)
        bound = np.sqrt(6.0 / n_in)
        w = rng.uniform(-bound, bound, shape)
    elif scheme == "sparse":  # each weight 0 with probability 0.9, else N(0, 0.01)
        w = rng.normal(0.0, 0.01, shape)
        w[rng.random(shape) < 0.9] = 0.0
    elif scheme == "big_uniform":
        w = rng.uniform(-1.0, 1.0, shape)
    elif scheme == "ones":
        w = np.ones(shape)
    elif scheme == "zeros":
        w = np.zeros(shape)
    else:
        accepted = [s for s in INIT_SCHEMES if s != "coevolved"]
        raise ValueError(f"unknown weight init {scheme!r}; accepted: {', '.join(accepted)}")
    return w.astype(dtype, copy=False)


def sharing_map(mode: str | np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    """Map each synapse ``(i, j)`` of a layer to the coefficient row it uses.

    ``per_synapse`` (default, one rule each), ``per_post`` (one per post-synaptic neuron),
    ``per_pre`` (one per pre-synaptic neuron), ``per_layer`` (one for the whole layer), or an
    explicit integer array ``(n_in, n_out)`` whose values are ``0 .. n_rows - 1``.
    """
    if isinstance(mode, np.ndarray):
        mapping = np.asarray(mode)
        if mapping.shape != (n_in, n_out) or not np.issubdtype(mapping.dtype, np.integer):
            raise ValueError(
                f"a sharing map must be an integer array of shape {(n_in, n_out)}, "
                f"got {mapping.dtype} {mapping.shape}"
            )
        if mapping.min() < 0 or set(np.unique(mapping)) != set(range(int(mapping.max()) + 1)):
            raise ValueError("a sharing map must use every row index 0 .. n_rows - 1 (no gaps)")
        return mapping.astype(np.intp)
    _check_choice("rule sharing", mode, SHARING)
    i, j = np.meshgrid(np.arange(n_in), np.arange(n_out), indexing="ij")
    if mode == "per_synapse":
        return (i * n_out + j).astype(np.intp)
    if mode == "per_post":
        return j.astype(np.intp)
    if mode == "per_pre":
        return i.astype(np.intp)
    return np.zeros((n_in, n_out), dtype=np.intp)


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "tanh":
        np.tanh(x, out=x)
    return x


def population_matrix(params: np.ndarray, num_params: int, dtype: np.dtype, owner: str) -> np.ndarray:
    """``params`` as a ``(P, num_params)`` array (one ``(num_params,)`` vector is ``P = 1``).

    ``owner`` describes what takes the vectors, for the error message.
    """
    params = np.asarray(params, dtype=dtype)
    if params.ndim == 1:
        params = params[None]
    if params.ndim != 2 or params.shape[1] != num_params:
        raise ValueError(
            f"{owner} takes vectors of length {num_params}, i.e. parameters of shape (P, {num_params}); "
            f"got an array of shape {params.shape}"
        )
    return params


def with_bias(x: np.ndarray, bias: bool) -> np.ndarray:
    """``x`` ``(P, n)`` with a constant-1 column appended when ``bias`` is on."""
    if not bias:
        return x
    return np.concatenate([x, np.ones((x.shape[0], 1), x.dtype)], axis=1)


def feed_forward(net: HebbianNetwork | StaticNetwork, x: np.ndarray) -> list[np.ndarray]:
    """Activations ``[x, h1, ..., out]`` of a batched network for inputs ``x`` ``(P, n_input)``."""
    x = np.asarray(x, dtype=net.dtype)
    if x.ndim != 2 or x.shape != (net.population, net.layer_sizes[0]):
        raise ValueError(f"expected inputs of shape ({net.population}, {net.layer_sizes[0]}), got {x.shape}")
    activations = [x]
    last = len(net.weights) - 1
    for layer, w in enumerate(net.weights):
        pre = with_bias(activations[-1], net.bias)
        post = np.matmul(pre[:, None, :], w)[:, 0, :]  # (P, n_out)
        _activate(post, net.output_activation if layer == last else net.activation)
        activations.append(post)
    return activations


class HebbianNetwork:
    """A population of bias-free feed-forward networks with plastic weights.

    :param layer_sizes: ``(n_input, hidden..., n_output)``.
    :param rule: plasticity rule name (see :mod:`hebb_agents.rules`).
    :param init: initial weight scheme, drawn fresh at every :meth:`reset`; ``coevolved`` takes
        the weights from the evolved parameter vector instead.
    :param normalisation: after every update, ``max_abs`` divides each layer by its max ``|w|``
        (default: without it MuJoCo weights run away within ~10 steps), ``standardise`` makes
        each layer zero-mean, unit-std, ``none`` leaves it (the reference's pybullet setting).
    :param sharing: rule sharing per layer (a mode name or one map per layer), see :func:`sharing_map`.
    :param activation: hidden activation, ``tanh`` or ``linear``.
    :param output_activation: output activation; the activated output is what acts and what
        the update sees.
    :param bias: append a constant-1 input to every layer (its synapses are plastic too).
    :param kernel: how the plastic update runs: ``numba`` (one compiled call per step, ~3x
        faster; needs the ``fast`` extra), ``numpy`` (no extra dependency), or ``auto`` (numba when
        it is installed, else numpy). Both kernels give bit-identical weights while they stay
        finite, so ``auto`` never changes a result. ``None`` reads the ``HEBB_KERNEL`` environment
        variable (default ``auto``), so spawned workers and Ray actors follow it.

    Storage: every member's synapses of all layers sit in one row of a ``(P, num_synapses)``
    array (layer after layer, each ``(n_in, n_out)`` in C order); :attr:`weights` are per-layer
    ``(P, n_in, n_out)`` views of it, updated in place.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        rule: str | HebbianRule = "ABCD_lr",
        init: str = "uniform",
        normalisation: str = "max_abs",
        sharing: str | Sequence[np.ndarray] = "per_synapse",
        activation: str = "tanh",
        output_activation: str = "tanh",
        bias: bool = False,
        dtype: type = np.float32,
        kernel: str | None = None,
    ) -> None:
        if len(layer_sizes) < 2 or any(int(n) < 1 for n in layer_sizes):
            raise ValueError(f"layer_sizes needs >= 2 positive sizes, got {tuple(layer_sizes)}")
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        self.rule = get_rule(rule)
        self.init = _check_choice("weight init", init, INIT_SCHEMES)
        self.normalisation = _check_choice("weight normalisation", normalisation, NORMALISATIONS)
        self.activation = _check_choice("activation", activation, ACTIVATIONS)
        self.output_activation = _check_choice("output activation", output_activation, ACTIVATIONS)
        self.bias = check_bool("bias", bias)
        self.dtype = np.dtype(dtype)
        self.kernel = resolve_kernel(kernel)
        if self.kernel == "numba":
            _numba_kernels()  # fail now, with the install hint, rather than at the first step
        # (n_in, n_out) of each layer; a bias adds one always-on input row.
        self.layer_shapes = [
            (n_in + int(self.bias), n_out) for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:])
        ]
        if isinstance(sharing, str):
            maps = [sharing_map(sharing, n_in, n_out) for n_in, n_out in self.layer_shapes]
            self.sharing: str | list[np.ndarray] = sharing
        else:
            if len(sharing) != len(self.layer_shapes):
                raise ValueError(
                    f"need one sharing map per layer ({len(self.layer_shapes)}), got {len(sharing)}"
                )
            maps = [sharing_map(m, n_in, n_out) for m, (n_in, n_out) in zip(sharing, self.layer_shapes)]
            self.sharing = maps
        self.sharing_maps = maps
        self.rows_per_layer = [int(m.max()) + 1 for m in maps]
        self.num_synapses = sum(n_in * n_out for n_in, n_out in self.layer_shapes)
        self.num_coefficients = sum(self.rows_per_layer) * self.rule.k
        self.num_init_weights = self.num_synapses if self.init == "coevolved" else 0
        sizes = [n_in * n_out for n_in, n_out in self.layer_shapes]
        self._starts = np.cumsum([0, *sizes[:-1]]).astype(np.intp)  # first synapse of each layer
        units = np.cumsum([0, *self.layer_sizes])  # first unit of each layer in concatenated activations
        self._layer_table = np.array(  # (n_layers, 6), the numba kernel's description of the layers
            [
                [n_in, n_out, self._starts[layer], units[layer], units[layer + 1], self.layer_sizes[layer]]
                for layer, (n_in, n_out) in enumerate(self.layer_shapes)
            ],
            dtype=np.int64,
        )
        self.population = 0
        self.weights: list[np.ndarray] = []  # per layer (P, n_in, n_out), views of self._w
        self._w = np.zeros((0, self.num_synapses), self.dtype)  # (P, num_synapses)
        self._buf = np.zeros((0, self.num_synapses), self.dtype)  # (P, num_synapses) scratch
        self._terms: tuple[np.ndarray | None, ...] = (None, None, None, None)  # (a, b, c, d) (P, S)
        self._buf_layers: list[np.ndarray] = []  # per layer (P, n_in, n_out) views of self._buf
        self._term_layers: tuple[list[np.ndarray] | None, ...] = (None, None, None, None)
        self._evolved_init: np.ndarray | None = None  # (P, num_synapses)
        ints = np.dtype(f"i{self.dtype.itemsize}")  # the weights' width, for network_update's max |w|
        self._sign_off = ints.type(np.iinfo(ints).max)  # every bit but the sign

    @property
    def num_params(self) -> int:
        """Length of the evolved vector: coefficients, then co-evolved initial weights if any."""
        return self.num_coefficients + self.num_init_weights

    # ----------------------------------------------------------------- parameters
    def split_coefficients(self, coefficients: np.ndarray) -> list[np.ndarray]:
        """Split flat coefficients ``(P, num_coefficients)`` into per-layer ``(P, n_rows, k)``."""
        k = self.rule.k
        out, start = [], 0
        for rows in self.rows_per_layer:
            out.append(coefficients[:, start : start + rows * k].reshape(-1, rows, k))
            start += rows * k
        return out

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-layer ``(p, n_in, n_out)`` views of a ``(p, num_synapses)`` array."""
        return [
            flat[:, start : start + n_in * n_out].reshape(flat.shape[0], n_in, n_out)
            for start, (n_in, n_out) in zip(self._starts, self.layer_shapes)
        ]

    def set_params(self, params: np.ndarray) -> None:
        """Load evolved vectors ``(P, num_params)``; sets the population size to ``P``."""
        owner = (
            f"layers {self.layer_sizes} with rule {self.rule.name!r} (k={self.rule.k}), init {self.init!r}"
        )
        params = population_matrix(params, self.num_params, self.dtype, owner)
        population = params.shape[0]
        coefficients = params[:, : self.num_coefficients]
        terms: list[np.ndarray | None] = [None, None, None, None]
        tables = self.split_coefficients(coefficients)
        for table, mapping, start in zip(tables, self.sharing_maps, self._starts):
            synapse_rows = mapping.reshape(-1)  # rule row of each synapse, in storage order
            # canonical terms per rule row (elementwise), then spread to the synapses sharing each row
            for index, term in enumerate(self.rule.canonical(table)):
                if term is None:
                    continue
                if terms[index] is None:
                    terms[index] = np.empty((population, self.num_synapses), self.dtype)
                terms[index][:, start : start + synapse_rows.size] = term[:, synapse_rows]
        if self.kernel == "numba":  # the fused kernel takes all four terms; absent ones are zeros
            terms = [np.zeros((population, self.num_synapses), self.dtype) if t is None else t for t in terms]
        self._terms = tuple(terms)
        self._evolved_init = None
        if self.init == "coevolved":
            self._evolved_init = np.ascontiguousarray(params[:, self.num_coefficients :])
        self._w = np.zeros((population, self.num_synapses), self.dtype)
        self._buf = np.empty((population, self.num_synapses), self.dtype)
        self._rebuild_views()

    # Copies and pickles carry the flat arrays only; the per-layer views are rebuilt on them (a copied
    # view would no longer share memory with its flat array, and the update writes through both).
    _VIEWS = ("weights", "_buf_layers", "_term_layers")

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in self._VIEWS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rebuild_views()

    def _rebuild_views(self) -> None:
        self.population = self._w.shape[0]
        self.weights = self._split(self._w)
        self._buf_layers = self._split(self._buf)
        self._term_layers = tuple(None if t is None else self._split(t) for t in self._terms)

    # ----------------------------------------------------------------- episodes
    def reset(self, rngs: Sequence[np.random.Generator], members: np.ndarray | None = None) -> None:
        """Draw fresh initial weights for every member (or the ``members`` indices), one rng each."""
        if not self.weights:
            raise RuntimeError("set_params() must be called before reset()")
        index = np.arange(self.population) if members is None else np.asarray(members)
        if len(rngs) != len(index):
            raise ValueError(f"need one rng per reset member ({len(index)}), got {len(rngs)}")
        if self.init == "coevolved":
            assert self._evolved_init is not None
            self._w[index] = self._evolved_init[index]
            return
        for w, (n_in, n_out) in zip(self.weights, self.layer_shapes):
            for rng, p in zip(rngs, index):
                w[p] = draw_weights(self.init, n_in, n_out, rng, self.dtype)

    def select(self, members: np.ndarray) -> None:
        """Keep only the ``members`` rows (their rules and current plastic weights)."""
        self._w = self._w[members]
        self._buf = self._buf[: len(members)]
        self._terms = tuple(None if t is None else t[members] for t in self._terms)
        if self._evolved_init is not None:
            self._evolved_init = self._evolved_init[members]
        self._rebuild_views()

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations of every layer for inputs ``x`` ``(P, n_input)``: ``[x, h1, ..., out]``."""
        return feed_forward(self, x)

    def update(self, activations: Sequence[np.ndarray]) -> None:
        """Apply the plastic update of every layer from the activations that acted."""
        if self.kernel == "numba":
            self._update_numba(activations)
        else:
            pres = [with_bias(np.asarray(a, self.dtype), self.bias) for a in activations[:-1]]  # (P, n_in)
            posts = [np.asarray(a, self.dtype) for a in activations[1:]]  # (P, n_out)
            self._update_numpy(pres, posts)
        if self.normalisation == "standardise":
            for w in self.weights:
                mean = w.mean(axis=(1, 2), keepdims=True)
                std = w.std(axis=(1, 2), keepdims=True)
                std[std == 0] = 1
                w -= mean
                w /= std

    def _update_numpy(self, pres: list[np.ndarray], posts: list[np.ndarray]) -> None:
        """dw = (a*oj + b)*oi + c*oj + d in whole-array passes.

        Only the products with ``oi`` or ``oj`` need per-layer broadcasting; the sums run once over
        all layers' synapses, which halves the numpy calls of a per-layer loop (what costs at P = 1).
        """
        a, b, c, d = self._terms
        a_l, b_l, c_l, _ = self._term_layers
        pre = [x[:, :, None] for x in pres]  # (P, n_in, 1)
        post = [y[:, None, :] for y in posts]  # (P, 1, n_out)
        buf, w = self._buf, self._w  # (P, num_synapses)
        if a is not None:
            for term, out, oj in zip(a_l, self._buf_layers, post):
                np.multiply(term, oj, out=out)
            if b is not None:
                buf += b
            for out, oi in zip(self._buf_layers, pre):
                out *= oi
            w += buf
        elif b is not None:
            for term, out, oi in zip(b_l, self._buf_layers, pre):
                np.multiply(term, oi, out=out)
            w += buf
        if c is not None:
            for term, out, oj in zip(c_l, self._buf_layers, post):
                np.multiply(term, oj, out=out)
            w += buf
        if d is not None:
            w += d
        if self.normalisation == "max_abs":
            np.abs(w, out=buf)
            scale = np.maximum.reduceat(buf, self._starts, axis=1)  # (P, n_layers)
            scale[scale == 0] = 1
            for layer, view in enumerate(self.weights):
                view /= scale[:, layer, None, None]

    def _update_numba(self, activations: Sequence[np.ndarray]) -> None:
        acts = np.concatenate([np.asarray(a, self.dtype) for a in activations], axis=1)  # (P, units)
        w, a, b, c, d, *rest = self.kernel_arguments()
        _numba_kernels()(w, a, b, c, d, acts, *rest)

    def kernel_arguments(self, member: int | None = None) -> tuple[Any, ...]:
        """What the numba update (:func:`hebb_agents._plasticity_kernel.network_update`) takes besides
        the activations: weights, the four rule terms (zeros for absent ones), the layer table and the
        max-|w| scratch; every member's rows, or ``(1, num_synapses)`` rows of ``member`` (views, so
        the update writes this network's weights)."""

        def rows(array: np.ndarray) -> np.ndarray:  # every member's (as they are: per step), or one
            return array if member is None else array[member : member + 1]

        w = rows(self._w)
        terms = tuple(np.zeros_like(w) if t is None else rows(t) for t in self._terms)
        ints = self._sign_off.dtype
        top = np.zeros(1, self.dtype)  # one scratch value, seen as integer and as float (views made here,
        # per call, so a copied or unpickled network never holds views that no longer share memory)
        max_abs = self.normalisation == "max_abs"
        return (w, *terms, self._layer_table, max_abs, w.view(ints), self._sign_off, top.view(ints), top)

    def step(self, x: np.ndarray) -> np.ndarray:
        """Forward pass then plastic update; returns the output activations ``(P, n_output)``."""
        activations = self.forward(x)
        self.update(activations)
        return activations[-1]


_NUMBA_KERNEL: Callable[..., None] | None = None


def resolve_kernel(kernel: str | None = None) -> str:
    """The plasticity kernel to use: ``numpy`` or ``numba`` (see :class:`HebbianNetwork`)."""
    name = _check_choice(
        "kernel", kernel if kernel is not None else os.environ.get("HEBB_KERNEL", "auto"), KERNELS
    )
    if name == "auto":
        if importlib.util.find_spec("numba") is None:
            return "numpy"
        try:
            _numba_kernels()  # installed is not enough: it must import and compile here
        except Exception as error:  # e.g. a numba release that does not support this numpy
            warnings.warn(f"numba kernel unavailable ({error}); using the numpy kernel", stacklevel=3)
            return "numpy"
        return "numba"
    return name


def _numba_kernels() -> Callable[..., None]:
    """The ``numba`` kernel's whole-network update (compiled once, then loaded from numba's disk cache)."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is not None:
        return _NUMBA_KERNEL
    try:
        from hebb_agents import _plasticity_kernel
    except ImportError as error:  # numba missing, or installed but not importable here
        raise ValueError(
            f"kernel 'numba' needs a working numba ({error}): pip install 'hebb-agents[fast]' "
            "(or use kernel='numpy')"
        ) from None
    _plasticity_kernel.compile_now()
    _NUMBA_KERNEL = _plasticity_kernel.network_update
    return _NUMBA_KERNEL


class StaticNetwork:
    """The same feed-forward network with fixed, evolved weights: the paper's baseline.

    The evolved vector holds every layer's ``(n_in, n_out)`` weights in C order, concatenated.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: str = "tanh",
        output_activation: str = "tanh",
        bias: bool = False,
        dtype: type = np.float32,
    ) -> None:
        if len(layer_sizes) < 2 or any(int(n) < 1 for n in layer_sizes):
            raise ValueError(f"layer_sizes needs >= 2 positive sizes, got {tuple(layer_sizes)}")
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        self.activation = _check_choice("activation", activation, ACTIVATIONS)
        self.output_activation = _check_choice("output activation", output_activation, ACTIVATIONS)
        self.bias = check_bool("bias", bias)
        self.dtype = np.dtype(dtype)
        self.layer_shapes = [
            (n_in + int(self.bias), n_out) for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:])
        ]
        self.num_synapses = sum(n_in * n_out for n_in, n_out in self.layer_shapes)
        self.num_params = self.num_synapses
        self.population = 0
        self.weights: list[np.ndarray] = []

    def set_params(self, params: np.ndarray) -> None:
        """Load evolved weight vectors ``(P, num_params)``."""
        params = population_matrix(params, self.num_params, self.dtype, f"static layers {self.layer_sizes}")
        self.population = params.shape[0]
        self.weights, start = [], 0
        for n_in, n_out in self.layer_shapes:
            self.weights.append(params[:, start : start + n_in * n_out].reshape(-1, n_in, n_out).copy())
            start += n_in * n_out

    def reset(self, rngs: Sequence[np.random.Generator], members: np.ndarray | None = None) -> None:
        """Nothing to redraw: static weights are the same every episode."""

    def select(self, members: np.ndarray) -> None:
        """Keep only the ``members`` rows."""
        self.weights = [w[members] for w in self.weights]
        self.population = len(members)

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations of every layer for inputs ``x`` ``(P, n_input)``: ``[x, h1, ..., out]``."""
        return feed_forward(self, x)

    def step(self, x: np.ndarray) -> np.ndarray:
        """Forward pass; returns the output activations ``(P, n_output)``."""
        return self.forward(x)[-1]
