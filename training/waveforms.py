"""Procedural waveforms: a sequence dataset with known generative factors (like ``shapes``).

Each sequence is one period-wise shape (sine, square, triangle or sawtooth) with a frequency, a
phase and an amplitude, sampled at T = ``WAVE_STEPS`` evenly spaced times over one window:

    s(t) = 0.5 + 0.5 * amplitude * wave(2 pi (frequency * t / T) + phase),  wave in [-1, 1],

so values stay in [0, 1] around a mid-level of 0.5, and are stored as uint8 like every split.

**Layout.** A sequence of T steps of F features is stored as an "image" [N, 1, T, F] (C = 1,
H = T rows, W = F columns), here [N, 1, 64, 1]: the VRAE (``models/vrae.py``) reads an image
[B, C, H, W] as H time steps of C * W features, so it sees 64 steps of one value, and a plot of
row t against t is the waveform. Other families can use it too (an MLP sees 64 numbers), but
it is drawn as a line, not as an image.

``factors`` [N, 4] hold (shape index, frequency in cycles per window, phase in radians,
amplitude); the label is the shape. Nothing is read or downloaded; the seed fixes everything.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vaescope.training.data import Dataset, DatasetInfo, Split

WAVE_SHAPES = ("sine", "square", "triangle", "sawtooth")
WAVE_FACTORS = ("shape", "frequency", "phase", "amplitude")
WAVE_STEPS = 64
WAVES_TRAIN, WAVES_TEST = 8_000, 2_000
# 1 to 4 cycles per window: at least one full period, and >= 16 samples per period at T = 64
FREQUENCY_RANGE = (1.0, 4.0)
PHASE_RANGE = (0.0, 2 * math.pi)
AMPLITUDE_RANGE = (0.2, 1.0)  # 0.2: the smallest wave still spans ~25 of the 255 levels


def wave(shape: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Unit-amplitude waves in [-1, 1] of shape index [N, 1] at angles [N, T] (radians)."""
    cycle = np.mod(angle / (2 * math.pi), 1.0)  # position in the period, [0, 1)
    sine = np.sin(angle)
    square = np.where(cycle < 0.5, 1.0, -1.0)
    triangle = 1.0 - 4.0 * np.abs(cycle - 0.5)  # -1 at the period's start, +1 at its middle
    sawtooth = 2.0 * cycle - 1.0
    return np.select([shape == 0, shape == 1, shape == 2], [sine, square, triangle], sawtooth)


def sample_wave_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform factors [n, 4]: shape index, frequency, phase, amplitude."""
    return np.stack([rng.integers(0, len(WAVE_SHAPES), n).astype(np.float64), rng.uniform(*FREQUENCY_RANGE, n),
                     rng.uniform(*PHASE_RANGE, n), rng.uniform(*AMPLITUDE_RANGE, n)], axis=1)


def render_waves(factors: np.ndarray, steps: int = WAVE_STEPS) -> np.ndarray:
    """Factors [N, 4] -> float sequences [N, steps] in [0, 1]."""
    shape, freq, phase, amp = (factors[:, i:i + 1] for i in range(4))
    t = np.arange(steps, dtype=np.float64)[None] / steps
    return 0.5 + 0.5 * amp * wave(shape, 2 * math.pi * freq * t + phase)


def make_waveforms(n: int, seed: int | np.random.Generator = 0, steps: int = WAVE_STEPS) -> Split:
    """n seeded waveforms: uint8 [n, 1, steps, 1], labels = shape index [n], factors [n, 4].

    Examples:
        >>> split = make_waveforms(5, seed=0, steps=32)
        >>> tuple(split.images.shape), split.factors.shape[1]
        ((5, 1, 32, 1), 4)
    """
    factors = sample_wave_factors(n, np.random.default_rng(seed))
    images = np.rint(render_waves(factors, steps) * 255).astype(np.uint8)[:, None, :, None]
    return Split(torch.from_numpy(images), torch.from_numpy(factors[:, 0].astype(np.int64)),
                 torch.from_numpy(factors.astype(np.float32)))


def load_waveforms(data_dir: Path | None = None, image_size: int = 0, seed: int = 0) -> Dataset:
    """8,000 / 2,000 seeded waveforms of 64 steps, [N, 1, 64, 1] (see the module docstring).

    ``data_dir`` and ``image_size`` are not used (the signature is the dataset registry's); the
    length is fixed so that a checkpoint's dataset name alone rebuilds its data.
    """
    rng = np.random.default_rng(seed)
    train, test = make_waveforms(WAVES_TRAIN, rng), make_waveforms(WAVES_TEST, rng)
    info = DatasetInfo("waveforms", (1, WAVE_STEPS, 1), WAVE_SHAPES, factor_names=WAVE_FACTORS, display="line")
    return Dataset(info, train, test)
