"""Background-conditioned ViTMatte (the capture-stage paper's teacher).

    from mattekit.inference.models.bgvitmatte import BgViTMatte, BgViTMatteConfig
    fgr, pha = BgViTMatte(BgViTMatteConfig.tiny())(src, bgr)
"""
from mattekit.inference.models.bgvitmatte.model import BgViTMatte, BgViTMatteConfig

__all__ = ["BgViTMatte", "BgViTMatteConfig"]
