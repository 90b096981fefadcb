"""μMatting in PyTorch: shapes, gradients, sparse convolution == dense on the active sites, key
region extraction, TSCM state, the fusion, the losses, and the checkpoint engine via the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from mattekit.inference.cli import main  # noqa: E402
from mattekit.inference.engines import registry  # noqa: E402
from mattekit.inference.errors import EngineError  # noqa: E402
from mattekit.inference.exrio import read_exr, write_exr  # noqa: E402
from mattekit.inference.models.umatting import (  # noqa: E402
    UMatting,
    UMattingConfig,
    umatting_loss,
)
from mattekit.inference.models.umatting.coarse import CoarsePredictor  # noqa: E402
from mattekit.inference.models.umatting.keyregion import (  # noqa: E402
    active_sites,
    coarse_key,
    full_key,
    gather_sites,
    sample_at_sites,
)
from mattekit.inference.models.umatting.losses import region_loss, temporal_loss  # noqa: E402
from mattekit.inference.models.umatting.sparse_conv import SparseConv3d  # noqa: E402
from mattekit.inference.models.umatting.tscm import TSCM  # noqa: E402

H, W = 24, 32


def disc_clip(frames: int = 4) -> tuple:
    """A clip of a soft-edged disc moving right over a dark background, and its alpha."""
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    alphas = torch.stack([(7 - torch.hypot(yy - H / 2, xx - 12 - 2 * t)).clamp(0, 1)
                          for t in range(frames)])[None, :, None]
    colour = torch.tensor([0.9, 0.5, 0.2]).view(1, 1, 3, 1, 1)
    clip = alphas * colour + (1 - alphas) * 0.1
    return clip, alphas


def random_sites(shape=(2, 3, 6, 7), density=0.4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return active_sites((torch.rand(shape, generator=generator) < density).float())


def test_when_a_clip_or_a_frame_is_matted_then_every_output_has_its_shape():
    torch.manual_seed(0)
    model = UMatting(UMattingConfig.tiny())
    clip, _ = disc_clip()
    with torch.no_grad():
        out = model(clip)
    assert out.alpha.shape == (1, 4, 1, H, W) and out.foreground.shape == (1, 4, 3, H, W)
    assert out.key.shape == out.coarse.shape == out.detail.shape == (1, 4, 1, H, W)
    assert out.hidden.shape == (1, 1, 8)
    assert 0 <= float(out.alpha.min()) and float(out.alpha.max()) <= 1
    single = model(clip[:, 0])
    assert single.alpha.shape == (1, 1, H, W) and single.foreground.shape == (1, 3, H, W)


def test_when_the_loss_is_backpropagated_then_coarse_refiner_and_tscm_get_gradients():
    torch.manual_seed(0)
    model = UMatting(UMattingConfig.tiny())
    clip, alpha = disc_clip(2)
    out = model(clip)
    assert int((out.key > 0).sum()) > 0
    umatting_loss(out.alpha, out.detail, out.coarse, out.key, alpha)["total"].backward()
    for name in ("coarse.head.weight", "refiner.inp.weight", "refiner.out.weight",
                 "refiner.tscm.gru.weight_ih_l0", "refiner.tscm.gate.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_when_sparse_conv_runs_then_it_equals_dense_conv3d_on_the_active_sites():
    torch.manual_seed(0)
    sites = random_sites()
    conv = SparseConv3d(5, 4)
    features = torch.randn(sites.size, 5)
    dense = torch.zeros(2, 3, 5, 6, 7)
    b, t, y, x = sites.coords.unbind(1)
    dense[b, t, :, y, x] = features
    expected = F.conv3d(dense.permute(0, 2, 1, 3, 4), conv.dense_weight(), conv.bias, padding=1)
    expected = expected.permute(0, 2, 1, 3, 4)[b, t, :, y, x]
    torch.testing.assert_close(conv(features, sites), expected, atol=1e-5, rtol=1e-5)


def test_when_features_are_sampled_at_sites_then_they_equal_the_full_bilinear_upsample():
    low = torch.randn(6, 3, 5, 4)  # (B*T, C, h, w) with B=2, T=3
    sites = random_sites((2, 3, 13, 11))
    up = F.interpolate(low, size=(13, 11), mode="bilinear", align_corners=False)
    expected = gather_sites(up.reshape(2, 3, 3, 13, 11), sites)
    torch.testing.assert_close(sample_at_sites(low, sites, 3, (13, 11)), expected)


def test_when_the_key_region_is_extracted_then_it_is_the_dilated_band_feathered_inwards():
    alpha = torch.zeros(1, 1, 10, 10)
    alpha[..., 5:] = 1.0
    alpha[..., 5] = 0.5
    key = coarse_key(alpha, 0.02, 0.98, dilation=1)
    assert key[0, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    full = full_key(key, (40, 40), feather=2)
    assert float(full[..., :14].max()) == 0 and float(full[..., 30:].max()) == 0
    assert float(full[0, 0, 20, 22]) == 1.0 and 0 < float(full[0, 0, 20, 16]) < 1
    sites = active_sites(full[:, None, 0])
    assert sites.size == int((full > 0).sum())
    b, t, y, x = sites.coords.unbind(1)
    assert torch.equal(sites.grid[b, t, y, x], torch.arange(sites.size))


def test_when_tscm_runs_frame_by_frame_with_its_state_then_it_equals_the_whole_clip():
    torch.manual_seed(0)
    tscm = TSCM(6, hidden=5)
    sites = random_sites((1, 3, 6, 7))
    features = torch.randn(sites.size, 6)
    gated, _ = tscm(features, sites, 1, 3)
    assert not torch.allclose(gated, features)
    hidden = None
    for t in range(3):
        mask = sites.coords[:, 1] == t
        frame_sites = active_sites((sites.grid[:, t:t + 1] >= 0).float())
        out, hidden = tscm(features[mask], frame_sites, 1, 1, hidden)
        torch.testing.assert_close(out, gated[mask])


class RedCoarse(CoarsePredictor):
    """A coarse predictor by the interface alone: alpha from the red channel (the disc)."""

    feature_channels = 2

    def forward(self, frames):
        alpha = ((frames[:, :1] - 0.1) / 0.8).clamp(0, 1)
        return alpha, torch.cat([alpha, 1 - alpha], dim=1)


def test_when_any_coarse_predictor_is_plugged_in_then_k_hugs_its_edge_and_the_fusion_is_exact():
    torch.manual_seed(0)
    model = UMatting(UMattingConfig.tiny(), coarse=RedCoarse()).eval()
    clip, _ = disc_clip(2)
    with torch.no_grad():
        out = model(clip)
    assert 0.05 < float((out.key > 0).float().mean()) < 0.5
    assert float(out.key[0, 0, 0, H // 2, 12]) == 0.0  # the disc's flat centre: coarse only
    torch.testing.assert_close(out.alpha, out.key * out.detail + (1 - out.key) * out.coarse)
    off = out.key == 0
    assert bool(off.any())
    torch.testing.assert_close(out.alpha[off], out.coarse[off])


def test_when_losses_are_computed_then_they_vanish_on_truth_and_count_where_they_should():
    _, alpha = disc_clip()
    key = (alpha > 0).float()
    terms = umatting_loss(alpha, alpha, alpha, key, alpha)
    assert float(terms["total"]) < 1e-6
    flicker = alpha.clone()
    flicker[:, 1::2] *= 0.8
    assert float(temporal_loss(flicker, alpha, key)) > 0.01
    outside = alpha.clone()
    outside[key == 0] = 0.7  # the detail alpha off K is not the refiner's business
    assert float(region_loss(outside, alpha, key)) < 1e-6
    assert float(region_loss(alpha * 0.5, alpha, key)) > 0.01


# -- the checkpoint engine -----------------------------------------------------------------

def test_when_umatting_is_created_without_a_checkpoint_then_it_refuses_and_is_not_default():
    with pytest.raises(EngineError, match="no checkpoint configured for umatting: .*"
                                          "--param checkpoint=PATH"):
        registry.create_engine("umatting", "cpu")
    assert registry.default_engine("sparse-4k-refine").name == "sparse-refine"


@pytest.fixture
def trained(tmp_path) -> Path:
    """Two plate frames and a tiny μMatting fitted to them for a few Adam steps."""
    from mattekit.inference.models.checkpoint import save_checkpoint

    clip, alpha = disc_clip(2)
    for t in range(2):
        write_exr(tmp_path / f"plate.{t + 1:04d}.exr",
                  np.ascontiguousarray(clip[0, t].permute(1, 2, 0).numpy()), pixel_type="float")
    torch.manual_seed(0)
    model = UMatting(UMattingConfig.tiny()).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        optimiser.zero_grad()
        out = model(clip)
        umatting_loss(out.alpha, out.detail, out.coarse, out.key, alpha)["total"].backward()
        optimiser.step()
    return save_checkpoint(model, tmp_path / "umatting.pt", extra={"steps": 2})


def test_when_a_trained_checkpoint_is_configured_then_the_cli_renders_alpha_and_keyregion(
        trained):
    from mattekit.inference.models.checkpoint import load_checkpoint

    shot = trained.parent
    assert main(["render", "sparse-4k-refine", "--engine", "umatting",
                 "--plate", str(shot / "plate.####.exr"), "--param", f"checkpoint={trained}",
                 "--out", str(shot / "out" / "a.####.exr"), "--cache-dir", str(shot / "cache"),
                 "--colorspace", "sRGB - Texture", "--pixel-type", "float", "--device", "cpu",
                 "--quiet"]) == 0
    network = load_checkpoint(trained)
    hidden = None
    for frame in (1, 2):
        plate = read_exr(shot / f"plate.{frame:04d}.exr").rgb
        with torch.no_grad():
            out = network(torch.from_numpy(plate.transpose(2, 0, 1).copy())[None], hidden)
        hidden = out.hidden
        matte = read_exr(shot / "out" / f"a.{frame:04d}.exr")
        np.testing.assert_allclose(matte.alpha, out.alpha[0, 0].numpy(), atol=1e-4)
        np.testing.assert_allclose(matte.layers["keyregion.Y"], out.key[0, 0].numpy(), atol=1e-3)
        assert matte.metadata["mattekit/engine"] == "umatting"
