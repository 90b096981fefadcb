"""Two-view matting maths: a second frame with camera parallax sees the same foreground over a
different background, which pins down alpha where one frame cannot.

The stages follow Parallax Portrait Matting: a trimap; dense optical flow between the views;
inside the unknown band the flow is replaced by that of the nearest certain-foreground pixel
(foreground motion) and of the nearest certain-background pixel (background motion); the
reference is warped both ways, background-aligned (it shows the background the subject hides
here, dis-occluded) and foreground-aligned (the subject fixed, the background shifted). The
network of the paper is replaced here by an exact per-pixel solve of

    I1 = aF + (1 - a) B1          (the plate)
    I0 = aF + (1 - a) B0          (the foreground-aligned reference)

with B1, B0 taken from dis-occluded samples: a = 1 - <I1 - I0, B1 - B0> / |B1 - B0|^2. Where
only one background is seen it is a known-background solve; where neither, where there is no
parallax or where the flow is inconsistent, the result falls back smoothly to the single-frame
estimate (the same frame twice gives exactly the single-frame result).

Without a rough mask, the parallax also says where the subject is: a homography fitted to the
flow is the background's motion, and what moves faster than it, in sizeable regions, is a
subject nearer the camera (``motion_subject``).

Flow is OpenCV's DIS (Kroeger et al. 2016): dense, sub-pixel, robust to the brightness
texture of real plates and fast on a CPU (Farneback is slower and smoother across the
subject's outline, where the two motions must stay apart). All images are linear RGB float32
(H, W, 3); alpha, trimap and weights (H, W) in 0..1; flows (H, W, 2) in pixels with the
backward convention of ``motion.py``: ``reference(x + flow[x]) ~ plate(x)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import cv2
import numpy as np

from mattekit.inference.cleanplate import (
    downsized,
    luma_8bit,
    propagated_colour,
    resized_to,
    smoothstep,
)
from mattekit.inference.motion import backward_flow, resized_flow, warp_backward
from mattekit.inference.tiler import tiled_or_whole

FILL_SIZE = 480  # long side the smooth foreground / background colour fill is computed at
MIN_FLOW_SIDE = 32  # frames smaller than this have too little texture for DIS
UNKNOWN = 0.5  # trimap value of the unknown band
CONSISTENCY_PIXELS = 1.0  # forward-backward flow error (pixels) still counted as consistent
PARALLAX_PIXELS = (0.5, 1.5)  # relative motion below: no parallax; above: full weight
MOTION_PIXELS = 1.5  # motion unlike the background's (plate pixels) that marks the subject
MOTION_MIN_AREA = 0.002  # smallest moving region kept, as a fraction of the frame
MOTION_MAX_AREA = 0.85  # a "subject" larger than this is a failed background fit
SOLVE_ITERATIONS = 4  # alternations of "which samples are clean" and "alpha from them"
KNOWN_RELIABILITY = (0.0, 0.08)  # |F - B| / |B| where a known-background solve starts / is sure
TWO_VIEW_RELIABILITY = (0.1, 0.3)  # |B1 - B0| / |B| (less misfit) same for the two-view solve


@dataclass
class ParallaxFlows:
    """Flow of the plate's pixels into the reference, split by what moves them."""

    foreground: np.ndarray  # (H, W, 2): the subject's motion, the band filled from certain fg
    background: np.ndarray  # (H, W, 2): the background's motion, filled from certain bg
    foreground_trust: np.ndarray  # (H, W): forward-backward consistency of the fg motion
    background_trust: np.ndarray  # (H, W): same for the background motion


@dataclass
class SingleFrame:
    """The one-frame estimate the two-view solve falls back to, and the colours it samples."""

    alpha: np.ndarray
    foreground: np.ndarray  # un-premultiplied, linear
    background: np.ndarray  # the nearest certain-background colours, everywhere
    foreground_colour: np.ndarray  # the nearest certain-foreground colours, everywhere


@dataclass
class ParallaxMatte:
    """The two-view result."""

    alpha: np.ndarray
    foreground: np.ndarray  # un-premultiplied, linear
    confidence: np.ndarray  # how much of alpha the second view decided (0 = single frame)


