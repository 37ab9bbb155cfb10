"""Checkpoints without pickle, import of the 2020 reference's coefficient files, and MATLAB export.

Our own files hold named numpy arrays plus a JSON metadata dictionary:

* ``.npz``: the arrays, and the JSON as a ``uint8`` byte array under the reserved key
  ``__metadata__``; read back with ``allow_pickle=False``.
* ``.safetensors``: the arrays, and the JSON as the header metadata entry ``hebb_agents``.

Every write goes to a temporary file in the target's folder, is flushed to disk and then renamed
over the target (``os.replace``), so a crash leaves either the previous file or the new one, never
half a file.

Array order: coefficients are flat vectors in the project's one layout (per layer an array
``(n_in, n_out, k)``, i pre-synaptic, j post-synaptic, k the rule's columns, flattened in row-major
C order and concatenated over layers), which is exactly the row order of the reference's
``(n_synapses, k)`` files. MATLAB export writes each layer as a 3-D array so that MATLAB's
``W(i, j, c)`` (1-based) is Python's ``W[i-1, j-1, c-1]``; the flat vector it also writes is stated
to be in C order, with the MATLAB line that rebuilds a layer from it. For a Hebbian policy,
``export_policy_matlab(policy, "coefficients.mat")`` writes its coefficients in that layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from hebb_agents import __version__
from hebb_agents.rules import RULES, HebbianRule, get_rule

FORMAT_NAME = "hebb_agents.checkpoint"
FORMAT_VERSION = 1
SUFFIXES = (".npz", ".safetensors")
METADATA_KEY = "__metadata__"  # npz entry holding the JSON
SAFETENSORS_METADATA_KEY = "hebb_agents"  # safetensors header entry holding the JSON

MATLAB_ORDER_NOTE = (
    "Array order. layer_<l> is (n_in, n_out, k): W(i, j, c) in MATLAB (1-based) is coefficient "
    "column c of the synapse from input i to output j of layer l, the same number as Python's "
    "W[i-1, j-1, c-1]; the columns are named in 'columns'. coefficients_flat is the Python flat "
    "vector in row-major (C) order: layer by layer, then i, then j, then c (c fastest). Rebuild "
    "layer l from its segment seg in MATLAB with permute(reshape(seg, [k, n_out, n_in]), [3 2 1]); "
    "reshape(seg, [n_in, n_out, k]) alone scrambles the coefficients."
)


# ---------------------------------------------------------------------------- atomic writes
def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened this way on Windows."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through ``write(handle)`` so that ``path`` is either the old file or the new one.

    The data goes to a temporary file in the same folder (so the rename stays on one file system),
    is fsynced, and then replaces ``path``. On any error the temporary file is removed and the
    previous ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600 files; checkpoints are ordinary files
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)
    return path


# ---------------------------------------------------------------------------- metadata
# What each kind of run folder saves: a fresh run refuses a folder holding either kind's results.
ES_RUN_FILES = ("checkpoint.npz", "policy.npz", "best.npz")
BASELINE_FILES = ("model.zip", "vecnormalize.pkl", "baseline.json")


@dataclass
class _Hold:
    """A run folder this process holds."""

    lock: Any  # the open, locked ``.lock`` (None where nothing can be locked)
    created: bool  # this process created the folder
    pid: int = field(default_factory=os.getpid)  # a forked child holds nothing of its parent's
    holders: int = 0


_HELD_FOLDERS: dict[Path, _Hold] = {}
_HELD_FOLDERS_GUARD = threading.Lock()
LOCK_FILE = ".lock"


def hold_run_folder(folder: str | os.PathLike) -> Callable[[], None]:
    """Take ``folder`` for a run of this process; returns the function that lets it go (idempotent).

    A second process that tries to take the folder meanwhile (a fresh run into it, or a
    ``--resume``) is refused before it reads or writes anything there; within one process the
    folder can be taken several times (the trainer objects of one run). An advisory lock on
    ``folder/.lock``: the operating system drops it when the process ends, killed or not, so a
    crashed run never leaves the folder locked (a child forked meanwhile shares it until it ends).
    Where ``fcntl`` does not exist (Windows) or the file system refuses locks, nothing is locked.
    A folder this call created and that holds nothing else when let go is removed again.
    """
    folder = Path(folder).resolve()
    with _HELD_FOLDERS_GUARD:
        hold = _HELD_FOLDERS.get(folder)
        if hold is None or hold.pid != os.getpid():
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"the output folder {folder} is a file; name a folder")
            created = not folder.exists()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                handle = _lock_file(folder)
            except OSError as err:
                raise ValueError(f"cannot use {folder} as the output folder: {err}") from None
            hold = _HELD_FOLDERS[folder] = _Hold(handle, created)
        hold.holders += 1
    released = False

    def release() -> None:
        nonlocal released
        with _HELD_FOLDERS_GUARD:
            if released or hold.pid != os.getpid():
                return
            released = True
            hold.holders -= 1
            if hold.holders == 0:
                if _HELD_FOLDERS.get(folder) is hold:
                    del _HELD_FOLDERS[folder]
                _let_go(folder, hold.lock, created=hold.created)

    return release


def _lock_file(folder: Path) -> Any:
    """``folder/.lock``, open and locked (None where locks do not exist); a ValueError when another
    process holds it."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held until the folder is let go)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(
            f"{folder} is in use by another run (another process holds it); wait until it stops, "
            "or choose another folder"
        ) from None
    except OSError:  # a file system without locks: the run goes on unguarded
        handle.close()
        return None
    return handle


