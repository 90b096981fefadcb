"""Specification of exrio: the EXR/PNG/JPEG/TIFF data contract (DESIGN.md, "Data contract")."""
from __future__ import annotations

import os
import struct

import cv2
import numpy as np
import OpenEXR
import pytest

from mattekit.inference import exrio
from mattekit.inference.errors import ExrError, InputError, OutputError
from mattekit.inference.exrio import (
    ExrImage,
    Window,
    canonical_channel_name,
    is_integer_encoded,
    read_exr,
    read_image,
    write_exr,
)

HEIGHT, WIDTH = 12, 20
LOSSLESS = ["none", "rle", "zips", "zip", "piz"]


def _image(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A smooth ramp plus noise, with scene-linear highlights and negatives."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0.25 * np.sin(x / 3)], axis=-1)
    rgb = (base + rng.normal(0, 0.02, base.shape)).astype(np.float32)
    rgb[0, 0] = (37.5, -0.25, 1000.0)
    alpha = np.clip(x / WIDTH + rng.normal(0, 0.01, x.shape), 0, 1).astype(np.float32)
    layers = {"trimap.Y": np.round(2 * y / HEIGHT) / 2, "fg.R": rgb[..., 0] * 0.5}
    return rgb, alpha, {name: plane.astype(np.float32) for name, plane in layers.items()}


def _as_stored(array: np.ndarray, pixel_type: str) -> np.ndarray:
    return array.astype(np.float16).astype(np.float32) if pixel_type == "half" else array


def _write_raw(path, channels: dict[str, np.ndarray], **header) -> None:
    """Write an EXR with exactly these channel names, bypassing exrio."""
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, **header}
    channels = {name: np.ascontiguousarray(plane) for name, plane in channels.items()}
    OpenEXR.File(header, channels).write(str(path))


def _patch_data_window(path, x_max: int) -> None:
    """Overwrite x_max of the dataWindow attribute in the file's header."""
    data = bytearray(path.read_bytes())
    at = data.index(b"dataWindow\x00box2i\x00") + len(b"dataWindow\x00box2i\x00") + 4
    data[at + 8:at + 12] = struct.pack("<i", x_max)
    path.write_bytes(bytes(data))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("pixel_type", ["half", "float"])
@pytest.mark.parametrize("compression", LOSSLESS)
def test_when_rgba_and_layers_written_lossless_then_read_back_exactly(tmp_path, pixel_type,
                                                                      compression):
    rgb, alpha, layers = _image()
    path = tmp_path / "out.exr"
    write_exr(path, rgb, alpha, layers=layers, pixel_type=pixel_type, compression=compression)

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, _as_stored(rgb, pixel_type))
    np.testing.assert_array_equal(image.alpha, _as_stored(alpha, pixel_type))
    assert set(image.layers) == set(layers)
    for name, plane in layers.items():
        np.testing.assert_array_equal(image.layers[name], _as_stored(plane, pixel_type))
    assert image.pixel_type == pixel_type


@pytest.mark.parametrize("pixel_type", ["half", "float"])
@pytest.mark.parametrize("compression", ["pxr24", "dwaa", "dwab"])
def test_when_written_with_lossy_compression_then_read_back_within_tolerance(tmp_path, pixel_type,
                                                                            compression):
    rgb, alpha, layers = _image()
    path = tmp_path / "out.exr"
    write_exr(path, rgb, alpha, layers=layers, pixel_type=pixel_type, compression=compression)

    image = read_exr(path)

    # DWA quantises in a perceptual space: allow 2% of the value plus a small floor.
    np.testing.assert_allclose(image.rgb, rgb, rtol=0.02, atol=0.02)
    np.testing.assert_allclose(image.alpha, alpha, rtol=0.02, atol=0.02)
    np.testing.assert_allclose(image.layers["trimap.Y"], layers["trimap.Y"], rtol=0.02, atol=0.02)


@pytest.mark.parametrize("pixel_type", ["half", "float"])
def test_when_scene_linear_values_above_one_and_negative_then_they_survive(tmp_path, pixel_type):
    rgb = np.full((4, 5, 3), 0.1875, dtype=np.float32)  # exact in half
    rgb[0, 0] = (37.5, -0.25, 1000.0)
    rgb[3, 4] = (-2.0, 65504.0 if pixel_type == "half" else 1e6, 0.0)
    path = tmp_path / "hdr.exr"
    write_exr(path, rgb, pixel_type=pixel_type)

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, rgb)
    assert image.alpha is None


