"""A Hebbian policy with an LSH history front end trains through the ES trainer, saves and reloads."""

import numpy as np
import pytest

from hebb_agents.cli import main
from hebb_agents.policy import EvolvablePolicy, HebbianPolicy
from hebb_agents.trainer import ESTrainer, TrainConfig

ENCODER = {"type": "lsh", "window": 16, "feature_dim": 8, "d_model": 16, "bucket_size": 4, "evolvable": True}


def test_trainer_coevolves_encoder_and_the_saved_policy_reloads(tmp_path):
    config = TrainConfig(
        env_id="hebb/Memory-v0",
        env_kwargs={"delay": 8},
        policy_config={"hidden": [8], "encoder": ENCODER},
        popsize=4,
        generations=2,
        backend="serial",
        seed=0,
    )
    trainer = ESTrainer(config, out_dir=tmp_path)
    n_encoder = trainer.policy.num_encoder_params
    assert n_encoder > 0 and trainer.policy.num_params == trainer.policy.num_network_params + n_encoder
    trainer.train()
    loaded = EvolvablePolicy.load(tmp_path / "policy.npz")
    assert isinstance(loaded, HebbianPolicy) and loaded.encoder_spec == ENCODER
    np.testing.assert_allclose(loaded.get_params()[0], trainer.es.mean)
    assert main(["eval", str(tmp_path), "--episodes", "2"]) == 0


def test_policy_with_an_encoder_object_refuses_to_save(tmp_path):
    import gymnasium as gym

    from hebb_agents.encoders import make_encoder

    space = gym.spaces.Box(0.0, 1.0, (6,), np.float32)
    policy = HebbianPolicy(space, gym.spaces.Discrete(4), hidden=(8,), encoder=make_encoder(ENCODER, space))
    policy.set_params(policy.initial_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="build it from a spec"):
        policy.save(tmp_path / "p.npz")
    with pytest.raises(ValueError, match="accepted: lsh, conv"):
        make_encoder({"type": "rnn"}, space)
