"""Read and write the images of a matting job: OpenEXR plates and mattes, plus PNG/JPEG/TIFF.

Why a module of its own: every engine and the worker read plates and write mattes through
the same data contract (DESIGN.md, "Data contract"), so the contract lives in one place:

- pixels are float32, RGB as one C-contiguous ``(H, W, 3)`` array over the *data window*;
  alpha and every other channel ("layers", e.g. ``trimap.Y``) as ``(H, W)`` arrays;
- the data window and display window are kept exactly (overscan, negative origins);
- Nuke's channel spellings (``fg.red``, ``rgba.alpha``) are read as ``fg.R`` and ``A``;
- outputs are written atomically (temp file in the same folder, then ``os.replace``), so a
  crashed render or a reader polling the folder never sees half a file.

Reading sits in a 4K render pipeline: the pixels are decoded by OpenEXR (which releases the
GIL and uses its own thread pool, see ``configure_threads``) and converted to float32 once,
straight into the preallocated ``(H, W, 3)`` array.
"""
from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import OpenEXR

from .errors import ExrError, InputError, OutputError

PathLike = Union[str, "os.PathLike[str]"]

COMPRESSIONS: dict[str, "OpenEXR.Compression"] = {
    "none": OpenEXR.NO_COMPRESSION,
    "rle": OpenEXR.RLE_COMPRESSION,
    "zips": OpenEXR.ZIPS_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
    "pxr24": OpenEXR.PXR24_COMPRESSION,
    "dwaa": OpenEXR.DWAA_COMPRESSION,
    "dwab": OpenEXR.DWAB_COMPRESSION,
}
PIXEL_TYPES = {"half": np.float16, "float": np.float32}

# A data window beyond these is a corrupt header, not an image: refuse it before allocating.
MAX_DIMENSION = 65536
MAX_PIXELS = 1 << 28  # 16384 x 16384

# Header attributes that describe the file's structure; everything else string-valued is metadata.
_STRUCTURAL_ATTRIBUTES = frozenset({
    "channels", "chunkCount", "compression", "dataWindow", "displayWindow", "lineOrder",
    "maxSamplesPerPixel", "multiView", "name", "pixelAspectRatio", "screenWindowCenter",
    "screenWindowWidth", "tiles", "type", "version", "view",
})
_DEEP_TYPES = (OpenEXR.deepscanline, OpenEXR.deeptile)
_NUKE_CHANNEL_SUFFIXES = {"red": "R", "green": "G", "blue": "B", "alpha": "A"}
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_OPENCV_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_INTEGER_PIXEL_TYPES = ("uint8", "uint16")


@dataclass(frozen=True)
class Window:
    """An EXR box with inclusive corners, as in the header: (x_min, y_min) - (x_max, y_max)."""

    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @property
    def width(self) -> int:
        return self.x_max - self.x_min + 1

    @property
    def height(self) -> int:
        return self.y_max - self.y_min + 1

    @classmethod
    def from_size(cls, width: int, height: int) -> Window:
        """The window of a ``width`` x ``height`` image with its origin at (0, 0)."""
        return cls(0, 0, int(width) - 1, int(height) - 1)

    @classmethod
    def _from_header(cls, box: tuple) -> Window:
        (x_min, y_min), (x_max, y_max) = box
        return cls(int(x_min), int(y_min), int(x_max), int(y_max))

    def _to_header(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.x_min, self.y_min), (self.x_max, self.y_max)


@dataclass
class ExrImage:
    """An image as the pipeline sees it, whatever file it came from (see module docstring)."""

    rgb: Optional[np.ndarray]
    alpha: Optional[np.ndarray]
    layers: dict[str, np.ndarray]
    data_window: Window
    display_window: Window
    metadata: dict[str, str]
    pixel_type: str
    pixel_aspect: float = 1.0


