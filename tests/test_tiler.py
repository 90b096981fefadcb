"""The patch tiler: patches over the uncertain band only, batched, merged without seams."""
from __future__ import annotations

import numpy as np
import pytest

from mattekit.inference import tiler


def pointwise_engine(batch):
    """A stand-in engine whose output at a pixel depends on that pixel only."""
    return [{"alpha": np.tanh(3.0 * w["image"][..., 0] - w["image"][..., 1]),
             "foreground": np.sqrt(w["image"]) * 0.5} for w in batch]


@pytest.fixture
def frame():
    rng = np.random.default_rng(4)
    image = rng.random((1200, 1000, 3)).astype(np.float32)
    band = np.zeros((1200, 1000), bool)
    band[300:340, 100:900] = True  # a horizontal edge band
    band[0:20, 960:1000] = True  # a corner piece: the last patch must be flush with the border
    return image, band


def test_when_a_pointwise_engine_is_tiled_then_the_band_equals_the_untiled_output(frame):
    image, band = frame
    whole = pointwise_engine([{"image": image}])[0]
    base = {"alpha": np.zeros(band.shape, np.float32),
            "foreground": np.zeros(image.shape, np.float32)}
    merged = tiler.tiled(pointwise_engine, {"image": image}, band, base)
    assert np.abs(merged["alpha"][band] - whole["alpha"][band]).max() < 1e-5
    assert np.abs(merged["foreground"][band] - whole["foreground"][band]).max() < 1e-5


def test_when_tiling_then_only_patches_touching_the_band_run_and_in_batches(frame):
    image, band = frame
    seen: list[int] = []

    def engine(batch):
        seen.append(len(batch))
        return pointwise_engine(batch)

    base = {"alpha": np.full(band.shape, -7.0, np.float32),
            "foreground": np.zeros(image.shape, np.float32)}
    merged = tiler.tiled(engine, {"image": image}, band, base, batch_size=3)
    grid = len(tiler.patch_starts(1200, 448, 224)) * len(tiler.patch_starts(1000, 448, 224))
    patches = tiler.band_patches(band)
    assert sum(seen) == len(patches) < grid
    assert max(seen) == 3
    assert merged["alpha"][-1, 0] == -7.0  # far from the band: no patch, the base value
    assert all(p.height == 448 and p.width == 448 for p in patches)


def test_when_patches_have_context_then_the_engine_sees_it_and_only_the_patch_is_merged():
    image = np.arange(600 * 600, dtype=np.float32).reshape(600, 600, 1)
    band = np.ones((600, 600), bool)
    shapes = []

    def engine(batch):
        shapes.extend(w["image"].shape[:2] for w in batch)
        return [{"value": w["image"][..., 0]} for w in batch]

    merged = tiler.tiled(engine, {"image": image}, band, {"value": np.zeros((600, 600))},
                         size=256, overlap=128, context=20)
    assert max(shapes) == (296, 296)  # 256 + 20 either side, clipped at the frame
    assert np.abs(merged["value"] - image[..., 0]).max() < 1e-6


def test_when_the_window_is_made_then_it_peaks_in_the_middle_and_is_never_zero():
    window = tiler.gaussian_window(448, 448)
    assert window.argmax() in (223 * 448 + 223, 224 * 448 + 224, 223 * 448 + 224)
    assert window.min() > 1e-4


def test_when_the_overlap_is_not_smaller_than_the_patch_then_it_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        tiler.band_patches(np.ones((10, 10), bool), size=64, overlap=64)
