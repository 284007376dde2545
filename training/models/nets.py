"""Encoder / decoder backbones, sized from the image shape. Written once, used by every model.

The conv nets halve the resolution with stride-2 convs while the side is even and >= 8
(28 -> 14 -> 7, 32 -> 16 -> 8 -> 4, 64 -> ... -> 4, 8 -> 4) and the decoder mirrors them with
stride-2 transposed convs, so any of 8, 28, 32, 64 or 128 px, grey or RGB, works unchanged.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from vaescope.training.config import ModelConfig

MAX_CHANNELS = 256


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def conv_plan(image_shape: tuple[int, int, int], base_channels: int) -> list[tuple[int, int]]:
    """(channels, side) after each downsampling; the first entry is the input image."""
    c, h, _ = image_shape
    plan = [(c, h)]
    ch, side = base_channels, h
    while side >= 8 and side % 2 == 0:
        side //= 2
        plan.append((ch, side))
        ch = min(ch * 2, MAX_CHANNELS)
    return plan


class ImageEncoder(nn.Module):
    """x [B, C, H, W] -> features [B, hidden_dim]."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, h, w = config.image_shape
        if config.arch == "mlp":
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(c * h * w, config.hidden_dim), _act(),
                nn.Linear(config.hidden_dim, config.hidden_dim), _act(),
            )
            return
        plan = conv_plan(config.image_shape, config.base_channels)
        layers: list[nn.Module] = []
        for (c_in, _), (c_out, _) in zip(plan, plan[1:], strict=False):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), _act()]
        if len(plan) == 1:  # too small to downsample: one resolution-preserving conv
            layers += [nn.Conv2d(c, config.base_channels, 3, padding=1), _act()]
            plan.append((config.base_channels, h))
        c_last, side = plan[-1]
        layers += [nn.Flatten(), nn.Linear(c_last * side * (side * w // h), config.hidden_dim), _act()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImageDecoder(nn.Module):
    """z [B, in_dim] -> logits [B, C, H, W]."""

    def __init__(self, config: ModelConfig, in_dim: int) -> None:
        super().__init__()
        self.image_shape = config.image_shape
        c, h, w = config.image_shape
        if config.arch == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, config.hidden_dim), _act(),
                nn.Linear(config.hidden_dim, config.hidden_dim), _act(),
                nn.Linear(config.hidden_dim, c * h * w), nn.Unflatten(1, (c, h, w)),
            )
            return
        plan = conv_plan(config.image_shape, config.base_channels)
        if len(plan) == 1:
            plan.append((config.base_channels, h))
        c_last, side = plan[-1]
        layers: list[nn.Module] = [
            nn.Linear(in_dim, config.hidden_dim), _act(),
            nn.Linear(config.hidden_dim, c_last * side * side), _act(),
            nn.Unflatten(1, (c_last, side, side)),
        ]
        ups = list(reversed(plan))
        for i, ((c_in, s_in), (c_out, s_out)) in enumerate(zip(ups, ups[1:], strict=False)):
            last = i == len(ups) - 2
            if s_out == s_in:  # the no-downsampling case mirrored
                layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            else:
                layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if not last:
                layers.append(_act())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def param_count(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
