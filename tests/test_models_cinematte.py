"""The paper architectures of BackgroundMatte (CineMatte, background-conditioned ViTMatte):
shapes, range, the frozen weight-shared encoder, the plate's influence, ONNX parity, a tiny
overfit, checkpoints and the engine that refuses to run without one. Tiny configs, CPU, seconds.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mattekit.inference.engines.registry import file_sha256  # noqa: E402
from mattekit.inference.errors import EngineError  # noqa: E402
from mattekit.inference.models import ARCHITECTURES, build_model, export_onnx  # noqa: E402
from mattekit.inference.models.augment import compose_sample  # noqa: E402
from mattekit.inference.models.bgvitmatte import BgViTMatte, BgViTMatteConfig  # noqa: E402
from mattekit.inference.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mattekit.inference.models.cinematte import CineMatte, CineMatteConfig  # noqa: E402
from mattekit.inference.models.engines import BgViTMatteEngine, CineMatteEngine  # noqa: E402
from mattekit.inference.models.losses import matting_loss  # noqa: E402
from mattekit.inference.models.vit import ViTEncoder  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is fastest, and immune to a busy machine's OpenMP stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {"cinematte": CineMatteConfig.tiny(), "bgvitmatte": BgViTMatteConfig.tiny()}
BACKGROUND_MATTE = sorted(TINY)  # the registry's frame + clean plate architectures
SIZE = 64


def tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, TINY[name].to_dict()).eval()


def pair(height: int = SIZE, width: int = SIZE, batch: int = 1, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=generator),
            torch.rand(batch, 3, height, width, generator=generator))


def tiny_example(size: int = SIZE):
    """A soft disc over a textured background, composited: (src, bgr, alpha, trimap) tensors."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    alpha = np.clip((size / 4 + 2 - radius) / 4, 0, 1).astype(np.float32)
    fg = np.broadcast_to(np.float32([0.9, 0.3, 0.2]), (size, size, 3))
    background = rng.random((size, size, 3)).astype(np.float32)
    sample = compose_sample(fg, alpha, background)
    trimap = np.where(alpha >= 1, 1.0, np.where(alpha <= 0, 0.0, 0.5)).astype(np.float32)

    def image(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]

    return (image(sample.frame), image(sample.clean_plate), torch.from_numpy(alpha)[None, None],
            torch.from_numpy(trimap)[None, None])


def test_when_the_registry_is_listed_then_it_holds_both_background_matte_architectures():
    # oavm: video-matte; parallaxnet: parallax-matte; umatting: sparse-4k-refine;
    # alphacorrection: per-shot scribble fine-tuning; student: distillation
    assert set(ARCHITECTURES) == {"cinematte", "bgvitmatte", "oavm", "parallaxnet", "umatting",
                                  "alphacorrection", "student"}
    assert isinstance(tiny("cinematte"), CineMatte)
    assert isinstance(tiny("bgvitmatte"), BgViTMatte)


def test_when_an_architecture_or_config_field_is_unknown_then_the_error_names_the_valid_ones():
    with pytest.raises(ValueError,
                       match="known architectures: alphacorrection, bgvitmatte, cinematte"):
        build_model("cinemate")
    with pytest.raises(ValueError, match="valid: .*embed_dim"):
        build_model("cinematte", {"embed_dims": 64})


@pytest.mark.parametrize("name", BACKGROUND_MATTE)
@pytest.mark.parametrize("height,width", [(64, 64), (50, 70)])
def test_when_frame_and_plate_go_in_then_alpha_and_foreground_come_out_at_input_size_in_0_1(
        name, height, width):
    src, bgr = pair(height, width, batch=2)
    with torch.no_grad():
        fgr, pha = tiny(name)(src, bgr)
    assert fgr.shape == (2, 3, height, width)
    assert pha.shape == (2, 1, height, width)
    for out in (fgr, pha):
        assert torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(pha.std()) > 0  # not a constant map


def test_when_cinematte_trains_then_the_frozen_encoder_gets_no_gradient_and_the_rest_does():
    model = tiny("cinematte").train()
    src, bgr = pair()
    fgr, pha = model(src, bgr)
    (pha.mean() + fgr.mean()).backward()
    encoder = list(model.encoder.parameters())
    assert encoder and all(not p.requires_grad and p.grad is None for p in encoder)
    assert not model.encoder.training  # frozen: kept in eval mode while the model trains
    for part in ("frame_adapter", "plate_adapter", "skip_adapter", "fbam", "upsampler",
                 "decoder", "head"):
        params = list(getattr(model, part).parameters())
        assert params and all(p.requires_grad for p in params), part
        assert all(p.grad is not None for p in params), part
        assert sum(float(p.grad.abs().sum()) for p in params) > 0, part