def configure_threads(count: Optional[int] = None) -> int:
    """Set OpenEXR's global decode/encode thread pool; returns the count now in use.

    ``None`` means ``$MATTEKIT_EXR_THREADS`` if set, else the CPUs this process may use
    (at most 8). OpenEXR's own default is 0 (everything on the calling thread), which on
    2 cores makes a 4K half RGBA read ~1.3x and a piz/dwaa write ~1.5x slower. OpenEXR
    releases the GIL while it works, so two worker threads reading or writing at once get
    the same throughput with either setting; the pool only shortens single calls.
    """
    if count is None:
        from_env = os.environ.get("MATTEKIT_EXR_THREADS", "").strip()
        if from_env:
            try:
                count = int(from_env)
            except ValueError:
                warnings.warn(f"MATTEKIT_EXR_THREADS={from_env!r} is not a whole number; ignored",
                              stacklevel=2)
        if count is None:
            if hasattr(os, "sched_getaffinity"):
                cpus = len(os.sched_getaffinity(0))
            else:
                cpus = os.cpu_count() or 1
            count = min(8, cpus)
    OpenEXR.set_global_thread_count(max(0, int(count)))
    return OpenEXR.global_thread_count()


if OpenEXR.global_thread_count() == 0:  # leave a count someone else chose alone
    configure_threads()


def canonical_channel_name(name: str) -> str:
    """Nuke's long spellings to EXR's short ones: ``fg.red`` -> ``fg.R``, ``rgba.alpha`` -> ``A``.

    Other names are returned unchanged (``trimap.Y``).
    """
    layer, dot, suffix = name.rpartition(".")
    suffix = _NUKE_CHANNEL_SUFFIXES.get(suffix.lower(), suffix)
    if layer.lower() in ("rgba", "rgb") and suffix in ("R", "G", "B", "A"):
        return suffix
    return f"{layer}{dot}{suffix}"


def read_exr(path: PathLike, frame: Optional[int] = None, *, need_rgb: bool = True) -> ExrImage:
    """Read an EXR's RGB, alpha and other channels as float32 over its data window.

    ``frame`` is only used to name the frame in errors. With ``need_rgb`` a file without
    R, G, B (or a luminance ``Y``, replicated to RGB) is an error; without it ``rgb`` may be None.
    Multi-part files are merged (parts with another data window or deep data are skipped).
    Raises ExrError naming the path and frame for any file that cannot be used.
    """
    fspath = os.fspath(path)
    if not os.path.isfile(fspath):
        cause = "is a folder, not an EXR file" if os.path.isdir(fspath) else "file not found"
        raise ExrError(cause, path, frame)

    try:
        header_file = OpenEXR.File(fspath, header_only=True)
        headers = [header_file.header(index) for index in range(len(header_file.parts))]
    except Exception as exc:
        raise ExrError(_open_failure(fspath, exc), path, frame) from exc
    primary = _primary_part(headers, path, frame)
    data_window = _checked_data_window(headers[primary], path, frame)

    try:
        exr = OpenEXR.File(fspath, separate_channels=True)
        if len(exr.parts) != len(headers):
            raise ExrError("cannot read EXR pixels (file is truncated or corrupt)", path, frame)
        raw_channels = _merged_channels(exr, headers, primary, data_window, path)
    except ExrError:
        raise
    except Exception as exc:
        raise ExrError(f"cannot read EXR pixels (file is truncated or corrupt): {_first_line(exc)}",
                       path, frame) from exc

    header = headers[primary]
    channels = _canonical_channels(raw_channels)
    shape = (data_window.height, data_window.width)
    rgb, pixel_type = _rgb_from_channels(channels, shape, need_rgb, path, frame)
    alpha = channels.pop("A", None)
    if alpha is not None:
        alpha = _as_float_plane(alpha, "A", shape, path, frame)
    layers = _layers_from_channels(channels, shape, path)
    if pixel_type is None:
        first = alpha if alpha is not None else next(iter(raw_channels.values()), None)
        pixel_type = "half" if first is not None and first.dtype == np.float16 else "float"
    return ExrImage(
        rgb=rgb,
        alpha=alpha,
        layers=layers,
        data_window=data_window,
        display_window=Window._from_header(header["displayWindow"]),
        metadata={key: value for key, value in header.items()
                  if isinstance(value, str) and key not in _STRUCTURAL_ATTRIBUTES},
        pixel_type=pixel_type,
        pixel_aspect=float(header.get("pixelAspectRatio", 1.0)),
    )


