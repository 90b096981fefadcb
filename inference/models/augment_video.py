"""Training clips for object-aware video matting, with Sequential Foreground Merging (OAVM).

Numpy only: (T, H, W, 3) float32 frames and (T, H, W) alphas in 0..1, so a data loader can run
it in worker processes without torch.

Sequential Foreground Merging: other foreground *sequences* (other people's clips from the
matting data) are composited into a clip after it has begun. Each enters at its own frame
``start`` (never the first: that is where the coarse mask names the target, and it shows the
target alone), along a straight path, typically from beyond a frame edge, and stays for the rest
of the clip. The ground-truth alpha stays the target's own: the network must keep matting the
object the first frame named and ignore the ones that arrive later, however much they look like
a matting subject. A distractor is behind the target by default; ``in_front`` puts it in front,
where it hides part of the target: the ground truth is then the target's visible part,
alpha * (1 - distractor alpha).

    clip = merge_sequential(fg, alpha, background,
                            [DistractorTrack(fg2, alpha2, start=4, top=10, left=-40,
                                             velocity=(0.0, 6.0))])
    clip.frames            alpha * fg + (1 - alpha) * (background with the distractor)
    clip.alpha             the target only (its visible part where a distractor is in front)
    clip.foreground        the target's colour
    clip.distractor_alpha  where the distractors are, frame by frame (0 before they enter)
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mattekit.inference.models.augment import Distractor, add_distractors, composite


@dataclasses.dataclass(frozen=True)
class DistractorTrack:
    """A foreground sequence (fg (T', h, w, 3), alpha (T', h, w); a still (h, w, 3) / (h, w)
    is a one-frame sequence) entering the clip at frame `start` with its top-left at
    (top, left), then moving `velocity` (dy, dx) pixels a frame. Its own frame t - start is
    shown at clip frame t (its last frame once it runs out)."""

    foreground: np.ndarray
    alpha: np.ndarray
    start: int
    top: int
    left: int
    velocity: tuple[float, float] = (0.0, 0.0)
    in_front: bool = False

    @property
    def length(self) -> int:
        return 1 if self.alpha.ndim == 2 else int(self.alpha.shape[0])

    def layer(self, frame: int) -> Distractor:
        """The distractor as a layer of clip frame `frame` (>= start)."""
        own = min(frame - self.start, self.length - 1)
        fg = self.foreground if self.alpha.ndim == 2 else self.foreground[own]
        alpha = self.alpha if self.alpha.ndim == 2 else self.alpha[own]
        elapsed = frame - self.start
        return Distractor(fg, alpha, self.top + int(round(self.velocity[0] * elapsed)),
                          self.left + int(round(self.velocity[1] * elapsed)))


@dataclasses.dataclass
class VideoSample:
    frames: np.ndarray            # (T, H, W, 3): the clip to matte
    alpha: np.ndarray             # (T, H, W): ground truth, the target only
    foreground: np.ndarray        # (T, H, W, 3): the target's colour
    distractor_alpha: np.ndarray  # (T, H, W): the merged distractors' coverage


def _as_sequence(array: np.ndarray, frames: int, channels: bool, name: str) -> np.ndarray:
    """A (T, H, W[, 3]) array; a still (H, W[, 3]) repeats over the clip."""
    rank = 3 if channels else 2
    if array.ndim == rank:
        return np.broadcast_to(array, (frames, *array.shape))
    if array.ndim != rank + 1 or array.shape[0] != frames:
        raise ValueError(f"{name} {array.shape}: expected {frames} frames or one still")
    return array


def merge_sequential(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray,
                     tracks: Sequence[DistractorTrack] = ()) -> VideoSample:
    """The target clip (fg (T, H, W, 3) or a still, alpha (T, H, W)) over `background`
    ((T, H, W, 3) or a still) with every track merged from its start frame on."""
    if alpha.ndim != 3:
        raise ValueError(f"alpha {alpha.shape}: expected (T, H, W)")
    frames, height, width = (int(v) for v in alpha.shape)
    fg = _as_sequence(foreground, frames, True, "foreground")
    bg = _as_sequence(background, frames, True, "background")
    if fg.shape[1:3] != (height, width) or bg.shape[1:3] != (height, width):
        raise ValueError(f"foreground {fg.shape}, background {bg.shape} and alpha {alpha.shape} "
                         "must share one height and width")
    for track in tracks:
        if not 1 <= track.start < frames:
            raise ValueError(f"a distractor starts at frame {track.start}: it must enter after "
                             f"the first frame (the one the mask names the target on) and "
                             f"within the clip, 1..{frames - 1}")
    out = VideoSample(frames=np.empty((frames, height, width, 3), np.float32),
                      alpha=np.empty((frames, height, width), np.float32),
                      foreground=np.ascontiguousarray(fg, np.float32),
                      distractor_alpha=np.empty((frames, height, width), np.float32))
    for t in range(frames):
        present = [track for track in tracks if track.start <= t]
        behind = [track.layer(t) for track in present if not track.in_front]
        front = [track.layer(t) for track in present if track.in_front]
        backdrop, behind_cover = add_distractors(bg[t], behind)
        frame = composite(fg[t], alpha[t], backdrop)
        frame, front_cover = add_distractors(frame, front)
        out.frames[t] = frame
        out.alpha[t] = alpha[t] * (1.0 - front_cover)
        out.distractor_alpha[t] = front_cover + (1.0 - front_cover) * behind_cover
    return out


def random_tracks(pool: Sequence[tuple[np.ndarray, np.ndarray]], frames: int, height: int,
                  width: int, rng: np.random.Generator, probability: float = 0.5,
                  max_count: int = 2, in_front: float = 0.0) -> list[DistractorTrack]:
    """With `probability`, 1..max_count tracks drawn from `pool` ((fg, alpha) pairs, sequences
    or stills, e.g. other training clips), entering one after another (start frames ascending,
    all after the first frame) from beyond a random edge, each reaching a random place inside
    the frame within the clip; in front of the target with probability `in_front`."""
    if not pool or frames < 2 or rng.random() >= probability:
        return []
    count = int(rng.integers(1, max_count + 1))
    starts = np.sort(rng.integers(1, frames, size=count))
    tracks = []
    for start in (int(s) for s in starts):
        fg, alpha = pool[int(rng.integers(len(pool)))]
        lh, lw = (int(v) for v in alpha.shape[-2:])
        inside_top = int(rng.integers(-(lh // 2), max(height - lh // 2, -(lh // 2) + 1)))
        inside_left = int(rng.integers(-(lw // 2), max(width - lw // 2, -(lw // 2) + 1)))
        side = int(rng.integers(4))  # enters from the top, bottom, left or right edge
        top = (-lh, height, inside_top, inside_top)[side]
        left = (inside_left, inside_left, -lw, width)[side]
        steps = int(rng.integers(1, frames - start + 1))  # frames it takes to get in place
        velocity = ((inside_top - top) / steps, (inside_left - left) / steps)
        tracks.append(DistractorTrack(fg, alpha, start, top, left, velocity,
                                      in_front=bool(rng.random() < in_front)))
    return tracks