def _let_go(folder: Path, handle: Any, created: bool) -> None:
    """Remove a folder created for a run that left nothing in it, then drop the lock (in this
    order: no other process can take the folder before it is gone)."""
    with contextlib.suppress(OSError):  # the folder may be gone already
        if created and {path.name for path in folder.iterdir()} <= {LOCK_FILE}:
            (folder / LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()
    if handle is not None:
        handle.close()  # closing drops the lock


def check_new_run_folder(folder: str | os.PathLike, kind: str) -> None:
    """Refuse to start a ``kind`` run (``es`` or ``baseline``) in a folder of saved results.

    A fresh run would overwrite them (or, for the other kind, mix two agents in one folder that
    ``hebb eval`` / ``hebb compare`` then read as one). Files other than those results (an earlier
    fresh run's ``config.json`` or log, left by a run stopped before it saved) are no obstacle.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the output folder {folder} is a file; name a folder")
    es_files = [name for name in ES_RUN_FILES if (folder / name).exists()]
    baseline_files = [name for name in BASELINE_FILES if (folder / name).exists()]
    if es_files:
        hint = (
            f"continue it with `hebb train --resume --out {folder}` (ESTrainer.resume) or choose another "
            "folder"
            if kind == "es" and "checkpoint.npz" in es_files
            else "choose another folder"
        )
        raise ValueError(f"{folder} already holds an ES run ({', '.join(es_files)}); {hint}")
    if baseline_files:
        raise ValueError(
            f"{folder} already holds an SB3 baseline ({', '.join(baseline_files)}); choose another folder"
        )


def _json_default(value: Any) -> Any:
    """Make numpy scalars, small arrays, paths and tuples JSON-serialisable."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def _encode_metadata(metadata: Mapping[str, Any]) -> str:
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    full = dict(metadata)
    # These describe the file being written, so they replace whatever the caller's dict carried.
    full.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, package_version=__version__)
    try:
        return json.dumps(full, default=_json_default, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"metadata is not JSON-serialisable: {err}") from None


