"""mattekit menus for Nuke's GUI: the "mattekit" toolbar menu and the worker-status panel.

Never breaks Nuke's start-up: a failure prints its traceback and Nuke carries on.
"""
import sys as _mattekit_sys
import traceback as _mattekit_traceback

_MATTEKIT_NODES = ("BackgroundMatte", "ParallaxMatte", "VideoMatte", "Sparse4KRefine")


def _mattekit_create(name):
    """A menu command that creates one mattekit node (bound now, not at call time)."""
    def create():
        import nuke

        return nuke.createNode(name)

    return create


def _mattekit_menu():
    import nuke

    if not nuke.GUI:
        return
    from mattekit_host import farm, nodes, panel

    toolbar = nuke.menu("Nodes")
    menu = toolbar.addMenu("mattekit")
    for name in _MATTEKIT_NODES:
        menu.addCommand(name, _mattekit_create(name))
    menu.addSeparator()
    menu.addCommand("Process selected", nodes.process_selected)
    menu.addCommand("Submit selected to farm", farm.submit_selected)
    menu.addCommand("Worker status", panel.show_panel)
    panel.register_panel()


try:
    _mattekit_menu()
except Exception:  # noqa: BLE001 - never break Nuke's start-up; say what went wrong
    print("mattekit: menu set-up failed; Nuke continues without the mattekit menu:",
          file=_mattekit_sys.stderr)
    _mattekit_traceback.print_exc()
