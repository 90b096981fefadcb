"""The video-matte default engine: RVM's recurrent prior, locked to one target by its mask.

Without a mask it is plain RVM, bit for bit. Once a key mask (a rough Roto, on the first frame
or any later one) has named the target, per frame:

1. the guide: on a key frame the key mask, slightly dilated; between keys the previous frame's
   target mask, binarised and dilated by how far the target can have moved (the 95th percentile
   of DIS optical flow over it, ``motion.motion_radius``);
2. two views of the prior, each with its own recurrent state: RVM on the whole frame, and
   (``focus_view``) RVM on a *focused* frame where everything beyond the guide's neighbourhood
   is faded to grey, so a second object cannot pull the network's attention away (the role of
   OAVM's masked attention). The view whose target components agree better (IoU) with the
   reference (the key mask, else the previous target) is used, with hysteresis; where the grey
   surround itself confuses RVM, the whole-frame view wins;
3. RVM's foreground is cut into connected components and only those overlapping the guide are
   kept, with the territory around them (``guidance``);
4. a target that was lost (left the frame, hidden) is found again by the colour memory of its
   key masks, never among the components rejected the frame before;
5. where RVM misses the target (a prop, a plant: it knows people), the engine mattes it itself
   (``target_fill``): the key mask's outline, carried from frame to frame by the target's own
   motion while its core still looks like the target, gives a trimap whose band is solved by
   closed-form matting with RVM's alpha as a prior weighted by how much of the target RVM sees;
   where RVM sees the target's core, its matte is left as it is;
6. the soft band is blended with the flow-warped previous alpha where motion is small
   (``flicker``), which lowers dtSSD without smearing fast edges;
7. a scene cut (or a change of resolution) resets RVM and the guidance alike.

The state (both views' recurrent tensors and the guidance: memory, previous target, carried
outline, grey frame, alpha, cut thumbnail) is plain arrays (``state`` / ``load_state``), so the
cache can resume it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from mattekit.inference import closed_form, flicker, guidance, motion, target_fill
from mattekit.inference.engines.rvm import MatteResult, RvmEngine, is_scene_cut, scene_thumbnail
from mattekit.inference.errors import EngineError

ENGINE_VERSION = "rvm-guided-2"  # bump when a change alters this engine's output
GUIDE_SIZE = 384        # long side, in pixels, of the guidance masks and the optical flow
GUIDE_MARGIN = 0.02     # tolerance of the guide and the components' reach, x the diagonal
VIEW_CONTEXT = 0.08     # how much of the surroundings the focused view shows, x the diagonal
SWITCH_MARGIN = 0.05    # IoU by which the other view must explain the target better to switch
MAX_RADIUS = 0.25       # largest dilation of the previous mask, x the diagonal
RELOCATE_RADIUS = 0.15  # dilation of the last known target after a jump in time, x the diagonal
LOST_FRACTION = 0.1     # the target counts as lost below this fraction of its key-mask area
MEMORY_SLOTS = 4        # key-mask appearances remembered: the first and the latest ones
TRUST_COVERAGE = 0.9    # the prior sees this much of the target's core: its matte stands
PRIOR_WEIGHT = 0.1      # weight of the prior's alpha against the image in the target fill
STATE_PREFIX = "guide_"
FOCUS_PREFIX = "focus_"


@dataclass
class GuideState:
    """What the guidance carries from frame to frame (None / empty until a key mask came)."""

    memory: Optional[np.ndarray] = None       # (K, bins) float32 appearance histograms
    memory_area: Optional[np.ndarray] = None  # (K,) float32 target areas, guide pixels
    target: Optional[np.ndarray] = None       # bool (h, w): last seen target
    outline: Optional[np.ndarray] = None      # bool (h, w): the key mask, carried by the flow
    rejected: Optional[np.ndarray] = None     # bool (h, w): components rejected last frame
    grey: Optional[np.ndarray] = None         # uint8 (h, w): last frame, for the flow
    alpha: Optional[np.ndarray] = None        # float16 (H, W): last output alpha
    lost: int = 0                             # frames since the target was last seen
    relocate: bool = False                    # the next frame does not follow the last one

    @property
    def active(self) -> bool:
        return self.memory is not None

    @property
    def tracking(self) -> bool:
        """A target seen on the frame before, in sequence: RVM may look at its surroundings
        only."""
        return self.target is not None and self.lost == 0 and not self.relocate

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as named numpy arrays (absent ones left out)."""
        out: dict[str, np.ndarray] = {"lost": np.array(self.lost, np.int64),
                                      "relocate": np.array(int(self.relocate), np.int64)}
        for name in ("memory", "memory_area", "grey", "alpha"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("target", "rejected", "outline"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.astype(np.uint8)
        return {STATE_PREFIX + k: v for k, v in out.items()}

    @classmethod
    def from_arrays(cls, state: Mapping[str, np.ndarray]) -> GuideState:
        """The inverse of ``arrays``."""
        def get(name: str) -> Optional[np.ndarray]:
            value = state.get(STATE_PREFIX + name)
            return None if value is None else np.asarray(value)

        target, rejected, outline = get("target"), get("rejected"), get("outline")
        lost, relocate = get("lost"), get("relocate")
        return cls(memory=get("memory"), memory_area=get("memory_area"),
                   target=None if target is None else target.astype(bool),
                   outline=None if outline is None else outline.astype(bool),
                   rejected=None if rejected is None else rejected.astype(bool),
                   grey=get("grey"), alpha=get("alpha"),
                   lost=int(lost) if lost is not None else 0,
                   relocate=bool(relocate) if relocate is not None else False)


def remembered(memory: Optional[np.ndarray], areas: Optional[np.ndarray],
               descriptor: np.ndarray, area: float) -> tuple[np.ndarray, np.ndarray]:
    """The memory bank with one more key appearance: the first key stays, the latest
    ``MEMORY_SLOTS - 1`` follow it."""
    row = descriptor[None].astype(np.float32)
    size = np.array([area], np.float32)
    if memory is None or areas is None:
        return row, size
    memory, areas = np.concatenate([memory, row]), np.concatenate([areas, size])
    if len(memory) > MEMORY_SLOTS:
        keep = [0, *range(len(memory) - MEMORY_SLOTS + 1, len(memory))]
        memory, areas = memory[keep], areas[keep]
    return memory, areas


def guide_shape(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the guidance grid: the frame scaled to ``GUIDE_SIZE`` on its long side."""
    scale = min(1.0, GUIDE_SIZE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


class GuidedVideoEngine:
    """RVM + object guidance + flicker suppression; temporal, with explicit state."""

    temporal = True
    param_limits = {"downsample_target": (64, None), "cut_threshold": (0.0, None),
                    "warmup_frames": (-1, None), "flicker_strength": (0.0, 1.0),
                    "flicker_motion": (0.0, None), "memory_threshold": (0.0, 1.0)}

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.version = ENGINE_VERSION
        # cuts are detected here, on the frame itself: the focused view sees a masked one
        self.rvm = RvmEngine(spec, model, model_file, device,
                             {"downsample_target": params["downsample_target"],
                              "cut_threshold": 0.0})
        self.focus = copy.copy(self.rvm)  # a second recurrent state on the same ONNX session
        self.model_hash = self.rvm.model_hash
        self.cut_threshold = float(params["cut_threshold"])
        self.focus_view = bool(params["focus_view"])
        self.flicker_strength = float(params["flicker_strength"])
        self.flicker_motion = float(params["flicker_motion"])
        self.memory_threshold = float(params["memory_threshold"])
        self.key_tolerance = float(params["key_tolerance"])
        self.cuts_detected = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything: RVM's state and the target (start of a shot)."""
        self.rvm.reset()
        self.focus.reset()
        self.focused = False
        self.guide = GuideState()
        self._thumbnail: Optional[np.ndarray] = None

    def discontinuity(self) -> None:
        """The next frame does not follow the last one (a render warming up from a key frame
        far back): keep the target's memory and last position, forget the short-term state."""
        self.rvm.reset()
        self.focus.reset()
        self.focused = False
        self._thumbnail = None
        g = self.guide
        g.grey, g.alpha, g.rejected, g.outline, g.relocate = None, None, None, None, g.active

    def state(self) -> dict[str, np.ndarray]:
        state = {**self.rvm.state(), **self.guide.arrays()}
        state.update({FOCUS_PREFIX + k: v for k, v in self.focus.state().items()})
        state[FOCUS_PREFIX + "chosen"] = np.array(int(self.focused), np.int64)
        if self._thumbnail is not None:
            state[STATE_PREFIX + "thumbnail"] = self._thumbnail
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.rvm.load_state(state)
        self.focus.load_state({k[len(FOCUS_PREFIX):]: v for k, v in state.items()
                               if k.startswith(FOCUS_PREFIX) and k != FOCUS_PREFIX + "chosen"})
        self.focused = bool(state.get(FOCUS_PREFIX + "chosen", 0))
        self.guide = GuideState.from_arrays(state)
        self._thumbnail = state.get(STATE_PREFIX + "thumbnail")

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame in order; ``inputs["mask"]`` (H, W) 0..1, when present, is a key
        mask naming the target on this frame."""
        self._detect_cut(src)
        key = inputs.get("mask") if inputs else None
        if key is None and not self.guide.active:
            return self.rvm.process(src)  # no target named yet: exactly the prior
        return self._guided(src, key)

    # -- the steps ------------------------------------------------------------------------

    def _detect_cut(self, src: np.ndarray) -> None:
        """A scene cut resets RVM and the guidance (RVM alone would reset at the same frames);
        a new resolution resets the guidance (RVM resets itself)."""
        thumbnail = scene_thumbnail(src)
        previous, self._thumbnail = self._thumbnail, thumbnail
        if is_scene_cut(previous, thumbnail, self.cut_threshold):
            self.rvm.reset()
            self.focus.reset()
            self.focused = False
            self.guide = GuideState()
            self.cuts_detected += 1
        target = self.guide.target
        if target is not None and target.shape != guide_shape(*src.shape[:2]):
            self.guide = GuideState()

    def _guided(self, src: np.ndarray, key: Optional[np.ndarray]) -> MatteResult:
        g = self.guide
        height, width = src.shape[:2]
        shape = guide_shape(height, width)
        small = cv2.resize(src, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        grey = motion.grey_8bit(small)
        flow = (motion.backward_flow(g.grey, grey)
                if g.grey is not None and g.grey.shape == grey.shape else None)
        diagonal = float(np.hypot(*shape))
        margin = GUIDE_MARGIN * diagonal
        if key is not None:
            key_small = self._key_shape(key, shape)
            guide = guidance.dilated(key_small, margin)
            reference: Optional[np.ndarray] = guide
            g.outline = key_small
        else:
            guide = self._motion_guide(flow, margin, diagonal, shape)
            reference = g.target if g.tracking else None
            g.outline = self._carried_outline(small, flow, self.key_tolerance * diagonal)
        trimap = (None if g.outline is None
                  else target_fill.shape_trimap(g.outline, self.key_tolerance * diagonal))
        result, prior_small = self._prior(src, guide, reference, shape, diagonal, margin)
        parts = guidance.split_components(prior_small, guide)
        if key is not None and trimap is not None:
            self._remember_key(small, guide, parts, prior_small, trimap.fg)
        else:
            parts = self._recovered(small, parts)
        zone = guidance.territory(parts.kept, parts.rejected, reach=margin)
        keep = cv2.resize(zone.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_LINEAR)
        alpha = (result.alpha * keep).astype(np.float32)
        if trimap is not None:
            alpha = self._filled(small, alpha, trimap)
        if flow is not None and g.alpha is not None and g.alpha.shape == alpha.shape:
            alpha = self._steadied(alpha, flow)
        self._remember_frame(alpha, parts, grey, shape)
        return MatteResult(alpha=alpha, foreground=result.foreground, layers=result.layers)

    def _prior(self, src: np.ndarray, guide: np.ndarray, reference: Optional[np.ndarray],
               shape: tuple[int, int], diagonal: float, margin: float
               ) -> tuple[MatteResult, np.ndarray]:
        """RVM's matte of the frame (and its copy at guide size): the whole-frame view, or the
        focused view when it explains the target better (see the module docstring)."""
        def at_guide_size(alpha: np.ndarray) -> np.ndarray:
            return cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)

        full = self.rvm.process(src)
        full_small = at_guide_size(full.alpha)
        if not self.focus_view or reference is None:
            self.focus.reset()  # not tracking: the focused view starts afresh next time
            self.focused = False
            return full, full_small
        view = guidance.dilated(guide, VIEW_CONTEXT * diagonal)
        focus = self.focus.process(guidance.masked_view(src, view, margin))
        focus_small = at_guide_size(focus.alpha)
        scores = [guidance.overlap_iou(
            guidance.split_components(alpha, guide).kept & guidance.binarised(alpha), reference)
            for alpha in (full_small, focus_small)]
        chosen = int(self.focused)
        if scores[1 - chosen] > scores[chosen] + SWITCH_MARGIN:
            chosen = 1 - chosen
        self.focused = bool(chosen)
        return (focus, focus_small) if self.focused else (full, full_small)

    def _key_shape(self, key: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """A key frame: the key mask at guide size names the target (dilated, it is the
        guide)."""
        key_small = guidance.downsized_mask(key, shape)
        if not key_small.any():
            raise EngineError("the key mask is empty (no pixel above 0.5): draw the target")
        self.guide.relocate, self.guide.lost = False, 0
        return key_small

    def _carried_outline(self, small: np.ndarray, flow: Optional[np.ndarray],
                         tolerance: float) -> Optional[np.ndarray]:
        """The key mask's outline carried from the frame before onto this one by the target's
        motion (one similarity transform fitted to the flow over its core: the flow of the
        background a moving target uncovers does not drag the outline along), as long as its
        solid core (eroded by ``tolerance``) still looks like the target (the colour memory):
        a target that left or was hidden is not painted back. It follows the motion, never the
        matte, so errors of the fill cannot feed back into it. None after a jump in time or a
        failed fit, until the next key mask."""
        g = self.guide
        if flow is None or g.outline is None or g.outline.shape != flow.shape[:2]:
            return None
        previous_core = target_fill.shape_trimap(g.outline, tolerance).fg
        transform = motion.region_motion(flow, previous_core if previous_core.any()
                                         else g.outline)
        if transform is None:
            return None
        carried = motion.moved_mask(g.outline, transform)
        core = target_fill.shape_trimap(carried, tolerance).fg
        if not core.any() or self._likeness(small, core) < self.memory_threshold:
            return None
        return carried

    def _filled(self, small: np.ndarray, alpha: np.ndarray, trimap: target_fill.Trimap
                ) -> np.ndarray:
        """The matte with the target filled in where the prior misses it (``target_fill``):
        untouched while the prior sees the target's core; else the closed-form solve of the
        trimap's band, the prior weighted by its reliability, added as a low-resolution
        correction so the prior's fine edges stay where it agrees."""
        shape = small.shape[:2]
        prior = cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        coverage = target_fill.prior_coverage(prior, trimap.fg)
        if coverage >= TRUST_COVERAGE:
            return alpha
        weight = target_fill.prior_reliability(prior, coverage) * PRIOR_WEIGHT
        solved = closed_form.closed_form_with_prior(small, trimap, prior, weight)
        correction = np.where(trimap.bg, 0.0, solved - prior).astype(np.float32)
        height, width = alpha.shape[:2]
        full = cv2.resize(correction, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(alpha + full, 0.0, 1.0).astype(np.float32)

    def _remember_key(self, small: np.ndarray, guide: np.ndarray, parts: guidance.Components,
                      prior_small: np.ndarray, core: np.ndarray) -> None:
        """The target's appearance on a key frame joins the memory: what is surely the target
        (a rough Roto also covers background), the key mask's solid ``core`` and the prior's
        solid part of the kept components; else the guide itself."""
        target = (parts.kept & guidance.binarised(prior_small) & guide) | core
        if not target.any():
            target = guide
        g = self.guide
        g.memory, g.memory_area = remembered(g.memory, g.memory_area,
                                             guidance.appearance(small, target),
                                             float(target.sum()))

    def _motion_guide(self, flow: Optional[np.ndarray], margin: float, diagonal: float,
                      shape: tuple[int, int]) -> np.ndarray:
        """Between keys: the last target, dilated by how far it can have moved."""
        g = self.guide
        target = g.target if g.target is not None else np.zeros(shape, bool)
        if g.relocate:
            radius = RELOCATE_RADIUS * diagonal
        else:
            region = guidance.dilated(target, margin)
            radius = motion.motion_radius(flow, region, margin * (1 + g.lost),
                                          MAX_RADIUS * diagonal)
        return guidance.dilated(target, radius)

    def _recovered(self, small: np.ndarray, parts: guidance.Components
                   ) -> guidance.Components:
        """After a loss (or a jump in time) nearness is not enough: what is kept must look like
        the target; a target still lost (too little kept) is looked for by its appearance."""
        g = self.guide
        if g.memory is None or g.memory_area is None:
            return parts
        if g.lost > 0 or g.relocate:
            alike = [i for i in parts.kept_ids
                     if self._likeness(small, parts.labels == i) >= self.memory_threshold]
            parts = guidance.components_from(parts.labels, alike)
        reference_area = float(g.memory_area[-1])
        if parts.kept.sum() >= LOST_FRACTION * reference_area:
            return parts
        candidates = self._recovery_candidates(parts)
        found = guidance.best_match(small, parts.labels, candidates, g.memory, reference_area,
                                    self.memory_threshold)
        if found is None:
            return parts
        return guidance.components_from(parts.labels, [*parts.kept_ids, found])

    def _likeness(self, small: np.ndarray, mask: np.ndarray) -> float:
        """How much a region looks like the remembered target (best key, 0..1)."""
        memory = self.guide.memory
        if memory is None:
            return 0.0
        descriptor = guidance.appearance(small, mask)
        return max(guidance.similarity(descriptor, key) for key in memory)

    def _recovery_candidates(self, parts: guidance.Components) -> list[int]:
        """Components not kept, and not where a distractor was rejected the frame before."""
        count = int(parts.labels.max()) + 1
        ids = [i for i in range(1, count) if i not in parts.kept_ids]
        rejected = self.guide.rejected
        if rejected is None or not rejected.any():
            return ids
        areas = np.bincount(parts.labels.ravel(), minlength=count)
        overlap = np.bincount(parts.labels[rejected].ravel(), minlength=count)
        return [i for i in ids if overlap[i] < 0.5 * areas[i]]

    def _steadied(self, alpha: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Flicker suppression against the previous output, warped by the flow."""
        previous = self.guide.alpha
        if previous is None:
            return alpha
        full = motion.resized_flow(flow, alpha.shape[:2])
        warped = motion.warp_backward(previous.astype(np.float32), full)
        limit = self.flicker_motion * max(alpha.shape[:2])
        return flicker.suppress_flicker(alpha, warped, motion.flow_magnitude(full),
                                        self.flicker_strength, limit)

    def _remember_frame(self, alpha: np.ndarray, parts: guidance.Components, grey: np.ndarray,
                        shape: tuple[int, int]) -> None:
        g = self.guide
        small = cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        target = guidance.binarised(small)
        if target.any():
            g.target, g.lost = target, 0
        else:
            g.lost += 1
        g.rejected = parts.rejected
        g.grey = grey
        g.alpha = alpha.astype(np.float16)
        g.relocate = False