def _decode_metadata(text: str, path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: checkpoint metadata is not valid JSON ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path} is not a hebb_agents checkpoint (its metadata names no {FORMAT_NAME!r} format)"
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format_version {version!r}; this hebb_agents {__version__} reads "
            f"versions up to {FORMAT_VERSION} (upgrade hebb_agents)"
        )
    return metadata


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"unknown checkpoint suffix {path.suffix!r} in {path}; accepted: {', '.join(SUFFIXES)}"
        )
    return suffix


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"array names must be non-empty strings, got {name!r}")
        if name == METADATA_KEY:
            raise ValueError(f"array name {METADATA_KEY!r} is reserved for the checkpoint metadata")
        array = np.asarray(value)
        if array.dtype.hasobject or array.dtype.kind in "OUSV":
            raise ValueError(
                f"array {name!r} has dtype {array.dtype}; checkpoints hold numeric or bool arrays only "
                "(put strings in the metadata)"
            )
        # np.ascontiguousarray would turn 0-d arrays into 1-d ones.
        checked[name] = array if array.flags.c_contiguous else array.copy(order="C")
    return checked


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any],
    *,
    compress: bool = False,
) -> Path:
    """Atomically write named arrays and JSON metadata to ``.npz`` or ``.safetensors`` (chosen by suffix).

    The metadata gains ``format``, ``format_version`` and ``package_version`` (``hebb_agents.__version__``).
    ``compress`` deflates ``.npz`` files (``.safetensors`` is never compressed). Returns the path.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    checked = _check_arrays(arrays)
    text = _encode_metadata(metadata)

    if suffix == ".npz":
        payload = {**checked, METADATA_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
        saver = np.savez_compressed if compress else np.savez

        def write(handle: IO[bytes]) -> None:
            saver(handle, **payload)

    else:
        from safetensors.numpy import save as safetensors_bytes

        try:
            blob = safetensors_bytes(checked, metadata={SAFETENSORS_METADATA_KEY: text})
        except Exception as err:  # the Rust error type is not importable in a stable place
            raise ValueError(f"cannot write {path} as safetensors: {err}") from None

        def write(handle: IO[bytes]) -> None:
            handle.write(blob)

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_checkpoint`: ``(arrays, metadata)``. Never unpickles."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        raise ValueError(
            f"{path} is a folder; pass a checkpoint file in it"
            + (f" ({', '.join(inside)})" if inside else f" (it holds none: {', '.join(SUFFIXES)})")
        )
    suffix = _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if suffix == ".npz":
        return _load_npz(path)
    return _load_safetensors(path)


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        if not zipfile.is_zipfile(path):  # numpy would suggest unpickling it
            with open(path, "rb") as file:
                single = file.read(6) == b"\x93NUMPY"
            what = "holds a single .npy array" if single else "is not a zip archive"
            raise ValueError(f"{path} is not a readable .npz checkpoint: it {what}")
    except OSError as err:
        raise ValueError(f"{path} is not a readable .npz checkpoint ({err})") from None
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz checkpoint ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a readable .npz checkpoint: it holds a single array")
    with archive:
        if METADATA_KEY not in archive.files:
            raise ValueError(f"{path} is not a hebb_agents checkpoint (no {METADATA_KEY!r} entry)")
        arrays = {}
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError as err:  # object arrays: numpy refuses to unpickle them
                raise ValueError(f"{path}: refused array {name!r}, it needs pickle to load ({err})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                raise ValueError(f"{path}: array {name!r} is corrupt ({err})") from None
    raw = arrays.pop(METADATA_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: {METADATA_KEY!r} entry is not the expected JSON byte array")
    try:
        text = raw.tobytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: checkpoint metadata is not UTF-8 ({err})") from None
    return arrays, _decode_metadata(text, path)


def _load_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as handle:
            header = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own Rust-side error type
        raise ValueError(f"{path} is not a readable .safetensors checkpoint ({err})") from None
    if SAFETENSORS_METADATA_KEY not in header:
        raise ValueError(
            f"{path} is not a hebb_agents checkpoint (no {SAFETENSORS_METADATA_KEY!r} entry in its header)"
        )
    return arrays, _decode_metadata(header[SAFETENSORS_METADATA_KEY], path)


def split_state(state: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split a state dict (e.g. ``OpenES.state_dict()``) into arrays and JSON-safe scalars for saving."""
    arrays = {key: value for key, value in state.items() if isinstance(value, np.ndarray)}
    scalars = {key: value for key, value in state.items() if not isinstance(value, np.ndarray)}
    return arrays, scalars


