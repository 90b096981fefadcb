"""The OAVM architecture of VideoMatte and its Sequential Foreground Merging augmentation:
shapes and ranges, the encoder's scales, the first-frame mask's influence, the 15 x 15 window of
the local memory attention, masked attention ignoring masked-out keys, the cross-frame guidance,
ONNX parity of the per-frame step, a tiny overfit and the checkpoint round trip. Tiny configs,
CPU, seconds.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mattekit.inference.models import ARCHITECTURES, build_model, export_onnx  # noqa: E402
from mattekit.inference.models.augment_video import (  # noqa: E402
    DistractorTrack,
    merge_sequential,
    random_tracks,
)
from mattekit.inference.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mattekit.inference.models.losses import matting_loss  # noqa: E402
from mattekit.inference.models.oavm import (  # noqa: E402
    OAVM,
    MemoryState,
    OavmConfig,
    guidance_mask,
)
from mattekit.inference.models.oavm.attention import MaskedAttention  # noqa: E402
from mattekit.inference.models.oavm.backbone import (  # noqa: E402
    InvertedResidual,
    SqueezeExcite,
)
from mattekit.inference.models.oavm.memory import global_readout, local_readout  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy machine's OpenMP stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int = 0) -> OAVM:
    torch.manual_seed(seed)
    return build_model("oavm", OavmConfig.tiny().to_dict()).eval()


def frames(count: int = 1, height: int = 64, width: int = 64, batch: int = 1, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, height, width, generator=generator) for _ in range(count)]


def box_mask(height: int, width: int, top: int, left: int, size: int, batch: int = 1):
    mask = torch.zeros(batch, 1, height, width)
    mask[..., top:top + size, left:left + size] = 1.0
    return mask


def test_when_the_registry_is_listed_then_oavm_is_built_from_its_config_dict():
    assert ARCHITECTURES["oavm"] == ("mattekit.inference.models.oavm", "OAVM")
    model = tiny()
    assert isinstance(model, OAVM) and model.architecture == "oavm"
    assert OavmConfig.from_dict(model.config.to_dict()) == model.config
    assert OavmConfig.from_dict({"widths": [8, 8, 8, 8]}).widths == (8, 8, 8, 8)
    with pytest.raises(ValueError, match="window must be odd"):
        build_model("oavm", {**OavmConfig.tiny().to_dict(), "window": 14})


def test_when_a_frame_is_encoded_then_features_come_at_1_2_1_4_1_8_1_16_from_se_hardswish_blocks():
    model = tiny()
    with torch.no_grad():
        features = model.encoder(torch.rand(1, 3, 64, 96))
    widths = model.config.widths
    assert [tuple(f.shape) for f in features] == [
        (1, widths[0], 32, 48), (1, widths[1], 16, 24), (1, widths[2], 8, 12),
        (1, widths[3], 4, 6)]
    blocks = [m for m in model.encoder.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == sum(model.config.depths)
    assert any(isinstance(m, SqueezeExcite) for m in model.encoder.stages[2].modules())
    assert any(isinstance(m, torch.nn.Hardswish) for m in model.encoder.stages[3].modules())
    assert not any(isinstance(m, SqueezeExcite) for m in model.encoder.stages[0].modules())


@pytest.mark.parametrize("height,width", [(64, 64), (50, 70)])
def test_when_a_clip_is_matted_then_alpha_and_foreground_come_at_input_size_in_0_1(height, width):
    model = tiny()
    clip = frames(2, height, width, batch=2)
    with torch.no_grad():
        memory = model.init_memory(clip[0], box_mask(height, width, 10, 12, 24, batch=2))
        for src in clip:
            fgr, pha, memory = model(src, memory)
            assert fgr.shape == (2, 3, height, width) and pha.shape == (2, 1, height, width)
            for out in (fgr, pha):
                assert torch.isfinite(out).all()
                assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
            assert float(pha.std()) > 0
    grid = (-(-height // 16), -(-width // 16))
    config = model.config
    assert isinstance(memory, MemoryState)
    assert memory.first_key.shape == (2, config.key_dim, *grid)
    assert memory.prev_value.shape == (2, config.value_dim, *grid)
    assert memory.prev_alpha.shape == (2, 1, *grid)
    assert memory.queries.shape == (2, config.queries, config.dim)


def test_when_a_5d_clip_goes_in_then_it_equals_the_frames_run_one_by_one():
    model = tiny()
    clip = frames(3, 32, 48)
    mask = box_mask(32, 48, 4, 8, 16)
    with torch.no_grad():
        memory = model.init_memory(clip[0], mask)
        fgr_seq, pha_seq, last = model(torch.stack(clip, dim=1), memory)
        phas = []
        for src in clip:
            _, pha, memory = model(src, memory)
            phas.append(pha)
    assert pha_seq.shape == (1, 3, 1, 32, 48) and fgr_seq.shape == (1, 3, 3, 32, 48)
    torch.testing.assert_close(pha_seq, torch.stack(phas, dim=1))
    torch.testing.assert_close(last.queries, memory.queries)


def test_when_the_first_frame_mask_changes_then_the_memory_and_the_output_change():
    model = tiny()
    first, second = frames(2)
    with torch.no_grad():
        left = model.init_memory(first, box_mask(64, 64, 16, 0, 32))
        right = model.init_memory(first, box_mask(64, 64, 16, 32, 32))
        pha_left = model(second, left)[1]
        pha_right = model(second, right)[1]
    assert not torch.allclose(left.first_value, right.first_value)  # the mask is embedded
    torch.testing.assert_close(left.first_key, right.first_key)      # keys are the frame's
    assert not torch.allclose(left.queries, right.queries)           # masked query generation
    assert float((pha_left - pha_right).abs().max()) > 1e-5
    with pytest.raises(ValueError, match="first_mask must be"):
        model.init_memory(first, torch.ones(1, 1, 32, 32))


def brute_force_window(query, key, value, window, y, x):
    """The reference: softmax over the memory cells of the window around (y, x) inside the
    frame, written out cell by cell."""
    radius = window // 2
    height, width = query.shape[-2:]
    cells = [(yy, xx) for yy in range(y - radius, y + radius + 1)
             for xx in range(x - radius, x + radius + 1) if 0 <= yy < height and 0 <= xx < width]
    logits = torch.stack([(query[0, :, y, x] * key[0, :, yy, xx]).sum() for yy, xx in cells])
    weights = torch.softmax(logits * query.shape[1] ** -0.5, dim=0)
    return sum(w * value[0, :, yy, xx] for w, (yy, xx) in zip(weights, cells))


def test_when_the_local_readout_runs_then_it_is_softmax_attention_over_the_window_cells():
    generator = torch.Generator().manual_seed(3)
    query, key = (torch.randn(1, 4, 20, 22, generator=generator) for _ in range(2))
    value = torch.randn(1, 3, 20, 22, generator=generator)
    out = local_readout(query, key, value, window=15)
    for y, x in [(0, 0), (10, 11), (19, 21), (3, 17)]:
        torch.testing.assert_close(out[0, :, y, x], brute_force_window(query, key, value, 15,
                                                                        y, x))


def test_when_a_previous_frame_cell_outside_the_15x15_window_changes_then_the_readout_holds():
    generator = torch.Generator().manual_seed(4)
    query, key = (torch.randn(1, 4, 24, 24, generator=generator) for _ in range(2))
    value = torch.randn(1, 3, 24, 24, generator=generator)
    y, x = 12, 12
    base = local_readout(query, key, value, 15)[0, :, y, x]
    for dy, dx, inside in [(8, 0, False), (0, -8, False), (8, 8, False), (-9, 3, False),
                           (7, 0, True), (-7, -7, True), (0, 7, True), (3, -5, True)]:
        key_changed, value_changed = key.clone(), value.clone()
        key_changed[0, :, y + dy, x + dx] += 3.0
        value_changed[0, :, y + dy, x + dx] += 3.0
        readout = local_readout(query, key_changed, value_changed, 15)[0, :, y, x]
        changed = float((readout - base).abs().max()) > 1e-6
        assert changed == inside, (dy, dx)


def test_when_the_global_readout_runs_then_every_first_frame_cell_counts_wherever_it_is():
    generator = torch.Generator().manual_seed(5)
    query, key = (torch.randn(1, 4, 24, 24, generator=generator) for _ in range(2))
    value = torch.randn(1, 3, 24, 24, generator=generator)
    base = global_readout(query, key, value)[0, :, 0, 0]
    far = value.clone()
    far[0, :, 23, 23] += 3.0  # the opposite corner, far outside any local window
    assert float((global_readout(query, key, far)[0, :, 0, 0] - base).abs().max()) > 1e-6
    constant = global_readout(query, key, torch.full_like(value, 0.25))
    torch.testing.assert_close(constant, torch.full_like(constant, 0.25))  # convex weights


def test_when_attention_is_masked_then_masked_out_keys_have_no_influence():
    torch.manual_seed(6)
    attention = MaskedAttention(8, 2).eval()
    queries = torch.randn(2, 3, 8)
    context = torch.randn(2, 10, 8)
    mask = torch.zeros(2, 10)
    mask[:, 2:5] = 1.0
    with torch.no_grad():
        out = attention(queries, context, mask)
        hidden, shown = context.clone(), context.clone()
        hidden[:, 6:] += 5.0
        shown[:, 3] += 5.0
        torch.testing.assert_close(attention(queries, hidden, mask), out, rtol=0, atol=1e-6)
        assert float((attention(queries, shown, mask) - out).abs().max()) > 1e-4
        # nothing visible: every key is (Mask2Former's fallback), not an average of nothing
        torch.testing.assert_close(attention(queries, context, torch.zeros(2, 10)),
                                   attention(queries, context, None))


def test_when_the_guidance_mask_is_made_then_previous_alpha_is_binarised_then_dilated():
    prev = torch.zeros(1, 1, 9, 9)
    prev[0, 0, 4, 4] = 0.6
    prev[0, 0, 0, 8] = 0.4  # below 0.5: not the target
    guide = guidance_mask(prev, 2)
    expected = torch.zeros(1, 1, 9, 9)
    expected[0, 0, 2:7, 2:7] = 1.0
    torch.testing.assert_close(guide, expected)
    torch.testing.assert_close(guidance_mask(prev, 0), (prev > 0.5).float())
    with pytest.raises(ValueError, match="dilation must be >= 0"):
        guidance_mask(prev, -1)


def test_when_queries_are_generated_then_features_outside_the_mask_do_not_reach_them():
    model = tiny()
    features = torch.randn(1, model.config.dim, 4, 4, generator=torch.Generator().manual_seed(7))
    mask = box_mask(4, 4, 1, 1, 2)
    with torch.no_grad():
        queries = model.query_generator(features, mask)
        # (a per-pixel pattern across channels: a constant shift is LayerNorm's to remove)
        shift = torch.randn(model.config.dim, 1, generator=torch.Generator().manual_seed(9))
        outside, inside = features.clone(), features.clone()
        outside[0, :, 0, :] += 3 * shift
        outside[0, :, 3, 3] -= 3 * shift[:, 0]
        inside[0, :, 2, 2] += 3 * shift[:, 0]
        torch.testing.assert_close(model.query_generator(outside, mask), queries, rtol=0,
                                   atol=1e-6)
        assert float((model.query_generator(inside, mask) - queries).abs().max()) > 1e-4


def test_when_ogcr_runs_then_queries_see_only_the_dilated_previous_target_and_it_steers_alpha():
    model = tiny()
    dim = model.config.dim
    generator = torch.Generator().manual_seed(8)
    features = torch.randn(1, dim, 6, 6, generator=generator)
    queries = torch.randn(1, model.config.queries, dim, generator=generator)
    prev_alpha = torch.zeros(1, 1, 6, 6)
    prev_alpha[..., 1, 1] = 0.9  # dilated by 1 cell (tiny config): rows/cols 0..2
    with torch.no_grad():
        _, updated, _ = model.ogcr(features, queries, prev_alpha)
        shift = 3 * torch.randn(dim, generator=generator)
        far, near = features.clone(), features.clone()
        far[0, :, 4:, 4:] += shift[:, None, None]  # outside the guidance: the queries cannot
        near[0, :, 2, 2] += shift                  # see it; inside the dilated guidance
        torch.testing.assert_close(model.ogcr(far, queries, prev_alpha)[1], updated, rtol=0,
                                   atol=1e-6)
        assert float((model.ogcr(near, queries, prev_alpha)[1] - updated).abs().max()) > 1e-4
    # through the whole step: where the previous target was changes the current alpha
    src = frames(1)[0]
    with torch.no_grad():
        memory = model.init_memory(src, box_mask(64, 64, 8, 8, 24))
        moved = memory._replace(prev_alpha=torch.flip(memory.prev_alpha, dims=[-1, -2]))
        assert float((model(src, memory)[1] - model(src, moved)[1]).abs().max()) > 1e-5


def test_when_a_training_target_is_given_then_the_queries_come_from_masked_generation_on_it():
    model = tiny()
    first, second = frames(2)
    with torch.no_grad():
        memory = model.init_memory(first, box_mask(64, 64, 8, 8, 24))
        carried = model(second, memory)[2].queries
        target = box_mask(64, 64, 30, 30, 24)
        generated = model(second, memory, target=target)[2].queries
        features = model.encode(second)[3]
        direct = model.query_generator(features, torch.nn.functional.max_pool2d(target, 16))
    assert not torch.allclose(carried, generated)
    # what OGCR refined is the generator's masked attention to the target on this frame
    with torch.no_grad():
        pixels = model.memory(features, model.memory.encode_key(features), *memory[:4])
        refined = model.ogcr(pixels, direct, memory.prev_alpha)[1]
    torch.testing.assert_close(generated, refined)


def test_when_the_memory_does_not_fit_the_frame_then_the_error_says_so():
    model = tiny()
    small, large = frames(1, 32, 32)[0], frames(1, 64, 64)[0]
    with torch.no_grad():
        memory = model.init_memory(small, box_mask(32, 32, 8, 8, 16))
        with pytest.raises(ValueError, match="start a new memory"):
            model(large, memory)


def test_when_the_step_is_exported_to_onnx_then_onnxruntime_matches_torch_within_1e_4(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = tiny()
    path = export_onnx(model, tmp_path / "oavm.onnx", 48, 80)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(model.onnx_input_names)
    assert [o.name for o in session.get_outputs()] == list(model.onnx_output_names)
    first, second = frames(2, 48, 80, seed=5)
    with torch.no_grad():
        memory = model.init_memory(first, box_mask(48, 80, 8, 20, 24))
        fgr, pha, after = model(second, memory)
    feeds = {name: tensor.numpy() for name, tensor in
             zip(model.onnx_input_names, (second, *memory))}
    got = session.run(None, feeds)
    for want, have in zip((fgr, pha, *after), got):
        assert have.shape == tuple(want.shape)
        np.testing.assert_allclose(have, want.numpy(), rtol=0, atol=1e-4)


def tiny_clip(count: int = 2, size: int = 48):
    """A soft disc moving right over texture: (src (1, T, 3, H, W), alpha, trimap)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    background = rng.random((size, size, 3)).astype(np.float32)
    srcs, alphas = [], []
    for t in range(count):
        radius = np.hypot(yy - size / 2, xx - size / 3 - 3 * t)
        alpha = np.clip((size / 5 + 2 - radius) / 4, 0, 1).astype(np.float32)
        frame = alpha[..., None] * np.float32([0.9, 0.3, 0.2]) + (1 - alpha[..., None]) * background
        srcs.append(frame.transpose(2, 0, 1))
        alphas.append(alpha[None])
    src = torch.from_numpy(np.stack(srcs)[None].astype(np.float32))
    alpha = torch.from_numpy(np.stack(alphas)[None])
    trimap = torch.where(alpha >= 1, 1.0, torch.where(alpha <= 0, 0.0, 0.5))
    return src, alpha, trimap


