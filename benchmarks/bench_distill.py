"""Teacher-student distillation on the scribble dev clip (issue #10): agreement and speed.

The clip, the engine and the strokes are bench_scribbles.py's (a prop dressed in after the clean
plate: BackgroundMatte's `cleanplate` engine mattes it as subject; strokes on frames 0 and 4).
The teacher is that engine plus the alpha-correction network fine-tuned on the strokes (80 %
base composites, as bench_scribbles does). Frames 3 and 7 (every 4th) are held back; the
same `student` network (width 16), same steps, crops and seed, is trained

  (a) distilled: on the teacher's alpha of the 6 other frames (training/distill.py);
  (b) on the scribbles alone: L1 on the stroke pixels of frames 0 and 4 (scribble_crop +
      masked_l1, what the student could learn without a teacher).

Reports, on the held-back frames: MSE x1e3 and SAD (/1e3) against the teacher, MAD x1e3
against the truth (teacher and engine too); and the CPU seconds per frame of the teacher
(engine + correction) and of the student at the clip size and at 1920x1080 (the clip's frame 3
resized; median of 3 runs after a warm one).

    .venv/bin/python benchmarks/bench_distill.py [--steps 300] [--teacher-steps 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from alphamatting import srgb_to_linear  # noqa: E402
from bench_scribbles import (  # noqa: E402
    FRAMES,
    fine_tuned_correction,
    scribbled_case,
)

from mattekit.inference.engines.registry import create_engine  # noqa: E402
from mattekit.inference.metrics import MAD_SCALE, mad  # noqa: E402
from mattekit.inference.models import build_model  # noqa: E402
from mattekit.inference.models.losses import masked_l1  # noqa: E402
from mattekit.inference.training.distill import (  # noqa: E402
    DistillConfig,
    DistillFrame,
    distill_student,
    holdout_split,
    mean_agreement,
    median_seconds,
    predict_student,
)
from mattekit.inference.training.loop import planes_tensor  # noqa: E402
from mattekit.inference.training.scribbles import (  # noqa: E402
    ScribbledFrame,
    correct_alpha,
    scribble_crop,
)

HOLDOUT, CROP, STUDENT_WIDTH = 4, 128, 16


def train_on_scribbles(model: torch.nn.Module, scribbled: list[ScribbledFrame],
                       config: DistillConfig) -> list[float]:
    """(b): the student trained on the strokes alone, with distillation's optimiser, steps,
    batch and crop: masked L1 on the scribbled pixels, averaged per crop."""
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    losses = []
    for step in range(config.steps):
        rng = np.random.default_rng([config.seed, step])
        torch.manual_seed(config.seed * 1_000_003 + step)
        crops = [scribble_crop(scribbled[int(rng.integers(len(scribbled)))],
                               (config.crop, config.crop), rng)
                 for _ in range(config.batch_size)]
        src, ref, target, mask = (planes_tensor([c[key] for c in crops])
                                  for key in ("src", "ref", "target", "mask"))
        pha = model(src, ref)
        loss = sum(masked_l1(pha[i], target[i], mask[i]) for i in range(len(crops))) / len(crops)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def cpu_seconds(engine, correction, student, plate: np.ndarray, clean: np.ndarray,
                size: tuple[int, int]) -> tuple[float, float]:
    """(teacher, student) seconds per frame on `plate` resized to `size` (h, w): the engine
    on linear inputs + the correction, and the student alone (median of 3 after a warm run)."""
    plate = cv2.resize(plate, size[::-1], interpolation=cv2.INTER_LINEAR)
    clean = cv2.resize(clean, size[::-1], interpolation=cv2.INTER_LINEAR)
    linear, linear_clean = srgb_to_linear(plate), srgb_to_linear(clean)

    def run_teacher() -> None:
        matte = engine.process(linear, {"clean_plate": linear_clean})
        correct_alpha(correction, plate, clean, matte.alpha.astype(np.float32))

    return (median_seconds(run_teacher),
            median_seconds(lambda: predict_student(student, plate, clean)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300, help="student training steps")
    parser.add_argument("--teacher-steps", type=int, default=300,
                        help="scribble fine-tuning steps of the teacher's correction")
    parser.add_argument("--seed", type=int, default=0, help="strokes and training seed")
    args = parser.parse_args()
    clip, clean, scribbled = scribbled_case(args.seed)
    correction, tune_seconds = fine_tuned_correction(clean, scribbled, args.teacher_steps,
                                                     args.seed)
    teacher = [correct_alpha(correction, item.plate, clean, item.engine) for item in clip]
    training, held = holdout_split(list(range(FRAMES)), HOLDOUT)
    config = DistillConfig(steps=args.steps, crop=CROP, seed=args.seed)

    distilled = build_model("student", {"width": STUDENT_WIDTH}, seed=args.seed)
    started = time.perf_counter()
    distill_student(distilled, [DistillFrame(clip[t].plate, clean, teacher[t], f"frame {t}")
                                for t in training], config, device="cpu", progress=False)
    distill_seconds = time.perf_counter() - started
    from_strokes = build_model("student", {"width": STUDENT_WIDTH}, seed=args.seed)
    train_on_scribbles(from_strokes, scribbled, config)

    rows = []
    for label, model in (("(a) distilled from the teacher", distilled),
                         ("(b) trained on the scribbles alone", from_strokes)):
        preds = {t: predict_student(model, clip[t].plate, clean) for t in held}
        agreement = mean_agreement([(preds[t], teacher[t]) for t in held])
        truth = float(np.mean([mad(preds[t], clip[t].truth) for t in held])) * MAD_SCALE
        rows.append(f"| {label} | {agreement['mse']:.2f} | {agreement['sad']:.2f} | "
                    f"{truth:.1f} |")
    for label, alphas in (("teacher (cleanplate + correction)", teacher),
                          ("cleanplate engine alone", [item.engine for item in clip])):
        truth = float(np.mean([mad(alphas[t], clip[t].truth) for t in held])) * MAD_SCALE
        rows.append(f"| {label} | - | - | {truth:.1f} |")

    engine = create_engine("cleanplate", "cpu")
    speed = []
    for size in ((clip[0].plate.shape[0], clip[0].plate.shape[1]), (1080, 1920)):
        teacher_s, student_s = cpu_seconds(engine, correction, distilled,
                                           clip[held[0]].plate, clean, size)
        speed.append(f"| {size[1]}x{size[0]} | {teacher_s:.3f} | {student_s:.3f} | "
                     f"{teacher_s / student_s:.1f}x |")

    print(f"clip {FRAMES} frames {clip[0].plate.shape[1]}x{clip[0].plate.shape[0]}; held back "
          f"{held}; teacher fine-tuning {args.teacher_steps} steps ({tune_seconds:.0f} s); "
          f"students width {STUDENT_WIDTH}, {args.steps} steps, crops {CROP}, batch "
          f"{config.batch_size} (distillation {distill_seconds:.0f} s); seed {args.seed}; "
          f"torch threads {torch.get_num_threads()}")
    print()
    print("| student (held-back frames) | MSE x1e3 vs teacher | SAD /1e3 vs teacher | "
          "MAD x1e3 vs truth |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| frame size (CPU) | teacher s/frame | student s/frame | speed-up |")
    print("|---|---|---|---|")
    print("\n".join(speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