def test_when_read_then_arrays_are_float32_and_rgb_is_c_contiguous(tmp_path):
    rgb, alpha, _ = _image()
    path = tmp_path / "out.exr"
    write_exr(path, rgb, alpha)

    image = read_exr(path)

    assert image.rgb.dtype == np.float32 and image.rgb.shape == (HEIGHT, WIDTH, 3)
    assert image.rgb.flags["C_CONTIGUOUS"]
    assert image.alpha.dtype == np.float32 and image.alpha.shape == (HEIGHT, WIDTH)


def test_when_input_arrays_are_strided_views_then_pixels_are_written_correctly(tmp_path):
    rgba = np.random.default_rng(1).random((HEIGHT, WIDTH, 4), dtype=np.float32)
    path = tmp_path / "out.exr"
    write_exr(path, rgba[..., :3], rgba[..., 3], layers={"extra.Y": rgba[::1, :, 1]},
              pixel_type="float")

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, rgba[..., :3])
    np.testing.assert_array_equal(image.alpha, rgba[..., 3])
    np.testing.assert_array_equal(image.layers["extra.Y"], rgba[..., 1])


# --- windows and metadata ------------------------------------------------------------------


def test_when_data_window_has_overscan_and_negative_origin_then_both_windows_are_kept(tmp_path):
    data_window = Window(-4, -3, WIDTH - 5, HEIGHT - 4)  # larger than the display window
    display_window = Window(0, 0, 9, 5)
    rgb, alpha, _ = _image()
    path = tmp_path / "overscan.exr"
    write_exr(path, rgb, alpha, data_window=data_window, display_window=display_window)

    image = read_exr(path)

    assert image.data_window == data_window
    assert image.display_window == display_window
    assert (image.data_window.width, image.data_window.height) == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(image.rgb, _as_stored(rgb, "half"))


def test_when_no_windows_given_then_both_default_to_the_image_size(tmp_path):
    rgb, _, _ = _image()
    path = tmp_path / "plain.exr"
    write_exr(path, rgb)

    image = read_exr(path)

    assert image.data_window == Window.from_size(WIDTH, HEIGHT) == Window(0, 0, WIDTH - 1,
                                                                          HEIGHT - 1)
    assert image.display_window == image.data_window


def test_when_data_window_does_not_match_the_array_then_value_error(tmp_path):
    rgb, _, _ = _image()
    with pytest.raises(ValueError, match="data window"):
        write_exr(tmp_path / "bad.exr", rgb, data_window=Window(0, 0, WIDTH, HEIGHT))
    assert list(tmp_path.iterdir()) == []


def test_when_metadata_written_then_read_back_as_strings_without_structural_attributes(tmp_path):
    metadata = {"mattekit/engine": "rvm", "mattekit/model_hash": "sha256:abc", "comments": "ünï ✓"}
    rgb, _, _ = _image()
    path = tmp_path / "meta.exr"
    write_exr(path, rgb, metadata=metadata, pixel_aspect=2.0)

    image = read_exr(path)

    assert image.metadata == metadata
    assert image.pixel_aspect == 2.0


def test_when_metadata_key_is_reserved_or_value_not_a_string_then_error_and_no_file(tmp_path):
    rgb, _, _ = _image()
    with pytest.raises(ValueError, match="reserved"):
        write_exr(tmp_path / "a.exr", rgb, metadata={"compression": "zip"})
    with pytest.raises(TypeError, match="mattekit/frame"):
        write_exr(tmp_path / "b.exr", rgb, metadata={"mattekit/frame": 1001})
    assert list(tmp_path.iterdir()) == []


# --- channel names -------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("fg.red", "fg.R"), ("fg.green", "fg.G"), ("fg.blue", "fg.B"), ("fg.alpha", "fg.A"),
    ("red", "R"), ("green", "G"), ("blue", "B"), ("alpha", "A"),
    ("rgba.red", "R"), ("rgba.alpha", "A"), ("rgba.R", "R"), ("rgb.blue", "B"),
    ("trimap.Y", "trimap.Y"), ("R", "R"), ("fg.R", "fg.R"), ("depth.Z", "depth.Z"),
    ("rgba.Z", "rgba.Z"), ("a.b.red", "a.b.R"),
])
def test_when_channel_name_given_then_canonical_name_is_returned(name, expected):
    assert canonical_channel_name(name) == expected