def test_when_cinematte_runs_then_one_encoder_with_one_set_of_weights_sees_frame_and_plate():
    model = tiny("cinematte")
    encoders = [m for m in model.modules() if isinstance(m, ViTEncoder)]
    assert encoders == [model.encoder]
    batches = []
    model.encoder.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    src, bgr = pair(batch=3)
    with torch.no_grad():
        model(src, bgr)
        _, frame_a, plate_a = model.encode(src, bgr)
        model.encoder.patch_embed.weight.mul_(1.5)  # one weight tensor change moves both streams
        _, frame_b, plate_b = model.encode(src, bgr)
    assert batches == [6, 6, 6]  # a single call per forward, frame and plate batched together
    assert not torch.allclose(frame_a, frame_b) and not torch.allclose(plate_a, plate_b)


def test_when_the_plate_changes_then_the_fbam_cross_attention_changes_the_frame_tokens():
    model = tiny("cinematte")
    src, bgr = pair()
    other_plate = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    fused = []
    model.fbam.register_forward_hook(lambda module, args, out: fused.append(out))
    with torch.no_grad():
        pha_a = model(src, bgr)[1]
        pha_b = model(src, other_plate)[1]
        assert not torch.allclose(fused[0], fused[1], atol=1e-6)
        assert float((pha_a - pha_b).abs().max()) > 1e-5
        for layer in model.fbam.layers:  # cut the cross-attention: the plate no longer enters
            layer.cross_attn.proj.weight.zero_()
            layer.cross_attn.proj.bias.zero_()
        model(src, bgr)
        model(src, other_plate)
    torch.testing.assert_close(fused[2], fused[3])


