"""`mattekit demo`: a short scene-linear EXR clip from a public-domain photo, matted end to end.

The clip is a slow camera push across NASA's portrait of astronaut Eileen Collins (public
domain; bundled as demo/astronaut.jpg), converted to the config's scene-linear space as a
compositor's plate would be. The demo renders it with the video-matte node and writes a PNG
contact sheet: plate, alpha, and the premultiplied foreground over a checkerboard.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from mattekit import ocio
from mattekit.inference.exrio import read_exr, write_exr
from mattekit.inference.render import RenderJob, render

PHOTO = Path(__file__).with_name("demo") / "astronaut.jpg"
FIRST_FRAME = 1001


def photo_srgb(path: Path = PHOTO) -> np.ndarray:
    """The demo photo as sRGB-encoded float32 RGB in 0..1."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: demo photo is missing from the installation")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def camera_move(photo: np.ndarray, frames: int, width: int, height: int) -> list[np.ndarray]:
    """Frames of a slow push-in and pan across `photo`, resampled to width x height.

    >>> [f.shape for f in camera_move(np.zeros((64, 64, 3), np.float32), 2, 16, 12)]
    [(12, 16, 3), (12, 16, 3)]
    """
    ph, pw = photo.shape[:2]
    aspect = width / height
    clip = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        crop_w = pw * (0.92 - 0.12 * t)
        crop_h = crop_w / aspect
        if crop_h > ph:
            crop_h, crop_w = ph * 0.98, ph * 0.98 * aspect
        cx = pw * (0.47 + 0.04 * t)
        cy = ph * (0.50 - 0.02 * t)
        x0, y0 = cx - crop_w / 2, cy - crop_h / 2
        # affine map from output pixel centres to the crop, so sub-pixel motion stays smooth
        sx, sy = crop_w / width, crop_h / height
        matrix = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]])
        clip.append(cv2.warpAffine(photo, matrix, (width, height),
                                   flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT))
    return [np.clip(f, 0.0, 1.0) for f in clip]


def write_plate_sequence(folder: Path, frames_srgb: Sequence[np.ndarray], config: object,
                         colorspace: str, first_frame: int = FIRST_FRAME) -> str:
    """Write sRGB frames as a scene-linear half EXR sequence; return its #### pattern."""
    to_linear = ocio.Converter(config, ocio.ENGINE_SRGB, colorspace)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames_srgb):
        write_exr(folder / f"plate.{first_frame + i:04d}.exr", to_linear.apply(frame),
                  metadata={"mattekit/demo": "astronaut push-in"})
    return str(folder / "plate.####.exr")


def checkerboard(height: int, width: int, square: int = 16) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    light = ((ys // square + xs // square) % 2).astype(np.float32)
    return np.repeat((0.18 + 0.5 * light)[..., None], 3, axis=2)


def contact_sheet(plates: Sequence[Path], mattes: Sequence[Path], config: object,
                  colorspace: str) -> np.ndarray:
    """Rows of (plate, alpha, comp over checkerboard), display-encoded sRGB 8-bit (BGR)."""
    to_display = ocio.Converter(config, colorspace, ocio.ENGINE_SRGB)
    rows = []
    for plate_path, matte_path in zip(plates, mattes):
        plate = read_exr(plate_path).rgb
        matte = read_exr(matte_path)
        alpha = matte.alpha
        if plate is None or matte.rgb is None or alpha is None:
            raise ValueError(f"{matte_path}: demo output lacks RGBA")
        checker = to_display.inverse().apply(checkerboard(*alpha.shape))
        comp = matte.rgb + (1.0 - alpha[..., None]) * checker
        tiles = [to_display.apply(plate), np.repeat(alpha[..., None], 3, axis=2),
                 to_display.apply(comp)]
        rows.append(np.concatenate([np.clip(t, 0, 1) for t in tiles], axis=1))
    sheet = (np.concatenate(rows, axis=0) * 255.0 + 0.5).astype(np.uint8)
    for col, label in enumerate(["plate", "alpha", "foreground over checker"]):
        x = col * sheet.shape[1] // 3 + 8
        cv2.putText(sheet, label, (x, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
    return cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)


def write_png_atomically(path: Path, image_bgr: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image_bgr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_demo(out: Path, device: str = "auto", frames: int = 12, width: int = 640,
             height: int = 480, cache_root: Optional[Path] = None) -> Path:
    """Build the clip, render video-matte over it, write the contact sheet; return its path."""
    out = Path(out).resolve()
    config = ocio.load_config()
    colorspace = ocio.default_colorspace(config, integer_encoded=False)
    print(f"mattekit demo: building a {frames}-frame {width}x{height} clip in '{colorspace}'")
    plate = write_plate_sequence(out / "plate", camera_move(photo_srgb(), frames, width, height),
                                 config, colorspace)
    job = RenderJob(node="video-matte", plate=plate, out=str(out / "matte" / "matte.####.exr"),
                    device=device, cache_root=cache_root or out / "cache")
    report = render(job)
    print(f"mattekit demo: {len(report.computed)} frames computed, {len(report.cached)} from "
          f"cache, engine {report.engine}")
    picks = [report.frames[0], report.frames[len(report.frames) // 2], report.frames[-1]]
    plates = [Path(plate.replace("####", f"{r.frame:04d}")) for r in picks]
    sheet_path = out / "contact_sheet.png"
    write_png_atomically(sheet_path, contact_sheet(plates, [r.path for r in picks], config,
                                                   colorspace))
    print(f"plates:        {out / 'plate'}")
    print(f"mattes (EXR):  {out / 'matte'}  (RGB = premultiplied foreground, A = alpha)")
    print(f"contact sheet: {sheet_path}")
    return sheet_path
