"""Fast paths must not change results: seed-shipped candidates, the numba kernel, the wrapper bypass."""

import copy
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import hebb_agents.network as network_module
from hebb_agents.backends import Candidates, ProcessBackend, SerialBackend
from hebb_agents.es import OpenES
from hebb_agents.network import HebbianNetwork
from hebb_agents.policy import member_rng
from hebb_agents.rollout import LockstepEvaluator, RolloutSpec, build_policy, fast_step

REPO = Path(__file__).resolve().parents[1]
SPEC = RolloutSpec(env_id="CartPole-v1", policy_config={"hidden": [8]}, max_steps=100)


@pytest.mark.parametrize("antithetic", [True, False])
def test_candidates_rebuilt_from_seeds_equal_ask_bit_for_bit(antithetic):
    es = OpenES(300, popsize=8, sigma=0.3, seed=5, init=0.5, antithetic=antithetic)
    es.tell(np.arange(8.0))  # a generation later, so mean, sigma and seed all moved
    asked = es.ask()
    cands = Candidates.from_es(es)
    np.testing.assert_array_equal(cands.rows(np.arange(8)), asked)
    np.testing.assert_array_equal(cands.rows(np.array([6, 1])), asked[[6, 1]])
    with pytest.raises(ValueError, match=r"in \[0, 8\), got 8"):
        cands.rows(np.array([8]))


def test_process_workers_rebuilding_candidates_match_serial_on_shipped_params():
    es = OpenES(LockstepEvaluator(SPEC).num_params, popsize=10, sigma=0.5, seed=1, init=0.3)
    expected = SerialBackend(SPEC).evaluate(es.ask(), seed=7, generation=3)
    with ProcessBackend(SPEC, workers=2) as backend:
        by_seed = backend.evaluate_candidates(Candidates.from_es(es), seed=7, generation=3)
        by_params = backend.evaluate(es.ask(), seed=7, generation=3)  # the old call still works
    np.testing.assert_array_equal(by_seed.fitness, expected.fitness)
    np.testing.assert_array_equal(by_params.fitness, expected.fitness)
    assert by_seed.env_steps == expected.env_steps
    assert len(set(expected.fitness.tolist())) > 2


def test_noise_drawn_ahead_gives_the_next_generation_the_same_candidates():
    ahead, plain = (OpenES(300, popsize=8, sigma=0.3, seed=5, init=0.5) for _ in range(2))
    rows = np.empty((4, 300), np.float32)
    assert ahead.draw_next_noise(out=rows) is rows
    for es in (ahead, plain):
        es.tell(np.arange(8.0))
    np.testing.assert_array_equal(ahead.ask(), plain.ask())
    assert ahead.noise().base is rows  # the rows drawn ahead, not a second draw
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array of shape \(4, 300\)"):
        ahead.draw_next_noise(out=np.empty((4, 299), np.float32))


def test_candidates_read_shared_noise_and_draw_where_it_cannot_be_read(tmp_path):
    es = OpenES(300, popsize=8, sigma=0.3, seed=5, init=0.5)
    es.tell(np.arange(8.0))
    asked = es.ask()
    path = tmp_path / "noise.npy"
    np.save(path, es.noise())
    shared = Candidates(**{**Candidates.from_es(es).__dict__, "noise_file": str(path)})
    np.testing.assert_array_equal(shared.rows(np.arange(8)), asked)
    np.save(path, np.zeros_like(es.noise()))  # the file is read, not ignored
    np.testing.assert_array_equal(shared.rows(np.array([0, 1])), [es.mean, es.mean])  # mean +- sigma * 0
    for unusable in (np.zeros((3, 300), np.float32), np.zeros((4, 300), np.float64)):
        np.save(path, unusable)  # other shape, other dtype: drawn instead
        np.testing.assert_array_equal(shared.rows(np.arange(8)), asked)
    path.unlink()
    np.testing.assert_array_equal(shared.rows(np.arange(8)), asked)


