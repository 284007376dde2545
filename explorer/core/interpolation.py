"""Paths between two latent codes: straight lines and great circles."""

from __future__ import annotations

import numpy as np

PARALLEL_EPS = 1e-6  # below this sin(angle) the great circle is ill-defined: use the straight line


def _weights(steps: int) -> np.ndarray:
    """Interpolation times t in [0, 1], [steps, 1]; steps >= 2 so both endpoints are included."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to include both endpoints, got {steps}")
    return np.linspace(0.0, 1.0, steps)[:, None]


def _out_dtype(z0: np.ndarray, z1: np.ndarray) -> np.dtype:
    dtype = np.result_type(z0, z1)
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def lerp(z0: np.ndarray, z1: np.ndarray, steps: int) -> np.ndarray:
    """Straight line from z0 to z1 [D] -> [steps, D]; row 0 is z0 and the last row is z1."""
    t = _weights(steps)
    a, b = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    out = (1 - t) * a + t * b
    out[0], out[-1] = a, b  # exact endpoints, whatever the rounding of (1 - t) * a + t * b
    return out.astype(_out_dtype(z0, z1))


def slerp(z0: np.ndarray, z1: np.ndarray, steps: int) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985; White 2016 for GAN/VAE latents) [D] -> [steps, D].

    Under a N(0, I) prior most mass sits near a sphere of radius sqrt(D); the straight line between
    two codes dips inside it, the great circle does not. (Anti)parallel or zero codes fall back to lerp.
    """
    a, b = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return lerp(z0, z1, steps)
    omega = np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))
    if np.sin(omega) < PARALLEL_EPS:
        return lerp(z0, z1, steps)
    t = _weights(steps)
    out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    out[0], out[-1] = a, b
    return out.astype(_out_dtype(z0, z1))


INTERPOLATORS = {"linear": lerp, "lerp": lerp, "slerp": slerp}


def interpolate(z0: np.ndarray, z1: np.ndarray, steps: int, method: str = "linear") -> np.ndarray:
    """Codes [steps, D] from z0 to z1 [D]; method "linear" (alias "lerp") or "slerp"."""
    if method not in INTERPOLATORS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {sorted(INTERPOLATORS)}")
    return INTERPOLATORS[method](z0, z1, steps)
