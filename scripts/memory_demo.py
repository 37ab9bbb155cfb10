"""PPO with an LSH-attention history encoder recalls a cue across a long delay; an MLP cannot.

Issue 4's demonstration, on ``hebb_envs.memory.MemoryTask`` (a one-hot cue, ``delay`` steps of
random one-hot distractor symbols, then a query step where the answer is scored; chance is
1 / n_symbols).

Two agents, trained with Stable-Baselines3 PPO under the same settings:

- ``lsh``: observations are the last ``L`` observations, ``L`` = the episode length
  (cue + delay + query) rounded up to whole LSH chunks, e.g. 544 for delay 512
  (:class:`hebb_envs.history.ObservationHistory`), through :class:`LSHHistoryExtractor`
  (causal LSH self-attention, bucket 32, 4 rounds: each query sees at most 64 keys per round;
  the features are the newest token's state, so the cue can only reach them through LSH
  attention);
- ``mlp``: SB3's default MLP on the current observation only.

Design for a small CPU: the task ignores every action before the query step, so
:class:`DecideAtQuery` advances through the cue and delay steps itself (with action 0) and
hands the agent only the query observation. The history window still records every one of
those steps; PPO just gets one sample per episode, the only one that carries reward. Both
agents see the same wrapper. Evaluation: deterministic actions on fresh episodes, ``correct``
from the task's ``info``.

Curriculum: the LSH agent first trains at shorter delays (``--curriculum 32,128``: windows of
64 and 160 tokens instead of 544), then its weights move unchanged to the long-delay task (no
weight depends on the window length) and training continues there until the target accuracy.
The log records the accuracy at the start of each stage, so transfer without further training
shows. ``--curriculum ""`` trains at the long delay only. The encoder gets no position features
by default (``--position none``): the task is content-addressed (find the step with the cue
flag), order still reaches the encoder through causal masking, and age features of steps
older than any seen in training would be out of distribution after the curriculum (a first run
with sinusoidal ages solved delay 32 but started the delay-512 stage at chance).

    python scripts/memory_demo.py --delay 512 --threads 1 --out result.json   # the demonstration
    python scripts/memory_demo.py --delay 32 --max-steps 40000
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from hebb_agents.encoders.history import LSHHistoryExtractor
from hebb_envs.history import ObservationHistory
from hebb_envs.memory import MemoryTask


@dataclass
class Config:
    delay: int = 512
    n_symbols: int = 4
    distractor: str = "symbols"
    n_envs: int = 16
    n_steps: int = 32  # per env and update: n_envs * n_steps episodes per PPO update
    batch_size: int = 128
    n_epochs: int = 3
    learning_rate: float = 1e-3
    ent_coef: float = 0.01
    d_model: int = 32
    heads: int = 1
    bucket_size: int = 32
    n_hashes: int = 4
    max_steps: int = 200_000  # episodes (= PPO samples) per LSH training stage at most
    max_minutes: float = 60.0  # wall-clock budget per training stage
    curriculum: str = "32,128"  # shorter delays trained first, comma-separated ("" for none)
    position: str = "none"  # HistoryEncoder position features: none, sinusoidal or learned
    eval_every: int = 4_096
    eval_episodes: int = 100
    target: float = 0.95
    mlp_steps: int = 16_384
    seed: int = 0
    threads: int = 0


HELP = {
    "delay": "the delay to solve (steps between the cue and the query)",
    "n_symbols": "cue symbols K (chance is 1/K)",
    "distractor": "what fills the delay: symbols, uniform or zeros",
    "n_envs": "parallel environments",
    "n_steps": "PPO rollout length per env and update (one step = one episode here)",
    "batch_size": "PPO minibatch size",
    "n_epochs": "PPO epochs per update",
    "learning_rate": "PPO learning rate",
    "ent_coef": "PPO entropy coefficient",
    "d_model": "width of the LSH encoder's tokens",
    "heads": "attention heads",
    "bucket_size": "LSH bucket (chunk) size",
    "n_hashes": "LSH hash rounds",
    "max_steps": "PPO decisions (= episodes) after which an LSH training stage stops; checked between "
    "blocks of --eval-every decisions, so a stage ends at the first whole block that reaches it; each "
    "curriculum stage and the final delay get this many",
    "max_minutes": "wall-clock budget per training stage (minutes)",
    "curriculum": "shorter delays the LSH agent trains at first, comma-separated ('' for none)",
    "position": "HistoryEncoder position features: none, sinusoidal or learned",
    "eval_every": "PPO decisions between accuracy probes",
    "eval_episodes": "episodes of every accuracy probe (the start of each stage too) and of the final score",
    "target": "accuracy at which a stage stops training",
    "mlp_steps": "PPO decisions of the MLP baseline",
    "seed": "seed of PPO and the environments",
    "threads": "torch threads (0: torch's default)",
}


class DecideAtQuery(gym.Wrapper):
    """Step through the memory task's cue and delay (whose actions it ignores) with action 0.

    ``reset`` returns the observation of the query step; the agent's one action answers it and
    ends the episode. Any wrapper inside (e.g. an observation history) sees every step.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        while info["phase"] != "query":
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                raise RuntimeError("the memory task ended before its query step")
        return obs, info


