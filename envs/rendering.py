"""OpenGL loading order for offscreen rendering next to torch.

Without a GPU, ``MUJOCO_GL=egl`` or ``osmesa`` renders with Mesa's llvmpipe, which loads the
system's LLVM. Triton (which torch imports when an optimiser, ``torch.compile`` or a Triton kernel
is first used) bundles its own LLVM, and loaded after Mesa's it crashed the process with a
segmentation fault (seen here: an SB3 model built after a rendered frame). Loaded first, both work.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util

_LOADED = False


def load_triton_before_opengl() -> None:
    """Load Triton's compiler library, where Triton is installed, before an OpenGL context exists.

    Called before the first frame is rendered (the damaged envs' ``render``, ``hebb video``); costs
    ~0.2 s once per process, nothing where Triton is not installed.
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    if importlib.util.find_spec("triton") is None:
        return
    with contextlib.suppress(Exception):  # a broken Triton install is torch's business, not rendering's
        importlib.import_module("triton._C.libtriton")
