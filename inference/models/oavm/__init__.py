"""OAVM (MobileNetV3-style encoder + pixel-level memory matching + object queries + OGCR with
cross-frame guided masked attention + matting decoder).

    from mattekit.inference.models.oavm import OAVM, OavmConfig
    model = OAVM(OavmConfig.tiny())
    memory = model.init_memory(first_frame, first_mask)
    fgr, pha, memory = model(src, memory)
"""
from mattekit.inference.models.oavm.model import OAVM, MemoryState, OavmConfig
from mattekit.inference.models.oavm.ogcr import guidance_mask

__all__ = ["OAVM", "MemoryState", "OavmConfig", "guidance_mask"]
