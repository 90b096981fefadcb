"""Engines that run a trained paper architecture from a checkpoint (torch, the `train` extra).

Selectable per node only when a checkpoint is configured: there are no pretrained weights for
these networks, and an untrained network is never run by default. Without a `checkpoint`
parameter the engine refuses to start, saying so; the node's default engine needs no checkpoint.

Engine parameters (manifest ``defaults``):
    checkpoint     path of a file written by ``models.checkpoint.save_checkpoint`` ("" = none)
    working_size   long side, in pixels, the network runs at (0 = the frame's own size); alpha
                   and foreground are resampled back to the frame's size
    warmup_frames  (oavm) frames a render starting mid-shot runs first; read by the renderer

Inputs: ``src`` (H, W, 3) float32 in the engine's input space (the space the checkpoint was
trained in, 0..1), ``inputs["clean_plate"]`` of the same size (required); ``inputs["mask"]``
(H, W) is the guidance map of a BgViTMatte trained with guidance, and ignored otherwise.

``ParallaxNetEngine`` (parallax-matte) takes ``inputs["reference"]`` (the second view) and an
optional ``inputs["mask"]``; it runs on patches of ``patch_size`` over the trimap's unknown band.

``OavmEngine`` (video-matte) is temporal: no clean plate; ``inputs["mask"]``, on key frames only,
names the target (it starts a new memory), and the network's memory is carried from frame to
frame, as plain arrays through ``state`` / ``load_state`` so the render cache can resume it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

from mattekit.inference.engines.registry import file_sha256
from mattekit.inference.engines.rvm import MatteResult
from mattekit.inference.errors import EngineError


class CheckpointEngine:
    """A per-frame engine around one trained network; subclasses name the architecture."""

    architecture = ""
    temporal = False
    clip_input = True

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        self.name = spec.name
        self.input_space = spec.input_space
        self.params = dict(params)
        checkpoint = str(self.params.get("checkpoint") or "").strip()
        if not checkpoint:
            raise EngineError(
                f"no checkpoint configured for {self.architecture}: set the engine parameter "
                f"'checkpoint' (--param checkpoint=PATH) to a trained {self.architecture} "
                "checkpoint (no pretrained weights exist for it); the default engine needs none")
        self.working_size = self._working_size(self.params.get("working_size"))
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise EngineError(f"{path}: the {self.architecture} checkpoint does not exist; "
                              "check the engine parameter 'checkpoint'")
        try:
            import torch
        except ImportError as exc:
            raise EngineError(f"the {self.architecture} engine needs torch: install mattekit "
                              "with its 'train' extra (python3 install.py --train)") from exc
        from mattekit.inference.models.checkpoint import load_checkpoint

        self.device = self._torch_device(torch, device)
        try:
            self.network = load_checkpoint(path, "cpu", self.architecture).to(self.device)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        self.model_hash = file_sha256(path)
        self.version = f"{self.architecture}-1"
        self.providers = [str(self.device)]

    def _working_size(self, value: Any) -> int:
        """The `working_size` parameter as a whole number of pixels >= 0 (0 = frame size)."""
        try:
            size = int(value or 0)
        except (TypeError, ValueError):
            size = -1
        if size < 0 or (isinstance(value, float) and value != size):
            raise EngineError(f"{self.name}: working_size must be a whole number of pixels "
                              f">= 0 (0 = the frame's own size), not {value!r}")
        return size

    @staticmethod
    def _torch_device(torch: Any, device: str) -> Any:
        if device == "cpu":
            return torch.device("cpu")
        if device in ("cuda", "gpu"):
            if not torch.cuda.is_available():
                raise EngineError("--device cuda was asked for, but torch sees no CUDA device; "
                                  "use --device auto or cpu")
            return torch.device("cuda")
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        raise EngineError(f"unknown device '{device}'; use auto, cpu or cuda")

    def reset(self) -> None:
        """Per-frame engine: nothing carried between frames."""

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Stateless: nothing to restore."""

    def _working(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        scale = self.working_size / max(height, width) if self.working_size else 1.0
        if scale >= 1.0:
            return image
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _tensor(self, image: np.ndarray) -> Any:
        import torch

        array = np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1), np.float32)
        return torch.from_numpy(array)[None].to(self.device)

    def _network_inputs(self, src: np.ndarray, plate: np.ndarray,
                        mask: Optional[np.ndarray]) -> list[Any]:
        return [self._tensor(self._working(src)), self._tensor(self._working(plate))]

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame with the trained network (needs inputs["clean_plate"])."""
        import torch

        plate = None if not inputs else inputs.get("clean_plate")
        if plate is None:
            raise EngineError(f"{self.name} needs a clean plate (--clean-plate)")
        if plate.shape[:2] != src.shape[:2]:
            raise EngineError(f"{self.name}: the clean plate is {plate.shape[1]}x"
                              f"{plate.shape[0]}, the plate {src.shape[1]}x{src.shape[0]}; "
                              "they must be the same size")
        mask = None if not inputs else inputs.get("mask")
        with torch.inference_mode():
            fgr, pha = self.network(*self._network_inputs(src[..., :3], plate[..., :3], mask))
        return self._result(fgr, pha, src.shape[:2])

    @staticmethod
    def _result(fgr: Any, pha: Any, shape: tuple[int, ...]) -> MatteResult:
        """The network's (1, 3, h, w) / (1, 1, h, w) outputs at the frame's (H, W) size."""
        alpha = pha[0, 0].float().cpu().numpy()
        foreground = fgr[0].float().cpu().numpy().transpose(1, 2, 0)
        height, width = int(shape[0]), int(shape[1])
        if alpha.shape != (height, width):
            alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
            foreground = cv2.resize(foreground, (width, height), interpolation=cv2.INTER_LINEAR)
        return MatteResult(alpha=np.clip(alpha, 0.0, 1.0),
                           foreground=np.ascontiguousarray(foreground, np.float32))


class CineMatteEngine(CheckpointEngine):
    """CineMatte from a trained checkpoint (the mask input is not used)."""

    architecture = "cinematte"


class BgViTMatteEngine(CheckpointEngine):
    """Background-conditioned ViTMatte from a trained checkpoint; a network trained with
    guidance takes the mask input as its guidance (0.5 = unknown where no mask is given)."""

    architecture = "bgvitmatte"

    def _network_inputs(self, src: np.ndarray, plate: np.ndarray,
                        mask: Optional[np.ndarray]) -> list[Any]:
        tensors = super()._network_inputs(src, plate, mask)
        if self.network.config.guidance:
            guide = (np.full(src.shape[:2], 0.5, np.float32) if mask is None
                     else np.asarray(mask, np.float32).reshape(src.shape[:2]))
            tensors.append(self._tensor(self._working(guide)))
        return tensors


OAVM_STATE_PREFIX = "oavm_"
OAVM_STATE_NAMES = ("first_key", "first_value", "prev_key", "prev_value", "prev_alpha",
                    "queries")  # the fields of models.oavm.MemoryState, in order


class RecurrentCheckpointEngine(CheckpointEngine):
    """A temporal checkpoint engine: frames in order, its state reset at construction."""

    temporal = True

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        super().__init__(spec, model, model_file, device, params)
        self.reset()


class OavmEngine(RecurrentCheckpointEngine):
    """OAVM from a trained checkpoint: a temporal video-matte engine with explicit memory.

    A key mask (``inputs["mask"]``, any frame) starts a new memory of the target on its frame
    (``init_memory``); frames before the first key run with an all-ones mask (every object is a
    candidate: plain trimap-free matting) until one comes. The memory is dropped when the working
    size changes. After a jump in time (``discontinuity``: a render warming up from a key frame
    far back) the first-frame memory stays, the previous-frame memory restarts from it and the
    guidance covers the whole frame (the target may be anywhere by then).
    """

    architecture = "oavm"

    def reset(self) -> None:
        """Forget the target and the memory (start of a shot)."""
        self._memory: Optional[tuple[Any, ...]] = None
        self._shape: Optional[tuple[int, int]] = None

    def discontinuity(self) -> None:
        """The next frame does not follow the last one: keep the target's first-frame memory,
        restart the previous-frame memory from it, lift the guidance."""
        if self._memory is None:
            return
        first_key, first_value, _, _, prev_alpha, queries = self._memory
        self._memory = (first_key, first_value, first_key, first_value,
                        prev_alpha.new_ones(prev_alpha.shape), queries)

    def state(self) -> dict[str, np.ndarray]:
        """The memory after the last frame as float32 arrays (empty before any frame)."""
        if self._memory is None or self._shape is None:
            return {}
        state = {OAVM_STATE_PREFIX + name: tensor.float().cpu().numpy()
                 for name, tensor in zip(OAVM_STATE_NAMES, self._memory)}
        state[OAVM_STATE_PREFIX + "shape"] = np.array(self._shape, np.int64)
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Resume from a state returned by ``state()`` (an empty one resets)."""
        import torch

        if OAVM_STATE_PREFIX + "shape" not in state:
            self.reset()
            return
        try:
            self._memory = tuple(
                torch.from_numpy(np.asarray(state[OAVM_STATE_PREFIX + name], np.float32)).to(
                    self.device) for name in OAVM_STATE_NAMES)
        except KeyError as exc:
            raise EngineError(f"{self.name}: the saved state lacks {exc.args[0]}; it was not "
                              "written by this engine") from None
        height, width = (int(v) for v in state[OAVM_STATE_PREFIX + "shape"])
        self._shape = (height, width)

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame in order; ``inputs["mask"]`` (H, W) 0..1, when present, is a key
        mask naming the target on this frame."""
        import torch

        image = self._working(src[..., :3])
        shape = (int(image.shape[0]), int(image.shape[1]))
        if shape != self._shape:
            self.reset()
        key = None if not inputs else inputs.get("mask")
        frame = self._tensor(image)
        with torch.inference_mode():
            if key is not None:
                key = np.asarray(key, np.float32).reshape(src.shape[:2])
                if not np.any(key > 0.5):
                    raise EngineError(f"{self.name}: the key mask is empty (no pixel above "
                                      "0.5): draw the target")
                self._memory = tuple(self.network.init_memory(
                    frame, self._tensor(np.clip(self._working(key), 0.0, 1.0))))
            elif self._memory is None:
                self._memory = tuple(self.network.init_memory(
                    frame, frame.new_ones((1, 1, *shape))))
            fgr, pha, memory = self.network(frame, self._memory)
        self._memory, self._shape = tuple(memory), shape
        return self._result(fgr, pha, src.shape[:2])


class ParallaxNetEngine(CheckpointEngine):
    """ParallaxNet (parallax-matte) from a trained checkpoint. The default engine's stages give
    it its inputs: the trimap (mask or RVM prior), the flow with the band filled from certain
    neighbours, each view background-aligned to the other; the network then runs on patches
    over the unknown band (``patch_size``, half overlap, Gaussian merge). Without usable flow or
    with views of different sizes, the default engine's single-frame result, with a warning."""

    architecture = "parallaxnet"

    def __init__(self, spec: Any, model: Any, model_file: Optional[Path], device: str,
                 params: Mapping[str, Any]):
        super().__init__(spec, model, model_file, device, params)
        from mattekit.inference.engines.parallax_matte import ParallaxMatteEngine

        stages = {name: self.params[name] for name in
                  ("reference_offset", "trimap_band", "flow_size", "motion_trimap",
                   "patch_size")}
        self.stages = ParallaxMatteEngine(spec, model, model_file, device, stages)
        self.version = f"{self.architecture}-1"

    def _patches(self, batch: Any) -> list[dict[str, np.ndarray]]:
        import torch

        def stacked(name: str) -> Any:
            arrays = [np.atleast_3d(window[name]).transpose(2, 0, 1) for window in batch]
            return torch.from_numpy(np.ascontiguousarray(np.stack(arrays), np.float32)).to(
                self.device)

        with torch.inference_mode():
            fgr, pha = self.network(*(stacked(name) for name in
                                      ("src", "src_other", "src_trimap", "ref", "ref_other",
                                       "ref_trimap")))
        return [{"alpha": pha[i, 0].float().cpu().numpy(),
                 "foreground": fgr[i].float().cpu().numpy().transpose(1, 2, 0)}
                for i in range(len(batch))]

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame; ``inputs`` must hold "reference" and may hold "mask"."""
        from mattekit.inference.motion import warp_backward
        from mattekit.inference.parallax import dense_flow, motion_subject, parallax_flows
        from mattekit.inference.tiler import tiled_or_whole

        reference = None if not inputs else inputs.get("reference")
        mask = None if not inputs else inputs.get("mask")
        if reference is None or reference.shape != src.shape:
            return self.stages.process(src, inputs)  # says what is missing, or warns
        motion = dense_flow(src, reference, self.stages.flow_size)
        subject = (motion_subject(motion, (src.shape[0], src.shape[1]))
                   if motion is not None and mask is None and self.stages.motion_trimap
                   else None)
        _, trimap = self.stages.single_frame(src, mask, subject)
        flows = (None if motion is None
                 else parallax_flows(src, reference, trimap, self.stages.flow_size, motion))
        ref_trimap = (None if flows is None
                      else warp_backward(trimap, -flows.foreground))
        back = (None if ref_trimap is None
                else parallax_flows(reference, src, ref_trimap, self.stages.flow_size))
        if flows is None or ref_trimap is None or back is None:
            return self.stages.process(src, inputs)
        views = {"src": src, "src_other": warp_backward(reference, flows.background),
                 "src_trimap": trimap, "ref": reference,
                 "ref_other": warp_backward(src, back.background), "ref_trimap": ref_trimap}
        unknown = (trimap > 0.01) & (trimap < 0.99)
        base = {"alpha": trimap, "foreground": src}
        merged = tiled_or_whole(self._patches, views, unknown, base, self.stages.patch_size)
        alpha = np.where(unknown, np.clip(merged["alpha"], 0.0, 1.0), trimap)
        return MatteResult(alpha=alpha.astype(np.float32),
                           foreground=np.ascontiguousarray(merged["foreground"], np.float32),
                           layers={"trimap.Y": trimap})


UMATTING_HIDDEN = "umatting_hidden"


class UMattingEngine(RecurrentCheckpointEngine):
    """μMatting from a trained checkpoint (sparse-4k-refine): the network runs at the frame's
    full resolution (its coarse stage downsamples by itself), one frame per call, with TSCM's
    recurrent state carried between frames and through ``state`` / ``load_state``. Outputs
    alpha, foreground and the ``keyregion.Y`` layer. The 3D convolutions' temporal taps see the
    clips a training run feeds; here each call is a one-frame clip."""

    architecture = "umatting"

    def reset(self) -> None:
        self._hidden: Any = None

    def discontinuity(self) -> None:
        self.reset()

    def state(self) -> dict[str, np.ndarray]:
        if self._hidden is None:
            return {}
        return {UMATTING_HIDDEN: self._hidden.float().cpu().numpy()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        import torch

        hidden = state.get(UMATTING_HIDDEN)
        self._hidden = (None if hidden is None
                        else torch.from_numpy(np.asarray(hidden, np.float32)).to(self.device))

    def process(self, src: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None
                ) -> MatteResult:
        """Matte one frame in order (inputs are not used by the network)."""
        import torch

        with torch.inference_mode():
            out = self.network(self._tensor(src[..., :3]), self._hidden)
        self._hidden = out.hidden
        result = self._result(out.foreground, out.alpha, src.shape[:2])
        result.layers["keyregion.Y"] = out.key[0, 0].float().cpu().numpy()
        return result
