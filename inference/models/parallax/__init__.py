"""ParallaxNet, the network of Parallax Portrait Matting: two views, one shared encoder.

    from mattekit.inference.models.parallax import ParallaxNet, ParallaxNetConfig
    fgr, pha = ParallaxNet(ParallaxNetConfig.tiny())(src, src_other, src_trimap,
                                                      ref, ref_other, ref_trimap)
"""
from mattekit.inference.models.parallax.loss import composition_loss, parallax_loss
from mattekit.inference.models.parallax.model import ParallaxNet, ParallaxNetConfig

__all__ = ["ParallaxNet", "ParallaxNetConfig", "composition_loss", "parallax_loss"]
