"""A fake ``nukescripts`` (test code): only ``nukescripts.panels`` as the plugin uses it."""
from . import panels  # noqa: F401
