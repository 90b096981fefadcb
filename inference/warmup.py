"""Random access for temporal engines: which frames a render runs before its first output.

A recurrent engine's frame t depends on every frame before it. A render that starts mid-shot
(scrubbing one frame, a farm chunk) has no state for t - 1, so it first runs the engine over
``warmup_frames`` preceding frames of the plate (their results are not written); None means
all of them, back to the first frame of the shot on disk. Where the warm-up reaches that first
frame, the result is exactly the sequential one; otherwise it only approaches it, and slowly:
RVM's recurrent state remembers far back (on the demo clip, 8 frames of warm-up leave up to
0.39 of alpha difference on 1.5 % of the pixels, 32 frames still 0.6 at the worst pixel).

An engine guided by key masks also needs the latest key mask at or before the first output
frame; when that key lies before the warm-up, it is run first, as an *anchor*, and the engine is
told that the warm-up does not follow it in time (``Timeline.jump_index``).

Pure functions of frame numbers; the renderer reads the files.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Timeline:
    """The frames an engine sees, in order: [anchor] + warm-up + the requested frames."""

    frames: list[int]
    first_output: int            # index of the first requested frame in ``frames``
    jump_index: Optional[int]    # index of the frame that does not follow the one before

    @property
    def requested(self) -> list[int]:
        return self.frames[self.first_output:]


def frame_step(requested: Sequence[int]) -> int:
    """The step between requested frames (1 for a single frame); 0 when not ascending.

    >>> frame_step([1001, 1003, 1005]), frame_step([7]), frame_step([5, 3])
    (2, 1, 0)
    """
    if len(requested) < 2:
        return 1
    step = requested[1] - requested[0]
    return step if step > 0 else 0


def preceding_frames(first: int, step: int, on_disk: Collection[int], count: int) -> list[int]:
    """Up to ``count`` frames before ``first`` at ``step``, contiguous on disk, oldest first.

    >>> preceding_frames(10, 1, range(1, 20), 3), preceding_frames(3, 1, range(1, 20), 8)
    ([7, 8, 9], [1, 2])
    >>> preceding_frames(10, 1, [5, 6, 9], 3)   # a gap ends the warm-up
    [9]
    """
    frames: list[int] = []
    frame = first - step
    while step > 0 and len(frames) < count and frame in on_disk:
        frames.append(frame)
        frame -= step
    return frames[::-1]


def anchor_frame(key_frames: Collection[int], first_output: int, window_start: int
                 ) -> Optional[int]:
    """The latest key frame at or before ``first_output`` when it lies before the frames the
    render runs anyway (``window_start``), else None.

    >>> anchor_frame([1], 13, 5), anchor_frame([1, 9], 13, 5), anchor_frame([20], 13, 5)
    (1, None, None)
    """
    before = [k for k in key_frames if k <= first_output]
    if not before or max(before) >= window_start:
        return None
    return max(before)


def build_timeline(requested: Sequence[int], on_disk: Collection[int], warmup: Optional[int],
                   key_frames: Collection[int] = ()) -> Timeline:
    """The timeline of a temporal render of ``requested`` frames (see the module docstring).

    >>> t = build_timeline([13, 14, 15, 16], range(1, 17), 8, key_frames=[1])
    >>> t.frames[:3], t.first_output, t.jump_index
    ([1, 5, 6], 9, 1)
    >>> build_timeline([5, 6], range(1, 17), 8, key_frames=[1]).frames
    [1, 2, 3, 4, 5, 6]
    >>> build_timeline([13], range(1, 17), None).frames == list(range(1, 14))
    True
    """
    requested = list(requested)
    step = frame_step(requested)
    count = len(on_disk) if warmup is None else warmup
    before = preceding_frames(requested[0], step, on_disk, count) if count > 0 else []
    frames = before + requested
    anchor = anchor_frame(key_frames, requested[0], frames[0]) if step > 0 else None
    if anchor is None:
        return Timeline(frames=frames, first_output=len(before), jump_index=None)
    adjacent = anchor == frames[0] - step
    return Timeline(frames=[anchor] + frames, first_output=len(before) + 1,
                    jump_index=None if adjacent else 1)
