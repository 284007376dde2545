"""explorer.traversal: dimension ordering, slider ranges and one-coordinate traversals."""

from __future__ import annotations

import numpy as np
import pytest

from vaescope.explorer.core.traversal import (
    dimension_order,
    set_coordinate,
    slider_ranges,
    traversal_codes,
)


def test_dimension_order_sorts_by_kl_descending_with_stable_ties() -> None:
    kl = np.array([0.1, 2.0, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(dimension_order(kl), [1, 3, 0, 2, 4])


def test_slider_ranges_prior_mode() -> None:
    lo, hi = slider_ranges("prior", np.zeros((5, 4)))
    np.testing.assert_array_equal(lo, [-3.0] * 4)
    np.testing.assert_array_equal(hi, [3.0] * 4)
    lo, hi = slider_ranges("prior", None, prior_sd=2.0, latent_dim=3)
    np.testing.assert_array_equal(hi, [2.0] * 3)
    with pytest.raises(ValueError, match="latent_dim"):
        slider_ranges("prior", None)


def test_slider_ranges_data_mode_uses_min_max_and_widens_constant_dims() -> None:
    latents = np.array([[0.0, 5.0, 1.0], [2.0, -1.0, 1.0], [1.0, 0.0, 1.0]])
    lo, hi = slider_ranges("data", latents)
    np.testing.assert_allclose(lo[:2], [0.0, -1.0])
    np.testing.assert_allclose(hi[:2], [2.0, 5.0])
    assert lo[2] < 1.0 < hi[2]  # a constant dimension still gets a usable slider
    with pytest.raises(ValueError, match="latents"):
        slider_ranges("data", None)
    with pytest.raises(ValueError, match="unknown slider mode"):
        slider_ranges("posterior", latents)


def test_set_coordinate_copies_and_changes_one_coordinate() -> None:
    z = np.array([1.0, 2.0, 3.0], np.float32)
    out = set_coordinate(z, 1, -7.0)
    np.testing.assert_array_equal(out, [1.0, -7.0, 3.0])
    np.testing.assert_array_equal(z, [1.0, 2.0, 3.0])


def test_traversal_codes_shape_order_and_one_changed_coordinate() -> None:
    z0 = np.array([0.3, -0.7, 1.1, 0.05], np.float32)
    lo, hi = np.full(4, -2.0), np.full(4, 2.0)
    dims, steps = [2, 0], 5
    codes = traversal_codes(z0, dims, lo, hi, steps)
    assert codes.shape == (len(dims) * steps, 4)
    changed = codes != z0
    np.testing.assert_array_equal(changed.sum(axis=1), np.ones(len(codes)))
    # row-major (dim, step): the first block moves dims[0], the second dims[1], low to high
    assert changed[:steps, 2].all() and changed[steps:, 0].all()
    np.testing.assert_allclose(codes[:steps, 2], np.linspace(-2, 2, steps))
    np.testing.assert_allclose(codes[steps:, 0], np.linspace(-2, 2, steps))