def test_when_file_uses_nuke_rgba_spellings_then_they_read_as_rgb_alpha_and_short_layers(tmp_path):
    rgb, alpha, _ = _image()
    path = tmp_path / "nuke.exr"
    _write_raw(path, {
        "rgba.red": rgb[..., 0], "rgba.green": rgb[..., 1], "rgba.blue": rgb[..., 2],
        "rgba.alpha": alpha, "fg.red": rgb[..., 1], "fg.green": rgb[..., 2], "fg.blue": alpha,
    })

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, rgb)
    np.testing.assert_array_equal(image.alpha, alpha)
    assert set(image.layers) == {"fg.R", "fg.G", "fg.B"}
    np.testing.assert_array_equal(image.layers["fg.B"], alpha)
    assert image.pixel_type == "float"


def test_when_file_uses_bare_red_green_blue_alpha_then_they_read_as_rgba(tmp_path):
    rgb, alpha, _ = _image()
    path = tmp_path / "bare.exr"
    _write_raw(path, {"red": rgb[..., 0], "green": rgb[..., 1], "blue": rgb[..., 2],
                      "alpha": alpha})

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, rgb)
    np.testing.assert_array_equal(image.alpha, alpha)
    assert image.layers == {}


def test_when_layer_written_with_nuke_spelling_then_read_back_with_short_name(tmp_path):
    rgb, _, _ = _image()
    path = tmp_path / "fg.exr"
    write_exr(path, rgb, layers={"fg.red": rgb[..., 0]}, pixel_type="float")

    image = read_exr(path)

    assert list(image.layers) == ["fg.R"]
    np.testing.assert_array_equal(image.layers["fg.R"], rgb[..., 0])


def test_when_two_layers_share_a_canonical_name_then_value_error(tmp_path):
    rgb, _, _ = _image()
    with pytest.raises(ValueError, match="fg.R"):
        write_exr(tmp_path / "x.exr", rgb, layers={"fg.R": rgb[..., 0], "fg.red": rgb[..., 1]})
    with pytest.raises(ValueError, match="'A'"):
        write_exr(tmp_path / "x.exr", rgb, layers={"rgba.alpha": rgb[..., 0]})


def test_when_file_is_luminance_only_then_y_is_replicated_to_rgb(tmp_path):
    luminance = _image()[0][..., 1]
    path = tmp_path / "grey.exr"
    _write_raw(path, {"Y": luminance.astype(np.float16)})

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, np.repeat(_as_stored(luminance, "half")[..., None],
                                                       3, axis=-1))
    assert image.pixel_type == "half" and image.layers == {}


def test_when_multipart_file_then_channels_of_all_parts_are_merged(tmp_path):
    rgb, alpha, layers = _image()
    path = tmp_path / "multi.exr"
    parts = [
        OpenEXR.Part({}, {"R": rgb[..., 0].copy(), "G": rgb[..., 1].copy(),
                          "B": rgb[..., 2].copy(), "A": alpha}, "rgba"),
        OpenEXR.Part({}, {"trimap.Y": layers["trimap.Y"]}, "trimap"),
    ]
    OpenEXR.File(parts).write(str(path))

    image = read_exr(path)

    np.testing.assert_array_equal(image.rgb, rgb)
    np.testing.assert_array_equal(image.layers["trimap.Y"], layers["trimap.Y"])


# --- unusable files ------------------------------------------------------------------------


def test_when_exr_is_truncated_then_exr_error_names_path_and_frame(tmp_path):
    rgb, alpha, _ = _image()
    path = tmp_path / "plate.1001.exr"
    write_exr(path, np.tile(rgb, (8, 8, 1)), np.tile(alpha, (8, 8)))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])

    with pytest.raises(ExrError, match="truncated or corrupt") as caught:
        read_exr(path, 1001)

    message = str(caught.value)
    assert str(path) in message and "frame 1001" in message
    assert caught.value.frame == 1001 and "\n" not in message


def test_when_file_is_garbage_then_exr_error_says_not_an_exr(tmp_path):
    path = tmp_path / "garbage.exr"
    path.write_bytes(b"this is not an image " * 50)

    with pytest.raises(ExrError, match="not an OpenEXR file") as caught:
        read_exr(path, 12)

    assert str(path) in str(caught.value) and "frame 12" in str(caught.value)


