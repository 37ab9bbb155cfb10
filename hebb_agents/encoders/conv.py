"""The reference's small CarRacing CNN as a Hebbian-policy front end (evolved, not plastic).

Najarro & Risi (2020) put two convolution layers in front of the Hebbian layers for pixel
input and evolve their weights directly with the coefficients:

    (3, 84, 84) -> conv 3->6, 3x3, stride 1, tanh -> max-pool 2 -> (6, 41, 41)
                -> conv 6->8, 5x5, stride 2, tanh -> max-pool 2 -> (8, 9, 9) = 648 features

no biases, 6*3*3*3 + 8*6*5*5 = 1,362 weights. Preprocessing as the reference did it: resize the
96x96x3 CarRacing frame to 84x84 (area interpolation, the reference's ``ResizeObservation``)
and scale pixel values to [0, 1]. One difference: the reference swapped axes 0 and 2
(``(W, H, C) -> (C, H, W)`` read as ``(C, W, H)``), feeding the image transposed; here the image
keeps its orientation, ``(C, H, W)``. That matters only for weights imported from its files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hebb_agents.encoders.base import TorchPolicyEncoder

INPUT_SIZE = 84
FEATURES = 648


class CarRacingCNN(nn.Module):
    """``(N, 3, 84, 84)`` in [0, 1] -> ``(N, 648)`` features in (-1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, kernel_size=3, stride=1, bias=False)
        self.conv2 = nn.Conv2d(6, 8, kernel_size=5, stride=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.max_pool2d(torch.tanh(self.conv2(x)), 2)
        return x.flatten(1)


def preprocess_frames(obs: np.ndarray) -> Tensor:
    """``(P, H, W, 3)`` frames (uint8 0-255, or float already in [0, 1]) -> ``(P, 3, 84, 84)``."""
    obs = np.asarray(obs)
    if obs.ndim != 4 or obs.shape[-1] != 3:
        raise ValueError(f"expected frames (P, H, W, 3), got shape {obs.shape}")
    x = torch.as_tensor(obs).permute(0, 3, 1, 2).float()
    if obs.dtype == np.uint8:
        x = x / 255.0
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
    return x


def check_frame_space(observation_space: object) -> None:
    """A ValueError unless ``observation_space`` holds RGB frames: a ``Box`` of shape ``(H, W, 3)``."""
    shape = getattr(observation_space, "shape", None)
    if shape is None or len(shape) != 3 or shape[-1] != 3 or min(shape) < 1:
        raise ValueError(
            "the conv encoder needs image observations of shape (H, W, 3) (RGB frames, e.g. "
            f"CarRacing's (96, 96, 3)), got {observation_space}"
        )


class ConvEncoder(TorchPolicyEncoder):
    """The reference CarRacing CNN as a :class:`~hebb_agents.encoders.base.PolicyEncoder`.

    Args:
        evolvable: co-evolve the 1,362 conv weights with the coefficients (the reference's
            setting) or keep fixed random ones (``num_params == 0``).
        seed: seed of the random initial weights (PyTorch's default conv init).

    Observations are frames ``(P, H, W, 3)``: 84x84 is used as is, any other size (CarRacing's
    96x96) is resized to 84x84 first. Features are ``(P, 648)``.
    """

    def __init__(self, evolvable: bool = True, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG stream untouched
            torch.manual_seed(seed)
            net = CarRacingCNN()
        super().__init__(net, FEATURES, evolvable=evolvable, preprocess=preprocess_frames)


__all__ = ["FEATURES", "INPUT_SIZE", "CarRacingCNN", "ConvEncoder", "check_frame_space", "preprocess_frames"]
