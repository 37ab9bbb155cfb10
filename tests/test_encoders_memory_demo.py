"""The memory demonstration at a short delay (slow: PPO training, a few minutes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "memory_demo.py"


def _demo():
    spec = importlib.util.spec_from_file_location("memory_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_lsh_history_agent_recalls_the_cue_and_the_mlp_cannot() -> None:
    demo = _demo()
    cfg = demo.Config(
        delay=32, max_steps=120_000, max_minutes=30.0, mlp_steps=8_192, eval_every=4_096, threads=1
    )
    result = demo.run(cfg)
    assert result["lsh"]["final_accuracy"] >= 0.95, result["lsh"]
    # Chance is 1/4; 100 episodes put a memoryless agent below 0.45 with overwhelming probability.
    assert result["mlp"]["final_accuracy"] <= 0.45, result["mlp"]
