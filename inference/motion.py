"""Motion between consecutive frames, for temporal engines: optical flow at low resolution,
backward warps, and how far a target can have moved (the dilation of a guidance mask).

Flow here is *backward*: for each pixel x of the current frame, ``flow[x]`` points to where it
was in the previous frame, ``previous(x + flow[x]) ~ current(x)``. That is what warping the
previous frame's alpha onto the current frame needs (``warp_backward``). Pure functions of
arrays; OpenCV's DIS optical flow (Kroeger et al. 2016) does the estimation.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

#: Percentile of the flow magnitude over the target that sets the dilation (robust to outliers).
MOTION_PERCENTILE = 95.0
#: Flow underestimates large displacements at low resolution; the dilation allows for this.
MOTION_SAFETY = 1.5


def grey_8bit(srgb: np.ndarray) -> np.ndarray:
    """Rec.709 luma of an sRGB-encoded (H, W, 3) 0..1 image, as uint8 (what DIS works on)."""
    luma = srgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return (np.clip(luma, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def backward_flow(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Backward optical flow (H, W, 2) float32 from two uint8 grey frames of equal size:
    ``previous(x + flow[x]) ~ current(x)``. DIS, medium preset; deterministic."""
    if previous.shape != current.shape:
        raise ValueError(f"frames differ in size: {previous.shape} and {current.shape}")
    dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
        cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(current, previous, None)
    return np.ascontiguousarray(flow, dtype=np.float32)


def resized_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flow resampled to another (H, W), its vectors scaled with the image."""
    height, width = shape
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow
    scaled = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    scaled[..., 0] *= width / w
    scaled[..., 1] *= height / h
    return scaled


def warp_backward(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The previous frame's ``image`` (H, W[, C]) moved onto the current frame by backward
    ``flow`` of the same size (bilinear; pixels from outside the frame repeat the border)."""
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """|flow| per pixel, (H, W) float32."""
    return np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).astype(np.float32)


def motion_radius(flow: Optional[np.ndarray], region: np.ndarray, margin: float,
                  limit: float) -> float:
    """How far (pixels) a target occupying ``region`` (bool (H, W)) may have moved since the
    previous frame: the 95th percentile of the flow magnitude over the region, times a safety
    factor, plus ``margin``, at most ``limit``. Without flow or region: ``margin``.

    >>> flow = np.zeros((4, 4, 2), np.float32); flow[..., 0] = 2.0
    >>> motion_radius(flow, np.ones((4, 4), bool), margin=1.0, limit=100.0)
    4.0
    """
    if flow is None or not region.any():
        return float(min(margin, limit))
    moved = float(np.percentile(flow_magnitude(flow)[region], MOTION_PERCENTILE))
    return float(min(moved * MOTION_SAFETY + margin, limit))


def region_motion(flow: np.ndarray, region: np.ndarray, max_points: int = 4000
                  ) -> Optional[np.ndarray]:
    """The motion of what occupied ``region`` (bool (H, W), previous frame) as one similarity
    transform (2x3 float64, previous -> current: shift, rotation, uniform scale), fitted
    robustly (LMedS) to the backward ``flow`` of the current pixels that came from the region.
    Pixels the flow drags along behind a moving object (uncovered background) are outliers to
    it. None when too few pixels came from the region or the fit fails.

    >>> flow = np.zeros((20, 20, 2), np.float32); flow[..., 0] = -3.0   # everything moved +3 x
    >>> region = np.zeros((20, 20), bool); region[5:12, 4:10] = True
    >>> np.round(region_motion(flow, region), 3).tolist()
    [[1.0, -0.0, 3.0], [0.0, 1.0, 0.0]]
    """
    height, width = flow.shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    source_x, source_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    sx = np.clip(np.rint(source_x), 0, width - 1).astype(np.int64)
    sy = np.clip(np.rint(source_y), 0, height - 1).astype(np.int64)
    came = region[sy, sx]
    count = int(np.count_nonzero(came))
    if count < 8:
        return None
    step = max(1, count // max_points)
    src = np.ascontiguousarray(np.stack([source_x[came], source_y[came]], axis=1)[::step])
    dst = np.ascontiguousarray(np.stack([grid_x[came], grid_y[came]], axis=1)[::step])
    transform, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    return None if transform is None else transform.astype(np.float64)


def moved_mask(mask: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """A bool mask moved by a 2x3 transform (previous -> current), same size; what comes in
    from beyond the frame repeats the border (an object cut by the frame edge goes on)."""
    height, width = mask.shape
    moved = cv2.warpAffine(mask.astype(np.float32), transform, (width, height),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return moved > 0.5
