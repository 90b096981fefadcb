"""Errors a compositor or TD can act on: each says what is wrong, where, and what to do.

Raised where the cause is known and reported once, at the edge (CLI, node, worker reply).
"""
from __future__ import annotations

from typing import Optional


class MattekitError(Exception):
    """Base of every error mattekit reports to a user."""


class InputError(MattekitError):
    """An input file or frame is missing, unreadable or unusable.

    The message names the file and, when known, the frame number.
    """

    def __init__(self, cause: str, path: Optional[object] = None, frame: Optional[int] = None):
        self.cause = cause
        self.path = path
        self.frame = frame
        where = []
        if path is not None:
            where.append(str(path))
        if frame is not None:
            where.append(f"frame {frame}")
        super().__init__(f"{', '.join(where)}: {cause}" if where else cause)


class MissingFramesError(InputError):
    """One or more frames of a sequence do not exist on disk (all of them are listed at once)."""


class ExrError(InputError):
    """An EXR file cannot be read or written, or lacks the channels needed."""


class ColourError(MattekitError):
    """An unknown colour space or an unusable OCIO config."""


class FramePatternError(MattekitError):
    """A frame pattern or a frame range that cannot be parsed."""


class OutputError(MattekitError):
    """An output location that cannot be written."""


class CacheError(MattekitError):
    """The cache folder cannot be used."""


class EngineError(MattekitError):
    """An unknown engine, or an engine that cannot run (e.g. its model file is missing)."""


class NotImplementedEngineError(EngineError):
    """A node of the product whose engine has not been built yet."""


class RenderCancelled(MattekitError):
    """The user or a client cancelled a render; frames already finished are kept."""


class InputWarning(UserWarning):
    """A soft input problem that was repaired (e.g. NaN pixels replaced); names file and frame."""
