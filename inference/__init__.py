"""mattekit's worker side: everything numeric.

EXR I/O, frame sequences, the cache, engines, the render pipeline and the CLI.

Imported as ``mattekit.inference``. Never imported by the Nuke host package (``plugin/``): what
crosses between the two is the documented worker protocol and EXR files on disk.
"""
__version__ = "0.1.0"
