"""Closed-form matting of a trimap's band: one solver, direct or iterative, the same answer."""
from __future__ import annotations

import numpy as np

from mattekit.inference import closed_form


def step_scene(height: int = 40, width: int = 60):
    """A left/right colour step with a little texture, certain columns at each side."""
    rng = np.random.default_rng(4)
    image = np.full((height, width, 3), 0.1) + 0.02 * rng.random((height, width, 3))
    image[:, : width // 2] += 0.7
    fg = np.zeros((height, width), bool)
    bg = np.zeros((height, width), bool)
    fg[:, :3], bg[:, -3:] = True, True
    return image, closed_form.Trimap(fg, bg)


def test_when_the_band_is_solved_then_alpha_follows_the_colour_step():
    image, trimap = step_scene()
    alpha = closed_form.closed_form_with_prior(image, trimap, np.zeros(trimap.fg.shape),
                                               np.full(trimap.fg.shape, 1e-4))
    assert alpha[:, :28].min() > 0.9 and alpha[:, 32:].max() < 0.1


def test_when_the_system_is_large_then_the_iterative_solve_agrees_with_the_direct_one(
        monkeypatch):
    image, trimap = step_scene()
    prior = np.full(trimap.fg.shape, 0.5)
    weight = np.full(trimap.fg.shape, 0.05)
    direct = closed_form.closed_form_with_prior(image, trimap, prior, weight)
    monkeypatch.setattr(closed_form, "DIRECT_SOLVE_MAX", 0)
    iterative = closed_form.closed_form_with_prior(image, trimap, prior, weight)
    assert np.abs(direct - iterative).max() < 1e-3


def test_when_nothing_known_reaches_a_region_then_it_takes_the_prior():
    image, trimap = step_scene()
    trimap = closed_form.Trimap(np.zeros_like(trimap.fg), np.zeros_like(trimap.bg))
    alpha = closed_form.closed_form_with_prior(image, trimap, np.full(trimap.fg.shape, 0.25),
                                               np.full(trimap.fg.shape, 1e-3))
    np.testing.assert_allclose(alpha, 0.25, atol=1e-3)
