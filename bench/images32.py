"""Seeded 32x32 RGB images in 10 classes for the GPU benchmark (a dataset loader for
``--dataset path/to/bench/images32.py:images32``): more pixels and samples than digits, so a
GPU has work. Each class is a smooth random template; samples are the template under a random
shift and brightness, plus noise."""

from __future__ import annotations

import numpy as np

N_SAMPLES = 10_240  # 8,192 training and 2,048 validation samples at the default split
N_CLASSES = 10
SIZE = 32


def images32(n_samples: int = N_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` (n, 3, 32, 32) float32 and ``y`` (n,) int64."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(N_CLASSES, 3, 8, 8))
    templates = coarse.repeat(4, axis=2).repeat(4, axis=3)  # smooth 32x32 patterns
    y = np.arange(n_samples) % N_CLASSES
    shifts = rng.integers(-3, 4, size=(n_samples, 2))
    x = np.empty((n_samples, 3, SIZE, SIZE), dtype=np.float32)
    for i, (label, (dy, dx)) in enumerate(zip(y, shifts, strict=True)):
        x[i] = np.roll(templates[label], (dy, dx), axis=(1, 2))
    x *= rng.uniform(0.7, 1.3, size=(n_samples, 1, 1, 1)).astype(np.float32)
    x += rng.normal(scale=1.0, size=x.shape).astype(np.float32)
    return x, y.astype(np.int64)


def images32_small() -> tuple[np.ndarray, np.ndarray]:
    """A few hundred samples of the same task: the benchmark's own tests, on a CPU."""
    return images32(n_samples=400)
