"""Closed-form matting (Levin et al. 2008) of a trimap's unknown pixels, with a soft prior.

One solver for every engine that fills a band from its certain neighbours along the image's
colour lines: the video-matte target fill (a keyed prop the prior does not see) and the
background-matte border a misregistered clean plate leaves uncovered. pymatting supplies the
matting Laplacian; the linear system is solved directly when small (exact, and immune to the
poor conditioning of a weakly-constrained band) and by preconditioned conjugate gradients
otherwise.

Images are (H, W, 3) 0..1 (a display-like encoding: the colour-line model expects it), masks bool.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from pymatting import cf_laplacian, cg, ichol
from scipy.sparse.linalg import spsolve

#: Regularisation of the colour-line model: larger = smoother alpha, more robust to noise.
EPSILON = 1e-5
#: Relative residual at which the conjugate-gradient solve stops.
TOLERANCE = 1e-5
#: Unknown pixels up to which the system is solved directly (its cost grows faster beyond).
DIRECT_SOLVE_MAX = 12000


@dataclass
class Trimap:
    """Where the subject surely is (``fg``), surely is not (``bg``); the rest is to solve."""

    fg: np.ndarray
    bg: np.ndarray

    @property
    def unknown(self) -> np.ndarray:
        return ~(self.fg | self.bg)


def closed_form_with_prior(image: np.ndarray, trimap: Trimap, prior: np.ndarray,
                           prior_weight: np.ndarray) -> np.ndarray:
    """Alpha (H, W) float32 0..1: 1 on the trimap's foreground, 0 on its background, and in
    between the minimiser of  a'La + sum(prior_weight * (a - prior)^2)  (L: the matting
    Laplacian of ``image``). A small positive weight everywhere keeps a region no known pixel
    reaches well-posed: it takes the prior's value.

    Only the unknown pixels are solved, within the bounding box of what is not background.

    >>> image = np.zeros((20, 30, 3)); image[:, :15] = 1.0
    >>> fg = np.zeros((20, 30), bool); fg[:, :2] = True
    >>> bg = np.zeros((20, 30), bool); bg[:, -2:] = True
    >>> pull = np.full((20, 30), 1e-4)  # towards a prior of 0 (background), weakly
    >>> a = closed_form_with_prior(image, Trimap(fg, bg), np.zeros((20, 30)), pull)
    >>> bool(a[:, :14].min() > 0.95 and a[:, 16:].max() < 0.05)
    True
    """
    height, width = trimap.fg.shape
    alpha = trimap.fg.astype(np.float32)
    unknown_pixels = np.nonzero(trimap.unknown)
    if unknown_pixels[0].size == 0:
        return alpha
    ys, xs = unknown_pixels
    pad = 2  # the Laplacian's windows reach 1 pixel; a known ring closes the box
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, height)
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, width)
    box = (slice(y0, y1), slice(x0, x1))
    known = ~trimap.unknown[box]
    laplacian = cf_laplacian(np.ascontiguousarray(image[box], dtype=np.float64),
                             epsilon=EPSILON, is_known=known)
    unknown, known = ~known.ravel(), known.ravel()
    rows = laplacian[unknown]
    weight = np.asarray(prior_weight[box], np.float64).ravel()[unknown]
    system = (rows[:, unknown] + scipy.sparse.diags(weight)).tocsr()
    given = alpha[box].ravel()[known].astype(np.float64)
    rhs = weight * np.asarray(prior[box], np.float64).ravel()[unknown] - rows[:, known] @ given
    if int(unknown.sum()) <= DIRECT_SOLVE_MAX:
        solved = spsolve(system.tocsc(), rhs)
    else:
        solved = cg(system, rhs, M=ichol(system.tocsc()), rtol=TOLERANCE)
    inside = alpha[box].ravel()
    inside[unknown] = np.clip(solved, 0.0, 1.0)
    alpha[box] = inside.reshape(known.size // (x1 - x0), x1 - x0)
    return alpha
