"""CineMatte (frozen Siamese ViT + FBAM cross-attention + DPT decoder + guided upsampler).

    from mattekit.inference.models.cinematte import CineMatte, CineMatteConfig
    fgr, pha = CineMatte(CineMatteConfig.tiny())(src, bgr)
"""
from mattekit.inference.models.cinematte.model import CineMatte, CineMatteConfig

__all__ = ["CineMatte", "CineMatteConfig"]
