"""Shared test settings (headless MuJoCo) and helpers."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

_HOLD_FOLDER = """
import sys, time
from hebb_agents.checkpoint import hold_run_folder
hold_run_folder(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def _held_elsewhere(folder: Path) -> Iterator[None]:
    command = [sys.executable, "-c", _HOLD_FOLDER, str(folder)]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def held_elsewhere():
    """``with held_elsewhere(folder):`` another process holds ``folder`` as a running training run does."""
    return _held_elsewhere
