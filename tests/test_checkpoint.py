"""Checkpoints: round trips, atomic writes, no pickle, reference import, MATLAB export and array order."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch

import hebb_agents
from hebb_agents import checkpoint
from hebb_agents.checkpoint import (
    MATLAB_ORDER_NOTE,
    export_matlab,
    import_matlab,
    load_checkpoint,
    load_reference_coefficients,
    save_checkpoint,
    split_state,
    validate_arrays,
)
from hebb_agents.es import OpenES
from hebb_agents.rules import get_rule


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "coefficients": rng.normal(size=(12_288 * 5,)).astype(np.float32),
        "layer_shapes": np.array([[28, 128], [128, 64], [64, 8]], dtype=np.int64),
        "adam_v": rng.random(7),  # float64
        "mask": np.array([True, False, True]),
        "scalar": np.array(3.5, dtype=np.float32),
    }


METADATA = {
    "rule": "ABCD_lr",
    "hidden": [128, 64],
    "env_id": "hebb/AntDamaged-v0",
    "seed": np.int64(3),  # numpy scalars are accepted and stored as plain JSON numbers
    "sigma": np.float32(0.25),
    "nested": {"a": [1, 2.5, None, "x"]},
}


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip_keeps_arrays_and_metadata(tmp_path, suffix):
    arrays = sample_arrays()
    path = save_checkpoint(tmp_path / f"run{suffix}", arrays, METADATA)
    assert path == tmp_path / f"run{suffix}"
    loaded, meta = load_checkpoint(path)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    assert meta["rule"] == "ABCD_lr" and meta["hidden"] == [128, 64] and meta["nested"] == METADATA["nested"]
    assert meta["seed"] == 3 and meta["sigma"] == 0.25
    assert meta["package_version"] == hebb_agents.__version__
    assert meta["format_version"] == checkpoint.FORMAT_VERSION
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_compressed_npz_and_overwrite(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"x": np.zeros(100_000, np.float32)}, {"v": 1})
    big = path.stat().st_size
    save_checkpoint(path, {"x": np.zeros(100_000, np.float32)}, {"v": 2}, compress=True)
    assert path.stat().st_size < big / 10
    arrays, meta = load_checkpoint(path)
    assert meta["v"] == 2 and arrays["x"].shape == (100_000,)


def test_es_state_survives_a_checkpoint_exactly(tmp_path):
    es = OpenES(500, popsize=10, optimizer="adam", init=0.5, seed=None)
    for _ in range(3):
        es.tell(-np.sum(es.ask() ** 2, axis=1))
    arrays, scalars = split_state(es.state_dict())
    for suffix in (".npz", ".safetensors"):
        save_checkpoint(tmp_path / f"es{suffix}", arrays, {"es": scalars})
        loaded, meta = load_checkpoint(tmp_path / f"es{suffix}")
        resumed = OpenES(500, popsize=10, optimizer="adam")
        resumed.load_state_dict({**loaded, **meta["es"]})
        np.testing.assert_array_equal(resumed.ask(), es.ask())
        assert resumed.entropy == es.entropy and resumed.sigma == es.sigma


# ---------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"ckpt{suffix}"
    save_checkpoint(path, {"x": np.arange(5.0)}, {"generation": 1})
    before = path.read_bytes()

    real_fsync = os.fsync

    def crash_after_partial_write(fd):
        # By now some bytes of the new file are written; fail as a full disk or a kill would.
        assert os.fstat(fd).st_size > 0
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", crash_after_partial_write)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"x": np.arange(1000.0)}, {"generation": 2})
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)

    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was removed
    arrays, meta = load_checkpoint(path)
    assert meta["generation"] == 1 and arrays["x"].shape == (5,)


def test_failure_inside_the_writer_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"x": np.arange(5.0)}, {"generation": 1})
    before = path.read_bytes()

    def half_then_crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a save

    monkeypatch.setattr(checkpoint.np, "savez", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"x": np.arange(1000.0)}, {"generation": 2})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_creates_missing_folders(tmp_path):
    path = save_checkpoint(tmp_path / "a" / "b" / "c.npz", {"x": np.ones(2)}, {})
    assert path.is_file()


# ---------------------------------------------------------------- no pickle, clear errors
def test_our_npz_loads_without_pickle(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", sample_arrays(), METADATA)
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(archive[checkpoint.METADATA_KEY].tobytes().decode())
        assert meta["format"] == checkpoint.FORMAT_NAME
        for name in archive.files:
            archive[name]  # every entry loads with pickle disabled


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(
        json.dumps({"format": checkpoint.FORMAT_NAME, "format_version": 1}).encode(), np.uint8
    )
    np.savez(path, payload=np.array([{"a": 1}], dtype=object), __metadata__=meta)
    with pytest.raises(ValueError, match="refused array 'payload', it needs pickle"):
        load_checkpoint(path)
    raw_pickle = tmp_path / "raw.npz"
    raw_pickle.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="not a readable .npz checkpoint"):
        load_checkpoint(raw_pickle)


def test_object_arrays_and_reserved_names_are_refused_on_save(tmp_path):
    with pytest.raises(ValueError, match="array 'x' has dtype object"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.array([None])}, {})
    with pytest.raises(ValueError, match="'__metadata__' is reserved"):
        save_checkpoint(tmp_path / "c.npz", {"__metadata__": np.zeros(1)}, {})
    with pytest.raises(ValueError, match="metadata is not JSON-serialisable"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.zeros(1)}, {"bad": object()})
    assert not any(tmp_path.iterdir())


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"unknown checkpoint suffix '.pt'.*accepted: .npz, .safetensors"):
        load_checkpoint(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="unknown checkpoint suffix"):
        save_checkpoint(tmp_path / "model.pkl", {}, {})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3 + b"not a header")
    with pytest.raises(ValueError, match="not a readable .safetensors checkpoint"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.npz"
    save_checkpoint(truncated, sample_arrays(), {})
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a hebb_agents checkpoint"):
        load_checkpoint(foreign)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3)}, tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="not a hebb_agents checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_a_bad_npz_or_a_folder_is_named_without_advice_to_unpickle(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"garbage\n")
    with pytest.raises(ValueError, match="not a readable .npz checkpoint: it is not a zip") as e:
        load_checkpoint(garbage)
    assert "pickle" not in str(e.value)
    single = tmp_path / "single.npz"
    with open(single, "wb") as file:
        np.save(file, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single .npy array") as err:
        load_checkpoint(single)
    assert "pickle" not in str(err.value)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ValueError, match=r"run is a folder; pass a checkpoint file in it \(it holds none"):
        load_checkpoint(run)
    save_checkpoint(run / "policy.npz", sample_arrays(), {})
    with pytest.raises(ValueError, match=r"is a folder; pass a checkpoint file in it \(policy.npz\)"):
        load_checkpoint(run)


def test_newer_format_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    save_checkpoint(tmp_path / "future.npz", {"x": np.zeros(1)}, {})
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)
    with pytest.raises(ValueError, match="format_version 99.*reads versions up to 1"):
        load_checkpoint(tmp_path / "future.npz")


def test_validate_arrays_lists_every_mismatch():
    arrays = {"layer_0": np.zeros((28, 128, 5)), "layer_1": np.zeros((128, 64, 5)), "junk": np.zeros(1)}
    validate_arrays(arrays, {"layer_0": (28, 128, 5), "layer_1": (128, None, 5)})
    with pytest.raises(ValueError) as err:
        validate_arrays(
            arrays,
            {"layer_0": (27, 128, 5), "layer_1": (128, 64, 5), "layer_2": (64, 8, 5)},
            allow_extra=False,
            source="run.npz",
        )
    message = str(err.value)
    assert message.startswith("run.npz does not match")
    assert "array 'layer_0' has shape (28, 128, 5), expected (27, 128, 5)" in message
    assert "missing array 'layer_2' (expected shape (64, 8, 5))" in message
    assert "unexpected array 'junk'" in message
    assert "layer_1" not in message


# ---------------------------------------------------------------- reference files
def reference_array(n_synapses: int = 12_288, k: int = 5) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n_synapses, k)).astype(np.float32)


@pytest.mark.parametrize("legacy", [False, True])
def test_reference_file_imports_in_our_layout(tmp_path, legacy):
    coeffs = reference_array()  # (n_synapses, k) rows: layer offset + i*n_out + j
    path = tmp_path / "HEBcoeffs__AntBulletEnv-v0__ABCD_lr__coeffs__1000.dat"
    torch.save(coeffs, path, _use_new_zipfile_serialization=not legacy)  # exactly what the reference did
    flat = load_reference_coefficients(path, "ABCD_lr", expected_synapses=12_288)
    assert flat.dtype == np.float32 and flat.shape == (61_440,)
    np.testing.assert_array_equal(flat, coeffs.reshape(-1))
    # Synapse (i=3, j=17) of the first layer (28 -> 128), column eta, lands where our layout puts it.
    first_layer = flat[: 28 * 128 * 5].reshape(28, 128, 5)
    eta = get_rule("ABCD_lr").columns.index("eta")
    assert first_layer[3, 17, eta] == coeffs[3 * 128 + 17, eta]


def test_reference_file_written_under_numpy_1_imports(tmp_path):
    coeffs = reference_array(100, 3)
    path = tmp_path / "old.dat"
    torch.save(coeffs, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    new_name, old_name = b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct"
    assert new_name in raw
    path.write_bytes(raw.replace(new_name, old_name))  # the global name numpy 1.x pickles wrote
    np.testing.assert_array_equal(load_reference_coefficients(path, "ABC"), coeffs.reshape(-1))


def test_torch_tensor_file_imports(tmp_path):
    coeffs = reference_array(50, 6)
    torch.save(torch.from_numpy(coeffs), tmp_path / "t.pt")
    flat = load_reference_coefficients(tmp_path / "t.pt", get_rule("ABCD_lr_D_in_and_out"))
    np.testing.assert_array_equal(flat, coeffs.reshape(-1))


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_reference_float64_and_float16_arrays_import_as_float32(tmp_path, dtype):
    coeffs = np.linspace(-1, 1, 100 * 5).reshape(100, 5).astype(dtype)
    path = tmp_path / "c.dat"
    torch.save(coeffs, path)
    flat = load_reference_coefficients(path, "ABCD_lr", expected_synapses=100)
    assert flat.dtype == np.float32 and flat.shape == (500,)
    np.testing.assert_array_equal(flat, coeffs.astype(np.float32).reshape(-1))
    torch.save(np.zeros((100, 5), np.float64), path)
    np.testing.assert_array_equal(load_reference_coefficients(path, "ABCD_lr"), np.zeros(500, np.float32))


def test_reference_float64_and_bfloat16_tensors_import_as_float32(tmp_path):
    coeffs = torch.linspace(-1, 1, 60, dtype=torch.float64).reshape(12, 5)
    torch.save(coeffs, tmp_path / "t64.pt")
    flat = load_reference_coefficients(tmp_path / "t64.pt", "ABCD_lr")
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(flat, coeffs.numpy().astype(np.float32).reshape(-1))
    torch.save(coeffs.to(torch.bfloat16), tmp_path / "tbf16.pt")
    flat = load_reference_coefficients(tmp_path / "tbf16.pt", "ABCD_lr")
    np.testing.assert_array_equal(flat, coeffs.to(torch.bfloat16).float().numpy().reshape(-1))


def test_reference_non_float_or_out_of_range_arrays_name_the_dtype(tmp_path):
    path = tmp_path / "c.dat"
    torch.save(np.zeros((10, 5), np.int64), path)
    with pytest.raises(ValueError, match=r"holds a int64 array; .*accepted: float16, float32, float64"):
        load_reference_coefficients(path, "ABCD_lr")
    torch.save(np.full((10, 5), 1e300), path)
    with pytest.raises(ValueError, match="float64 coefficients beyond float32's range"):
        load_reference_coefficients(path, "ABCD_lr")


class NotAnArray:
    def __init__(self):
        self.data = [1, 2, 3]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_or_foreign_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.dat"
    torch.save(RunsCode(marker), evil)
    with pytest.raises(ValueError, match="refused to load .*evil.dat.*could run code") as refused:
        load_reference_coefficients(evil, "ABCD_lr")
    assert not marker.exists()
    assert "weights_only" not in str(refused.value)  # torch's advice to load it unsafely is not passed on

    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="garbage.dat is not a torch.save file") as damaged:
        load_reference_coefficients(garbage, "ABCD_lr")
    assert "refused" not in str(damaged.value)
    legacy = tmp_path / "legacy.dat"
    torch.save(reference_array(4), legacy, _use_new_zipfile_serialization=False)
    assert load_reference_coefficients(legacy, "ABCD_lr").shape == (4 * 5,)

    torch.save(NotAnArray(), tmp_path / "object.dat")
    with pytest.raises(ValueError, match="refused to load"):
        load_reference_coefficients(tmp_path / "object.dat", "ABCD_lr")

    torch.save({"coeffs": reference_array(4)}, tmp_path / "dict.dat")
    with pytest.raises(ValueError, match="holds a dict, expected an array of shape"):
        load_reference_coefficients(tmp_path / "dict.dat", "ABCD_lr")


def test_reference_shape_errors_name_rule_and_columns(tmp_path):
    path = tmp_path / "c.dat"
    torch.save(reference_array(10, 4), path)
    with pytest.raises(ValueError) as err:
        load_reference_coefficients(path, "ABCD_lr")
    message = str(err.value)
    assert "(10, 4)" in message and "'ABCD_lr' expects (n_synapses, 5)" in message
    assert "['A', 'B', 'C', 'eta', 'D']" in message and "ABC_lr, ABCD" in message
    with pytest.raises(ValueError, match="holds 10 synapses, expected 12288"):
        load_reference_coefficients(path, "ABCD", expected_synapses=12_288)
    torch.save(reference_array(10, 4).reshape(-1), path)
    with pytest.raises(ValueError, match=r"holds shape \(40,\)"):
        load_reference_coefficients(path, "ABCD")
    with pytest.raises(ValueError, match="unknown Hebbian rule 'XYZ'"):
        load_reference_coefficients(path, "XYZ")
    with pytest.raises(FileNotFoundError):
        load_reference_coefficients(tmp_path / "none.dat", "ABCD")
    (tmp_path / "junk.dat").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.dat"):
        load_reference_coefficients(tmp_path / "junk.dat", "ABCD")


# ---------------------------------------------------------------- MATLAB
def ant_layers(k: int = 5) -> list[np.ndarray]:
    """Layers whose every coefficient is distinct, so any misplacement shows."""
    shapes = [(28, 128, k), (128, 64, k), (64, 8, k)]
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    return [np.arange(sizes[n], sizes[n + 1], dtype=np.float32).reshape(s) for n, s in enumerate(shapes)]


def test_matlab_round_trip_keeps_every_index(tmp_path):
    layers = ant_layers()
    path = export_matlab(tmp_path / "ant.mat", layers, "ABCD_lr", extra={"env_id": "hebb/Ant-v0", "gen": 7})
    loaded, meta = import_matlab(path)
    for ours, theirs in zip(layers, loaded):
        assert theirs.shape == ours.shape
        np.testing.assert_array_equal(theirs, ours)
    assert loaded[1][5, 60, 3] == layers[1][5, 60, 3]
    assert meta["rule"] == "ABCD_lr" and meta["columns"] == ["A", "B", "C", "eta", "D"]
    assert meta["extra"] == {"env_id": "hebb/Ant-v0", "gen": 7}

    raw = scipy.io.loadmat(path)
    assert str(raw["order_note"][0]) == MATLAB_ORDER_NOTE
    assert str(raw["rule"][0]) == "ABCD_lr" and str(raw["columns"][0]) == "A,B,C,eta,D"
    assert raw["coefficients_flat"].shape == (sum(layer.size for layer in layers), 1)
    np.testing.assert_array_equal(raw["layer_shapes"], [[28, 128, 5], [128, 64, 5], [64, 8, 5]])


def test_matlab_file_stores_layers_column_major_so_matlab_indices_match(tmp_path):
    """MATLAB reads the data column-major with the stored dims: prove the bytes are W in F order."""
    layer = ant_layers()[2]  # (64, 8, 5), all values distinct
    path = export_matlab(tmp_path / "one.mat", [layer], "ABCD_lr")
    content = path.read_bytes()
    # The file holds the layer's elements in column-major order (coefficients_flat holds the C order).
    offset = content.find(layer.tobytes(order="F"))
    assert offset > 0
    # ... and they are the data of the variable layer_1 with dims [64 8 5], whose header just precedes them.
    header = content[offset - 80 : offset]
    assert b"layer_1" in header and np.array([64, 8, 5], dtype=np.int32).tobytes() in header
    # MATLAB's W(2, 3, 4) is element (2-1) + 64*(3-1) + 64*8*(4-1) of that column-major data.
    data = np.frombuffer(layer.tobytes(order="F"), dtype=np.float32)
    assert data[1 + 64 * 2 + 64 * 8 * 3] == layer[1, 2, 3]


def test_reshape_trap_and_the_stated_matlab_recipe():
    layer = ant_layers()[2]  # (n_in, n_out, k) = (64, 8, 5)
    n_in, n_out, k = layer.shape
    flat = layer.reshape(-1)  # our C-order flat vector
    # MATLAB's reshape(flat, [n_in, n_out, k]) fills column-major: it scrambles the coefficients.
    scrambled = flat.reshape((n_in, n_out, k), order="F")
    assert not np.array_equal(scrambled, layer)
    assert scrambled[1, 0, 0] != layer[1, 0, 0]
    # The note's recipe, permute(reshape(seg, [k, n_out, n_in]), [3 2 1]), emulated in numpy:
    rebuilt = flat.reshape((k, n_out, n_in), order="F").transpose(2, 1, 0)
    np.testing.assert_array_equal(rebuilt, layer)


def test_matlab_import_detects_a_column_major_flat_vector(tmp_path):
    layers = ant_layers(k=1)  # k = 1: MATLAB drops the trailing singleton axis
    path = export_matlab(tmp_path / "a.mat", layers, "A")
    loaded, _ = import_matlab(path)
    assert [layer.shape for layer in loaded] == [(28, 128, 1), (128, 64, 1), (64, 8, 1)]
    content = scipy.io.loadmat(path)
    content["coefficients_flat"] = np.concatenate([layer.reshape(-1, order="F") for layer in layers])[:, None]
    scipy.io.savemat(path, {key: value for key, value in content.items() if not key.startswith("__")})
    with pytest.raises(ValueError, match="coefficients_flat disagrees with the layer arrays"):
        import_matlab(path)


def test_matlab_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"layer 1 has shape \(128, 64, 4\); rule 'ABCD_lr' needs"):
        export_matlab(tmp_path / "x.mat", [np.zeros((28, 128, 5)), np.zeros((128, 64, 4))], "ABCD_lr")
    with pytest.raises(ValueError, match="must end in '.mat'"):
        export_matlab(tmp_path / "x.npz", ant_layers(), "ABCD_lr")
    with pytest.raises(ValueError, match="unknown Hebbian rule"):
        export_matlab(tmp_path / "x.mat", ant_layers(), "ABCDE")
    with pytest.raises(FileNotFoundError):
        import_matlab(tmp_path / "none.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="not written by hebb_agents.export_matlab"):
        import_matlab(tmp_path / "other.mat")


# ---------------------------------------------------------------- MATLAB export of a real policy
def small_policy(tmp_path, **config):
    """A saved-and-reloaded Hebbian policy (4 -> 8 -> 2), as a user would export it."""
    import gymnasium as gym

    from hebb_agents.policy import EvolvablePolicy, HebbianPolicy

    box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    policy = HebbianPolicy(box, gym.spaces.Discrete(2), hidden=(8,), **config)
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    return EvolvablePolicy.load(policy.save(tmp_path / "policy.npz"))


def test_policy_round_trips_through_matlab_in_the_readme_layout(tmp_path):
    from hebb_agents.checkpoint import export_policy_matlab

    policy = small_policy(tmp_path)
    flat = policy.coefficients  # (4*8 + 8*2) * 5, C order
    path = export_policy_matlab(policy, tmp_path / "cp.mat", extra={"gen": 3})
    layers, meta = import_matlab(path)
    assert [layer.shape for layer in layers] == [(4, 8, 5), (8, 2, 5)]
    np.testing.assert_array_equal(np.concatenate([layer.reshape(-1) for layer in layers]), flat)
    # W[i, j, c] is column c of synapse i -> j: flat index (i * n_out + j) * k + c within the layer
    assert layers[0][1, 2, 3] == flat[(1 * 8 + 2) * 5 + 3]
    assert layers[1][5, 1, 4] == flat[4 * 8 * 5 + (5 * 2 + 1) * 5 + 4]
    assert meta["rule"] == "ABCD_lr" and meta["layer_shapes"] == [[4, 8, 5], [8, 2, 5]]
    assert meta["extra"]["gen"] == 3 and meta["extra"]["layer_sizes"] == [4, 8, 2]
    # The (n_rows, k) tables with the network's layer shapes give the same file.
    again = export_matlab(
        tmp_path / "again.mat", policy.coefficients_by_layer(), "ABCD_lr", layer_shapes=[(4, 8), (8, 2)]
    )
    for ours, theirs in zip(layers, import_matlab(again)[0]):
        np.testing.assert_array_equal(ours, theirs)


def test_policy_matlab_export_spreads_shared_rules_per_synapse(tmp_path):
    from hebb_agents.checkpoint import export_policy_matlab

    policy = small_policy(tmp_path, sharing="per_post", bias=True)
    tables = policy.coefficients_by_layer()
    assert [table.shape for table in tables] == [(8, 5), (2, 5)]
    layers, meta = import_matlab(export_policy_matlab(policy, tmp_path / "shared.mat"))
    assert [layer.shape for layer in layers] == [(5, 8, 5), (9, 2, 5)]  # bias input is the last row
    np.testing.assert_array_equal(layers[0][3], tables[0])  # every pre i uses post j's rule
    assert meta["extra"]["config"]["sharing"] == "per_post"


def test_export_matlab_refuses_tables_and_population_axes_naming_the_expected_shape(tmp_path):
    from hebb_agents.checkpoint import export_policy_matlab
    from hebb_agents.policy import StaticPolicy

    policy = small_policy(tmp_path)
    tables = policy.coefficients_by_layer()  # (32, 5), (16, 5)
    with pytest.raises(
        ValueError, match=r"layer 0 has shape \(32, 5\).*needs \(n_in, n_out, 5\).*layer_shapes"
    ):
        export_matlab(tmp_path / "x.mat", tables, "ABCD_lr")
    # The old, wrong layout (a leading population axis) no longer slips through.
    with pytest.raises(ValueError, match=r"layer 1 has shape \(1, 16, 5\).*needs n_in = 32.*population axis"):
        export_matlab(tmp_path / "x.mat", [table[None] for table in tables], "ABCD_lr")
    with pytest.raises(ValueError, match=r"needs \(n_in, n_out, k\) = \(4, 8, 5\) or per-synapse rows"):
        export_matlab(
            tmp_path / "x.mat", [tables[0][None], tables[1]], "ABCD_lr", layer_shapes=[(4, 8), (8, 2)]
        )
    with pytest.raises(ValueError, match="layer_shapes names 1 layers but 2"):
        export_matlab(tmp_path / "x.mat", tables, "ABCD_lr", layer_shapes=[(4, 8)])
    with pytest.raises(ValueError, match=r"dtype int64; .*accepted: float16, float32, float64"):
        export_matlab(tmp_path / "x.mat", [np.zeros((4, 8, 5), np.int64)], "ABCD_lr")
    import gymnasium as gym

    static = StaticPolicy(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2), hidden=(8,))
    with pytest.raises(TypeError, match="takes a HebbianPolicy"):
        export_policy_matlab(static, tmp_path / "x.mat")
    assert not (tmp_path / "x.mat").exists()


def test_a_numpy_archive_passed_as_a_reference_file_is_named_as_one(tmp_path):
    path = tmp_path / "policy.npz"
    np.savez(path, params=np.zeros(3, np.float32))
    # was "not a readable torch.save file (RuntimeError: [enforce fail at inline_container.cc ...])"
    with pytest.raises(
        ValueError, match=r"is a numpy .npz archive, not a torch.save file .*EvolvablePolicy.load"
    ):
        load_reference_coefficients(path, "ABCD_lr")


def test_a_held_run_folder_survives_a_forked_child_and_a_file_parent_is_named(tmp_path):
    from hebb_agents.checkpoint import hold_run_folder

    folder = tmp_path / "new_run"
    release = hold_run_folder(folder)
    pid = os.fork()
    if pid == 0:  # the child lets go of what it inherited, as its exit would: nothing happens
        release()
        os._exit(0)
    os.waitpid(pid, 0)
    assert folder.is_dir()  # was removed by the child's release of the inherited hold
    release()
    assert not folder.exists()  # created for the run and left empty: removed when let go
    (tmp_path / "afile").write_text("")
    # was a NotADirectoryError traceback
    with pytest.raises(ValueError, match="cannot use .*afile/run as the output folder"):
        hold_run_folder(tmp_path / "afile" / "run")