def trimap_from_alpha(alpha: np.ndarray, band: int) -> np.ndarray:
    """Trimap (0 bg, 0.5 unknown, 1 fg) from a rough alpha or roto: binarised at 0.5, the
    certain regions pulled back by ``band`` pixels either side; a soft (0.05..0.95) pixel of
    the input is unknown too."""
    solid = (alpha > 0.5).astype(np.uint8)
    size = 2 * max(1, int(band)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    foreground = cv2.erode(solid, kernel, borderType=cv2.BORDER_REPLICATE) > 0
    background = cv2.dilate(solid, kernel, borderType=cv2.BORDER_REPLICATE) == 0
    soft = (alpha > 0.05) & (alpha < 0.95)
    trimap = np.full(alpha.shape, UNKNOWN, np.float32)
    trimap[foreground & ~soft] = 1.0
    trimap[background & ~soft] = 0.0
    return trimap


def nearest_fill(values: np.ndarray, source: np.ndarray) -> Optional[np.ndarray]:
    """Every pixel takes the value of its nearest ``source`` pixel (bool (H, W)); values
    (H, W, C). None when there is no source pixel."""
    if not source.any():
        return None
    _, labels = cv2.distanceTransformWithLabels(
        (~source).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # with DIST_LABEL_PIXEL the zero pixels are labelled 1.. in raster order
    origin = np.flatnonzero(source.ravel())[labels.ravel() - 1]
    channels = values.shape[2]
    return values.reshape(-1, channels)[origin].reshape(values.shape)


def flow_error(flow: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """Forward-backward inconsistency |flow(x) + reverse(x + flow(x))| in pixels."""
    back = warp_backward(reverse, flow)
    return np.sqrt(np.sum((flow + back) ** 2, axis=2)).astype(np.float32)


@dataclass
class DenseFlow:
    """Optical flow plate -> reference at the flow size, and its forward-backward error."""

    flow: np.ndarray  # (h, w, 2), pixels of the flow size
    error: np.ndarray  # (h, w)


def dense_flow(plate: np.ndarray, reference: np.ndarray, flow_size: int = 1024
               ) -> Optional[DenseFlow]:
    """DIS flow plate -> reference (and back, for its consistency) at <= ``flow_size`` px;
    None when the frames are too small for flow."""
    small_plate, small_reference = downsized(plate, flow_size), downsized(reference, flow_size)
    if min(small_plate.shape[:2]) < MIN_FLOW_SIDE:
        return None
    grey_plate, grey_reference = luma_8bit(small_plate), luma_8bit(small_reference)
    flow = backward_flow(grey_reference, grey_plate)
    reverse = backward_flow(grey_plate, grey_reference)
    return DenseFlow(flow, flow_error(flow, reverse))


def motion_subject(motion: DenseFlow, shape: tuple[int, int]) -> np.ndarray:
    """Where the plate moves unlike its background (the parallax of a subject nearer the
    camera), as a 0/1 map of ``shape``: a homography fitted to the consistent flow (RANSAC)
    splits the frame into two motions, the faster one is the subject (camera translation moves
    nearer things further), kept where it forms sizeable regions. Zeros when no such region
    stands out."""
    flow, error = motion.flow, motion.error
    height, width = flow.shape[:2]
    empty = np.zeros(shape, np.float32)
    ys, xs = np.mgrid[0:height:4, 0:width:4]
    keep = error[ys, xs] < 2.0 * CONSISTENCY_PIXELS
    if np.count_nonzero(keep) < 16:
        return empty
    points = np.stack([xs[keep], ys[keep]], axis=1).astype(np.float32)
    moved = points + flow[ys, xs][keep]
    homography, _ = cv2.findHomography(points, moved, cv2.RANSAC, 1.0)
    if homography is None:
        return empty
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32),
                                np.arange(height, dtype=np.float32)), axis=2)
    expected = cv2.perspectiveTransform(grid.reshape(1, -1, 2), homography).reshape(grid.shape)
    residual = np.sqrt(np.sum((grid + flow - expected) ** 2, axis=2))
    scale = max(shape) / max(height, width)
    consistent = error < 2.0 * CONSISTENCY_PIXELS
    moving = residual * scale > MOTION_PIXELS
    fitted = ~moving
    if (moving & consistent).any() and (fitted & consistent).any():
        # the fit follows whichever motion covers more of the frame: a subject filling most of
        # it. A camera that translates moves nearer things further, so the faster one is the
        # subject
        speed = np.sqrt(np.sum(flow ** 2, axis=2))
        if np.median(speed[fitted & consistent]) > np.median(speed[moving & consistent]):
            moving = fitted
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    moving = cv2.morphologyEx(moving.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, kernel, iterations=2)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
    large = np.zeros(count, bool)
    large[1:] = stats[1:, cv2.CC_STAT_AREA] >= MOTION_MIN_AREA * height * width
    subject = large[labels]
    if not subject.any() or subject.mean() > MOTION_MAX_AREA:
        return empty
    return resized_to(_filled_holes(subject).astype(np.float32), shape)