def validate_arrays(
    arrays: Mapping[str, np.ndarray],
    expected: Mapping[str, Sequence[int | None]],
    *,
    allow_extra: bool = True,
    source: str = "checkpoint",
) -> None:
    """Check that ``arrays`` has every expected name with the expected shape (``None`` = any size).

    Raises one ValueError listing every mismatch: missing arrays, wrong shapes, and (unless
    ``allow_extra``) unexpected arrays.
    """
    problems = []
    for name, shape in expected.items():
        if name not in arrays:
            problems.append(f"missing array {name!r} (expected shape {tuple(shape)})")
            continue
        found = np.shape(arrays[name])
        fits = len(found) == len(shape) and all(
            want is None or want == got for want, got in zip(shape, found)
        )
        if not fits:
            problems.append(f"array {name!r} has shape {found}, expected {tuple(shape)}")
    if not allow_extra:
        problems += [f"unexpected array {name!r}" for name in arrays if name not in expected]
    if problems:
        raise ValueError(f"{source} does not match: " + "; ".join(problems))


# ---------------------------------------------------------------------------- reference import
# Array dtypes a reference file may hold: floats are imported (cast to float32); integer and bool
# arrays load too, only to be refused with a message naming their dtype. All are plain data.
REFERENCE_FLOAT_DTYPES = ("float16", "float32", "float64")
_REFERENCE_LOADABLE_DTYPES = (*REFERENCE_FLOAT_DTYPES, "int8", "int16", "int32", "int64", "uint8", "bool")


