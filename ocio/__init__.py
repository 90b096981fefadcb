"""mattekit's colour management: which OCIO config, and conversions to and from engine spaces.

Imported as ``mattekit.ocio``.
"""
