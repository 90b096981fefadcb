"""Matting engines, one module each, declared by name in ``manifest.yaml``."""
