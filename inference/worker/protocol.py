"""The worker protocol's messages: framing, job validation and error codes (see PROTOCOL.md).

Messages are JSON objects, one per line. Nothing here touches sockets; the server uses it.
"""
from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Optional

from mattekit.inference.errors import (
    CacheError,
    ColourError,
    EngineError,
    FramePatternError,
    InputError,
    MattekitError,
    NotImplementedEngineError,
    OutputError,
    RenderCancelled,
)
from mattekit.inference.render import RenderJob

MAX_LINE_BYTES = 1 << 20  # 1 MiB, newline included

UNAUTHORIZED = "unauthorized"
BAD_REQUEST = "bad_request"
MESSAGE_TOO_LARGE = "message_too_large"
FORBIDDEN_PATH = "forbidden_path"
INPUT_ERROR = "input_error"
ENGINE_ERROR = "engine_error"
NOT_IMPLEMENTED = "not_implemented"
CANCELLED = "cancelled"
INTERNAL = "internal"

DEVICES = ("auto", "cpu", "cuda")
COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "dwaa", "dwab")
PIXEL_TYPES = ("half", "float")
MAX_IO_THREADS = 64

# RenderJob fields a client may set, with the JSON types each accepts (None = null allowed).
_OPTIONAL_TEXT = (str, type(None))
JOB_FIELDS: Mapping[str, tuple[type, ...]] = {
    "node": (str,),
    "plate": (str,),
    "out": _OPTIONAL_TEXT,
    "clean_plate": _OPTIONAL_TEXT,
    "mask": _OPTIONAL_TEXT,
    "reference": _OPTIONAL_TEXT,
    "coarse": _OPTIONAL_TEXT,
    "frames": _OPTIONAL_TEXT,
    "engine": _OPTIONAL_TEXT,
    "colorspace": _OPTIONAL_TEXT,
    "ocio_config": _OPTIONAL_TEXT,
    "device": (str,),
    "params": (dict,),
    "compression": (str,),
    "pixel_type": (str,),
    "use_cache": (bool,),
    "io_threads": (int,),
}
# Set by the worker, never by a client: the cache root decides where the worker writes.
WORKER_FIELDS = ("cache_root",)
_TYPE_NAMES = {str: "a string", type(None): "null", dict: "an object", bool: "true or false",
               int: "an integer"}


class ProtocolError(MattekitError):
    """A request that breaks the protocol; ``code`` is the error code to reply with."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a line of compact UTF-8 JSON (NaN/Infinity refused: not JSON)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line into a JSON object; ``ProtocolError(bad_request)`` for anything else."""
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(BAD_REQUEST, f"message is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_REQUEST, "message must be a JSON object")
    return message


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": " ".join(str(message).split()) or code}


def code_for(exc: BaseException) -> Optional[str]:
    """The protocol error code of a mattekit error; None for anything else (a bug: internal)."""
    if isinstance(exc, ProtocolError):
        return exc.code
    if isinstance(exc, RenderCancelled):
        return CANCELLED
    if isinstance(exc, NotImplementedEngineError):
        return NOT_IMPLEMENTED
    if isinstance(exc, EngineError):
        return ENGINE_ERROR
    if isinstance(exc, (InputError, ColourError, FramePatternError, OutputError, CacheError)):
        return INPUT_ERROR
    if isinstance(exc, MattekitError):
        return INPUT_ERROR  # e.g. an engine named for another node: the request is at fault
    return None


def _check_type(name: str, value: Any) -> None:
    allowed = JOB_FIELDS[name]
    # bool is an int in Python, but `true` is not a thread count
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        wanted = " or ".join(_TYPE_NAMES[t] for t in allowed)
        raise ProtocolError(BAD_REQUEST, f"job field '{name}' must be {wanted}, "
                                         f"got {type(value).__name__}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ProtocolError(BAD_REQUEST, f"job field '{name}' must be one of "
                                         f"{', '.join(choices)}, got '{value}'")


def job_from_message(job: Any, cache_root: Path, default_device: str) -> RenderJob:
    """A RenderJob from the ``job`` object of a process request, every field checked.

    ``bad_request`` names the first field that is unknown, missing or of the wrong type. The
    worker's own cache root is filled in; relative paths are refused (the worker's working
    folder means nothing to a client).
    """
    if not isinstance(job, dict):
        raise ProtocolError(BAD_REQUEST, "'job' must be an object with the RenderJob fields")
    known = {f.name for f in fields(RenderJob)}
    for name in job:
        if name in WORKER_FIELDS:
            raise ProtocolError(BAD_REQUEST, f"job field '{name}' is set by the worker "
                                             "(mattekit worker start --cache-dir), not a client")
        if name not in known:
            raise ProtocolError(BAD_REQUEST, f"job field '{name}' is unknown; valid fields: "
                                             f"{', '.join(sorted(JOB_FIELDS))}")
    for required in ("node", "plate"):
        if required not in job:
            raise ProtocolError(BAD_REQUEST, f"job field '{required}' is required")
    for name, value in job.items():
        _check_type(name, value)
    for name in ("plate", "out", "clean_plate", "mask", "reference", "coarse", "ocio_config"):
        value = job.get(name)
        if not value:
            if name == "plate":
                raise ProtocolError(BAD_REQUEST, "job field 'plate' must not be empty")
            continue
        if "\0" in value:
            raise ProtocolError(BAD_REQUEST, f"job field '{name}' contains a NUL character")
        if name == "ocio_config" and value.startswith("ocio://"):
            continue
        if not os.path.isabs(os.path.expanduser(value)):
            raise ProtocolError(BAD_REQUEST, f"job field '{name}' must be an absolute path, "
                                             f"got '{value}'")
    _check_choice("device", job.get("device", default_device), DEVICES)
    _check_choice("compression", job.get("compression", "piz"), COMPRESSIONS)
    _check_choice("pixel_type", job.get("pixel_type", "half"), PIXEL_TYPES)
    threads = job.get("io_threads", 2)
    if not 1 <= threads <= MAX_IO_THREADS:
        raise ProtocolError(BAD_REQUEST, f"job field 'io_threads' must be 1..{MAX_IO_THREADS}")
    if job.get("use_cache") is False and not job.get("out"):
        raise ProtocolError(BAD_REQUEST, "job field 'use_cache' false needs 'out': without the "
                                         "cache there is nowhere to keep the results")
    settings = dict(job)
    settings.setdefault("device", default_device)
    for name in ("plate", "out"):
        if settings.get(name):
            settings[name] = os.path.expanduser(settings[name])
    return RenderJob(cache_root=cache_root, **settings)


def params_key(params: Mapping[str, Any]) -> str:
    """The canonical JSON of engine params (a key of the warm engine pool)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
