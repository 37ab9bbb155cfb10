"""A CartPole that sleeps each step, so a test can kill a worker while a generation runs.

Registered on import, so ``gym.make("slow_env:SlowCartPole-v0")`` works in spawned workers.
"""

import time

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv


class SlowCartPole(CartPoleEnv):
    def step(self, action):
        time.sleep(0.002)
        return super().step(action)


if "SlowCartPole-v0" not in gym.registry:
    gym.register("SlowCartPole-v0", entry_point=SlowCartPole, max_episode_steps=200)
