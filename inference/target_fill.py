"""A matte of the target where the prior does not see it: closed-form matting of the mask's band.

The pretrained prior (RVM) knows people. A toy, a plant or a prop that the user's key mask names
may get a faint, holed or empty alpha from it, and no amount of restricting the prior's output
to the target brings back what it never produced. The mask itself carries the missing
information: where the target's shape (the key mask, or the previous frame's target carried
by optical flow) is solid, the target is; far outside it, it is not. That is a trimap
(``shape_trimap``), and the band between is solved by closed-form matting (Levin et al. 2008,
pymatting's matting Laplacian) with the prior's own alpha as a soft data term weighted by how
far the prior can be trusted (``prior_coverage``): where the prior sees the target the solve
follows it, where it misses the target the image's colour lines decide
(``closed_form.closed_form_with_prior``).

All arrays are at the guidance resolution; images sRGB-encoded 0..1 (H, W, 3), masks bool.
"""
from __future__ import annotations

import numpy as np

from mattekit.inference import guidance
from mattekit.inference.closed_form import Trimap

#: Alpha above which the prior counts as seeing a pixel of the target's solid core.
SEEN_ALPHA = 0.5


def shape_trimap(shape: np.ndarray, tolerance: float) -> Trimap:
    """The trimap of a target whose outline ``shape`` (bool) is right to within ``tolerance``
    pixels: eroded by it, the solid core; dilated by it, the limit beyond which nothing is
    the target.

    >>> shape = np.zeros((1, 9), bool); shape[0, 2:7] = True
    >>> t = shape_trimap(shape, 1.0)
    >>> t.fg.astype(int).tolist(), t.bg.astype(int).tolist()
    ([[0, 0, 0, 1, 1, 1, 0, 0, 0]], [[1, 0, 0, 0, 0, 0, 0, 0, 1]])
    """
    return Trimap(fg=~guidance.dilated(~shape, tolerance),
                  bg=~guidance.dilated(shape, tolerance))


def prior_coverage(prior: np.ndarray, core: np.ndarray) -> float:
    """The fraction of the target's solid ``core`` where the prior's alpha says foreground
    (1.0 for an empty core: nothing to contradict the prior).

    >>> prior_coverage(np.array([0.9, 0.2, 0.8, 0.0]), np.array([True, True, True, False]))
    0.6666666666666666
    """
    if not core.any():
        return 1.0
    return float(np.mean(prior[core] > SEEN_ALPHA))


def prior_reliability(prior: np.ndarray, coverage: float) -> np.ndarray:
    """How far to trust the prior's alpha per pixel (0..1, float32). Its foreground is
    trusted (the guidance has already taken other objects out); its background only as far
    as the prior sees the target at all: by its ``coverage`` of the core, squared, so a prior
    that sees half the core counts a quarter where it says background.

    >>> prior_reliability(np.array([1.0, 0.0, 0.0]), 0.5).tolist()
    [1.0, 0.25, 0.25]
    """
    prior = np.clip(np.asarray(prior, np.float32), 0.0, 1.0)
    return (prior + (1.0 - prior) * np.float32(coverage) ** 2).astype(np.float32)