def _reference_safe_globals() -> list[Any]:
    """Exactly what unpickling one plain numeric numpy array needs, under both numpy module names."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 1.26 has no numpy._core
        from numpy.core.multiarray import _reconstruct
    return [
        _reconstruct,
        # Files written under numpy 1.x name it numpy.core.multiarray, under 2.x numpy._core.multiarray.
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        # numpy >= 1.20 rebuilds each dtype as an instance of its own class (e.g. Float64DType).
        *dict.fromkeys(type(np.dtype(name)) for name in _REFERENCE_LOADABLE_DTYPES),
    ]


def load_reference_coefficients(
    path: str | os.PathLike, rule: str | HebbianRule, *, expected_synapses: int | None = None
) -> np.ndarray:
    """Import a coefficient file of the 2020 reference implementation as our flat float32 vector.

    The reference wrote ``torch.save`` of a float32 numpy array (n_synapses, k), rows ordered
    layer by layer, ``i * n_out + j`` within a layer, columns in the rule's file order. That is
    our layout, so the result is the array flattened in C order: (n_synapses * k,). float16 and
    float64 arrays, and plain torch tensors saved with ``torch.save``, load too (cast to float32).
    The file is read with ``weights_only=True`` and only numpy's array-rebuilding globals allowed:
    a file holding any other Python object is refused, never executed.
    """
    import torch

    rule = get_rule(rule)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference coefficient file {path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(2)
    # torch.save writes a zip archive (since torch 1.6) or, in the legacy format, a pickle (0x80 + protocol)
    if not zipfile.is_zipfile(path) and not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise ValueError(f"{path} is not a torch.save file (neither a zip archive nor a pickle stream)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if names and all(name.endswith(".npy") for name in names):
            raise ValueError(
                f"{path} is a numpy .npz archive, not a torch.save file of the reference implementation "
                "(a hebb-agents policy file is one: load it with EvolvablePolicy.load)"
            )
    try:
        with torch.serialization.safe_globals(_reference_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own text advises weights_only=False; quote only the refusal's reason
        paragraphs = [part.strip() for part in str(err).split("\n\n")]
        reasons = [
            part
            for part in paragraphs
            if part and "weights_only" not in part and not part.startswith("Check the documentation")
        ]
        reason = reasons[0] if reasons else type(err).__name__
        raise ValueError(
            f"refused to load {path}: it holds Python objects other than a numeric array or tensor "
            f"(accepted: {', '.join(REFERENCE_FLOAT_DTYPES)}), and loading it could run code ({reason})"
        ) from None
    except Exception as err:  # damaged files fail in zip, struct or pickle code with many error types
        raise ValueError(f"{path} is not a readable torch.save file ({type(err).__name__}: {err})") from None

    if isinstance(obj, torch.Tensor):
        if obj.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            obj = obj.float()
        obj = obj.detach().cpu().numpy()
    if not isinstance(obj, np.ndarray):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected an array of shape (n_synapses, k)")
    if obj.dtype.name not in REFERENCE_FLOAT_DTYPES:
        raise ValueError(
            f"{path} holds a {obj.dtype} array; coefficients must be floating point "
            f"(accepted: {', '.join(REFERENCE_FLOAT_DTYPES)})"
        )
    if obj.ndim != 2 or obj.shape[1] != rule.k:
        fits = [name for name, other in RULES.items() if obj.ndim == 2 and other.k == obj.shape[-1]]
        hint = f"; that shape fits rules with k={obj.shape[-1]}: {', '.join(fits)}" if fits else ""
        raise ValueError(
            f"{path} holds shape {obj.shape}, but rule {rule.name!r} expects (n_synapses, {rule.k}) with "
            f"columns {list(rule.columns)}{hint}"
        )
    if expected_synapses is not None and obj.shape[0] != expected_synapses:
        raise ValueError(
            f"{path} holds {obj.shape[0]} synapses, expected {expected_synapses} (shape {obj.shape})"
        )
    if not np.isfinite(obj).all():
        raise ValueError(f"{path} holds {int((~np.isfinite(obj)).sum())} NaN or infinite coefficients")
    limit = float(np.finfo(np.float32).max)
    if obj.size and float(np.abs(obj).max()) > limit:  # float64 values that float32 cannot hold
        raise ValueError(f"{path} holds {obj.dtype} coefficients beyond float32's range (|x| <= {limit:.3g})")
    return np.ascontiguousarray(obj, dtype=np.float32).reshape(-1)


# ---------------------------------------------------------------------------- MATLAB
def _check_matlab_path(path: Path) -> None:
    if path.suffix.lower() != ".mat":
        raise ValueError(f"MATLAB files must end in '.mat', got {path.name!r}")


def _matlab_layers(
    coefficients_by_layer: Sequence[np.ndarray],
    rule: HebbianRule,
    layer_shapes: Sequence[Sequence[int]] | None,
) -> list[np.ndarray]:
    """Check (and with ``layer_shapes``, reshape) per-layer coefficients to ``(n_in, n_out, k)`` each."""
    if len(coefficients_by_layer) == 0:
        raise ValueError("coefficients_by_layer is empty; pass one (n_in, n_out, k) array per layer")
    if layer_shapes is not None and len(layer_shapes) != len(coefficients_by_layer):
        raise ValueError(
            f"layer_shapes names {len(layer_shapes)} layers but {len(coefficients_by_layer)} coefficient "
            "arrays were given; pass one (n_in, n_out) per layer"
        )
    columns = f"with columns {list(rule.columns)}"
    layers = []
    for index, layer in enumerate(coefficients_by_layer):
        layer = np.asarray(layer)
        if layer.dtype.kind != "f":
            raise ValueError(
                f"layer {index} has dtype {layer.dtype}; coefficients must be floating point "
                "(accepted: float16, float32, float64)"
            )
        if layer_shapes is not None:
            n_in, n_out = (int(n) for n in layer_shapes[index])
            if layer.shape == (n_in * n_out, rule.k):
                layer = layer.reshape(n_in, n_out, rule.k)  # row i * n_out + j is synapse i -> j
            elif layer.shape != (n_in, n_out, rule.k):
                raise ValueError(
                    f"layer {index} has shape {layer.shape}; rule {rule.name!r} on a ({n_in}, {n_out}) "
                    f"layer needs (n_in, n_out, k) = {(n_in, n_out, rule.k)} or per-synapse rows "
                    f"(n_in * n_out, k) = {(n_in * n_out, rule.k)}, {columns}"
                )
        elif layer.ndim != 3 or layer.shape[2] != rule.k:
            hint = (
                "; a 2-D (n_rows, k) table (e.g. HebbianPolicy.coefficients_by_layer()) needs "
                "layer_shapes=[(n_in, n_out), ...], or use export_policy_matlab(policy, path)"
                if layer.ndim == 2 and layer.shape[1] == rule.k
                else ""
            )
            raise ValueError(
                f"layer {index} has shape {layer.shape}; rule {rule.name!r} needs (n_in, n_out, {rule.k}) "
                f"{columns}{hint}"
            )
        layers.append(layer)
    for index in range(1, len(layers)):
        n_out_before, n_in = layers[index - 1].shape[1], layers[index].shape[0]
        if n_in not in (n_out_before, n_out_before + 1):
            raise ValueError(
                f"layer {index} has shape {layers[index].shape} but layer {index - 1} has shape "
                f"{layers[index - 1].shape}: consecutive layers must chain, so layer {index} needs "
                f"n_in = {n_out_before} (or {n_out_before + 1} with a bias); each layer must be one "
                "policy's (n_in, n_out, k) array, without a population axis"
            )
    return layers


def export_matlab(
    path: str | os.PathLike,
    coefficients_by_layer: Sequence[np.ndarray],
    rule_name: str,
    extra: Mapping[str, Any] | None = None,
    *,
    layer_shapes: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write one policy's coefficients, per layer (n_in, n_out, k), to a MATLAB ``.mat`` file, atomically.

    ``layer_shapes`` (one ``(n_in, n_out)`` per layer, e.g. ``policy.network.layer_shapes``) also
    accepts per-synapse tables ``(n_in * n_out, k)`` (row ``i * n_out + j``) and reshapes them to the
    README's layout; without it every layer must already be ``(n_in, n_out, k)``, and consecutive
    layers must chain (``n_in`` of a layer is the previous ``n_out``, +1 with a bias). For a policy,
    :func:`export_policy_matlab` does all this.

    Variables: ``layer_1`` ... ``layer_L`` (3-D, MATLAB ``W(i, j, c)`` == Python ``W[i-1, j-1, c-1]``),
    ``coefficients_flat`` (column vector, our C-order flat layout), ``rule``, ``columns``,
    ``layer_shapes`` (L x 3), ``order_note`` (the order in words) and ``metadata_json`` (rule, shapes,
    ``extra``, versions; MATLAB reads it with ``jsondecode``).
    """
    import scipy.io

    path = Path(path)
    _check_matlab_path(path)
    rule = get_rule(rule_name)
    layers = _matlab_layers(coefficients_by_layer, rule, layer_shapes)
    shapes = [list(layer.shape) for layer in layers]
    flat = np.concatenate([layer.reshape(-1) for layer in layers])  # C order, our layout
    metadata = {
        "rule": rule.name,
        "columns": list(rule.columns),
        "layer_shapes": shapes,
        "order": "layer_<l>[i, j, c] with MATLAB W(i, j, c) 1-based; coefficients_flat in C order",
        "extra": dict(extra or {}),
        "format": "hebb_agents.matlab",
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
    }
    try:
        metadata_json = json.dumps(metadata, default=_json_default, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"extra is not JSON-serialisable: {err}") from None
    # savemat writes each N-D array in MATLAB's column-major order itself, keeping the logical
    # indices: passing the (n_in, n_out, k) array unchanged is what makes W(i, j, c) line up.
    variables: dict[str, Any] = {f"layer_{index + 1}": layer for index, layer in enumerate(layers)}
    variables.update(
        coefficients_flat=flat.reshape(-1, 1),
        rule=rule.name,
        columns=",".join(rule.columns),
        layer_shapes=np.asarray(shapes, dtype=np.float64),
        order_note=MATLAB_ORDER_NOTE,
        metadata_json=metadata_json,
    )

    def write(handle: IO[bytes]) -> None:
        scipy.io.savemat(handle, variables, format="5", do_compression=False, oned_as="column")

    return atomic_write(path, write)


