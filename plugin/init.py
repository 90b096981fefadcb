"""mattekit start-up for every Nuke mode (GUI, `nuke -x`, `nuke -t`).

Puts the gizmos folder on Nuke's plugin path and registers the render-time checks (see
``mattekit_host.precompute``). It never breaks Nuke's start-up: a failure prints its traceback
and Nuke carries on without mattekit.
"""
import os as _mattekit_os
import sys as _mattekit_sys
import traceback as _mattekit_traceback


def _mattekit_gizmo_folders():
    """``gizmos/`` beside this plugin folder (the repository layout), or inside it."""
    import mattekit_host

    plugin = _mattekit_os.path.dirname(_mattekit_os.path.dirname(
        _mattekit_os.path.abspath(mattekit_host.__file__)))
    candidates = [_mattekit_os.path.join(_mattekit_os.path.dirname(plugin), "gizmos"),
                  _mattekit_os.path.join(plugin, "gizmos")]
    return [c for c in candidates if _mattekit_os.path.isdir(c)]


def _mattekit_init():
    import nuke
    from mattekit_host import precompute

    folders = _mattekit_gizmo_folders()
    if not folders:
        print("mattekit: no gizmos folder found beside the plugin folder; the mattekit "
              "nodes cannot be created", file=_mattekit_sys.stderr)
    for folder in folders:
        nuke.pluginAddPath(folder)
    precompute.register_callbacks()


try:
    _mattekit_init()
except Exception:  # noqa: BLE001 - never break Nuke's start-up; say what went wrong
    print("mattekit: start-up failed; Nuke continues without mattekit:", file=_mattekit_sys.stderr)
    _mattekit_traceback.print_exc()
