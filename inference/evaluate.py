"""``mattekit eval``: score predicted alpha mattes against ground truth, frame by frame.

    mattekit eval --pred out/matte.####.exr --gt gt/pha.####.png --frames 1001-1100
    mattekit eval --pred pred.png --gt gt.png --trimap trimap.png --json

Mattes are read as the compositor sees them:

- EXR: the alpha channel ``A`` (``rgba.alpha``) over the *display window*; pixels outside the
  data window are 0 and overscan is cropped, so a matte written with a tight bounding box
  compares with a full-frame one.
- PNG / TIFF / JPEG: channel 0 (the grey level, or red), divided by 255 or 65535; a file with
  an alpha channel (grey+alpha, RGBA) is read from that alpha channel instead.
- A trimap file is read the same way; its unknown region is every value strictly between 0 and
  1 (``metrics.unknown_region``), and MAD, MSE, Grad and Conn are restricted to it.

Values outside 0..1 are clipped (one warning per input); NaN or infinite pixels are an error.
The frames are ``--frames`` when given, else every frame of the ground-truth sequence on disk
(of the prediction when only it is a sequence). dtSSD needs two frames or more and compares each
evaluated frame with the one evaluated before it.
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mattekit.inference import metrics
from mattekit.inference.errors import ExrError, InputError, InputWarning
from mattekit.inference.exrio import ExrImage, Window, read_exr, read_image
from mattekit.inference.sequence import (
    FramePattern,
    format_frame_list,
    frames_for,
    parse_pattern,
    require_frames,
)

_SPATIAL = [m for m in metrics.METRICS if not m.temporal]
_TEMPORAL = [m for m in metrics.METRICS if m.temporal]


@dataclass(frozen=True)
class FrameScores:
    """Reported values of one frame by metric name; None where undefined (dtSSD of frame 1)."""

    frame: int
    values: dict[str, Optional[float]]


@dataclass(frozen=True)
class EvalReport:
    """Per-frame scores and the clip's scores, in the units of ``metrics.METRICS``."""

    pred: str
    gt: str
    trimap: Optional[str]
    metrics: list[metrics.Metric]
    frames: list[FrameScores]
    mean: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: inputs, metric units, per-frame rows and the mean row."""
        return {
            "pred": self.pred,
            "gt": self.gt,
            "trimap": self.trimap,
            "metrics": [{"name": m.name, "label": m.label, "unit": m.unit, "scale": m.scale}
                        for m in self.metrics],
            "frames": [{"frame": row.frame, **row.values} for row in self.frames],
            "mean": dict(self.mean),
        }


@dataclass
class _Clipped:
    """Frames of one input that had alpha outside 0..1 (reported once, at the end)."""

    pattern: str
    frames: list[int] = field(default_factory=list)
    worst: float = 0.0


def _on_display_window(plane: np.ndarray, data: Window, display: Window) -> np.ndarray:
    """``plane`` (over ``data``) placed in the display window: 0 outside, overscan cropped."""
    if data == display:
        return plane
    out = np.zeros((display.height, display.width), dtype=np.float32)
    x0, x1 = max(data.x_min, display.x_min), min(data.x_max, display.x_max)
    y0, y1 = max(data.y_min, display.y_min), min(data.y_max, display.y_max)
    if x0 <= x1 and y0 <= y1:
        out[y0 - display.y_min:y1 - display.y_min + 1, x0 - display.x_min:x1 - display.x_min + 1] \
            = plane[y0 - data.y_min:y1 - data.y_min + 1, x0 - data.x_min:x1 - data.x_min + 1]
    return out


def _channel_names(image: ExrImage) -> str:
    names = (["R", "G", "B"] if image.rgb is not None else []) + sorted(image.layers)
    return ", ".join(names) or "none"


def read_matte(path: Path, frame: Optional[int] = None) -> np.ndarray:
    """One matte as float32 ``(H, W)``, read as the module docstring says (not yet clipped).

    Raises InputError (ExrError for EXR) naming the file and frame when it cannot be used.
    """
    if path.suffix.lower() == ".exr":
        image = read_exr(path, frame, need_rgb=False)
        if image.alpha is None:
            raise ExrError(f"no alpha channel A (has: {_channel_names(image)}); write the matte "
                           "to rgba.alpha", path, frame)
        return _on_display_window(image.alpha, image.data_window, image.display_window)
    image = read_image(path, frame)
    if image.alpha is not None:
        return image.alpha
    if image.rgb is None:  # read_image always gives RGB for these files; keep mypy honest
        raise InputError("image has no channels", path, frame)
    return np.ascontiguousarray(image.rgb[..., 0])


def _checked(matte: np.ndarray, path: Path, frame: int, clipped: _Clipped) -> np.ndarray:
    bad = int(np.count_nonzero(~np.isfinite(matte)))
    if bad:
        raise InputError(f"{bad} pixels are NaN or infinite; a matte must be finite", path, frame)
    low, high = float(matte.min()), float(matte.max())
    if low < 0.0 or high > 1.0:
        clipped.frames.append(frame)
        clipped.worst = max(clipped.worst, -low, high - 1.0)
        return np.clip(matte, 0.0, 1.0)
    return matte


def _size(matte: np.ndarray) -> str:
    return f"{matte.shape[1]}x{matte.shape[0]}"


def _frames_to_evaluate(pred: FramePattern, gt: FramePattern, frame_range: Optional[str]
                        ) -> list[int]:
    leader = gt if gt.is_sequence or not pred.is_sequence else pred
    return frames_for(leader, frame_range)


def evaluate(pred: str, gt: str, frames: Optional[str] = None,
             trimap: Optional[str] = None) -> EvalReport:
    """Score the ``pred`` matte sequence against ``gt`` (file patterns, see ``sequence``).

    ``frames`` is a range expression (default: the frames on disk); ``trimap`` a file or
    pattern whose unknown region restricts the spatial metrics. Raises MissingFramesError
    listing every missing frame of an input, or InputError naming the file and frame of the
    first unreadable, non-finite or wrongly sized matte; warns (InputWarning) once per input
    whose alpha had to be clipped to 0..1.
    """
    # Ground truth first: it defines the clip, so a range past its end is reported against it.
    patterns = {"gt": parse_pattern(gt), "pred": parse_pattern(pred)}
    if trimap is not None:
        patterns["trimap"] = parse_pattern(trimap)
    frame_list = _frames_to_evaluate(patterns["pred"], patterns["gt"], frames)
    paths = {role: require_frames(pattern, frame_list) for role, pattern in patterns.items()}
    clipped = {role: _Clipped(pattern.text) for role, pattern in patterns.items()}
    temporal = _TEMPORAL if len(frame_list) >= 2 else []

    rows: list[FrameScores] = []
    raw_sums = dict.fromkeys((metric.name for metric in _SPATIAL + temporal), 0.0)
    previous: Optional[tuple[np.ndarray, np.ndarray]] = None
    for index, frame in enumerate(frame_list):
        mattes = {role: _checked(read_matte(paths[role][index], frame), paths[role][index],
                                 frame, clipped[role])
                  for role in patterns}
        gt_matte, pred_matte = mattes["gt"], mattes["pred"]
        for role, matte in mattes.items():
            if matte.shape != gt_matte.shape:
                raise InputError(f"{role} is {_size(matte)} but the ground truth "
                                 f"{paths['gt'][index]} is {_size(gt_matte)}",
                                 paths[role][index], frame)
        mask = metrics.unknown_region(mattes["trimap"]) if "trimap" in mattes else None
        if mask is not None and not mask.any():
            raise InputError("trimap has no unknown pixels (values between 0 and 1), so MAD and "
                             "MSE are undefined; check the trimap or leave out --trimap",
                             paths["trimap"][index], frame)
        values: dict[str, Optional[float]] = {}
        for metric in _SPATIAL:
            raw = metric.function(pred_matte, gt_matte, mask)
            raw_sums[metric.name] += raw
            values[metric.name] = metric.report(raw)
        for metric in temporal:
            # dtSSD (the only temporal metric) frame by frame, so a clip never has to fit in
            # memory: the first frame has no predecessor, shown as None and counted as 0 in the
            # mean, which makes the mean row exactly metrics.dtssd of the clip (RVM's convention).
            if previous is None:
                values[metric.name] = None
                continue
            raw = metrics.dtssd_pair(pred_matte, previous[0], gt_matte, previous[1])
            raw_sums[metric.name] += raw
            values[metric.name] = metric.report(raw)
        previous = (pred_matte, gt_matte)
        rows.append(FrameScores(frame, values))

    for role, record in clipped.items():
        if record.frames:
            warnings.warn(f"{record.pattern}: {role} alpha outside 0..1 (by up to "
                          f"{record.worst:.3g}) clipped in frame(s) "
                          f"{format_frame_list(record.frames)}", InputWarning, stacklevel=2)
    mean = {metric.name: metric.report(raw_sums[metric.name] / len(rows))
            for metric in _SPATIAL + temporal}
    return EvalReport(pred=pred, gt=gt, trimap=trimap, metrics=_SPATIAL + temporal,
                      frames=rows, mean=mean)


def _cell(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if value != 0 and abs(value) < 1e-3 else f"{value:.3f}"


def format_table(report: EvalReport) -> str:
    """Per-frame rows, then the mean row, under a two-line header of labels and units."""
    width = max(10, *(len(_cell(row.values[m.name])) + 2 for row in report.frames
                      for m in report.metrics))
    first = max(8, len(str(report.frames[-1].frame)) + 2, len(str(report.frames[0].frame)) + 2)

    def line(head: str, cells: list[str]) -> str:
        return f"{head:<{first}}" + "".join(f"{cell:>{width}}" for cell in cells)

    lines = [line("frame", [m.label for m in report.metrics]),
             line("", [f"({m.unit})" for m in report.metrics])]
    lines += [line(str(row.frame), [_cell(row.values[m.name]) for m in report.metrics])
              for row in report.frames]
    lines.append(line("mean", [_cell(report.mean[m.name]) for m in report.metrics]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The ``eval`` subcommand: print the table, or JSON with ``--json``; errors propagate."""
    report = evaluate(args.pred, args.gt, frames=args.frames, trimap=args.trimap)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_table(report))
    return 0


__all__ = ["EvalReport", "FrameScores", "evaluate", "format_table", "read_matte", "run"]
