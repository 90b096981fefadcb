"""A small alpha-correction network, fine-tuned per shot on scribbles.

    from mattekit.inference.models.correction import AlphaCorrection, AlphaCorrectionConfig
    pha = AlphaCorrection(AlphaCorrectionConfig.tiny())(src, ref, alpha)
"""
from mattekit.inference.models.correction.model import AlphaCorrection, AlphaCorrectionConfig

__all__ = ["AlphaCorrection", "AlphaCorrectionConfig"]