def write_exr(
    path: PathLike,
    rgb: np.ndarray,
    alpha: Optional[np.ndarray] = None,
    *,
    layers: Optional[dict[str, np.ndarray]] = None,
    data_window: Optional[Window] = None,
    display_window: Optional[Window] = None,
    metadata: Optional[dict[str, str]] = None,
    pixel_type: str = "half",
    compression: str = "zip",
    pixel_aspect: float = 1.0,
) -> None:
    """Write R, G, B (and A, and ``layers`` by canonical name) to a scanline EXR, atomically.

    ``rgb`` is ``(H, W, 3)`` over ``data_window`` (default ``(0,0)-(W-1,H-1)``);
    ``display_window`` defaults to the data window. Bad arguments raise ValueError or TypeError
    before anything touches the disk; a failed write raises OutputError and leaves no file.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown EXR compression {compression!r}; "
                         f"valid: {', '.join(COMPRESSIONS)}")
    if pixel_type not in PIXEL_TYPES:
        raise ValueError(f"unknown EXR pixel type {pixel_type!r}; valid: {', '.join(PIXEL_TYPES)}")
    dtype = PIXEL_TYPES[pixel_type]
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be an (H, W, 3) array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    data_window = data_window or Window.from_size(width, height)
    if (data_window.height, data_window.width) != (height, width):
        raise ValueError(f"data window {data_window} is {data_window.width}x{data_window.height} "
                         f"but rgb is {width}x{height}")
    display_window = display_window or data_window
    if display_window.width < 1 or display_window.height < 1:
        raise ValueError(f"display window {display_window} is empty")

    # The binding silently writes wrong pixels from non-contiguous arrays: always contiguous.
    channels: dict[str, np.ndarray] = {"RGB": np.ascontiguousarray(rgb, dtype=dtype)}
    if alpha is not None:
        channels["A"] = _plane_for_writing(alpha, "alpha", (height, width), dtype)
    for name, plane in (layers or {}).items():
        canonical = canonical_channel_name(name)
        if canonical in ("R", "G", "B", "A") or canonical in channels:
            raise ValueError(f"layer {name!r} clashes with another channel named {canonical!r}")
        channels[canonical] = _plane_for_writing(plane, f"layer {name!r}", (height, width), dtype)

    header: dict[str, object] = {
        "type": OpenEXR.scanlineimage,
        "compression": COMPRESSIONS[compression],
        "dataWindow": data_window._to_header(),
        "displayWindow": display_window._to_header(),
        "lineOrder": OpenEXR.INCREASING_Y,
        "pixelAspectRatio": float(pixel_aspect),
    }
    for key, value in (metadata or {}).items():
        if key in _STRUCTURAL_ATTRIBUTES:
            raise ValueError(f"metadata key {key!r} is a reserved EXR attribute")
        if not isinstance(value, str):
            raise TypeError(f"metadata {key!r} must be a str, got {type(value).__name__}")
        header[key] = value

    _write_atomically(path, lambda temp: OpenEXR.File(header, channels).write(temp))


def read_image(path: PathLike, frame: Optional[int] = None) -> ExrImage:
    """Read an EXR, PNG, JPEG or TIFF as an ExrImage (8/16-bit files scaled to 0..1 float32).

    Raises InputError (ExrError for EXR) naming the path and frame when it cannot be read.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".exr":
        return read_exr(path, frame)
    if suffix not in _OPENCV_SUFFIXES:
        raise InputError(f"unsupported image type {suffix or '(no extension)'!r}; "
                         f"supported: .exr, {', '.join(_OPENCV_SUFFIXES)}", path, frame)
    return _read_with_opencv(path, frame)


def is_integer_encoded(image: ExrImage) -> bool:
    """True for images from 8- or 16-bit integer files (display-referred, usually sRGB)."""
    return image.pixel_type in _INTEGER_PIXEL_TYPES


# --- reading helpers ------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _open_failure(fspath: str, exc: Exception) -> str:
    """One line saying why OpenEXR could not open a file that exists."""
    try:
        with open(fspath, "rb") as stream:
            magic = stream.read(4)
    except OSError as os_error:
        return f"cannot open file: {os_error.strerror or os_error}"
    if not magic:
        return "file is empty"
    if magic != _EXR_MAGIC:
        return "not an OpenEXR file (wrong magic number)"
    detail = _first_line(exc)
    if detail.startswith("Unable to open"):  # the binding's generic text; its cause went to stderr
        return "cannot read EXR header (file is truncated or corrupt)"
    return f"cannot read EXR (file is truncated or corrupt): {detail}"


