"""Frame sequences as compositors write them: patterns ``plate.####.exr``, ranges ``1001-1100x2``.

Frame tokens, recognised in the file name only (a ``#`` or ``@`` in a folder name is literal):

=================  ==============================  =======================
token              convention                      padding
=================  ==============================  =======================
``####``           Nuke                            number of ``#`` (``#`` = 1)
``%04d``, ``%d``   printf (Nuke, Deadline)         the width (``%d`` = 1)
``$F4``, ``$F``    Houdini (also ``${F4}``)        the digit (``$F`` = 1)
``@@@@``, ``@``    Shake / RV                      number of ``@``
=================  ==============================  =======================

Padding 1 means "unpadded"; padding 0 means "no token", a single file. A frame wider than the
padding is written in full, never truncated; a negative frame is the sign then the padded digits
(``-0005``), as Nuke and Houdini write it.

Frame ranges: ``1001``, ``1001-1100``, ``1001-1100x2`` (step), comma lists ``1,3,5-7,10-20x5``,
negative frames ``-5--1`` and ``-3-2``; whitespace around numbers is ignored.

>>> pattern = parse_pattern("plate.####.exr")
>>> pattern.path_for(1001).name
'plate.1001.exr'
>>> format_frame_list(parse_frame_range("1001-1003, 1007"))
'1001-1003, 1007'
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from mattekit.inference.errors import FramePatternError, MissingFramesError

#: Most frames one range expression may expand to (guards against "1-1000000000" typos).
MAX_RANGE_FRAMES = 1_000_000

#: Items (single frames or runs) ``format_frame_list`` shows before "... and N more frames".
FRAME_LIST_LIMIT = 12

_RANGE_FORMS = "expected e.g. '1001', '1001-1100', '1001-1100x2' or '1,3,5-7,10-20x5'"

_RANGE_ITEM = re.compile(
    r"^\s*(?P<first>-?[0-9]+)\s*"
    r"(?:-\s*(?P<last>-?[0-9]+)\s*(?:[xX]\s*(?P<step>[-+]?[0-9]+)\s*)?)?$"
)

_TOKEN = re.compile(
    r"(?P<hash>#+)"
    r"|%(?P<printf>[0-9]*)d"
    r"|\$\{F(?P<houdini_braced>[0-9]*)\}"
    r"|\$F(?P<houdini>[0-9]*)(?![A-Za-z_0-9])"
    r"|(?P<at>@+)"
)


def _range_error(text: str, reason: str) -> FramePatternError:
    return FramePatternError(f"frame range {text!r} is not valid: {reason}; {_RANGE_FORMS}")


def parse_frame_range(text: str) -> list[int]:
    """Frames of a range expression, sorted and unique.

    Raises ``FramePatternError`` (one line, quoting ``text``) for an empty or malformed
    expression, a descending range, a step below 1 or more than ``MAX_RANGE_FRAMES`` frames.

    >>> parse_frame_range("1,3,5-7,10-20x5")
    [1, 3, 5, 6, 7, 10, 15, 20]
    >>> parse_frame_range("-3-2")
    [-3, -2, -1, 0, 1, 2]
    """
    if not isinstance(text, str) or not text.strip():
        raise _range_error(str(text), "it is empty")
    frames: set[int] = set()
    for item in text.split(","):
        match = _RANGE_ITEM.match(item)
        if match is None:
            what = f"{item.strip()!r} is not a frame or a range" if item.strip() else "empty item"
            raise _range_error(text, what)
        first = int(match["first"])
        last = first if match["last"] is None else int(match["last"])
        step = 1 if match["step"] is None else int(match["step"])
        if last < first:
            raise _range_error(
                text, f"range {first}-{last} runs backwards; write it as {last}-{first}"
            )
        if step < 1:
            raise _range_error(text, f"step x{step} must be 1 or more")
        if len(frames) + (last - first) // step + 1 > MAX_RANGE_FRAMES:
            raise _range_error(text, f"it has more than {MAX_RANGE_FRAMES} frames")
        frames.update(range(first, last + 1, step))
    return sorted(frames)


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted unique frames as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    return runs


def format_frame_list(frames: Iterable[int], limit: Optional[int] = FRAME_LIST_LIMIT) -> str:
    """A compact one-line list of frames that ``parse_frame_range`` reads back.

    Consecutive frames become ``first-last``; past ``limit`` items (frames or runs) the rest is
    summarised as "... and N more frames" (``limit=None`` never shortens). Empty input gives "".

    >>> format_frame_list([1009, 1003, 1007, 1008])
    '1003, 1007-1009'
    >>> format_frame_list(range(0, 100, 2), limit=3)
    '0, 2, 4, ... and 47 more frames'
    """
    runs = _runs(sorted(set(frames)))
    shown = runs if limit is None else runs[:max(limit, 1)]
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in shown)
    hidden = sum(b - a + 1 for a, b in runs[len(shown):])
    return f"{text}, ... and {hidden} more frames" if hidden else text


def _name_start(text: str) -> int:
    """Index where the file name starts, for '/' and '\\' separators and 'C:name' drives."""
    cut = max(text.rfind("/"), text.rfind("\\")) + 1
    if cut == 0 and re.match(r"^[A-Za-z]:", text):
        cut = 2
    return cut


def _token_padding(match: re.Match[str], text: str) -> int:
    kind = match.lastgroup
    value = match[kind] if kind else ""
    if kind in ("hash", "at"):
        return len(value)
    if kind == "printf" and value and not value.startswith("0"):
        raise FramePatternError(
            f"frame pattern {text!r}: '%{value}d' pads with spaces; use '%0{value}d' for zeros"
        )
    return max(int(value or "1"), 1)


@dataclass(frozen=True)
class FramePattern:
    """A file name with at most one frame token; ``FramePattern(text)`` parses ``text``.

    >>> FramePattern("shot/plate.%04d.exr").path_for(-5).name
    'plate.-0005.exr'
    >>> FramePattern("shot/plate.$F.exr").padding
    1
    >>> FramePattern("shot/still.exr").is_sequence
    False
    """

    text: str
    padding: int = field(init=False)
    prefix: str = field(init=False, repr=False)
    suffix: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        text = os.fspath(self.text)
        if not isinstance(text, str) or not text.strip():
            raise FramePatternError(
                f"frame pattern {text!r} is empty; expected e.g. plate.####.exr"
            )
        start = _name_start(text)
        tokens = list(_TOKEN.finditer(text, start))
        if len(tokens) > 1:
            found = ", ".join(repr(t[0]) for t in tokens)
            raise FramePatternError(
                f"frame pattern {text!r} has {len(tokens)} frame tokens ({found}); "
                "use exactly one, e.g. plate.####.exr"
            )
        object.__setattr__(self, "text", text)
        if tokens:
            token = tokens[0]
            padding = _token_padding(token, text)
            prefix, suffix = text[:token.start()], text[token.end():]
        else:
            padding, prefix, suffix = 0, text, ""
        object.__setattr__(self, "padding", padding)
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "suffix", suffix)

    @property
    def is_sequence(self) -> bool:
        """True when the name holds a frame token; False for a plain single file."""
        return self.padding > 0

    @property
    def folder(self) -> Path:
        """The folder the frames live in."""
        return self._probe().parent

    def frame_text(self, frame: int) -> str:
        """``frame`` as it appears in a file name: sign, then digits zero-padded to ``padding``."""
        sign = "-" if frame < 0 else ""
        return f"{sign}{abs(frame):0{max(self.padding, 1)}d}"

    def path_for(self, frame: int) -> Path:
        """The file of ``frame``; for a single-file pattern, that file for every frame."""
        if not self.is_sequence:
            return Path(self.text)
        return Path(f"{self.prefix}{self.frame_text(frame)}{self.suffix}")

    def _probe(self) -> Path:
        """The path with a NUL byte where the frame goes: splits folder and name as the OS does."""
        return Path(f"{self.prefix}\0{self.suffix}") if self.is_sequence else Path(self.text)

    def glob(self) -> list[int]:
        """Frames on disk, sorted: files named exactly as ``path_for`` names them.

        The folder is listed once. A missing folder gives []. A single-file pattern gives [1]
        when the file exists, else [].
        """
        if not self.is_sequence:
            return [1] if Path(self.text).is_file() else []
        probe = self._probe()
        name_prefix, name_suffix = probe.name.split("\0")
        match_name = re.compile(
            f"{re.escape(name_prefix)}(-?[0-9]+){re.escape(name_suffix)}", re.DOTALL
        ).fullmatch
        frames = []
        try:
            with os.scandir(probe.parent) as entries:
                for entry in entries:
                    match = match_name(entry.name)
                    if match is None:
                        continue
                    frame = int(match[1])
                    if match[1] == self.frame_text(frame) and entry.is_file():
                        frames.append(frame)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(frames)


def parse_pattern(text: Union[str, os.PathLike]) -> FramePattern:
    """Parse a file or frame-sequence pattern; ``FramePatternError`` for two frame tokens.

    >>> parse_pattern("render/matte.$F4.exr").path_for(7).name
    'matte.0007.exr'
    >>> str(parse_pattern("plate.@@.exr").path_for(1001))
    'plate.1001.exr'
    """
    return FramePattern(os.fspath(text))


def _missing_folder(pattern: FramePattern) -> Optional[MissingFramesError]:
    folder = pattern.folder
    if folder.is_dir():
        return None
    return MissingFramesError(f"folder {folder} does not exist", pattern.text)


def require_frames(pattern: FramePattern, frames: Sequence[int]) -> list[Path]:
    """The file of each frame; one ``MissingFramesError`` lists every missing frame at once.

    The message reads e.g. ``plate.####.exr: 3 of 20 frames missing: 1003, 1007-1009``; a missing
    folder is reported as such.
    """
    frames = list(frames)
    if not frames:
        return []
    error = _missing_folder(pattern)
    if error is not None:
        raise error
    if not pattern.is_sequence:
        if not Path(pattern.text).is_file():
            raise MissingFramesError("file does not exist", pattern.text)
    else:
        on_disk = set(pattern.glob())
        missing = sorted({f for f in frames if f not in on_disk})
        if missing:
            wanted = len(set(frames))
            raise MissingFramesError(
                f"{len(missing)} of {wanted} frames missing: {format_frame_list(missing)}",
                pattern.text,
            )
    return [pattern.path_for(f) for f in frames]


def frames_for(pattern: FramePattern, frame_range: Optional[str]) -> list[int]:
    """The frames to process: ``frame_range`` parsed, else every frame of the sequence on disk.

    Without a range a single-file pattern is frame [1]; a sequence with no frame on disk raises
    ``MissingFramesError`` (naming the folder if it does not exist). Existence of the frames of
    an explicit range is checked by ``require_frames``, not here.

    >>> frames_for(parse_pattern("still.exr"), None)
    [1]
    >>> frames_for(parse_pattern("plate.####.exr"), "1001-1005x2")
    [1001, 1003, 1005]
    """
    if frame_range is not None:
        return parse_frame_range(frame_range)
    if not pattern.is_sequence:
        return [1]
    frames = pattern.glob()
    if frames:
        return frames
    error = _missing_folder(pattern)
    if error is not None:
        raise error
    example = pattern.path_for(1001).name
    raise MissingFramesError(
        f"no frames found matching the pattern (names like {example} in {pattern.folder})",
        pattern.text,
    )