def make_env(cfg: Config, history: bool, delay: int) -> gym.Env:
    env: gym.Env = MemoryTask(n_symbols=cfg.n_symbols, delay=delay, distractor=cfg.distractor)
    if history:
        # The window covers the whole episode, rounded up to whole LSH chunks (the steps before
        # the episode are zeros), so the attention needs no internal padding.
        length = -(-env.episode_length // cfg.bucket_size) * cfg.bucket_size
        env = ObservationHistory(env, length=length, copy=False)  # a view: SB3's vec env copies it
    return DecideAtQuery(env)


def build(cfg: Config, history: bool, delay: int) -> PPO:
    vec = make_vec_env(lambda: make_env(cfg, history, delay), n_envs=cfg.n_envs, seed=cfg.seed + delay)
    policy_kwargs: dict[str, Any] = dict(net_arch=dict(pi=[32], vf=[32]))
    if history:
        policy_kwargs.update(
            features_extractor_class=LSHHistoryExtractor,
            features_extractor_kwargs=dict(
                features_dim=cfg.d_model,
                d_model=cfg.d_model,
                heads=cfg.heads,
                bucket_size=cfg.bucket_size,
                n_hashes=cfg.n_hashes,
                causal=True,
                pooling="last",
                position=cfg.position,
                max_len=-(-(cfg.delay + 2) // cfg.bucket_size) * cfg.bucket_size,  # every stage
            ),
        )
    return PPO(
        "MlpPolicy",
        vec,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        ent_coef=cfg.ent_coef,
        gamma=0.0,  # one decision per episode: the return is the immediate reward
        policy_kwargs=policy_kwargs,
        seed=cfg.seed,
        device="cpu",
    )


def evaluate(model: PPO, cfg: Config, history: bool, delay: int, episodes: int, seed: int) -> float:
    """Share of ``episodes`` fresh episodes answered correctly with deterministic actions."""
    env = make_env(cfg, history, delay)
    correct = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        action, _ = model.predict(obs, deterministic=True)
        _, _, _, _, info = env.step(int(action))
        correct += bool(info["correct"])
    return correct / episodes


def train_until(model: PPO, cfg: Config, history: bool, delay: int, max_steps: int) -> list[dict]:
    """Train in blocks of ``eval_every`` steps until the target accuracy, ``max_steps`` or
    ``max_minutes``; the accuracy before any training of this stage is logged at step 0."""
    start = time.perf_counter()
    log = [
        dict(
            delay=delay,
            steps=0,
            seconds=0.0,
            accuracy=evaluate(model, cfg, history, delay, cfg.eval_episodes, seed=1),
        )
    ]
    print(f"  {'lsh' if history else 'mlp'}: {log[-1]}", flush=True)
    probe = 0
    while (
        log[-1]["accuracy"] < cfg.target
        and model.num_timesteps < max_steps
        and time.perf_counter() - start < 60 * cfg.max_minutes
    ):
        model.learn(total_timesteps=cfg.eval_every, reset_num_timesteps=False)
        probe += 1
        accuracy = evaluate(model, cfg, history, delay, cfg.eval_episodes, seed=10_000 * probe)
        seconds = round(time.perf_counter() - start, 1)
        log.append(dict(delay=delay, steps=model.num_timesteps, seconds=seconds, accuracy=accuracy))
        print(f"  {'lsh' if history else 'mlp'}: {log[-1]}", flush=True)
    return log


def run(cfg: Config) -> dict:
    """Train both agents; final accuracies on ``eval_episodes`` fresh episodes (seeds unseen by training).

    The LSH agent trains through the ``curriculum`` delays (cheap stages), then at ``delay``;
    its weights (none of which depend on the window length) move from stage to stage, and
    each stage trains until the target accuracy.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result: dict[str, Any] = {"config": asdict(cfg), "chance": 1.0 / cfg.n_symbols}
    warmups = [int(d) for d in cfg.curriculum.split(",") if d.strip()]
    stages = sorted(d for d in warmups if 0 < d < cfg.delay) + [cfg.delay]
    start = time.perf_counter()
    log: list[dict] = []
    steps = env_steps = 0  # PPO decisions (one per episode) and task steps behind them
    model: PPO | None = None
    for delay in stages:
        stage = build(cfg, True, delay)
        if model is not None:
            stage.policy.load_state_dict(model.policy.state_dict())
        model = stage
        log += train_until(model, cfg, True, delay, cfg.max_steps)
        steps += model.num_timesteps
        env_steps += model.num_timesteps * (1 + delay + 1)
    assert model is not None
    seconds = time.perf_counter() - start
    final = evaluate(model, cfg, True, cfg.delay, cfg.eval_episodes, seed=987_654_321)
    result["lsh"] = dict(
        final_accuracy=final, steps=steps, env_steps=env_steps, train_seconds=round(seconds, 1), log=log
    )
    print(
        f"lsh: final accuracy {final:.2f} at delay {cfg.delay}, {steps} decisions "
        f"({env_steps} task steps), {seconds:.0f} s",
        flush=True,
    )

    start = time.perf_counter()
    mlp = build(cfg, False, cfg.delay)
    mlp_log = train_until(mlp, cfg, False, cfg.delay, cfg.mlp_steps)
    seconds = time.perf_counter() - start
    final = evaluate(mlp, cfg, False, cfg.delay, cfg.eval_episodes, seed=987_654_321)
    result["mlp"] = dict(
        final_accuracy=final,
        steps=mlp.num_timesteps,
        env_steps=mlp.num_timesteps * (cfg.delay + 2),
        train_seconds=round(seconds, 1),
        log=mlp_log,
    )
    print(f"mlp: final accuracy {final:.2f} at delay {cfg.delay}, {mlp.num_timesteps} steps", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Config()
    for field, value in asdict(defaults).items():
        parser.add_argument(
            f"--{field.replace('_', '-')}", type=type(value), default=value, help=f"{HELP[field]} ({value!r})"
        )
    parser.add_argument("--out", help="write the result as JSON")
    args = parser.parse_args()
    cfg = Config(**{k: getattr(args, k) for k in asdict(defaults)})
    result = run(cfg)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    summary = {k: {kk: vv for kk, vv in result[k].items() if kk != "log"} for k in ("lsh", "mlp")}
    print(json.dumps(summary | {"chance": result["chance"]}))


if __name__ == "__main__":
    main()