def test_when_a_tiny_clip_is_fitted_for_three_steps_then_the_loss_goes_down():
    model = tiny().train()
    src, alpha, trimap = tiny_clip()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):  # three updates, then the loss after them
        optimiser.zero_grad()
        memory = model.init_memory(src[:, 0], alpha[:, 0])
        pha = model(src, memory, target=alpha)[1]
        loss = matting_loss(pha.flatten(0, 1), alpha.flatten(0, 1), trimap.flatten(0, 1))["total"]
        losses.append(float(loss.detach()))
        loss.backward()
        optimiser.step()
    assert losses[-1] < losses[0], losses
    for part in ("encoder", "memory", "query_generator", "ogcr", "decoder"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert grads and all(g is not None for g in grads), part


def test_when_a_checkpoint_is_saved_and_loaded_then_the_network_is_the_same(tmp_path):
    model = tiny(seed=3)
    path = save_checkpoint(model, tmp_path / "oavm.pt", extra={"step": 0})
    loaded = load_checkpoint(path, architecture="oavm")
    assert loaded.config == model.config and not loaded.training
    src = frames(1, 32, 48)[0]
    with torch.no_grad():
        memory = model.init_memory(src, box_mask(32, 48, 4, 4, 16))
        torch.testing.assert_close(loaded(src, memory)[:2], model(src, memory)[:2])
    with pytest.raises(ValueError, match="not 'cinematte'"):
        load_checkpoint(path, architecture="cinematte")


# -- Sequential Foreground Merging -----------------------------------------------------------

T, H, W = 6, 24, 32


def target_clip():
    """A red square moving right over a textured background: (fg, alpha (T, H, W), bg)."""
    rng = np.random.default_rng(1)
    alpha = np.zeros((T, H, W), np.float32)
    for t in range(T):
        alpha[t, 8:16, 2 + t:10 + t] = 1.0
    fg = np.broadcast_to(np.float32([0.9, 0.1, 0.1]), (H, W, 3))
    return fg, alpha, rng.random((H, W, 3)).astype(np.float32)


def distractor(frames_: int = 3, size: int = 8):
    """A green square sequence whose opacity changes frame by frame."""
    alpha = np.stack([np.full((size, size), 0.6 + 0.1 * t, np.float32) for t in range(frames_)])
    fg = np.broadcast_to(np.float32([0.1, 0.8, 0.1]), (frames_, size, size, 3))
    return fg, alpha


def test_when_a_distractor_sequence_is_merged_then_it_enters_late_and_alpha_stays_the_target():
    fg, alpha, bg = target_clip()
    d_fg, d_alpha = distractor()
    track = DistractorTrack(d_fg, d_alpha, start=2, top=14, left=-8, velocity=(0.0, 4.0))
    clip = merge_sequential(fg, alpha, bg, [track])
    plain = merge_sequential(fg, alpha, bg)
    np.testing.assert_array_equal(clip.alpha, alpha)  # the distractor is never in the truth
    np.testing.assert_array_equal(clip.frames[:3], plain.frames[:3])  # off-canvas at frame 2
    assert not clip.distractor_alpha[:3].any()
    areas = clip.distractor_alpha.reshape(T, -1).astype(bool).sum(axis=1)
    assert list(areas[2:]) == [0, 8 * 4, 8 * 8, 8 * 8]  # it walks in from the left edge
    present = clip.distractor_alpha[5] > 0
    background_only = present & (alpha[5] == 0)
    assert background_only.any()
    assert np.all(clip.alpha[5][background_only] == 0)  # where only the distractor is: alpha 0
    # ... and it is in the frame there: its colour over the background, at its opacity (0.8)
    expected = 0.8 * np.float32([0.1, 0.8, 0.1]) + 0.2 * bg
    np.testing.assert_allclose(clip.frames[5][background_only], expected[background_only],
                               atol=1e-6)
    assert np.abs(clip.frames[5] - plain.frames[5])[background_only].max() > 0.1
    # its own frames play in order, holding the last one: opacity 0.6 -> 0.7 -> 0.8, 0.8
    np.testing.assert_allclose([clip.distractor_alpha[t].max() for t in (3, 4, 5)],
                               [0.7, 0.8, 0.8], rtol=1e-6)


def test_when_a_distractor_passes_in_front_then_the_target_alpha_is_its_visible_part():
    fg, alpha, bg = target_clip()
    d_fg, d_alpha = distractor(1)
    track = DistractorTrack(d_fg[0], d_alpha[0], start=1, top=8, left=6, in_front=True)
    clip = merge_sequential(fg, alpha, bg, [track])
    covered = clip.distractor_alpha[3] > 0
    np.testing.assert_allclose(clip.alpha[3], alpha[3] * (1 - clip.distractor_alpha[3]))
    assert float(clip.alpha[3][covered & (alpha[3] > 0)].max()) == pytest.approx(0.4)
    np.testing.assert_array_equal(clip.alpha[0], alpha[0])  # not in yet on the first frame
    with pytest.raises(ValueError, match="must enter after the first frame"):
        merge_sequential(fg, alpha, bg, [dataclasses.replace(track, start=0)])


def test_when_random_tracks_are_drawn_then_they_enter_one_after_another_after_the_first_frame():
    fg, alpha, bg = target_clip()
    pool = [distractor(), distractor(1)]
    rng = np.random.default_rng(2)
    seen_late = False
    for _ in range(20):
        tracks = random_tracks(pool, T, H, W, rng, probability=1.0, max_count=3)
        assert 1 <= len(tracks) <= 3
        starts = [t.start for t in tracks]
        assert starts == sorted(starts) and min(starts) >= 1
        clip = merge_sequential(fg, alpha, bg, tracks)
        assert not clip.distractor_alpha[0].any()
        np.testing.assert_array_equal(clip.alpha, alpha)
        seen_late = seen_late or bool(clip.distractor_alpha[-1].any())
    assert seen_late
    assert random_tracks(pool, T, H, W, rng, probability=0.0) == []
