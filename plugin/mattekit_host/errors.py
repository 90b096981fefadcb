"""Errors raised by the host side of mattekit.

Every message says what is wrong, where, and what to do, in one line a compositor can act on
(it lands on the node). ``WorkerError`` carries the protocol's error code (``input_error``,
``cancelled``, ...) so callers can branch on it without parsing text.
"""
from __future__ import annotations

from typing import Any, Tuple


class MattekitHostError(Exception):
    """Base class of every error the mattekit host package raises."""


class WorkerError(MattekitHostError):
    """The worker answered a request with an error (see PROTOCOL.md for the codes)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"WorkerError({self.code!r}, {self.message!r})"

    def __reduce__(self) -> Tuple[Any, ...]:
        # pickling and copying must call the two-argument constructor
        return (type(self), (self.code, self.message))


class WorkerUnavailable(MattekitHostError):
    """The worker could not be started or reached; the message says why and what to do."""