def test_when_cinematte_decodes_then_the_skip_enters_at_1_8_and_the_upsampler_feeds_stage_3():
    model = tiny("cinematte")
    seen = {}
    model.decoder.stage2.register_forward_hook(
        lambda module, args, out: seen.update(stage2_skip=args[1].shape))
    model.decoder.stage3.register_forward_hook(
        lambda module, args, out: seen.update(stage3_skip=args[1].shape))
    model.upsampler.register_forward_hook(
        lambda module, args, out: seen.update(guide=args[1].shape, upsampled=out.shape))
    src, bgr = pair(64, 96)
    with torch.no_grad():
        pha = model(src, bgr)[1]
    decoder_dim = model.config.decoder_dim
    assert seen["stage2_skip"] == (1, decoder_dim, 64 // 8, 96 // 8)
    assert seen["stage3_skip"] == (1, decoder_dim, 64 // 4, 96 // 4)
    assert seen["guide"] == (1, 3, 64, 96)  # guided by the frame itself, at full resolution
    assert seen["upsampled"] == (1, model.config.adapter_dim, 64 // 4, 96 // 4)
    # what stage 3 fuses is the upsampler's output: silencing it changes the matte
    model.upsampler.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    with torch.no_grad():
        silenced = model(src, bgr)[1]
    assert float((pha - silenced).abs().max()) > 1e-5


def test_when_the_features_are_constant_then_the_guided_upsampler_returns_them_for_any_image():
    model = tiny("cinematte")
    features = torch.full((1, model.config.adapter_dim, 4, 6), 0.7)
    image = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.upsampler(features, image)
    assert out.shape == (1, model.config.adapter_dim, 16, 24)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))  # convex weights over the window


def test_when_the_guide_image_changes_then_the_upsampled_features_change():
    model = tiny("cinematte")
    features = torch.rand(1, model.config.adapter_dim, 4, 6,
                          generator=torch.Generator().manual_seed(3))
    image = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = model.upsampler(features, image)
        b = model.upsampler(features, image.flip(-1))
        bilinear = torch.nn.functional.interpolate(features, size=(16, 24), mode="bilinear")
    assert float((a - b).abs().max()) > 1e-4
    assert float((a - bilinear).abs().max()) > 1e-4  # not a plain interpolation
    # every output lies inside the range of the features it was drawn from
    assert float(a.min()) >= float(features.min()) - 1e-6
    assert float(a.max()) <= float(features.max()) + 1e-6


def test_when_bgvitmatte_sees_another_clean_plate_then_its_alpha_changes():
    model = tiny("bgvitmatte")
    src, bgr = pair()
    with torch.no_grad():
        a = model(src, bgr)[1]
        b = model(src, torch.flip(bgr, dims=[-1]))[1]
    assert float((a - b).abs().max()) > 1e-5


def test_when_bgvitmatte_is_built_with_guidance_then_the_guidance_map_is_required_and_used():
    torch.manual_seed(0)
    model = BgViTMatte(dataclasses.replace(BgViTMatteConfig.tiny(), guidance=True)).eval()
    src, bgr = pair()
    assert model.encoder.patch_embed.in_channels == 7
    with pytest.raises(ValueError, match="guidance=True"):
        model(src, bgr)
    with torch.no_grad():
        a = model(src, bgr, torch.zeros(1, 1, SIZE, SIZE))[1]
        b = model(src, bgr, torch.ones(1, 1, SIZE, SIZE))[1]
    assert float((a - b).abs().max()) > 1e-5


@pytest.mark.parametrize("name", BACKGROUND_MATTE)
def test_when_exported_to_onnx_then_onnxruntime_matches_torch_within_1e_4(name, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = tiny(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", 48, 80)
    assert not model.training
    src, bgr = pair(48, 80, seed=5)
    with torch.no_grad():
        expected = model(src, bgr)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["src", "bgr"]
    assert [o.name for o in session.get_outputs()] == ["fgr", "pha"]
    got = session.run(None, {"src": src.numpy(), "bgr": bgr.numpy()})
    for want, have in zip(expected, got):
        assert have.shape == tuple(want.shape)
        np.testing.assert_allclose(have, want.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", BACKGROUND_MATTE)
def test_when_one_tiny_example_is_fitted_for_three_steps_then_the_loss_goes_down(name):
    model = tiny(name).train()
    src, bgr, alpha, trimap = tiny_example()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=3e-3)
    losses = []
    for _ in range(4):  # three updates, then the loss after them
        optimiser.zero_grad()
        loss = matting_loss(model(src, bgr)[1], alpha, trimap)["total"]
        losses.append(float(loss.detach()))
        loss.backward()
        optimiser.step()
    assert losses[-1] < losses[0], losses


def test_when_a_checkpoint_is_saved_and_loaded_then_the_network_is_the_same(tmp_path):
    model = tiny("cinematte", seed=3)
    path = save_checkpoint(model, tmp_path / "cm.pt", extra={"step": 0})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and not loaded.training
    src, bgr = pair()
    with torch.no_grad():
        torch.testing.assert_close(loaded(src, bgr), model(src, bgr))
    with pytest.raises(ValueError, match="not 'bgvitmatte'"):
        load_checkpoint(path, architecture="bgvitmatte")


def engine(cls, **params):
    spec = SimpleNamespace(name=cls.architecture, input_space="sRGB - Texture")
    return cls(spec=spec, model=None, model_file=None, device="cpu",
               params={"checkpoint": "", "working_size": 0, **params})


@pytest.mark.parametrize("cls", [CineMatteEngine, BgViTMatteEngine])
def test_when_no_checkpoint_is_configured_then_the_engine_refuses_to_run_untrained_weights(cls):
    with pytest.raises(EngineError, match=f"no checkpoint configured for {cls.architecture}: "
                                          ".*; the default engine needs none"):
        engine(cls)
    with pytest.raises(EngineError, match="does not exist"):
        engine(cls, checkpoint="/nonexistent/weights.pt")


def test_when_a_checkpoint_is_configured_then_the_engine_mattes_a_frame_like_the_network(
        tmp_path):
    model = tiny("cinematte", seed=4)
    path = save_checkpoint(model, tmp_path / "cm.pt")
    src, bgr = pair(40, 56, seed=6)
    frame, plate = (t[0].numpy().transpose(1, 2, 0).copy() for t in (src, bgr))
    matte = engine(CineMatteEngine, checkpoint=str(path))
    assert matte.model_hash == file_sha256(path)
    result = matte.process(frame, {"clean_plate": plate})
    with torch.no_grad():
        fgr, pha = model(src, bgr)
    assert result.alpha.shape == (40, 56) and result.foreground.shape == (40, 56, 3)
    np.testing.assert_allclose(result.alpha, pha[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.foreground, fgr[0].numpy().transpose(1, 2, 0), atol=1e-5)
    with pytest.raises(EngineError, match="needs a clean plate"):
        matte.process(frame, {})
    small = engine(CineMatteEngine, checkpoint=str(path), working_size=32)
    assert small.process(frame, {"clean_plate": plate}).alpha.shape == (40, 56)
    with pytest.raises(EngineError, match="not 'bgvitmatte'"):
        engine(BgViTMatteEngine, checkpoint=str(path))


def test_when_a_guided_bgvitmatte_checkpoint_runs_then_the_mask_is_its_guidance(tmp_path):
    torch.manual_seed(5)
    model = BgViTMatte(dataclasses.replace(BgViTMatteConfig.tiny(), guidance=True)).eval()
    path = save_checkpoint(model, tmp_path / "bg.pt")
    src, bgr = pair(32, 48, seed=7)
    frame, plate = (t[0].numpy().transpose(1, 2, 0).copy() for t in (src, bgr))
    matte = engine(BgViTMatteEngine, checkpoint=str(path))
    unknown = matte.process(frame, {"clean_plate": plate}).alpha
    with torch.no_grad():
        expected = model(src, bgr, torch.full((1, 1, 32, 48), 0.5))[1][0, 0].numpy()
    np.testing.assert_allclose(unknown, expected, atol=1e-5)  # no mask: 0.5 everywhere
    inside = matte.process(frame, {"clean_plate": plate, "mask": np.ones((32, 48), np.float32)})
    assert float(np.abs(inside.alpha - unknown).max()) > 1e-5


def test_when_the_checkpoint_or_working_size_is_bad_then_the_engine_says_which(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="garbage.pt: not a readable torch checkpoint"):
        engine(CineMatteEngine, checkpoint=str(garbage))
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(EngineError, match="not a mattekit checkpoint"):
        engine(CineMatteEngine, checkpoint=str(tmp_path / "other.pt"))
    path = save_checkpoint(tiny("cinematte"), tmp_path / "cm.pt")
    for bad in (-1, 2.5, "big"):
        with pytest.raises(EngineError, match="working_size must be a whole number"):
            engine(CineMatteEngine, checkpoint=str(path), working_size=bad)
