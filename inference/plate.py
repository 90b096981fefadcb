"""Reading plate frames for an engine: decode, and repair what would poison a matte.

NaN and infinite pixels (a bad render, a broken conversion) are replaced by 0 with a warning
that names the file and frame, so they can never propagate into alpha.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from mattekit.inference.errors import ExrError, InputWarning
from mattekit.inference.exrio import ExrImage, read_image


def replace_nonfinite(rgb: np.ndarray) -> int:
    """Set NaN/Inf values of `rgb` to 0 in place; return how many were replaced.

    >>> a = np.array([[1.0, np.nan, np.inf]], np.float32); replace_nonfinite(a), a.tolist()
    (2, [[1.0, 0.0, 0.0]])
    """
    bad = ~np.isfinite(rgb)
    count = int(np.count_nonzero(bad))
    if count:
        rgb[bad] = 0.0
    return count


def load_plate(path: Path, frame: Optional[int]) -> ExrImage:
    """Read one plate frame (EXR, PNG, JPEG, TIFF) with non-finite pixels repaired."""
    image = read_image(path, frame)
    if image.rgb is None:
        raise ExrError("no RGB channels to matte", path, frame)
    count = replace_nonfinite(image.rgb)
    if count:
        where = f"{path}, frame {frame}" if frame is not None else str(path)
        warnings.warn(f"{where}: {count} NaN/Inf pixel values replaced by 0", InputWarning,
                      stacklevel=2)
    return image