def test_process_workers_read_the_noise_the_driver_drew_ahead():
    from hebb_agents.trainer import noise_drawn_meanwhile

    num_params = LockstepEvaluator(SPEC).num_params
    shared_es, serial_es = (OpenES(num_params, popsize=10, sigma=0.5, seed=1, init=0.3) for _ in range(2))
    serial = SerialBackend(SPEC)
    with ProcessBackend(SPEC, workers=2) as backend:
        for generation in range(3):
            with noise_drawn_meanwhile(shared_es, backend):
                got = backend.evaluate_candidates(Candidates.from_es(shared_es), 0, generation)
            # drawn ahead for the next generation, in a file the workers map
            assert backend._noise_path(shared_es.next_generation_seed).exists()
            want = serial.evaluate_candidates(Candidates.from_es(serial_es), 0, generation)
            np.testing.assert_array_equal(got.fitness, want.fitness)
            shared_es.tell(got.fitness)
            serial_es.tell(want.fitness)
        np.testing.assert_array_equal(shared_es.mean, serial_es.mean)
        folder = backend._noise_folder
        assert folder is not None and folder.exists()
    assert not folder.exists()


def test_shared_noise_folders_of_drivers_that_are_gone_are_removed(tmp_path, monkeypatch):
    from hebb_agents import backends

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    orphan = tmp_path / f"hebb-noise-{int(dead.stdout)}-abc"
    alive = tmp_path / f"hebb-noise-{os.getppid()}-abc"
    other = tmp_path / "hebb-noise-notapid-abc"
    for folder in (orphan, alive, other):
        folder.mkdir()
        (folder / "noise-0.npy").write_bytes(b"x")
    backends._remove_orphaned_noise(tmp_path)
    assert not orphan.exists() and alive.exists() and other.exists()


def test_serial_backend_evaluate_candidates_is_evaluate_of_ask():
    es = OpenES(LockstepEvaluator(SPEC).num_params, popsize=6, sigma=0.5, seed=2, init=0.3)
    backend = SerialBackend(SPEC)
    a = backend.evaluate_candidates(Candidates.from_es(es), seed=0, generation=0)
    b = backend.evaluate(es.ask(), seed=0, generation=0)
    np.testing.assert_array_equal(a.fitness, b.fitness)


