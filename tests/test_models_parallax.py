"""ParallaxNet (parallax-matte's paper network): shapes and range, one encoder shared by both
views, cross-attention between them, symmetry, gradients, the losses, ONNX parity, checkpoints,
and the engine that refuses to run without one. Tiny configs, CPU, seconds.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mattekit.inference.engines.registry import create_engine, engine_spec  # noqa: E402
from mattekit.inference.errors import EngineError  # noqa: E402
from mattekit.inference.models import build_model, export_onnx  # noqa: E402
from mattekit.inference.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mattekit.inference.models.parallax import (  # noqa: E402
    ParallaxNet,
    ParallaxNetConfig,
    composition_loss,
    parallax_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0) -> ParallaxNet:
    torch.manual_seed(seed)
    return build_model("parallaxnet", ParallaxNetConfig.tiny().to_dict()).eval()


def views(height: int = 48, width: int = 64, batch: int = 1, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    rgb = [torch.rand(batch, 3, height, width, generator=generator) for _ in range(4)]
    trimaps = [torch.rand(batch, 1, height, width, generator=generator).round() * 0.5 + 0.25
               for _ in range(2)]
    return rgb[0], rgb[1], trimaps[0], rgb[2], rgb[3], trimaps[1]


@pytest.mark.parametrize("height,width", [(64, 64), (50, 70)])
def test_when_two_views_go_in_then_alpha_and_foreground_come_out_at_input_size_in_0_1(
        height, width):
    with torch.no_grad():
        fgr, pha = tiny()(*views(height, width, batch=2))
    assert fgr.shape == (2, 3, height, width) and pha.shape == (2, 1, height, width)
    for out in (fgr, pha):
        assert torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(pha.std()) > 0


def test_when_the_views_are_swapped_then_the_outputs_swap():
    model = tiny(2)
    src, src_other, src_trimap, ref, ref_other, ref_trimap = views()
    with torch.no_grad():
        first, second = model.forward_both(src, src_other, src_trimap, ref, ref_other,
                                           ref_trimap)
        swapped_first, swapped_second = model.forward_both(ref, ref_other, ref_trimap, src,
                                                           src_other, src_trimap)
    assert torch.allclose(first[1], swapped_second[1], atol=1e-6)
    assert torch.allclose(second[1], swapped_first[1], atol=1e-6)
    assert not torch.allclose(first[1], second[1])


def test_when_it_runs_then_one_encoder_with_one_set_of_weights_sees_both_views():
    model = tiny()
    calls = []
    model.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    with torch.no_grad():
        model(*views(batch=3))
    assert calls == [torch.Size([6, 7, 48, 64])]  # both views of the batch in one call
    encoders = [m for m in model.modules() if type(m).__name__ == "ViTEncoder"]
    assert len(encoders) == 1


def test_when_the_other_view_changes_then_cross_attention_changes_the_first_views_alpha():
    model = tiny(3)
    inputs = list(views(seed=4))
    with torch.no_grad():
        before = model(*inputs)[1]
        inputs[3] = torch.rand_like(inputs[3])  # another second view
        after = model(*inputs)[1]
    assert float((before - after).abs().max()) > 1e-5


def test_when_it_trains_then_every_part_gets_a_gradient():
    model = tiny().train()
    src, src_other, src_trimap, ref, ref_other, ref_trimap = views(32, 32)
    fgr, pha = model(src, src_other, src_trimap, ref, ref_other, ref_trimap)
    true = (torch.rand_like(pha) > 0.5).float()
    parallax_loss(pha, fgr, true, src, src_trimap, src, ref)["total"].backward()
    for part in ("encoder", "cross", "detail", "fusion", "head"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None for g in grads), part
        assert any(float(g.abs().sum()) > 0 for g in grads), part


def test_when_the_matte_rebuilds_the_frame_then_the_composition_loss_is_zero_and_else_not():
    alpha = torch.rand(1, 1, 8, 8)
    fg, bg = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    image = alpha * fg + (1 - alpha) * bg
    assert float(composition_loss(alpha, fg, bg, image)) < 1e-7
    assert float(composition_loss(alpha * 0.5, fg, bg, image)) > 1e-3
    terms = parallax_loss(alpha, fg, alpha, fg, torch.full_like(alpha, 0.5), image, bg)
    assert {"known", "unknown", "laplacian", "gradient", "composition", "foreground",
            "total"} <= set(terms)
    for name in ("known", "unknown", "laplacian", "composition", "foreground"):
        assert float(terms[name]) < 1e-6, name
    wrong = parallax_loss(alpha * 0.5, fg, alpha, fg, torch.full_like(alpha, 0.5), image, bg)
    assert float(wrong["total"]) > float(terms["total"]) + 0.1


def test_when_a_tiny_pair_is_fitted_for_three_steps_then_the_loss_goes_down():
    model = tiny(5).train()
    inputs = views(32, 32, seed=6)
    true = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(7)) > 0.5).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        optimiser.zero_grad()
        fgr, pha = model(*inputs)
        loss = parallax_loss(pha, fgr, true, inputs[0], inputs[2], inputs[0], inputs[1])["total"]
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_when_exported_to_onnx_then_onnxruntime_matches_torch_within_1e_4(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = tiny(8)
    path = export_onnx(model, tmp_path / "parallaxnet.onnx", 32, 48)
    inputs = views(32, 48, seed=9)
    with torch.no_grad():
        fgr, pha = model(*inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: t.numpy() for name, t in zip(ParallaxNet.onnx_input_names, inputs)}
    out_fgr, out_pha = session.run(None, feeds)
    np.testing.assert_allclose(out_pha, pha.numpy(), atol=1e-4)
    np.testing.assert_allclose(out_fgr, fgr.numpy(), atol=1e-4)


def test_when_no_checkpoint_is_configured_then_the_engine_refuses_to_run_untrained_weights():
    assert engine_spec("parallax-net").node == "parallax-matte"
    with pytest.raises(EngineError, match="no checkpoint configured for parallaxnet: .*"
                                          "--param checkpoint=PATH"):
        create_engine("parallax-net", "cpu")


def test_when_a_checkpoint_is_configured_then_the_engine_runs_it_on_band_patches(tmp_path):
    model = tiny(10)
    path = save_checkpoint(model, tmp_path / "pn.pt")
    assert isinstance(load_checkpoint(path, architecture="parallaxnet"), ParallaxNet)
    engine = create_engine("parallax-net", "cpu", {"checkpoint": str(path), "patch_size": 64})
    rng = np.random.default_rng(0)
    background = rng.random((96, 144, 3)).astype(np.float32)
    yy, xx = np.mgrid[:96, :144]
    mask = (np.hypot(yy - 48, xx - 70) < 25).astype(np.float32)
    plate = np.where(mask[..., None] > 0, np.float32([0.9, 0.3, 0.2]), background)
    reference = np.roll(plate, 6, axis=1)
    result = engine.process(plate, {"reference": reference, "mask": mask})
    trimap = result.layers["trimap.Y"]
    assert result.alpha.shape == (96, 144) and result.foreground.shape == (96, 144, 3)
    assert np.array_equal(result.alpha[trimap == 1.0], np.ones(int((trimap == 1.0).sum())))
    band = (trimap > 0) & (trimap < 1)
    assert band.any() and float(result.alpha[band].std()) > 0  # the network's own values
    with pytest.raises(EngineError, match="--reference"):
        engine.process(plate, {"mask": mask})
