"""Clean-plate matting maths: register the clean plate, undo exposure drift, measure the
difference with noise and shadows in mind, and solve alpha with the background known.

The model is the capture-stage one, I = aF + (1 - a)(B + dB) + e: B is the registered clean plate,
dB a shadow or exposure change that darkens B without changing its chromaticity, e sensor noise.
All images are linear RGB float32 (H, W, 3); alpha and masks are (H, W) in 0..1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import xxhash

from mattekit.inference.closed_form import Trimap, closed_form_with_prior
from mattekit.inference.errors import InputWarning

REGISTRATION_SIZE = 640  # long side, in pixels, of the images features are matched on
SCORING_SIZE = 960  # long side the difference is scored at (edges are solved at full size)
FILL_SIZE = 320  # long side the smooth foreground colour fill is computed at
# Gaussian sigma, in pixels, of the smoothing applied before scoring: under visible noise, and
# after a warp (resampling residue only: a lighter touch, so thin gaps stay open)
NOISE_BLUR = 1.5
NOISY_SIGMA = 0.004  # per-channel noise (linear) above which a plate counts as visibly noisy
WARP_BLUR = 1.0
GAIN_SIZE = 240  # long side the exposure gains are read at (averaging quiets sensor noise)
UNCOVERED_SIZE = 320  # long side the alpha is carried into uncovered borders at (at most)
UNCOVERED_MAX_UNKNOWNS = 6000  # border pixels solved at most (coarser beyond)


@dataclass
class Registration:
    """The clean plate warped onto the plate, and where the warp has no data."""

    background: np.ndarray  # (H, W, 3)
    covered: np.ndarray  # (H, W) bool: False where the warped clean plate has no pixels
    homography: np.ndarray  # 3x3, clean plate -> plate (identity when not registered)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec.709 luminance (H, W) of a linear (H, W, 3) image."""
    return rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def luma_8bit(linear: np.ndarray) -> np.ndarray:
    """A display-like 8-bit grey copy of a linear image (linear -> ~sRGB by sqrt), what
    feature matching and DIS flow work on."""
    return (np.sqrt(np.clip(luminance(linear), 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)


def _background_fit(plate: np.ndarray, background: np.ndarray, covered: np.ndarray) -> float:
    """How well a background explains the plate: the 30th percentile of |I - B| over covered
    pixels (the subject is the larger differences, so a low percentile sees the background)."""
    diff = np.abs(plate - background).mean(axis=2)[covered]
    return float(np.percentile(diff, 30)) if diff.size else float("inf")


def _warped(clean: np.ndarray, homography: np.ndarray, size: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """`clean` warped by `homography` into an image of `size` (width, height), and the mask of
    the pixels it covers."""
    background = cv2.warpPerspective(clean, homography, size, flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REPLICATE)
    covered = cv2.warpPerspective(np.ones(clean.shape[:2], np.uint8), homography, size,
                                  flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0) > 0
    return background, covered


# the last clean plate's features: a held clean plate (one still for a whole shot, the usual
# case) is matched against every frame, and its features need computing once
_clean_plate_features: dict[bytes, tuple[np.ndarray, Optional[np.ndarray]]] = {}


def _features(grey: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """SIFT keypoint positions (N, 2) and descriptors (N, 128) of an 8-bit grey image."""
    sift = cv2.SIFT_create(nfeatures=4000)  # type: ignore[attr-defined]
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    return np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2), descriptors


def _remembered_features(grey: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`_features` of a clean plate, computed once while the clean plate stays the same."""
    key = xxhash.xxh3_128_digest(grey.tobytes()) + bytes(str(grey.shape), "ascii")
    remembered = _clean_plate_features.get(key)
    if remembered is None:  # (frames rendered on threads at once at worst compute it twice)
        remembered = _features(grey)
        _clean_plate_features.clear()
        _clean_plate_features[key] = remembered
    return remembered


def _candidate_warps(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Warps (3x3) taking grey image b (the clean plate) onto a, fitted to the same feature
    matches (SIFT, Lowe's ratio test): a homography (MAGSAC) and an affine transform (RANSAC),
    both robust to the subject, which moves differently or is absent from the clean plate. The
    affine one is the better-conditioned fit when the matches cluster in part of the frame (a
    homography's perspective terms then extrapolate pixels off elsewhere); the caller keeps
    whichever explains the plate better."""
    points_a, des_a = _features(a)
    points_b, des_b = _remembered_features(b)
    if des_a is None or des_b is None or len(points_a) < 8 or len(points_b) < 8:
        return []
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_b, des_a, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < 8:
        return []
    src = points_b[[m.queryIdx for m in good]]
    dst = points_a[[m.trainIdx for m in good]]
    warps = []
    homography, inliers = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, 2.0)
    if homography is not None and int(inliers.sum()) >= 8:
        warps.append(homography)
    affine, inliers = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC,
                                           ransacReprojThreshold=1.0)
    if affine is not None and int(inliers.sum()) >= 8:
        warps.append(np.vstack([affine, [0.0, 0.0, 1.0]]))
    return warps


def _already_aligned(plate: np.ndarray, clean: np.ndarray, margin: float = 4.0) -> bool:
    """Whether the clean plate already lies on the plate to well under a pixel, so feature
    matching can be skipped: over the clean plate's textured half, the plate fits the clean
    plate as it is `margin` times better than it fits any one-pixel shift of it (a shift
    shows up on texture; a subject differs either way, a moved camera fits neither). The fit
    is a low (10th) percentile of the difference, so a subject covering most of the texture
    leaves it to the background still seen."""
    grey_plate, grey_clean = (cv2.GaussianBlur(luminance(x), (0, 0), 1.5)
                              for x in (plate, clean))
    gradient = (np.abs(np.diff(grey_clean, axis=0, append=grey_clean[-1:]))
                + np.abs(np.diff(grey_clean, axis=1, append=grey_clean[:, -1:])))
    textured = gradient > np.percentile(gradient, 50)
    textured[:1] = textured[-1:] = False
    textured[:, :1] = textured[:, -1:] = False
    if np.count_nonzero(textured) < 100:
        return False

    def fit(shift: tuple[int, int]) -> float:
        moved = np.roll(grey_clean, shift, axis=(0, 1))
        return float(np.percentile(np.abs(grey_plate - moved)[textured], 10))

    unshifted = fit((0, 0))
    return min(fit(s) for s in ((1, 0), (-1, 0), (0, 1), (0, -1))) > margin * unshifted + 1e-6


def _gain_view(image: np.ndarray, smoothed: bool = True) -> np.ndarray:
    """`image` at the size exposure gains are read at, smoothed when sensor noise must be
    averaged down for the ratios' histogram to find its peak."""
    small = downsized(image, GAIN_SIZE)
    return cv2.GaussianBlur(small, (0, 0), 2.0) if smoothed else small


def register_clean_plate(plate: np.ndarray, clean: np.ndarray, max_shift: float = 0.25
                         ) -> Registration:
    """Warp `clean` onto `plate` with a homography or affine transform from feature matches,
    whichever explains the plate best, kept only when it explains the plate better than the
    clean plate as it is.

    `max_shift` bounds the allowed misregistration as a fraction of the frame diagonal: a
    warp that moves the corners further is refused. Pixels the warped plate does not cover
    are reported, not guessed.
    """
    height, width = plate.shape[:2]
    unregistered = Registration(clean, np.ones((height, width), bool), np.eye(3))
    small_plate, small_clean = (downsized(x, REGISTRATION_SIZE) for x in (plate, clean))
    scale = min(1.0, REGISTRATION_SIZE / max(height, width))  # downsized()'s factor
    to_small = np.diag([scale, scale, 1.0])
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)[None]
    small_size = (small_plate.shape[1], small_plate.shape[0])
    if _already_aligned(small_plate, small_clean):
        return unregistered
    # judged at the small size (cheap), each with its own exposure gains undone (a clean plate
    # shot brighter fits no warp, and the warp that happens to fit the mismatch best is noise)
    # and after the same light smoothing of both: interpolation alone smooths the warped
    # plate's sensor noise and would make any warp look like a better fit; the full-size warp
    # only for the one kept
    gain_plate = _gain_view(small_plate)
    fit_plate = cv2.GaussianBlur(small_plate, (0, 0), 1.5)
    fit_clean = cv2.GaussianBlur(
        small_clean * exposure_gains(gain_plate, _gain_view(small_clean)), (0, 0), 1.5)
    best_fit = _background_fit(fit_plate, fit_clean, np.ones(small_plate.shape[:2], bool))
    best: Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = None
    for small_warp in _candidate_warps(luma_8bit(small_plate), luma_8bit(small_clean)):
        warp = np.linalg.inv(to_small) @ small_warp @ to_small
        displacement = np.linalg.norm(cv2.perspectiveTransform(corners, warp)[0] - corners[0],
                                      axis=1)
        if displacement.max() > max_shift * np.hypot(width, height) or displacement.max() < 0.25:
            continue
        small_background, small_covered = _warped(small_clean, small_warp, small_size)
        inside = cv2.erode(small_covered.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        fit = _background_fit(fit_plate, cv2.GaussianBlur(
            small_background * exposure_gains(gain_plate, _gain_view(small_background)),
            (0, 0), 1.5), inside)
        if fit < best_fit:
            best_fit, best = fit, (warp, small_warp, small_background, small_covered)
    if best is None:
        return unregistered
    warp, small_warp, small_background, small_covered = best
    if scale == 1.0:
        return Registration(small_background, small_covered, warp)
    background, covered = _warped(clean, warp, (width, height))
    return Registration(background, covered, warp)


def _identical(plate: np.ndarray, clean: np.ndarray) -> bool:
    """Whether the clean plate is the plate itself (to 1e-6): a sparse look first, which
    settles any real clean plate at a fraction of the cost of the full comparison."""
    if float(np.max(np.abs(plate[::7, ::7] - clean[::7, ::7]))) >= 1e-6:
        return False
    return float(np.max(np.abs(plate - clean))) < 1e-6


def noise_sigma(plate: np.ndarray, background: np.ndarray) -> float:
    """Per-channel sensor noise of the plate-minus-background difference (Immerkaer's
    Laplacian-difference estimator), read where the background is flattest (its lowest
    gradient quarter) and there at a low percentile: a warp's or resampling's residue lives
    on the background's texture and the subject brings its own texture, neither of which is
    noise."""
    diff = (plate - background).mean(axis=2) * np.sqrt(3.0)  # one channel's noise scale
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    # every other row and column: the same statistics, 4x cheaper
    response = np.abs(cv2.filter2D(diff.astype(np.float32), -1, kernel))[::2, ::2]
    grey = luminance(background)
    gradient = (np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0))
                + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1)))[::2, ::2]
    flat = gradient <= np.percentile(gradient, 25)
    # for Gaussian noise the response is N(0, 36 sigma^2); its 25th percentile of |x| is
    # 0.3186 * 6 sigma
    return float(np.percentile(response[flat], 25) / (0.3186 * 6.0) + 1e-5)


