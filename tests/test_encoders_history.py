"""History encoder, SB3 extractor and the policy encoders' population batching."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
import torch

from hebb_agents.encoders.base import PolicyEncoder
from hebb_agents.encoders.conv import ConvEncoder
from hebb_agents.encoders.history import HistoryEncoder, LSHHistoryExtractor, LSHPolicyEncoder
from hebb_envs.history import ObservationHistory


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_history_encoder_shapes_and_masked_steps_are_ignored(pooling: str) -> None:
    torch.manual_seed(0)
    enc = HistoryEncoder(5, d_model=16, depth=2, bucket_size=8, n_hashes=2, pooling=pooling, lsh_seed=1)
    enc.eval()
    history = torch.randn(3, 37, 5)
    mask = torch.zeros(3, 37, dtype=torch.bool)
    mask[:, :10] = True  # the first 10 steps "before the episode began"
    out = enc(history, key_padding_mask=mask)
    assert out.shape == (3, 16)
    changed = history.clone()
    changed[:, :10] = 100.0 * torch.randn(3, 10, 5)
    assert torch.allclose(enc(changed, key_padding_mask=mask), out, atol=1e-6)
    assert not torch.allclose(enc(changed), enc(history), atol=1e-3)


def test_history_encoder_sees_old_observations_and_their_age() -> None:
    torch.manual_seed(0)
    enc = HistoryEncoder(3, d_model=16, bucket_size=8, n_hashes=4, lsh_seed=0).eval()
    history = torch.zeros(1, 40, 3)
    base = enc(history)
    early = history.clone()
    early[0, 2] = 1.0  # one event 37 steps before the newest
    late = history.clone()
    late[0, 30] = 1.0  # the same event, 9 steps ago
    assert not torch.allclose(enc(early), base)
    assert not torch.allclose(enc(early), enc(late))


def test_bad_encoder_options_list_accepted_values() -> None:
    with pytest.raises(ValueError, match="accepted: last, mean, attention"):
        HistoryEncoder(3, pooling="max")
    with pytest.raises(ValueError, match="accepted: sinusoidal, learned, none"):
        HistoryEncoder(3, position="rotary")
    with pytest.raises(ValueError, match="max_len"):
        HistoryEncoder(3, position="learned")
    with pytest.raises(ValueError, match="Box observation of shape"):
        LSHHistoryExtractor(gym.spaces.Box(0, 1, (4,)))


@pytest.mark.parametrize("flag", [False, True])
def test_sb3_extractor_trains_in_ppo(flag: bool) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from hebb_envs.memory import MemoryTask

    def make() -> gym.Env:
        return ObservationHistory(MemoryTask(delay=6), length=12, flag_fill=flag)

    env = make_vec_env(make, n_envs=2, seed=0)
    kwargs = dict(
        features_extractor_class=LSHHistoryExtractor,
        features_extractor_kwargs=dict(
            features_dim=16, d_model=16, bucket_size=4, n_hashes=2, fill_flag=flag
        ),
    )
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=2, policy_kwargs=kwargs, seed=0)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, LSHHistoryExtractor)
    before = [p.detach().clone() for p in extractor.parameters()]
    model.learn(total_timesteps=128)
    assert model.num_timesteps >= 128
    moved = [not torch.equal(a, b) for a, b in zip(before, extractor.parameters())]
    assert sum(moved) > len(moved) // 2  # gradients reached the attention layers
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (2,)


def test_flagged_fill_rows_are_masked_by_the_sb3_extractor() -> None:
    # ObservationHistory(flag_fill=True) marks the rows before the episode began; the extractor
    # with fill_flag=True must not see what they hold (the rows a "first" fill repeats, say).
    env = ObservationHistory(gym.make("Pendulum-v1"), length=6, fill="first", flag_fill=True)
    env.reset(seed=0)
    for _ in range(2):
        window = env.step(np.zeros(1, np.float32))[0].copy()
    assert window.shape == (6, 4)
    np.testing.assert_array_equal(window[:, -1], [1, 1, 1, 0, 0, 0])  # 3 fill rows, then 3 steps
    torch.manual_seed(0)
    extractor = LSHHistoryExtractor(
        env.observation_space,
        features_dim=8,
        fill_flag=True,
        d_model=16,
        bucket_size=4,
        n_hashes=2,
        lsh_seed=1,
    )
    other = window.copy()
    other[:3, :-1] = np.random.default_rng(0).uniform(-1, 1, (3, 3))  # other fill content
    features = [extractor(torch.as_tensor(w[None])) for w in (window, other)]
    assert torch.equal(features[0], features[1])
    for w in (window, other):
        w[:, -1] = 0  # unflagged, the fill rows count as observations: their content matters
    assert not torch.equal(*(extractor(torch.as_tensor(w[None])) for w in (window, other)))
    with pytest.raises(ValueError, match="1-D observations"):
        ObservationHistory(ObservationHistory(gym.make("Pendulum-v1"), length=2), length=2, flag_fill=True)


def _policy_encoders() -> list[PolicyEncoder]:
    box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    return [
        LSHPolicyEncoder(box, window=20, evolvable=True, seed=3, d_model=16, bucket_size=4),
        ConvEncoder(evolvable=True, seed=3),
    ]


def _observations(encoder: PolicyEncoder, population: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(encoder, ConvEncoder):
        return rng.integers(0, 256, size=(population, 96, 96, 3), dtype=np.uint8)
    return rng.uniform(-1, 1, size=(population, 4)).astype(np.float32)


@pytest.mark.parametrize("index", [0, 1], ids=["lsh", "conv"])
def test_population_batched_weights_equal_one_member_at_a_time(index: int) -> None:
    encoder = _policy_encoders()[index]
    rng = np.random.default_rng(0)
    centre = encoder.initial_params()
    assert centre.dtype == np.float32 and centre.shape == (encoder.num_params,)
    params = centre + 0.05 * rng.standard_normal((3, encoder.num_params)).astype(np.float32)
    steps = [_observations(encoder, 3, rng) for _ in range(3)]
    encoder.reset(3)
    batched = [encoder.encode(obs, params) for obs in steps][-1]
    assert batched.shape == (3, encoder.feature_dim) and batched.dtype == np.float32
    for member in range(3):
        encoder.reset(1)
        alone = [encoder.encode(obs[member : member + 1], params[member : member + 1]) for obs in steps][-1]
        np.testing.assert_allclose(batched[member], alone[0], atol=1e-5)
    # Different members' weights give different features.
    assert not np.allclose(batched[0], batched[1], atol=1e-4)
    # The centre reproduces the fixed weights.
    encoder.reset(3)
    fixed = [encoder.encode(obs, None) for obs in steps][-1]
    encoder.reset(3)
    centred = [encoder.encode(obs, np.repeat(centre[None], 3, 0)) for obs in steps][-1]
    np.testing.assert_allclose(fixed, centred, atol=1e-5)


def test_fixed_encoders_have_no_parameters_and_are_seeded() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    a = LSHPolicyEncoder(box, window=10, evolvable=False, seed=1, d_model=16, bucket_size=4)
    b = LSHPolicyEncoder(box, window=10, evolvable=False, seed=1, d_model=16, bucket_size=4)
    c = LSHPolicyEncoder(box, window=10, evolvable=False, seed=2, d_model=16, bucket_size=4)
    assert a.num_params == 0 and a.initial_params().shape == (0,)
    obs = np.ones((2, 4), np.float32)
    for enc in (a, b, c):
        enc.reset(2)
    assert np.array_equal(a.encode(obs, None), b.encode(obs, None))
    assert not np.allclose(a.encode(obs, None), c.encode(obs, None))
    with pytest.raises(ValueError, match="not evolvable"):
        a.encode(obs, np.zeros((2, 5), np.float32))
    conv = ConvEncoder(evolvable=False)
    assert conv.num_params == 0 and conv.feature_dim == 648
    assert ConvEncoder(evolvable=True).num_params == 6 * 3 * 3 * 3 + 8 * 6 * 5 * 5


def test_lsh_policy_encoder_history_matches_the_window_it_was_shown() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    enc = LSHPolicyEncoder(box, window=6, seed=0, d_model=16, bucket_size=4)
    rng = np.random.default_rng(1)
    seen = [rng.uniform(-1, 1, (2, 2)).astype(np.float32) for _ in range(9)]
    enc.reset(2)
    got = [enc.encode(obs, None) for obs in seen]
    module = enc.module.encoder
    with torch.no_grad():
        for t in (0, 3, 8):
            window = np.stack(seen[max(0, t - 5) : t + 1], axis=1)  # (P, <=6, 2)
            want = module(torch.from_numpy(window)).numpy()  # only real steps, no padding
            np.testing.assert_allclose(got[t], want, atol=1e-5)
    enc.reset(2)  # a new episode forgets the old one
    with torch.no_grad():
        fresh = module(torch.from_numpy(seen[8][:, None])).numpy()
    np.testing.assert_allclose(enc.encode(seen[8], None), fresh, atol=1e-5)


def test_conv_encoder_gives_648_features_for_both_frame_sizes() -> None:
    enc = ConvEncoder(evolvable=False, seed=0)
    enc.reset(2)
    rng = np.random.default_rng(0)
    big = enc.encode(rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8), None)
    small = enc.encode(rng.uniform(0, 1, (2, 84, 84, 3)).astype(np.float32), None)
    assert big.shape == small.shape == (2, 648)
    assert np.all(np.abs(big) < 1)
    with pytest.raises(ValueError, match="frames"):
        enc.encode(np.zeros((2, 84, 84), np.float32), None)


def test_lsh_policy_encoder_resets_single_members() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    enc = LSHPolicyEncoder(box, window=5, seed=0, d_model=16, bucket_size=4)
    rng = np.random.default_rng(0)
    enc.reset(2)
    for _ in range(4):
        enc.encode(rng.uniform(-1, 1, (2, 2)).astype(np.float32), None)
    enc.reset(2, members=np.array([1]))  # member 1's episode restarts, member 0 keeps its past
    obs = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
    out = enc.encode(obs, None)
    with torch.no_grad():
        fresh = enc.module.encoder(torch.from_numpy(obs[1:, None])).numpy()
    np.testing.assert_allclose(out[1:], fresh, atol=1e-5)
    assert not np.allclose(out[0], enc_alone(enc, obs[:1]), atol=1e-4)


def enc_alone(enc: LSHPolicyEncoder, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return enc.module.encoder(torch.from_numpy(obs[:, None])).numpy()[0]


def test_front_ends_are_importable_from_the_package_as_the_readme_says() -> None:
    import hebb_agents.encoders as encoders
    from hebb_agents.encoders import ConvEncoder, HistoryEncoder, LSHHistoryExtractor, LSHPolicyEncoder
    from hebb_agents.encoders.conv import ConvEncoder as conv_class
    from hebb_agents.encoders.history import LSHHistoryExtractor as extractor_class

    assert LSHHistoryExtractor is extractor_class and ConvEncoder is conv_class
    assert HistoryEncoder.__module__ == LSHPolicyEncoder.__module__ == "hebb_agents.encoders.history"
    with pytest.raises(AttributeError, match="no attribute 'Extractor'"):
        encoders.Extractor  # noqa: B018


def test_sinusoidal_positions_are_built_on_the_inputs_device_and_dtype() -> None:
    from hebb_agents.encoders.history import sinusoidal_embedding

    # on a CPU-built frequency table, meta (like CUDA) inputs failed with "not on the expected device"
    enc = HistoryEncoder(6).to("meta")
    assert enc(torch.randn(2, 64, 6, device="meta")).shape == (2, 32)
    ages = torch.arange(5, device="meta")
    assert sinusoidal_embedding(ages, 8).device.type == "meta"
    half = sinusoidal_embedding(torch.arange(5), 8, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), sinusoidal_embedding(torch.arange(5), 8), atol=1e-2)
    wide = HistoryEncoder(6, lsh_seed=0).to(torch.float64)
    assert wide(torch.randn(2, 9, 6, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(obs_dim=0), "obs_dim must be an int >= 1, got 0"),
        (dict(out_dim=-3), "out_dim must be an int >= 1, got -3"),
        (dict(out_dim=0), "out_dim must be an int >= 1, got 0"),  # was silently d_model
        (dict(ff_mult=0), "ff_mult must be an int >= 1, got 0"),
        (dict(d_model=16.5), "d_model must be an int >= 1, got 16.5"),
        (dict(position="learned", max_len=0), "max_len must be an int >= 1 or None, got 0"),
        (dict(position="learned", max_len=-1), "max_len must be an int >= 1 or None, got -1"),
        (dict(bucket_size=8.5), "bucket_size must be an int >= 1, got 8.5"),
        # flags were read for their truth value ("no" meant causal), rates failed inside torch or
        # under another option's name, a string seed failed on "str + int"
        (dict(causal="no"), "causal must be a boolean (true or false), got 'no'"),
        (dict(reversible="no"), "reversible must be a boolean (true or false), got 'no'"),
        (dict(attn_dropout=1.0), "attn_dropout must be a number in [0, 1), got 1.0"),
        (dict(ff_dropout=1.5), "ff_dropout must be a number in [0, 1], got 1.5"),
        (dict(ff_dropout="0.1"), "ff_dropout must be a number in [0, 1], got '0.1'"),
        (dict(lsh_seed="1"), "lsh_seed must be an int or None, got '1'"),
    ],
)
def test_history_encoder_sizes_must_be_positive_ints(kwargs: dict, message: str) -> None:
    kwargs = {"obs_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        HistoryEncoder(**kwargs)


def test_history_encoder_takes_flags_and_rates_as_earlier_versions_saved_them() -> None:
    # 0/1 and 1.0 flags (JSON from other tools), dropout 1.0 where torch.nn.Dropout takes it
    enc = HistoryEncoder(4, d_model=8, heads=1, bucket_size=4, causal=1.0, reversible=0, ff_dropout=1.0)
    assert enc.stack.reversible is False
    assert enc(torch.randn(2, 6, 4)).shape == (2, 8)


def test_history_encoder_takes_numpy_integer_sizes() -> None:
    enc = HistoryEncoder(np.int64(4), d_model=np.int32(16), out_dim=np.int64(8), bucket_size=np.int64(4))
    assert enc.out_dim == 8 and type(enc.out_dim) is int
    assert enc(torch.randn(2, 10, 4)).shape == (2, 8)


def test_the_sb3_extractor_checks_its_arguments_at_construction() -> None:
    space = gym.spaces.Box(0, 1, (8, 4))
    # a learned-position table shorter than the window failed only at the first forward pass
    with pytest.raises(ValueError, match="window of 8 is longer than max_len=4"):
        LSHHistoryExtractor(space, position="learned", max_len=4)
    learned = LSHHistoryExtractor(space, position="learned", n_hashes=1, bucket_size=4)
    assert learned.encoder.max_len == 8  # the window, unless given
    assert learned(torch.rand(2, 8, 4)).shape == (2, 64)
    # another history shape was reshaped into this one's window without a word
    for wrong in [(2, 4, 8), (2, 2, 16), (2, 8, 3)]:
        with pytest.raises(ValueError, match=re.escape(f"expected observations (B, 8, 4), got {wrong}")):
            learned(torch.rand(*wrong))
    with pytest.raises(ValueError, match="features_dim must be an int >= 1, got 0"):
        LSHHistoryExtractor(space, features_dim=0)
    with pytest.raises(ValueError, match=r"history of at least one step \(L >= 1\), got shape \(0, 4\)"):
        LSHHistoryExtractor(gym.spaces.Box(0, 1, (0, 4)))
    # the wrapper's option is flag_fill, the extractor's fill_flag: the error shows the right name
    unknown = r"unknown LSHHistoryExtractor option\(s\) 'flag_fill'; accepted: .*fill_flag"
    with pytest.raises(ValueError, match=unknown):
        LSHHistoryExtractor(space, flag_fill=True)
    with pytest.raises(ValueError, match=r"'out_dim'; accepted: .*features_dim"):
        LSHHistoryExtractor(space, out_dim=8)
    assert {"fill_flag", "features_dim", "lsh_seed", "d_model"} <= LSHHistoryExtractor.options()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(window="8"), "window must be an int >= 1, got '8'"),
        (dict(window=2.5), "window must be an int >= 1, got 2.5"),
        (dict(window=0), "window must be an int >= 1, got 0"),
        (dict(feature_dim=0), "feature_dim must be an int >= 1, got 0"),
        (dict(evolvable="no"), "evolvable must be a boolean (true or false), got 'no'"),
        (dict(n_hash=2), "unknown LSHPolicyEncoder option(s) 'n_hash'; accepted: "),
    ],
)
def test_lsh_policy_encoder_names_bad_arguments(kwargs: dict, message: str) -> None:
    box = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        LSHPolicyEncoder(box, **kwargs)
    if "n_hash" in kwargs:
        assert "n_hashes" in str(info.value) and "window" in str(info.value)