def test_when_file_is_missing_or_empty_then_exr_error(tmp_path):
    with pytest.raises(ExrError, match="not found"):
        read_exr(tmp_path / "missing.exr", 3)
    (tmp_path / "empty.exr").write_bytes(b"")
    with pytest.raises(ExrError, match="empty"):
        read_exr(tmp_path / "empty.exr")


def test_when_file_has_only_a_trimap_then_exr_error_lists_the_channels(tmp_path):
    path = tmp_path / "trimap.exr"
    _write_raw(path, {"trimap.Y": np.zeros((HEIGHT, WIDTH), np.float32)})

    with pytest.raises(ExrError, match=r"no RGB channels \(has: trimap\.Y\)"):
        read_exr(path, 5)


def test_when_rgb_not_needed_then_a_trimap_only_file_is_read(tmp_path):
    trimap = np.full((HEIGHT, WIDTH), 0.5, np.float32)
    path = tmp_path / "trimap.exr"
    _write_raw(path, {"trimap.Y": trimap})

    image = read_exr(path, need_rgb=False)

    assert image.rgb is None
    np.testing.assert_array_equal(image.layers["trimap.Y"], trimap)


def test_when_rgb_channels_are_uint_then_exr_error(tmp_path):
    ids = np.arange(HEIGHT * WIDTH, dtype=np.uint32).reshape(HEIGHT, WIDTH)
    path = tmp_path / "ids.exr"
    _write_raw(path, {"R": ids, "G": ids, "B": ids})

    with pytest.raises(ExrError, match="UINT"):
        read_exr(path)


def test_when_file_is_deep_then_exr_error_says_deep_is_unsupported(tmp_path):
    samples = np.empty((2, 3), dtype=object)
    for index in np.ndindex(samples.shape):
        samples[index] = np.ones(2, dtype=np.float32)
    path = tmp_path / "deep.exr"
    OpenEXR.File({"type": OpenEXR.deepscanline, "compression": OpenEXR.ZIPS_COMPRESSION},
                 {"R": samples, "G": samples, "B": samples}).write(str(path))

    with pytest.raises(ExrError, match="deep"):
        read_exr(path)


@pytest.mark.parametrize("x_max, reason", [
    (-5, "truncated or corrupt"),  # OpenEXR itself refuses an inverted window
    (10_000_000, "implausibly large"),  # OpenEXR accepts it; exrio refuses before allocating
])
def test_when_header_data_window_is_empty_or_absurd_then_exr_error(tmp_path, x_max, reason):
    path = tmp_path / "bad_window.exr"
    write_exr(path, _image()[0], compression="none")
    _patch_data_window(path, x_max)

    with pytest.raises(ExrError, match=reason) as caught:
        read_exr(path, 8)

    assert "frame 8" in str(caught.value)


# --- atomic writes -------------------------------------------------------------------------


def test_when_write_succeeds_then_only_the_target_file_is_left(tmp_path):
    rgb, alpha, _ = _image()
    path = tmp_path / "out.exr"
    path.write_bytes(b"old version")

    write_exr(str(path), rgb, alpha)

    assert [entry.name for entry in tmp_path.iterdir()] == ["out.exr"]
    assert read_exr(path).rgb.shape == (HEIGHT, WIDTH, 3)


def test_when_folder_does_not_exist_then_output_error_and_nothing_written(tmp_path):
    target = tmp_path / "missing" / "out.exr"

    with pytest.raises(OutputError, match="does not exist") as caught:
        write_exr(target, _image()[0])

    assert str(target) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_when_compression_is_unknown_then_value_error_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="zip, piz") as caught:
        write_exr(tmp_path / "out.exr", _image()[0], compression="lzw")

    assert "dwaa" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_when_write_fails_midway_then_temp_is_removed_and_old_file_kept(tmp_path, monkeypatch):
    path = tmp_path / "out.exr"
    path.write_bytes(b"previous frame")
    temps = []

    class FailingFile:
        def __init__(self, header, channels):
            pass

        def write(self, temp):
            temps.append(os.path.basename(temp))
            with open(temp, "wb") as stream:
                stream.write(b"partial")
            raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(exrio.OpenEXR, "File", FailingFile)
    with pytest.raises(OutputError, match="disk full") as caught:
        write_exr(path, _image()[0])

    assert str(path) in str(caught.value) and "second line" not in str(caught.value)
    assert temps[0].startswith(".") and ".tmp" in temps[0] and temps[0].endswith(".exr")
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.exr"]
    assert path.read_bytes() == b"previous frame"


