"""Shared test settings: headless MuJoCo, quiet numpy errors from deliberately divergent nets."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
