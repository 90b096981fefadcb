"""μMatting (coarse predictor + sparse key-region extraction + sparse 3D convolutional refiner
over (T, H, W) + TSCM temporal modulation + fusion A = K·A_d + (1-K)·A_c), plain PyTorch.

    from mattekit.inference.models.umatting import UMatting, UMattingConfig
    model = UMatting(UMattingConfig.tiny())
    out = model(clip)            # clip (B, T, 3, H, W): out.alpha (B, T, 1, H, W), out.hidden
"""
from mattekit.inference.models.umatting.losses import umatting_loss
from mattekit.inference.models.umatting.model import UMatting, UMattingConfig, UMattingOutput

__all__ = ["UMatting", "UMattingConfig", "UMattingOutput", "umatting_loss"]