def blurred_noise_factor(blur_sigma: float) -> float:
    """What a 2-D Gaussian blur of `blur_sigma` pixels leaves of white noise's standard
    deviation: 1 / (2 sqrt(pi) sigma). Measured after blurring, the noise is correlated and a
    Laplacian estimator would under-read it."""
    return float(min(1.0, 1.0 / (2.0 * np.sqrt(np.pi) * blur_sigma)))


def exposure_gains(plate: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-channel gains g with plate ~ g * background: the mode of the log ratio plate/clean.

    Background pixels share one ratio (the exposure or LED-wall drift); the subject's ratios
    are spread out, and a cast shadow forms a smaller second cluster, so the histogram's
    highest peak is the background's gain however much of the frame the subject fills.
    """
    gains = np.ones(3, np.float32)
    for c in range(3):
        p, b = plate[..., c], background[..., c]
        valid = (b > 0.02) & (p > 0.0)
        if np.count_nonzero(valid) < 100:
            continue
        log_ratio = np.log(p[valid] / b[valid])
        hist, edges = np.histogram(log_ratio, bins=240, range=(-1.5, 1.5))
        hist = np.convolve(hist, np.ones(5) / 5.0, mode="same")
        peak = 0.5 * (edges[np.argmax(hist)] + edges[np.argmax(hist) + 1])
        near = log_ratio[np.abs(log_ratio - peak) < 0.04]
        gains[c] = float(np.exp(np.median(near))) if near.size else float(np.exp(peak))
    return np.clip(gains, 0.25, 4.0).astype(np.float32)


def difference_score(plate: np.ndarray, background: np.ndarray, sigma: float) -> np.ndarray:
    """How far each pixel is from being background, in units of the expected noise (sensor
    noise plus 1 % of the background's level, for resampling and compression residue)."""
    return (_length(plate - background) / _noise_allowance(background, sigma)).astype(np.float32)


def _noise_allowance(background: np.ndarray, sigma: float) -> np.ndarray:
    """The difference expected of a background pixel: sensor noise plus 1 % of its level."""
    return (sigma * np.sqrt(3.0) + 0.01 * _length(background) + 1e-4).astype(np.float32)


def shadow_shading(plate: np.ndarray, background: np.ndarray, sigma: float,
                   shadow_tolerance: float = 0.6, radius: float = 3.0) -> np.ndarray:
    """A smooth darkening field S (H, W) with plate ~ S * background where the background is
    only shadowed: cast shadows and exposure dips keep the background's chromaticity and
    texture and vary slowly, so S is the local average of the brightness ratio over pixels
    whose colour direction is unchanged, kept within [1 - shadow_tolerance, 1]. A subject of
    merely similar hue does not fit S * B: its texture is not the background's."""
    b_energy = np.einsum("hwc,hwc->hw", background, background)
    ratio = np.einsum("hwc,hwc->hw", plate, background) / (b_energy + 1e-8)
    chroma = _length(plate - ratio[..., None] * background)
    unchanged_hue = chroma < 1.0 * sigma * np.sqrt(3.0) + 0.035 * ratio * np.sqrt(b_energy)
    weight = (unchanged_hue & (ratio >= 1.0 - shadow_tolerance) & (ratio <= 1.02)
              ).astype(np.float32)
    total = cv2.GaussianBlur(weight, (0, 0), radius)
    shading = cv2.GaussianBlur(ratio * weight, (0, 0), radius) / np.maximum(total, 1e-6)
    shading = np.where(total > 0.2, shading, 1.0)
    return np.clip(shading, 1.0 - shadow_tolerance, 1.0).astype(np.float32)


def smooth_colour(image: np.ndarray, weight: np.ndarray, radius: int) -> np.ndarray:
    """Normalised convolution: the colour of nearby weighted pixels, defined everywhere."""
    size = 2 * radius + 1
    numerator = cv2.blur(image * weight[..., None], (size, size))
    denominator = cv2.blur(weight, (size, size))[..., None]
    return numerator / np.maximum(denominator, 1e-6)


def propagated_colour(image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Colour of the nearest weighted pixels, coarse-to-fine, so far pixels get a value too."""
    result = image.copy()
    filled = np.zeros(weight.shape, bool)
    for radius in (3, 9, 27, 81):
        colour = smooth_colour(image, weight, radius)
        support = cv2.blur(weight, (2 * radius + 1, 2 * radius + 1)) > 0.01
        take = support & ~filled
        result[take] = colour[take]
        filled |= take
    return result


def solve_alpha_known_background(plate: np.ndarray, background: np.ndarray,
                                 foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel least squares of I = aF + (1 - a)B for a, with B and F known (colours on
    the last axis: whole images or gathered pixels).

    Returns alpha and its reliability (|F - B| relative to the colours: small when the
    foreground looks like the background there).
    """
    f_minus_b = foreground - background
    denom = np.einsum("...c,...c->...", f_minus_b, f_minus_b)
    alpha = np.einsum("...c,...c->...", plate - background, f_minus_b) / np.maximum(denom, 1e-8)
    reliability = np.sqrt(denom) / (_length(background) + 0.05)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32), reliability.astype(np.float32)


def _length(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean length of an (H, W, 3) array (einsum: ~4x numpy.linalg.norm)."""
    return np.sqrt(np.einsum("...c,...c->...", rgb, rgb))


def downsized(image: np.ndarray, long_side: int) -> np.ndarray:
    """`image` area-averaged so its long side is at most `long_side` (unchanged if smaller)."""
    scale = long_side / max(image.shape[:2])
    if scale >= 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def resized_to(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`image` bilinearly resampled to (height, width) = shape[:2] (unchanged if equal)."""
    if image.shape[:2] == tuple(shape[:2]):
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class CleanPlateMatte:
    alpha: np.ndarray
    foreground: np.ndarray  # un-premultiplied, linear
    confidence: np.ndarray
    gains: np.ndarray
    sigma: float
    registered: bool


def subject_score(observed: np.ndarray, expected: np.ndarray, sigma: float, noisy: bool,
                  registered: bool, shadow_tolerance: float) -> np.ndarray:
    """Per-pixel evidence that the plate (`observed`) is not the (aligned, exposure-matched)
    background (`expected`), in units of the noise `sigma`, at their (scoring) size. Cast
    shadows are divided out first; a noisy or registered plate is lightly smoothed and a
    one-pixel search absorbs warp residue; under visible noise block and region pooling find
    what single pixels cannot."""
    fine_observed, fine_expected, fine_sigma = observed, expected, sigma
    if noisy or registered:
        # visible sensor noise or warp residue: score a slightly smoothed difference (the
        # soft edge is solved again at full resolution below), with the noise it leaves
        blur = NOISE_BLUR if noisy else WARP_BLUR
        fine_observed = cv2.GaussianBlur(observed, (0, 0), blur)
        fine_expected = cv2.GaussianBlur(expected, (0, 0), blur)
        fine_sigma = sigma * blurred_noise_factor(blur)
    if shadow_tolerance > 0:
        shading = shadow_shading(fine_observed, fine_expected, fine_sigma, shadow_tolerance)
        fine_expected = fine_expected * shading[..., None]
        expected = expected * shading[..., None]
    score = _min_over_shifts(fine_observed, fine_expected, fine_sigma)
    if noisy:
        # under visible noise a subject close to the background's colour is lost pixel by
        # pixel; pooled over blocks and over whole regions it still shows
        score = np.maximum(score, _coarse_score(observed, expected, sigma))
        score = np.where(_subject_like_regions(score), np.maximum(score, 5.0), score)
        score = np.where(_texture_changed(observed, expected, sigma), np.maximum(score, 5.0),
                         score)
    return score


def clean_plate_matte(plate: np.ndarray, clean: np.ndarray, prior: Optional[np.ndarray] = None,
                      mask: Optional[np.ndarray] = None, register: bool = True,
                      max_shift: float = 0.25, shadow_tolerance: float = 0.6,
                      prior_strength: float = 0.5, edge_softness: float = 1.0,
                      noise_level: float = 0.0) -> CleanPlateMatte:
    """Alpha and foreground from a plate and its clean plate (both linear RGB, same size).

    prior: an alpha from a semantic network (e.g. RVM), which settles pixels where the plate
    matches the clean plate but belong to the subject; mask: a rough roto naming the target;
    noise_level: the plate's sensor noise (standard deviation per channel, linear), the clean
    plate taken as noisy as the plate (same camera); 0 = measured from the two plates.
    """
    if _identical(plate, clean):
        warnings.warn("the clean plate is identical to the plate: it carries no information; "
                      "using the prior alone", InputWarning, stacklevel=2)
        alpha = prior if prior is not None else np.zeros(plate.shape[:2], np.float32)
        return CleanPlateMatte(alpha.astype(np.float32), plate.copy(),
                               np.zeros_like(alpha, np.float32), np.ones(3, np.float32), 0.0,
                               False)
    reg = (register_clean_plate(plate, clean, max_shift) if register
           else Registration(clean, np.ones(plate.shape[:2], bool), np.eye(3)))
    background = reg.background
    observed, expected = downsized(plate, SCORING_SIZE), downsized(background, SCORING_SIZE)
    # the noise of the difference: both plates' (the same camera's) when it is given
    given_sigma = noise_level * np.sqrt(2.0) if noise_level > 0 else None
    sigma = given_sigma or noise_sigma(observed, expected)
    noisy = sigma > NOISY_SIGMA
    gains = exposure_gains(_gain_view(observed, smoothed=noisy),
                           _gain_view(expected, smoothed=noisy))
    if np.max(np.abs(gains - 1.0)) > 0.005:
        background, expected = background * gains, expected * gains
        sigma = given_sigma or noise_sigma(observed, expected)
    registered = not np.allclose(reg.homography, np.eye(3))
    score = resized_to(subject_score(observed, expected, sigma, noisy, registered,
                                     shadow_tolerance), plate.shape[:2])

    sure_bg = (score < 2.5) & reg.covered
    if mask is not None:
        outside = cv2.dilate((mask > 0.05).astype(np.uint8), np.ones((25, 25), np.uint8)) == 0
        sure_bg |= outside
    evidence = smoothstep(score, 2.5, 5.0)
    if prior is not None:
        # where F looks like B the difference cannot decide; the prior settles it, but only
        # next to foreground the difference already found: it never invents a subject
        near = cv2.dilate((evidence > 0.5).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        evidence = np.where(near, np.maximum(evidence, prior_strength * prior), evidence)
    evidence = np.where(sure_bg, 0.0, evidence)
    # solid foreground: certain evidence away from the edge; its colours are the F that the
    # soft pixels of the edge band mix with the known background
    band = max(1, int(round(2 * edge_softness)))
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    solid = cv2.erode((evidence > 0.999).astype(np.uint8), kernel) > 0
    edge = ~solid & (cv2.dilate((evidence > 0.001).astype(np.uint8), kernel) > 0)
    foreground_guess = resized_to(propagated_colour(downsized(plate, FILL_SIZE),
                                                    downsized(solid.astype(np.float32),
                                                              FILL_SIZE)), plate.shape[:2])
    # the plate itself on the solid subject (cv2's masked copy: numpy's is ~15x slower)
    cv2.copyTo(plate, solid.view(np.uint8), foreground_guess)
    # the solve runs on the unknown pixels only (neither solid subject nor sure background)
    unknown = ~(solid | sure_bg)
    rows, cols = np.nonzero(unknown)
    solve_plate, solve_background = plate, background
    if noisy:
        # the per-pixel solve would carry the sensor noise straight into alpha: solve on
        # lightly smoothed plate and background (the edge is still located at full size)
        solve_plate, solve_background = (cv2.GaussianBlur(x, (0, 0), 1.0)
                                         for x in (plate, background))
    solved, reliability = solve_alpha_known_background(
        solve_plate[rows, cols], solve_background[rows, cols], foreground_guess[rows, cols])
    trust = smoothstep(reliability, 0.05, 0.3)
    on_edge = edge[rows, cols]
    alpha = evidence.astype(np.float32)
    alpha[rows[on_edge], cols[on_edge]] = (trust * solved + (1.0 - trust)
                                           * evidence[rows, cols])[on_edge]
    alpha[sure_bg] = 0.0
    if not reg.covered.all():
        # no clean-plate pixels there: the difference cannot speak, so the matte the covered
        # part settled is carried in along the plate's colours (zero confidence in the layer)
        alpha = matte_uncovered(plate, alpha, reg.covered)

    # F = (I - (1 - a)B) / a where alpha is large enough; the smooth fill elsewhere
    foreground = foreground_guess
    mixed_rows, mixed_cols = np.nonzero((alpha > 0.25) & ~solid)
    mixed_alpha = alpha[mixed_rows, mixed_cols][:, None]
    foreground[mixed_rows, mixed_cols] = (
        plate[mixed_rows, mixed_cols]
        - (1.0 - mixed_alpha) * background[mixed_rows, mixed_cols]) / mixed_alpha
    confidence = np.ones(alpha.shape, np.float32)
    confidence[rows, cols] = trust
    confidence[~reg.covered] = 0.0
    return CleanPlateMatte(alpha, foreground, confidence, gains, sigma,
                           registered)


def matte_uncovered(plate: np.ndarray, alpha: np.ndarray, covered: np.ndarray,
                    size: int = UNCOVERED_SIZE) -> np.ndarray:
    """Alpha where the registered clean plate has no pixels (a border the misregistration
    uncovered), by closed-form matting (Levin et al. 2008, pymatting) with the covered part's
    settled answer as the trimap: certain subject and certain background there are the known
    values, the border and the soft band the unknowns, so a subject that reaches the frame
    edge continues into the border the way its colours do. Solved at <= `size` px.

    >>> plate = np.zeros((40, 60, 3), np.float32); plate[:, :30] = 1.0
    >>> alpha = (plate[..., 0] > 0.5).astype(np.float32); covered = np.ones((40, 60), bool)
    >>> covered[:, :5] = covered[:, -5:] = False
    >>> bool(matte_uncovered(plate, alpha * covered, covered)[:, :5].min() > 0.9)
    True
    """
    # the direct solve grows faster than its unknowns: a large border is solved coarser
    uncovered_pixels = (1.0 - covered.mean()) * (size / max(plate.shape[:2])) ** 2 * covered.size
    if uncovered_pixels > UNCOVERED_MAX_UNKNOWNS:
        size = max(64, int(size * np.sqrt(UNCOVERED_MAX_UNKNOWNS / uncovered_pixels)))
    small_plate = downsized(plate, size)
    height, width = small_plate.shape[:2]
    small_alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA)
    small_covered = cv2.resize(covered.astype(np.float32), (width, height),
                               interpolation=cv2.INTER_AREA) > 0.999
    # unknown: the border and, in a ring of covered pixels next to it, the soft band; known
    # elsewhere (further pixels do not reach the border through the matting affinities)
    ring = cv2.dilate((~small_covered).astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
    soft = (small_alpha > 0.02) & (small_alpha < 0.98)
    trimap = (small_alpha > 0.5).astype(np.float64)
    trimap[~small_covered | (ring & soft)] = 0.5
    if not (trimap == 0.0).any() and not (trimap == 1.0).any():  # nothing known to carry
        return np.where(covered, alpha, 0.0).astype(np.float32)
    # affinities on a display-like encoding (linear -> ~sRGB by sqrt), as matting expects
    guide = np.sqrt(np.clip(small_plate, 0.0, 1.0)).astype(np.float64)
    # a weak pull towards background keeps a region no known pixel reaches well-posed
    solved = closed_form_with_prior(guide, Trimap(fg=trimap == 1.0, bg=trimap == 0.0),
                                    prior=np.zeros(trimap.shape, np.float32),
                                    prior_weight=np.full(trimap.shape, 1e-4, np.float32))
    carried = resized_to(solved.astype(np.float32), plate.shape[:2])
    return np.where(covered, alpha, np.clip(carried, 0.0, 1.0)).astype(np.float32)


def _subject_like_regions(score: np.ndarray, threshold: float = 2.5, excess: float = 2.0
                          ) -> np.ndarray:
    """Enclosed regions the per-pixel test calls background whose differences, taken
    together, are not: a subject whose colour is close to the background's leaves holes whose
    pixels each sit within the noise, yet whose mean squared score is well above that of the
    open background (the largest such region). Real background seen through a gap scores like
    the rest of the background and stays background. Returns the mask of regions to call
    subject."""
    low = (score < threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(low, connectivity=8)
    if count <= 2:
        return np.zeros(score.shape, bool)
    squared = np.where(low > 0, score * score, 0.0).astype(np.float64).ravel()
    # judged on each region's interior: its rim holds the subject's own soft edge
    interior = (cv2.distanceTransform(low, cv2.DIST_L2, 3) > 2).ravel()
    flat = labels.ravel()
    sums = np.bincount(flat[interior], squared[interior], minlength=count)
    inner = np.bincount(flat[interior], minlength=count)
    sizes = np.bincount(flat, minlength=count)
    sizes[0] = 0  # label 0: the pixels that already differ
    largest = int(np.argmax(sizes))
    if inner[largest] < 500:
        return np.zeros(score.shape, bool)
    means = sums / np.maximum(inner, 1)
    reference = max(float(means[largest]), 0.1)
    subject = (means > excess * reference) & (inner >= 4) & (sizes < 0.25 * score.size)
    subject[0] = subject[largest] = False
    return subject[labels]


def _texture_changed(plate: np.ndarray, background: np.ndarray, sigma: float, block: int = 8,
                     threshold: float = 5.0) -> np.ndarray:
    """Where a subject replaced the background's texture though its colour stays close: the
    mean squared difference score over a `block` x `block` window is a chi-square statistic
    (3 block^2 samples); over background it sits at its open-background level (the 25th
    percentile over the frame), over a subject it rises however the differences' signs fall,
    which block means and single pixels cannot see under heavy noise. Returns the mask of
    windows more than `threshold` standard deviations above that level, eroded by a block so
    that it does not spread past the subject's outline."""
    squared = difference_score(plate, background, sigma) ** 2
    energy = cv2.blur(squared, (block, block))
    # (at least a tenth of what pure noise scores: plates cleaner than `sigma` claims have no
    # open-background level to stand out from)
    level = max(float(np.percentile(energy, 25)), 0.1)
    spread = level * np.sqrt(2.0 / (3 * block * block))
    changed = (energy > level + threshold * spread).astype(np.uint8)
    return cv2.erode(changed, np.ones((block + 1, block + 1), np.uint8)) > 0


def _coarse_score(plate: np.ndarray, background: np.ndarray, sigma: float,
                  factor: int = 4) -> np.ndarray:
    """The difference score of `factor` x `factor` block averages (noise / factor), brought
    back to full size and eroded by one block, so that it finds a subject whose colour is
    close to the background under heavy noise without spreading it past its own outline."""
    small = [cv2.resize(x, None, fx=1.0 / factor, fy=1.0 / factor,
                        interpolation=cv2.INTER_AREA) for x in (plate, background)]
    score = difference_score(small[0], small[1], sigma / factor)
    score = np.where(_subject_like_regions(score), np.maximum(score, 5.0), score)
    score = resized_to(score, plate.shape[:2])
    return cv2.erode(score, np.ones((2 * factor + 1, 2 * factor + 1), np.uint8))


def _min_over_shifts(plate: np.ndarray, background: np.ndarray, sigma: float,
                     radius: int = 1) -> np.ndarray:
    """The difference score against the best-matching background pixel within `radius`:
    absorbs the sub-pixel to one-pixel residual a global warp leaves (at the frame's edge,
    against the background pixels that exist)."""
    # difference_score against each shifted background, with the background's length (the
    # noise allowance) looked up at the same shifted pixel; shifts are views, not copies
    allowance = _noise_allowance(background, sigma)
    best = (_length(plate - background) / allowance).astype(np.float32)
    height, width = best.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            inside = (slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0)))
            moved = (slice(max(-dy, 0), height + min(-dy, 0)),
                     slice(max(-dx, 0), width + min(-dx, 0)))
            np.minimum(best[inside], _length(plate[inside] - background[moved])
                       / allowance[moved], out=best[inside])
    return best
