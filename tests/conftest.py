"""Shared fixtures: small real plates built from the bundled public-domain demo photo."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from mattekit import ocio
from mattekit.inference.demo import camera_move, photo_srgb
from mattekit.inference.exrio import write_exr

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alphamatting-dev"


@pytest.fixture(scope="session")
def pinned_config():
    return ocio.load_config(ocio.PINNED_CONFIG_URI)


@pytest.fixture(scope="session")
def srgb_clip() -> Callable[[int, int, int], list[np.ndarray]]:
    """frames(n, width, height): a camera move over the demo portrait, sRGB 0..1 float32."""
    photo = photo_srgb()

    def frames(count: int, width: int, height: int) -> list[np.ndarray]:
        return camera_move(photo, count, width, height)

    return frames


@pytest.fixture
def write_linear_sequence(pinned_config) -> Callable[..., str]:
    """Write sRGB frames as a scene-linear (ACEScg) EXR sequence; return its #### pattern."""

    def write(folder: Path, frames_srgb: Sequence[np.ndarray], first: int = 1,
              pixel_type: str = "float", colorspace: str = "ACEScg") -> str:
        to_linear = ocio.Converter(pinned_config, ocio.ENGINE_SRGB, colorspace)
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames_srgb):
            write_exr(folder / f"plate.{first + i:04d}.exr", to_linear.apply(frame),
                      pixel_type=pixel_type)
        return str(folder / "plate.####.exr")

    return write


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/alphamatting-dev is not present")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy machine's OpenMP stalls."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