@pytest.mark.parametrize(
    "rule, normalisation, bias, sharing",
    [
        ("ABCD_lr", "max_abs", False, "per_synapse"),
        ("ABCD_lr", "none", True, "per_synapse"),
        ("A", "standardise", False, "per_post"),
        ("ABCD_lr_D_in_and_out", "max_abs", True, "per_pre"),
        ("AD_lr", "max_abs", False, "per_layer"),
    ],
)
def test_numba_kernel_gives_bit_identical_weights_to_numpy(rule, normalisation, bias, sharing):
    pytest.importorskip("numba")
    sizes = (7, 16, 9, 3)
    nets = [
        HebbianNetwork(sizes, rule=rule, normalisation=normalisation, bias=bias, sharing=sharing, kernel=k)
        for k in ("numpy", "numba")
    ]
    params = np.random.default_rng(0).normal(0, 0.5, (5, nets[0].num_params))
    inputs = np.random.default_rng(1).normal(size=(40, 5, 7))
    outputs = []
    for net in nets:
        net.set_params(params)
        net.reset([np.random.default_rng(i) for i in range(5)])
        initial = [w[[0, 2, 4]].copy() for w in net.weights]
        out = []
        with np.errstate(all="ignore"):
            for t, x in enumerate(inputs):
                if t == 20:
                    net.select(np.array([0, 2, 4]))  # dropping members mid-episode keeps rows aligned
                out.append(net.step(x[: net.population]))
        outputs.append((out, [w.copy() for w in net.weights]))
    (out_np, w_np), (out_nb, w_nb) = outputs
    for a, b in zip(out_np, out_nb):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(w_np, w_nb):
        np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(a, b) for a, b in zip(initial, w_np))  # the weights really moved


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_max_abs_matches_numpy_in_both_widths_and_on_nan(dtype):
    """The numba kernel takes max |w| on the weights' bit patterns: same scale, NaN spreads as in numpy."""
    pytest.importorskip("numba")
    nets = [HebbianNetwork((5, 6, 2), dtype=dtype, kernel=k) for k in ("numpy", "numba")]
    params = np.random.default_rng(0).normal(0, 0.5, (3, nets[0].num_params))
    x = np.random.default_rng(1).normal(size=(3, 5))
    results = []
    for net in nets:
        net.set_params(params)
        net.reset([np.random.default_rng(i) for i in range(3)])
        for _ in range(5):
            net.step(x)
        net.weights[0][1, 2, 3] = np.nan  # member 1's first layer breaks
        with np.errstate(all="ignore"):
            net.step(x)
        results.append([w.copy() for w in net.weights])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)  # equal_nan: NaN in the same places
    first = results[1][0]
    assert first.dtype == dtype and np.isnan(first[1]).all() and np.isfinite(first[[0, 2]]).all()
    assert np.abs(first[0]).max() == 1  # a finite layer is scaled by its max |w|


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_copied_and_unpickled_networks_step_as_the_original(kernel):
    if kernel == "numba":
        pytest.importorskip("numba")
    net = HebbianNetwork((5, 6, 3), kernel=kernel)
    net.set_params(np.random.default_rng(0).normal(0, 0.1, (2, net.num_params)))
    net.reset([np.random.default_rng(1), np.random.default_rng(2)])
    clones = [copy.deepcopy(net), pickle.loads(pickle.dumps(net))]
    x = np.random.default_rng(3).normal(size=(2, 5))
    for _ in range(3):
        for each in (net, *clones):
            each.step(x)
    assert all(np.abs(w).max() == 1 for w in net.weights)  # max_abs normalisation ran
    for clone in clones:
        for a, b in zip(net.weights, clone.weights):
            np.testing.assert_array_equal(a, b)


def test_auto_kernel_is_numba_when_installed_else_numpy(monkeypatch):
    monkeypatch.delenv("HEBB_KERNEL", raising=False)
    installed = importlib.util.find_spec("numba") is not None
    assert HebbianNetwork((2, 2)).kernel == ("numba" if installed else "numpy")
    monkeypatch.setenv("HEBB_KERNEL", "numpy")  # the environment variable still decides
    assert HebbianNetwork((2, 2)).kernel == "numpy"
    assert HebbianNetwork((2, 2), kernel="auto").kernel == ("numba" if installed else "numpy")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)  # numba missing
    assert HebbianNetwork((2, 2), kernel="auto").kernel == "numpy"


def test_auto_kernel_falls_back_to_numpy_when_numba_fails(monkeypatch):
    def broken() -> None:
        raise ImportError("numba 0.0 does not support this numpy")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())  # "installed"
    monkeypatch.setattr(network_module, "_numba_kernels", broken)
    with pytest.warns(UserWarning, match="using the numpy kernel"):
        assert HebbianNetwork((2, 2), kernel="auto").kernel == "numpy"
    with pytest.raises(ImportError):  # asked for by name, it fails loudly
        HebbianNetwork((2, 2), kernel="numba")


def test_unknown_kernel_names_the_accepted_ones(monkeypatch):
    with pytest.raises(ValueError, match="accepted: auto, numpy, numba"):
        HebbianNetwork((2, 2), kernel="cuda")
    monkeypatch.setenv("HEBB_KERNEL", "fortran")
    with pytest.raises(ValueError, match="unknown kernel 'fortran'"):
        HebbianNetwork((2, 2))