def test_when_target_is_a_folder_then_output_error_and_no_temp_left(tmp_path):
    (tmp_path / "out.exr").mkdir()

    with pytest.raises(OutputError):
        write_exr(tmp_path / "out.exr", _image()[0])

    assert [entry.name for entry in tmp_path.iterdir()] == ["out.exr"]


# --- PNG, JPEG, TIFF -----------------------------------------------------------------------


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def test_when_png_is_8_bit_rgba_then_values_are_scaled_to_0_1_and_alpha_kept(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    alpha = np.full((4, 6), 51, np.uint8)
    path = tmp_path / "plate.png"
    assert cv2.imwrite(str(path), np.dstack([_bgr(rgb), alpha]))

    image = read_image(path, 1)

    np.testing.assert_array_equal(image.rgb[0, 0], np.float32([1.0, 128 / 255, 0.0]))
    np.testing.assert_allclose(image.alpha, 0.2, atol=1e-7)
    assert image.rgb.dtype == np.float32 and image.rgb.flags["C_CONTIGUOUS"]
    assert image.pixel_type == "uint8" and is_integer_encoded(image)
    assert image.data_window == image.display_window == Window.from_size(6, 4)
    assert image.metadata == {} and image.layers == {}


def test_when_png_is_16_bit_then_values_use_the_full_16_bit_scale(tmp_path):
    rgb = np.zeros((3, 5, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 1
    path = tmp_path / "plate16.png"
    assert cv2.imwrite(str(path), _bgr(rgb))

    image = read_image(path)

    np.testing.assert_array_equal(image.rgb[2, 4],
                                  np.float32([1.0, np.float32(32768) / np.float32(65535),
                                              np.float32(1) / np.float32(65535)]))
    assert image.alpha is None and image.pixel_type == "uint16" and is_integer_encoded(image)


def test_when_png_is_greyscale_then_grey_is_replicated_to_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "grey.png"
    assert cv2.imwrite(str(path), grey)

    image = read_image(path)

    np.testing.assert_array_equal(image.rgb, np.repeat((grey / np.float32(255))[..., None], 3, -1))


def test_when_jpeg_is_read_then_flat_colour_is_close_to_what_was_written(tmp_path):
    rgb = np.empty((16, 16, 3), np.uint8)
    rgb[...] = (200, 100, 50)
    path = tmp_path / "plate.jpeg"
    assert cv2.imwrite(str(path), _bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, 100])

    image = read_image(path)

    np.testing.assert_allclose(image.rgb, rgb / 255.0, atol=3 / 255)
    assert image.pixel_type == "uint8"


@pytest.mark.parametrize("dtype, scale, pixel_type", [
    (np.uint8, 255, "uint8"), (np.uint16, 65535, "uint16"), (np.float32, 1, "float"),
])
def test_when_tiff_is_read_then_values_and_pixel_type_match_its_depth(tmp_path, dtype, scale,
                                                                      pixel_type):
    values = np.array([0.0, 0.25, 1.0]) if dtype != np.float32 else np.array([-0.5, 0.25, 37.5])
    rgb = np.empty((2, 3, 3), dtype)
    rgb[...] = (values * scale).astype(dtype)
    path = tmp_path / "plate.tif"
    assert cv2.imwrite(str(path), _bgr(rgb))

    image = read_image(path)

    np.testing.assert_allclose(image.rgb[1, 2], rgb[1, 2].astype(np.float64) / scale, rtol=1e-6)
    assert image.pixel_type == pixel_type
    assert is_integer_encoded(image) == (pixel_type != "float")


def test_when_read_image_given_an_exr_then_it_reads_it_as_exr(tmp_path):
    rgb, alpha, _ = _image()
    path = tmp_path / "plate.EXR"
    write_exr(path, rgb, alpha, pixel_type="float")

    image = read_image(path)

    assert isinstance(image, ExrImage)
    np.testing.assert_array_equal(image.rgb, rgb)
    assert image.pixel_type == "float" and not is_integer_encoded(image)


def test_when_png_is_corrupt_then_input_error_names_path_and_frame(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)

    with pytest.raises(InputError, match="cannot decode") as caught:
        read_image(path, 1042)

    assert str(path) in str(caught.value) and "frame 1042" in str(caught.value)


def test_when_extension_is_unsupported_or_file_missing_then_input_error(tmp_path):
    with pytest.raises(InputError, match="unsupported image type '.dpx'"):
        read_image(tmp_path / "plate.dpx")
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "plate.png", 7)