def _primary_part(headers: list[dict], path: PathLike, frame: Optional[int]) -> int:
    """Index of the first non-deep part."""
    for index, header in enumerate(headers):
        if header.get("type") not in _DEEP_TYPES:
            return index
    if not headers:
        raise ExrError("cannot read EXR (file is truncated or corrupt): no parts", path, frame)
    raise ExrError("deep EXR files are not supported; flatten it first (e.g. Nuke DeepToImage)",
                   path, frame)


def _checked_data_window(header: dict, path: PathLike, frame: Optional[int]) -> Window:
    if "dataWindow" not in header or "displayWindow" not in header:
        raise ExrError("cannot read EXR (file is truncated or corrupt): header has no data window",
                       path, frame)
    window = Window._from_header(header["dataWindow"])
    if window.width < 1 or window.height < 1:
        raise ExrError(f"EXR data window is empty: {window}", path, frame)
    if (window.width > MAX_DIMENSION or window.height > MAX_DIMENSION
            or window.width * window.height > MAX_PIXELS):
        raise ExrError(f"EXR data window is implausibly large ({window.width}x{window.height}); "
                       "the header is probably corrupt", path, frame)
    return window


def _merged_channels(exr: OpenEXR.File, headers: list[dict], primary: int, data_window: Window,
                     path: PathLike) -> dict[str, np.ndarray]:
    """Pixels of every usable part, by raw channel name (the first part wins a repeated name)."""
    merged: dict[str, np.ndarray] = {}
    for index, header in enumerate(headers):
        if header.get("type") in _DEEP_TYPES:
            warnings.warn(f"{path}: skipping deep part {index}", stacklevel=3)
            continue
        if index != primary and Window._from_header(header["dataWindow"]) != data_window:
            warnings.warn(f"{path}: skipping part {index} ({header.get('name', '')!r}), "
                          "its data window differs from the first part's", stacklevel=3)
            continue
        for name, channel in exr.channels(index).items():
            merged.setdefault(name, channel.pixels)
    return merged