def _filled_holes(region: np.ndarray) -> np.ndarray:
    """``region`` with the holes it encloses filled (a textureless inside has no flow)."""
    outside = np.pad(~region, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    return (outside[1:-1, 1:-1] != 2) | region


def parallax_flows(plate: np.ndarray, reference: np.ndarray, trimap: np.ndarray,
                   flow_size: int = 1024, motion: Optional[DenseFlow] = None
                   ) -> Optional[ParallaxFlows]:
    """DIS flow plate -> reference at <= ``flow_size`` px (or ``motion``, computed already),
    with the unknown band's flow replaced by its nearest consistent certain-foreground and
    certain-background neighbours. None when the frames are too small for flow or a region
    has no consistent pixel."""
    motion = motion or dense_flow(plate, reference, flow_size)
    if motion is None:
        return None
    flow, error = motion.flow, motion.error
    small_trimap = cv2.resize(trimap, (flow.shape[1], flow.shape[0]),
                              interpolation=cv2.INTER_NEAREST)
    consistent = error < 2.0 * CONSISTENCY_PIXELS
    fields = np.dstack([flow, error])
    filled = []
    for certain in (small_trimap > 0.99, small_trimap < 0.01):
        moved = nearest_fill(fields, certain & consistent)
        if moved is None:
            return None
        moved = np.where(certain[..., None], fields, moved)
        filled.append(moved)
    shape = (plate.shape[0], plate.shape[1])

    def trust(err: np.ndarray) -> np.ndarray:
        scale = plate.shape[1] / err.shape[1]
        return np.exp(-(resized_to(err, shape) * scale / CONSISTENCY_PIXELS) ** 2)

    return ParallaxFlows(foreground=resized_flow(np.ascontiguousarray(filled[0][..., :2]), shape),
                         background=resized_flow(np.ascontiguousarray(filled[1][..., :2]), shape),
                         foreground_trust=trust(filled[0][..., 2]).astype(np.float32),
                         background_trust=trust(filled[1][..., 2]).astype(np.float32))


def colour_fill(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The colour of the nearest pixels of ``region`` everywhere (coarse-to-fine, at
    FILL_SIZE), the image itself inside the region."""
    filled = resized_to(propagated_colour(downsized(image, FILL_SIZE),
                                          downsized(region.astype(np.float32), FILL_SIZE)),
                        image.shape[:2])
    return np.where(region[..., None], image, filled).astype(np.float32)


def solve_known_background(image: np.ndarray, background: np.ndarray, foreground: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Alpha of I = aF + (1 - a)B with B and F known (least squares per pixel), and how far
    F is from B relative to the colours (the solve's reliability)."""
    f_minus_b = foreground - background
    denom = np.einsum("hwc,hwc->hw", f_minus_b, f_minus_b)
    alpha = np.einsum("hwc,hwc->hw", image - background, f_minus_b) / np.maximum(denom, 1e-8)
    reliability = np.sqrt(denom) / (_length(background) + 0.05)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32), reliability.astype(np.float32)


def solve_two_observations(plate: np.ndarray, aligned: np.ndarray, background: np.ndarray,
                           aligned_background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alpha from I1 = aF + (1 - a)B1 and I0 = aF + (1 - a)B0 with both backgrounds known:
    1 - a = <I1 - I0, B1 - B0> / |B1 - B0|^2; and the reliability: |B1 - B0| relative to the
    colours, lowered by the part of I1 - I0 the model does not explain (misalignment)."""
    diff_b = background - aligned_background
    diff_i = plate - aligned
    denom = np.einsum("hwc,hwc->hw", diff_b, diff_b)
    transparency = np.einsum("hwc,hwc->hw", diff_i, diff_b) / np.maximum(denom, 1e-8)
    transparency = np.clip(transparency, 0.0, 1.0)
    residual = _length(diff_i - transparency[..., None] * diff_b)
    scale = _length(background) + _length(aligned_background) + 0.1
    reliability = (np.sqrt(denom) - 2.0 * residual) / scale
    return (1.0 - transparency).astype(np.float32), reliability.astype(np.float32)


def single_frame_matte(plate: np.ndarray, trimap: np.ndarray, prior: Optional[np.ndarray],
                       prior_region: Optional[np.ndarray] = None) -> SingleFrame:
    """What one frame alone gives. Certain regions from the trimap; in the unknown band the
    prior's alpha when there is one (RVM; only inside ``prior_region`` when given), else a
    colour-sampling solve against the nearest certain foreground and background colours."""
    solid, clear = trimap > 0.99, trimap < 0.01
    unknown = ~(solid | clear)
    fg_colour = colour_fill(plate, solid) if solid.any() else plate.copy()
    bg_colour = colour_fill(plate, clear) if clear.any() else plate.copy()
    alpha, _ = solve_known_background(plate, bg_colour, fg_colour)
    if prior is not None:
        inside = np.ones(alpha.shape, bool) if prior_region is None else prior_region
        alpha = np.where(inside, prior, alpha).astype(np.float32)
    alpha = np.where(unknown, alpha, trimap).astype(np.float32)
    foreground = unmixed_foreground(plate, alpha, bg_colour, fg_colour)
    return SingleFrame(alpha, foreground, bg_colour, fg_colour)


def unmixed_foreground(plate: np.ndarray, alpha: np.ndarray, background: np.ndarray,
                       guess: np.ndarray) -> np.ndarray:
    """F = (I - (1 - a)B) / a where alpha is large enough to divide by, else the guess."""
    safe = np.maximum(alpha, 1e-3)[..., None]
    unmixed = (plate - (1.0 - alpha[..., None]) * background) / safe
    return np.where((alpha > 0.25)[..., None], unmixed, guess).astype(np.float32)


def sample_maps(x: np.ndarray, y: np.ndarray, width: int = 1024
                ) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N,) as 2-D float32 remap maps ``width`` wide (OpenCV maps stay < 32767)."""
    rows = -(-x.size // width)
    maps = np.zeros((2, rows * width), np.float32)
    maps[0, :x.size], maps[1, :y.size] = x, y
    return maps[0].reshape(rows, width), maps[1].reshape(rows, width)


def clean_sample_weight(alpha: np.ndarray, maps: tuple[np.ndarray, np.ndarray], count: int
                        ) -> np.ndarray:
    """How surely each of ``count`` sample positions (``sample_maps``) is pure background:
    1 - its alpha (bilinear), as (count, 1)."""
    if count == 0:
        return np.zeros((0, 1), np.float32)
    at_sample = cv2.remap(alpha, maps[0], maps[1], interpolation=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return np.clip(1.0 - at_sample.reshape(-1)[:count], 0.0, 1.0)[:, None]


def aligned_views(plate: np.ndarray, reference: np.ndarray, flows: ParallaxFlows
                  ) -> dict[str, np.ndarray]:
    """The reference warped onto the plate both ways, the backgrounds each view hides, the
    relative motion and how far the motions can be trusted (full-frame arrays)."""
    relative = flows.foreground - flows.background  # where the subject moved over its bg
    parallax = smoothstep(np.sqrt(np.sum(relative ** 2, axis=2)), *PARALLAX_PIXELS)
    return {
        "plate": plate,
        "relative": relative,
        "fg_aligned": warp_backward(reference, flows.foreground),
        # the background behind x in the plate, seen where the reference's subject has moved
        # off it (background-aligned reference); the background behind x in the fg-aligned
        # reference, seen in the plate at x + d
        "behind_plate": warp_backward(reference, flows.background),
        "behind_aligned": warp_backward(plate, relative),
        "trust_fg": (flows.foreground_trust * flows.background_trust * parallax
                     ).astype(np.float32),
        "trust_bg": (flows.background_trust * parallax).astype(np.float32),
    }


def solve_views(views: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-pixel solve on (a window of) the aligned views plus ``trimap`` and the
    single-frame ``alpha`` / ``foreground`` / ``background`` / ``foreground_colour``; it
    reads alpha at most SOLVE_ITERATIONS x |relative| pixels away. Returns alpha, foreground,
    confidence.

    The estimates, least to most trusted where they apply (each weighted by how surely its
    background samples are clean and how far F is from B there): the single frame; the plate
    against the background the reference dis-occludes; the two-observation solve; the
    foreground-aligned reference against the background the plate shows at x + d (the most
    accurate on the dev benchmark: its background sample is an unresampled plate pixel)."""
    trimap, relative = views["trimap"], views["relative"]
    unknown = (trimap > 0.01) & (trimap < 0.99)
    index = np.flatnonzero(unknown)

    def band(name: str) -> np.ndarray:
        """The band's pixels of a view, as an (N, 1[, C]) image (the solves are per pixel)."""
        array = views[name]
        return array.reshape(-1, *array.shape[2:])[index][:, None]

    plate, fg_aligned, fg_colour = band("plate"), band("fg_aligned"), band("foreground_colour")
    behind_plate, behind_aligned = band("behind_plate"), band("behind_aligned")
    single_alpha = band("alpha")
    two, two_rel = solve_two_observations(plate, fg_aligned, behind_plate, behind_aligned)
    w_two_view = smoothstep(two_rel, *TWO_VIEW_RELIABILITY)
    one_p, rel_p = solve_known_background(plate, behind_plate, fg_colour)
    one_a, rel_a = solve_known_background(fg_aligned, behind_aligned, fg_colour)
    w_known_p = smoothstep(rel_p, *KNOWN_RELIABILITY) * band("trust_bg")
    w_known_a = smoothstep(rel_a, *KNOWN_RELIABILITY) * band("trust_fg")
    alpha = np.array(views["alpha"], np.float32)  # the whole window: samples lie outside the band
    seen_plate = confidence = np.zeros_like(single_alpha)
    # where the band's samples lie: x - d (what the reference dis-occludes), x + d (what the
    # plate shows behind the aligned reference), as (N, 1) remap maps
    ys, xs = np.divmod(index, trimap.shape[1])
    d = relative.reshape(-1, 2)[index]
    behind = sample_maps(xs - d[:, 0], ys - d[:, 1])
    ahead = sample_maps(xs + d[:, 0], ys + d[:, 1])
    for _ in range(SOLVE_ITERATIONS):
        seen_plate = clean_sample_weight(alpha, behind, index.size)
        seen_aligned = clean_sample_weight(alpha, ahead, index.size)
        w_p = seen_plate * w_known_p
        w_two = seen_plate * seen_aligned * w_two_view * band("trust_fg")
        w_a = seen_aligned * w_known_a
        estimate = w_p * one_p + (1.0 - w_p) * single_alpha
        estimate = w_two * two + (1.0 - w_two) * estimate
        estimate = w_a * one_a + (1.0 - w_a) * estimate
        confidence = 1.0 - (1.0 - w_p) * (1.0 - w_two) * (1.0 - w_a)
        alpha.reshape(-1)[index] = estimate[:, 0]
    seen_plate = seen_plate * band("trust_bg")
    background = seen_plate[..., None] * behind_plate + (1.0 - seen_plate[..., None]) * band(
        "background")
    foreground = np.array(views["foreground"], np.float32)
    foreground.reshape(-1, 3)[index] = unmixed_foreground(
        plate, alpha.reshape(-1)[index][:, None], background, fg_colour)[:, 0]
    confidence_map = np.zeros(trimap.shape, np.float32)
    confidence_map.reshape(-1)[index] = confidence[:, 0]
    return {"alpha": alpha, "foreground": foreground, "confidence": confidence_map}


def two_view_matte(plate: np.ndarray, reference: np.ndarray, trimap: np.ndarray,
                   flows: ParallaxFlows, single: SingleFrame, patch_size: int = 0
                   ) -> ParallaxMatte:
    """Alpha and foreground from the plate and the reference, falling back to the single-frame
    estimate wherever the second view says nothing. The solve runs on patches of
    ``patch_size`` over the unknown band (0: the whole frame at once) with enough context that
    the result is the same either way."""
    views = aligned_views(plate, reference, flows)
    views.update(trimap=trimap, alpha=single.alpha, foreground=single.foreground,
                 background=single.background, foreground_colour=single.foreground_colour)
    single_alpha, single_foreground = single.alpha, single.foreground
    unknown = (trimap > 0.01) & (trimap < 0.99)
    # a band pixel's alpha reads alpha at x +- relative(x), of band pixels only (the rest is
    # fixed), once per iteration
    reach = float(np.max(np.abs(views["relative"][unknown]))) if unknown.any() else 0.0
    context = int(np.ceil(SOLVE_ITERATIONS * (reach + 1.0))) + 2
    base = {"alpha": single_alpha, "foreground": single_foreground,
            "confidence": np.zeros_like(single_alpha)}
    merged = tiled_or_whole(lambda batch: [solve_views(v) for v in batch], views, unknown,
                            base, patch_size, context)
    return ParallaxMatte(alpha=merged["alpha"], foreground=merged["foreground"],
                         confidence=merged["confidence"])


def _length(rgb: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("hwc,hwc->hw", rgb, rgb))