def export_policy_matlab(
    policy: Any, path: str | os.PathLike, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write a Hebbian policy's (first member's) rule coefficients to MATLAB, one (n_in, n_out, k) per layer.

    E.g. ``export_policy_matlab(EvolvablePolicy.load("run/policy.npz"), "coefficients.mat")``.
    Shared rules (``per_post``, ``per_pre``, ``per_layer``) are written per synapse, repeated over
    the synapses that use them. The metadata's ``extra`` gains the policy's ``layer_sizes`` and
    ``config``; read the file back with :func:`import_matlab`.
    """
    from hebb_agents.policy import HebbianPolicy

    if not isinstance(policy, HebbianPolicy):
        raise TypeError(
            f"export_policy_matlab takes a HebbianPolicy (the one with rule coefficients), got "
            f"{type(policy).__name__}"
        )
    config = policy.config()
    if config.get("sharing") == "custom":
        config["sharing"] = "custom (written per synapse)"
    info = {"layer_sizes": list(policy.layer_sizes), "config": config, **dict(extra or {})}
    layers = policy.coefficients_per_synapse()
    return export_matlab(path, layers, policy.rule, extra=info, layer_shapes=policy.network.layer_shapes)


def import_matlab(path: str | os.PathLike) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`export_matlab`: ``(layers, metadata)``, layers (n_in, n_out, k).

    Fails if ``coefficients_flat`` disagrees with the layers, which is what a flat vector written
    back in MATLAB's column-major order (the reshape trap) looks like.
    """
    import scipy.io

    path = Path(path)
    _check_matlab_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file {path} does not exist")
    try:
        content = scipy.io.loadmat(path, squeeze_me=False, chars_as_strings=True)
    except Exception as err:  # scipy raises several unrelated types for damaged files
        raise ValueError(f"{path} is not a readable MATLAB file ({err})") from None
    if "metadata_json" not in content:
        raise ValueError(f"{path} was not written by hebb_agents.export_matlab (no metadata_json)")
    metadata = json.loads(str(np.asarray(content["metadata_json"]).reshape(-1)[0]))
    layers = []
    for index, shape in enumerate(metadata["layer_shapes"]):
        name = f"layer_{index + 1}"
        if name not in content:
            raise ValueError(f"{path} lacks variable {name!r} named by its layer_shapes")
        # MATLAB drops trailing singleton axes (k = 1), so restore the recorded shape.
        layers.append(np.ascontiguousarray(content[name]).reshape(shape))
    flat = np.asarray(content["coefficients_flat"]).reshape(-1)
    rebuilt = np.concatenate([layer.reshape(-1) for layer in layers])
    if flat.shape != rebuilt.shape or not np.array_equal(flat, rebuilt):
        raise ValueError(
            f"{path}: coefficients_flat disagrees with the layer arrays; the flat vector must be in "
            "row-major (C) order (see order_note), a column-major vector scrambles the coefficients"
        )
    return layers, metadata
