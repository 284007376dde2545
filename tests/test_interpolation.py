"""explorer.interpolation: straight and great-circle paths between two codes."""

from __future__ import annotations

import numpy as np
import pytest

from vaescope.explorer.core.interpolation import interpolate, lerp, slerp

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("fn", [lerp, slerp])
@pytest.mark.parametrize("steps", [2, 7])
def test_endpoints_equal_inputs_and_steps_count(fn, steps: int) -> None:
    z0, z1 = RNG.normal(size=8).astype(np.float32), RNG.normal(size=8).astype(np.float32)
    path = fn(z0, z1, steps)
    assert path.shape == (steps, 8)
    assert path.dtype == np.float32
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)


def test_lerp_is_evenly_spaced_on_the_segment() -> None:
    z0, z1 = np.zeros(3), np.array([2.0, 4.0, -6.0])
    path = lerp(z0, z1, 5)
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile(z1 / 4, (4, 1)))


def test_slerp_keeps_the_norm_of_equal_norm_endpoints() -> None:
    z0 = RNG.normal(size=16)
    z1 = RNG.normal(size=16)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    norms = np.linalg.norm(slerp(z0, z1, 11), axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(z0), rtol=1e-6)
    # the straight line dips inside the sphere: this is what slerp exists to avoid
    assert np.linalg.norm(lerp(z0, z1, 11), axis=1)[5] < 0.99 * np.linalg.norm(z0)


@pytest.mark.parametrize("z1_factor", [2.0, -1.0, 0.0])
def test_slerp_falls_back_to_lerp_for_parallel_antiparallel_or_zero(z1_factor: float) -> None:
    z0 = np.array([1.0, 2.0, 3.0])
    z1 = z1_factor * z0
    np.testing.assert_allclose(slerp(z0, z1, 6), lerp(z0, z1, 6))
    assert np.isfinite(slerp(z0, z1, 6)).all()


def test_interpolate_dispatches_and_rejects_unknown_methods_and_too_few_steps() -> None:
    z0, z1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(interpolate(z0, z1, 3, "linear"), lerp(z0, z1, 3))
    np.testing.assert_allclose(interpolate(z0, z1, 3, "slerp")[1], [np.sqrt(0.5), np.sqrt(0.5)])
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolate(z0, z1, 3, "cubic")
    with pytest.raises(ValueError, match="steps"):
        lerp(z0, z1, 1)