def _canonical_channels(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Key by canonical name; where two spellings collide, the canonical spelling wins."""
    channels: dict[str, np.ndarray] = {}
    for name, pixels in raw.items():
        canonical = canonical_channel_name(name)
        if canonical not in channels or name == canonical:
            channels[canonical] = pixels
    return channels


def _rgb_from_channels(
    channels: dict[str, np.ndarray], shape: tuple[int, int], need_rgb: bool,
    path: PathLike, frame: Optional[int],
) -> tuple[Optional[np.ndarray], Optional[str]]:
    """Pop R, G, B (or a luminance Y) into one float32 (H, W, 3) array; None if absent."""
    if all(name in channels for name in ("R", "G", "B")):
        planes = [channels.pop(name) for name in ("R", "G", "B")]
    elif "Y" in channels and not ("RY" in channels or "BY" in channels):
        luminance = channels.pop("Y")
        planes = [luminance] * 3
    elif need_rgb:
        if "Y" in channels:
            raise ExrError("luminance/chroma EXR (Y, RY, BY) is not supported; convert it to RGB",
                           path, frame)
        present = ", ".join(sorted(channels)) or "none"
        raise ExrError(f"no RGB channels (has: {present})", path, frame)
    else:
        return None, None
    for name, plane in zip("RGB", planes):
        _check_plane(plane, name, shape, path, frame)
    rgb = np.empty((*shape, 3), dtype=np.float32)
    for index, plane in enumerate(planes):
        rgb[..., index] = plane
    pixel_type = "float" if any(plane.dtype == np.float32 for plane in planes) else "half"
    return rgb, pixel_type


def _check_plane(plane: np.ndarray, name: str, shape: tuple[int, int], path: PathLike,
                 frame: Optional[int]) -> None:
    if plane.dtype == np.uint32:
        raise ExrError(f"channel {name} holds integers (UINT), not colour", path, frame)
    if plane.dtype not in (np.float16, np.float32) or plane.shape != shape:
        raise ExrError(f"channel {name} is {plane.dtype} {plane.shape}, expected a float "
                       f"{shape[1]}x{shape[0]} plane (subsampled or deep channels are not "
                       "supported)",
                       path, frame)


def _as_float_plane(plane: np.ndarray, name: str, shape: tuple[int, int], path: PathLike,
                    frame: Optional[int]) -> np.ndarray:
    _check_plane(plane, name, shape, path, frame)
    return np.ascontiguousarray(plane, dtype=np.float32)  # no copy when already float32


def _layers_from_channels(channels: dict[str, np.ndarray], shape: tuple[int, int],
                          path: PathLike) -> dict[str, np.ndarray]:
    layers: dict[str, np.ndarray] = {}
    for name, plane in channels.items():
        if plane.dtype not in (np.float16, np.float32) or plane.shape != shape:
            warnings.warn(f"{path}: skipping channel {name!r} ({plane.dtype} {plane.shape}); "
                          "only full-size float channels are read", stacklevel=3)
            continue
        layers[name] = np.ascontiguousarray(plane, dtype=np.float32)
    return layers


def _read_with_opencv(path: PathLike, frame: Optional[int]) -> ExrImage:
    import cv2  # only the non-EXR path needs OpenCV, and it is slow to import

    fspath = os.fspath(path)
    if not os.path.isfile(fspath):
        raise InputError("is a folder, not an image" if os.path.isdir(fspath) else "file not found",
                         path, frame)
    try:
        # imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
        image = cv2.imdecode(np.fromfile(fspath, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as exc:
        raise InputError(f"cannot read image: {_first_line(exc)}", path, frame) from exc
    if image is None:
        raise InputError("cannot decode image (file is truncated, corrupt or of another type)",
                         path, frame)

    if image.dtype == np.uint8:
        pixel_type, scale = "uint8", np.float32(255)
    elif image.dtype == np.uint16:
        pixel_type, scale = "uint16", np.float32(65535)
    elif image.dtype in (np.float16, np.float32, np.float64):
        pixel_type, scale = "float", np.float32(1)
    else:
        raise InputError(f"unsupported pixel type {image.dtype}; use 8- or 16-bit, or float",
                         path, frame)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    height, width, count = image.shape
    if count in (1, 2):
        colour = image[..., :1]  # grey, broadcast to RGB below
    elif count in (3, 4):
        colour = image[..., 2::-1]  # OpenCV's BGR(A) -> RGB
    else:
        raise InputError(f"unsupported number of channels: {count}", path, frame)
    rgb = np.empty((height, width, 3), dtype=np.float32)
    np.divide(colour, scale, out=rgb, dtype=np.float32, casting="unsafe")
    alpha = None
    if count in (2, 4):
        alpha = np.divide(image[..., count - 1], scale, dtype=np.float32, casting="unsafe")
    window = Window.from_size(width, height)
    return ExrImage(rgb=rgb, alpha=alpha, layers={}, data_window=window, display_window=window,
                    metadata={}, pixel_type=pixel_type)


# --- writing helpers ------------------------------------------------------------------------

def _plane_for_writing(plane: np.ndarray, what: str, shape: tuple[int, int],
                       dtype: type) -> np.ndarray:
    plane = np.asarray(plane)
    if plane.shape != shape:
        raise ValueError(f"{what} must be an (H, W) array of shape {shape}, got {plane.shape}")
    return np.ascontiguousarray(plane, dtype=dtype)


def _write_atomically(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(temp)`` on a hidden temp file beside ``path``, then move it onto ``path``."""
    fspath = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(fspath)
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: cannot write EXR: the folder {folder} does not exist; "
                          "create it first")
    # Unique per call, so threads/processes writing the same frame never share a temp file.
    temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp.exr")
    try:
        write(temp)
        os.replace(temp, fspath)
    except BaseException as exc:
        try:
            os.remove(temp)
        except OSError:
            pass
        if isinstance(exc, Exception):
            raise OutputError(f"{path}: cannot write EXR: {_first_line(exc)}") from exc
        raise


__all__ = [
    "COMPRESSIONS",
    "ExrImage",
    "Window",
    "canonical_channel_name",
    "configure_threads",
    "is_integer_encoded",
    "read_exr",
    "read_image",
    "write_exr",
]
