"""`mattekit eval`: per-frame and mean scores of EXR/PNG mattes; bad input is one line, exit 1."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest

from mattekit.inference import metrics
from mattekit.inference.cli import main
from mattekit.inference.exrio import Window, write_exr

W, H = 20, 14
FIRST = 1001


def clip(count: int, seed: int) -> list[np.ndarray]:
    """A soft disc drifting right, with a little noise: exactly representable in 16 bits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:H, :W]
    frames = []
    for i in range(count):
        disc = 1.0 / (1.0 + np.exp(np.hypot(x - 8 - i, y - 7) - 4))
        matte = np.clip(disc + rng.normal(0, 0.05, (H, W)), 0, 1)
        frames.append((np.round(matte * 65535) / 65535).astype(np.float32))
    return frames


def write_exr_alpha(path: Path, alpha: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_exr(path, np.zeros((*alpha.shape, 3), np.float32), alpha, pixel_type="float",
              **kwargs)


def write_png(path: Path, matte: np.ndarray, bits: int = 16, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scale, dtype = (65535, np.uint16) if bits == 16 else (255, np.uint8)
    plane = np.round(matte * scale).astype(dtype)
    image = plane if channels == 1 else np.dstack([plane] * channels)
    assert cv2.imwrite(str(path), image)


def write_sequence(folder: Path, mattes: list[np.ndarray], kind: str = "exr") -> str:
    for i, matte in enumerate(mattes):
        path = folder / f"matte.{FIRST + i:04d}.{kind}"
        write_exr_alpha(path, matte) if kind == "exr" else write_png(path, matte)
    return str(folder / f"matte.####.{kind}")


def run_json(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("mattekit: error: ")
    return lines[0]


def expected_scores(preds: list[np.ndarray], gts: list[np.ndarray],
                    mask: Optional[np.ndarray] = None) -> list[dict[str, float]]:
    return [{m.name: m.report(m.function(p, g, mask)) for m in metrics.METRICS if not m.temporal}
            for p, g in zip(preds, gts)]


@pytest.fixture
def sequences(tmp_path) -> tuple[str, str, list[np.ndarray], list[np.ndarray]]:
    gts, preds = clip(4, seed=1), clip(4, seed=2)
    return (write_sequence(tmp_path / "pred", preds), write_sequence(tmp_path / "gt", gts),
            preds, gts)


def test_when_two_exr_sequences_are_scored_then_json_has_every_frame_and_the_rvm_means(
        sequences, capsys):
    pred, gt, preds, gts = sequences
    report = run_json(capsys, "--pred", pred, "--gt", gt)
    assert [m["name"] for m in report["metrics"]] == ["mad", "mse", "grad", "conn", "dtssd"]
    assert [row["frame"] for row in report["frames"]] == [1001, 1002, 1003, 1004]
    for row, expected in zip(report["frames"], expected_scores(preds, gts)):
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-9), name
    for name in ("mad", "mse", "grad", "conn"):
        assert report["mean"][name] == pytest.approx(
            np.mean([row[name] for row in report["frames"]]), rel=1e-12)
    assert report["frames"][0]["dtssd"] is None
    assert report["frames"][2]["dtssd"] == pytest.approx(
        100 * metrics.dtssd_pair(preds[2], preds[1], gts[2], gts[1]), rel=1e-9)
    assert report["mean"]["dtssd"] == pytest.approx(100 * metrics.dtssd(preds, gts), rel=1e-9)


def test_when_scored_as_a_table_then_rows_are_frames_then_the_mean_with_units(sequences, capsys):
    pred, gt, _, _ = sequences
    assert main(["eval", "--pred", pred, "--gt", gt]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["frame", "MAD", "MSE", "Grad", "Conn", "dtSSD"]
    assert lines[1].split() == ["(x1e3)", "(x1e3)", "(/1e3)", "(/1e3)", "(x1e2)"]
    assert [line.split()[0] for line in lines[2:]] == ["1001", "1002", "1003", "1004", "mean"]
    assert lines[2].split()[-1] == "-"  # no dtSSD for the first frame
    assert len({len(line) for line in lines}) == 1  # columns line up


def test_when_a_frame_range_is_given_then_only_those_frames_are_scored(sequences, capsys):
    pred, gt, preds, gts = sequences
    report = run_json(capsys, "--pred", pred, "--gt", gt, "--frames", "1002-1003")
    assert [row["frame"] for row in report["frames"]] == [1002, 1003]
    assert report["mean"]["dtssd"] == pytest.approx(
        100 * metrics.dtssd(preds[1:3], gts[1:3]), rel=1e-9)


def test_when_only_one_frame_is_scored_then_there_is_no_dtssd(sequences, capsys):
    pred, gt, _, _ = sequences
    report = run_json(capsys, "--pred", pred, "--gt", gt, "--frames", "1003")
    assert "dtssd" not in report["mean"] and "dtssd" not in report["frames"][0]
    assert [m["name"] for m in report["metrics"]] == ["mad", "mse", "grad", "conn"]


def test_when_a_matte_is_scored_against_itself_then_every_metric_is_zero(sequences, capsys):
    _, gt, _, _ = sequences
    report = run_json(capsys, "--pred", gt, "--gt", gt)
    assert set(report["mean"].values()) == {0.0}


@pytest.mark.parametrize("bits, channels", [(16, 1), (8, 1), (16, 3), (8, 4)])
def test_when_mattes_are_pngs_then_they_score_like_the_same_exr(tmp_path, capsys, bits,
                                                                 channels):
    gt, pred = clip(1, seed=3)[0], clip(1, seed=4)[0]
    if bits == 8:
        gt, pred = (np.round(m * 255) / 255 for m in (gt, pred))
    write_png(tmp_path / "pred.png", pred, bits, channels)
    write_exr_alpha(tmp_path / "gt.exr", gt)
    report = run_json(capsys, "--pred", str(tmp_path / "pred.png"),
                      "--gt", str(tmp_path / "gt.exr"))
    expected = expected_scores([pred], [gt])[0]
    for name, value in expected.items():
        assert report["frames"][0][name] == pytest.approx(value, rel=1e-5, abs=1e-9), name


def test_when_an_rgb_png_holds_different_channels_then_channel_0_is_the_matte(tmp_path, capsys):
    gt = clip(1, seed=5)[0]
    image = np.dstack([np.zeros((H, W)), np.ones((H, W)), np.round(gt * 65535)])  # B, G, R
    cv2.imwrite(str(tmp_path / "pred.png"), image.astype(np.uint16))
    write_png(tmp_path / "gt.png", gt)
    report = run_json(capsys, "--pred", str(tmp_path / "pred.png"),
                      "--gt", str(tmp_path / "gt.png"))
    assert report["mean"]["mad"] == 0.0


def test_when_an_exr_has_a_tight_bounding_box_then_it_is_placed_in_the_display_window(
        tmp_path, capsys):
    gt = np.zeros((H, W), np.float32)
    gt[4:8, 5:10] = 0.75
    full = Window.from_size(W, H)
    box = Window(5, 4, 9, 7)
    write_exr_alpha(tmp_path / "pred.exr", gt[4:8, 5:10].copy(), data_window=box,
                    display_window=full)
    write_exr_alpha(tmp_path / "gt.exr", gt)
    report = run_json(capsys, "--pred", str(tmp_path / "pred.exr"),
                      "--gt", str(tmp_path / "gt.exr"))
    assert set(report["mean"].values()) == {0.0}


def test_when_a_trimap_is_given_then_the_spatial_metrics_see_only_its_unknown_region(
        tmp_path, capsys):
    gt, pred = clip(2, seed=6), clip(2, seed=7)
    trimap = np.zeros((H, W))
    trimap[3:11, 4:16] = 0.5
    trimap[6:8, 8:12] = 1.0
    write_png(tmp_path / "trimap.png", trimap, bits=8)
    mask = metrics.unknown_region(np.round(trimap * 255) / 255)
    report = run_json(capsys, "--pred", write_sequence(tmp_path / "pred", pred),
                      "--gt", write_sequence(tmp_path / "gt", gt),
                      "--trimap", str(tmp_path / "trimap.png"))
    for row, expected in zip(report["frames"], expected_scores(pred, gt, mask)):
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-9), name
    assert report["trimap"] == str(tmp_path / "trimap.png")


def test_when_alpha_leaves_0_to_1_then_it_is_clipped_with_one_warning(tmp_path, capsys):
    gt = clip(2, seed=8)
    pred = [g.copy() for g in gt]
    pred[0][0, 0], pred[1][0, 1] = 1.25, -0.5
    assert main(["eval", "--pred", write_sequence(tmp_path / "pred", pred),
                 "--gt", write_sequence(tmp_path / "gt", gt), "--json"]) == 0
    out, err = capsys.readouterr()
    clipped = [np.clip(p, 0, 1) for p in pred]
    assert json.loads(out)["mean"]["mad"] == pytest.approx(
        1e3 * np.mean([metrics.mad(p, g) for p, g in zip(clipped, gt)]), rel=1e-9)
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert warnings[0].startswith("mattekit: warning: ")
    assert "pred" in warnings[0] and "matte.####.exr" in warnings[0]
    assert "1001-1002" in warnings[0] and "0.5" in warnings[0]


# --- errors -----------------------------------------------------------------------------------

def test_when_prediction_frames_are_missing_then_one_line_names_the_pattern_and_frames(
        sequences, capsys):
    pred, gt, _, _ = sequences
    Path(pred.replace("####", "1002")).unlink()
    Path(pred.replace("####", "1004")).unlink()
    assert main(["eval", "--pred", pred, "--gt", gt]) == 1
    line = error_line(capsys)
    assert pred in line and "1002" in line and "1004" in line


def test_when_a_frame_range_runs_past_the_ground_truth_then_the_missing_frame_is_named(
        sequences, capsys):
    pred, gt, _, _ = sequences
    assert main(["eval", "--pred", pred, "--gt", gt, "--frames", "1003-1005"]) == 1
    line = error_line(capsys)
    assert gt in line and "1005" in line


def test_when_sizes_differ_then_one_line_names_the_file_and_frame(sequences, tmp_path, capsys):
    pred, gt, preds, _ = sequences
    write_exr_alpha(Path(pred.replace("####", "1003")), preds[2][:, :-2].copy())
    assert main(["eval", "--pred", pred, "--gt", gt]) == 1
    line = error_line(capsys)
    assert "matte.1003.exr" in line and "frame 1003" in line
    assert f"{W - 2}x{H}" in line and f"{W}x{H}" in line


def test_when_an_exr_has_no_alpha_then_one_line_says_which_channels_it_has(tmp_path, capsys):
    write_exr(tmp_path / "pred.exr", np.zeros((H, W, 3), np.float32))
    write_exr_alpha(tmp_path / "gt.exr", clip(1, seed=9)[0])
    assert main(["eval", "--pred", str(tmp_path / "pred.exr"),
                 "--gt", str(tmp_path / "gt.exr")]) == 1
    line = error_line(capsys)
    assert "pred.exr" in line and "no alpha channel A" in line and "R, G, B" in line


def test_when_a_matte_has_nan_pixels_then_one_line_names_the_file_and_frame(sequences, capsys):
    pred, gt, preds, _ = sequences
    broken = preds[1].copy()
    broken[2, 3] = np.nan
    write_exr_alpha(Path(pred.replace("####", "1002")), broken)
    assert main(["eval", "--pred", pred, "--gt", gt]) == 1
    line = error_line(capsys)
    assert "matte.1002.exr" in line and "frame 1002" in line and "NaN" in line


def test_when_a_trimap_has_no_unknown_pixels_then_one_line_says_so(sequences, tmp_path, capsys):
    pred, gt, _, _ = sequences
    write_png(tmp_path / "trimap.png", np.ones((H, W)), bits=8)
    assert main(["eval", "--pred", pred, "--gt", gt, "--trimap",
                 str(tmp_path / "trimap.png")]) == 1
    line = error_line(capsys)
    assert "trimap.png" in line and "no unknown pixels" in line


def test_when_the_ground_truth_file_does_not_exist_then_one_line_names_it(tmp_path, capsys):
    write_png(tmp_path / "pred.png", clip(1, seed=10)[0])
    assert main(["eval", "--pred", str(tmp_path / "pred.png"),
                 "--gt", str(tmp_path / "nope.png")]) == 1
    assert "nope.png" in error_line(capsys)


# --- real ground truth (skipped without ../shared/data/alphamatting-dev) ----------------------

def test_when_real_ground_truth_is_blurred_then_every_metric_rises_from_zero(
        shared_data, tmp_path, capsys):
    gt = shared_data / "alpha" / "GT04.png"
    trimap = shared_data / "trimap" / "GT04.png"
    image = cv2.imread(str(gt), cv2.IMREAD_UNCHANGED)
    assert image is not None
    scores = []
    for sigma in (1.0, 4.0):
        blurred = tmp_path / f"blur{sigma:g}.png"
        cv2.imwrite(str(blurred), cv2.GaussianBlur(image, (0, 0), sigma))
        scores.append(run_json(capsys, "--pred", str(blurred), "--gt", str(gt),
                               "--trimap", str(trimap))["mean"])
    same = run_json(capsys, "--pred", str(gt), "--gt", str(gt), "--trimap", str(trimap))["mean"]
    assert set(same.values()) == {0.0}
    for name in ("mad", "mse", "grad", "conn"):
        assert 0 < scores[0][name] < scores[1][name], name