def _plain_gymnasium_rollout(spec, params, seed, generation):
    """One member at a time through the full wrapper stack: what the lockstep loop must equal."""
    returns, lengths = [], []
    for m, row in enumerate(params):
        env = gym.make(spec.env_id, **spec.env_kwargs)
        policy = build_policy(spec, env)
        policy.set_params(row[None])
        key = m // 2 if spec.paired_seeds else m
        policy.reset([int(member_rng(seed, generation, key, 0, 1).integers(2**63 - 1))])
        obs, _ = env.reset(seed=int(member_rng(seed, generation, key, 0, 0).integers(2**31 - 1)))
        total, n, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs[None])[0])
            total, n, done = total + reward, n + 1, terminated or truncated
        returns.append(total)
        lengths.append(n)
    return np.array(returns), np.array(lengths)


def test_stepping_beneath_the_wrappers_keeps_gymnasium_semantics():
    # max_episode_steps=40 makes gym.make's TimeLimit (which the fast loop bypasses) truncate episodes.
    spec = RolloutSpec(
        env_id="CartPole-v1", env_kwargs={"max_episode_steps": 40}, policy_config={"hidden": [8]}
    )
    evaluator = LockstepEvaluator(spec)
    step, limit = fast_step(evaluator.envs[0])
    assert limit == 40 and step.__self__ is evaluator.envs[0].unwrapped
    params = np.random.default_rng(3).normal(0, 1.0, (10, evaluator.num_params)).astype(np.float32)
    result = evaluator.evaluate(params, np.arange(10), seed=2, generation=1)
    returns, lengths = _plain_gymnasium_rollout(spec, params, seed=2, generation=1)
    np.testing.assert_array_equal(result.lengths, lengths)
    np.testing.assert_array_equal(result.returns, returns)
    assert (lengths == 40).any() and (lengths < 40).any()  # both truncation and termination happened


def test_bench_es_replay_reproduces_the_recorded_physics():
    """The benchmark's "physics limit" replays what an env simulated: same start, same controls."""
    spec = importlib.util.spec_from_file_location("bench_es", REPO / "scripts" / "bench_es.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    env = bench._ControlRecorder(gym.make("hebb/HalfCheetahDamage-v0", damage="all"))
    bench._ControlRecorder.episodes = []
    rng = np.random.default_rng(0)
    finals = []
    for seed in (1, 2):
        env.reset(seed=seed)
        for _ in range(40):
            env.step(rng.uniform(-1, 1, 6))
        finals.append(env.unwrapped.data.qpos.copy())
    steps, seconds, replayed = bench.replay_physics(bench._ControlRecorder.episodes, env.unwrapped.frame_skip)
    assert steps == 80 and seconds > 0
    for got, want in zip(replayed, finals):
        np.testing.assert_array_equal(got, want)


def test_compiled_env_step_prototype_matches_env_step_and_times_all_three():
    """scripts/bench_compiled_env_step.py: its numba group step (mj_step through libmujoco's C pointer)
    gives env.step's observation and reward, and the three methods are timed."""
    pytest.importorskip("numba", reason="the prototype compiles with numba (the fast extra)")
    script = REPO / "scripts" / "bench_compiled_env_step.py"
    done = subprocess.run(
        [sys.executable, str(script), "--members", "2", "--calls", "30"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiled step equals env.step: observation True, reward True" in done.stdout
    assert "us per member-step (medians): raw" in done.stdout and "batch over compiled" in done.stdout


def test_bench_envs_script_runs_to_its_summary():
    """scripts/bench_envs.py's stub of the damage layer broke once unnoticed (a new attribute of the
    layer); its exit status says whether every body was within 5% of the stock env, timing noise
    included, so only a crash fails here."""
    script = REPO / "scripts" / "bench_envs.py"
    command = [sys.executable, str(script), "--robots", "half_cheetah", "--steps", "200", "--block", "50"]
    done = subprocess.run([*command, "--resets", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "damage layer per step" in done.stdout
    assert "every damaged env within 5% of the stock env" in done.stdout
