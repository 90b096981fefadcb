"""Damaged EXR files: bytes changed in the header, channels of the wrong type, huge, negative
or empty data windows. Every file either reads as a consistent image or raises ExrError naming
the file (never another exception, never a huge allocation)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mattekit.inference.errors import ExrError
from mattekit.inference.exrio import read_exr, write_exr

from .conftest import FUZZ

INT32 = st.integers(-(2**31), 2**31 - 1)
WINDOW_VALUES = st.one_of(INT32, st.integers(-4, 12), st.sampled_from([0, 7, 65535, 65536]))


@pytest.fixture(scope="module")
def valid_exr(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("exr") / "good.exr"
    rng = np.random.default_rng(3)
    write_exr(path, rng.random((4, 8, 3), dtype=np.float32), rng.random((4, 8), np.float32),
              compression="none", pixel_type="half")
    return path.read_bytes()


def header_end(data: bytes) -> int:
    """Offset just past the header (its attribute list ends with an empty name)."""
    return data.index(b"lineOrder") + 64


def read_outcome(path: Path) -> None:
    """The property every damaged file must have."""
    try:
        image = read_exr(path, frame=7)
    except ExrError as exc:
        message = str(exc)
        assert str(path) in message and "frame 7" in message
        assert "\n" not in message
        return
    window = image.data_window
    assert image.rgb is not None and image.rgb.shape == (window.height, window.width, 3)
    assert image.rgb.dtype == np.float32


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                      max_size=4))
def test_when_header_bytes_are_damaged_then_read_or_exr_error(tmp_path_factory, valid_exr,
                                                               edits):
    data = bytearray(valid_exr)
    end = header_end(valid_exr)
    for position, value in edits:
        data[position % end] = value
    path = tmp_path_factory.mktemp("damaged") / "plate.0007.exr"
    path.write_bytes(bytes(data))
    read_outcome(path)


@FUZZ
@given(cut=st.integers(0, 10_000))
def test_when_a_file_is_truncated_anywhere_then_exr_error(tmp_path_factory, valid_exr, cut):
    path = tmp_path_factory.mktemp("cut") / "plate.0007.exr"
    path.write_bytes(valid_exr[: cut % len(valid_exr)])
    with pytest.raises(ExrError, match="plate.0007.exr, frame 7"):
        read_exr(path, frame=7)


def with_window(data: bytes, name: bytes, box: tuple[int, int, int, int]) -> bytes:
    tag = name + b"\x00box2i\x00" + struct.pack("<i", 16)
    start = data.index(tag) + len(tag)
    return data[:start] + struct.pack("<4i", *box) + data[start + 16:]


@FUZZ
@given(box=st.tuples(WINDOW_VALUES, WINDOW_VALUES, WINDOW_VALUES, WINDOW_VALUES),
       which=st.sampled_from([b"dataWindow", b"displayWindow"]))
def test_when_a_window_is_huge_negative_or_empty_then_read_or_exr_error(tmp_path_factory,
                                                                        valid_exr, box, which):
    path = tmp_path_factory.mktemp("window") / "plate.0007.exr"
    path.write_bytes(with_window(valid_exr, which, box))
    read_outcome(path)


@pytest.mark.parametrize("box", [(0, 0, -1, 3), (5, 5, 4, 4), (0, 0, 2**31 - 2, 3),
                                 (-(2**31), 0, 2**31 - 1, 0), (0, 0, 65535, 65535)])
def test_when_a_data_window_is_zero_size_or_absurd_then_the_error_names_a_corrupt_header(
        tmp_path, valid_exr, box):
    path = tmp_path / "plate.0007.exr"
    path.write_bytes(with_window(valid_exr, b"dataWindow", box))
    # OpenEXR itself refuses most of these while reading the header; mattekit refuses the
    # rest (empty, implausibly large) before allocating anything
    with pytest.raises(ExrError, match=r"plate\.0007\.exr, frame 7: .*(corrupt|empty)"):
        read_exr(path, frame=7)


CHANNEL_TYPES = st.sampled_from([None, np.float16, np.float32, np.uint32])
CHANNEL_NAMES = st.sampled_from([("R", "G", "B", "A"), ("rgba.red", "rgba.green", "rgba.blue",
                                                        "rgba.alpha"), ("Y", "RY", "BY", "A")])


@pytest.mark.filterwarnings("ignore:.*skipping channel")  # a uint layer is skipped, with a warning
@FUZZ
@given(types=st.tuples(CHANNEL_TYPES, CHANNEL_TYPES, CHANNEL_TYPES, CHANNEL_TYPES),
       names=CHANNEL_NAMES, extra=st.sampled_from([None, np.uint32, np.float16]))
def test_when_channels_have_any_type_then_read_or_exr_error(tmp_path_factory, types, names,
                                                            extra):
    channels = {}
    for name, dtype in zip(names, types):
        if dtype is not None:
            channels[name] = np.ones((4, 8), dtype=dtype)
    if extra is not None:
        channels["trimap.Y"] = np.zeros((4, 8), dtype=extra)
    if not channels:
        channels["depth.Z"] = np.zeros((4, 8), np.float32)
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}
    path = tmp_path_factory.mktemp("channels") / "plate.0007.exr"
    OpenEXR.File(header, channels).write(str(path))
    rgb_types = [t for n, t in zip(names, types) if n[-1] in "RGB" or n.endswith(("red",
                                                                                 "green",
                                                                                 "blue"))]
    try:
        image = read_exr(path, frame=7)
    except ExrError as exc:
        assert str(path) in str(exc)
        return
    # read: only float colour was accepted
    assert image.rgb is not None and image.rgb.shape == (4, 8, 3)
    if names[0] == "R" or names[0] == "rgba.red":
        assert np.uint32 not in rgb_types[:3] and None not in rgb_types[:3]
