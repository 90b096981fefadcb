"""install.py: the ~/.nuke/init.py block is added once and removed exactly."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def installer(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("mattekit_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    return module


def test_when_registering_twice_then_init_py_holds_one_block_and_keeps_user_lines(
        installer, tmp_path):
    init = tmp_path / ".nuke" / "init.py"
    init.parent.mkdir()
    init.write_text("import nuke\nnuke.pluginAddPath('/studio/tools')\n")
    python = Path("/opt/venv/bin/python")
    installer.register_with_nuke(python)
    installer.register_with_nuke(python)
    text = init.read_text()
    assert text.count(installer.BLOCK_BEGIN) == 1
    assert text.startswith("import nuke\nnuke.pluginAddPath('/studio/tools')\n")
    assert str(ROOT / "plugin") in text and str(python) in text
    compile(text, str(init), "exec")


def test_when_uninstalling_then_exactly_the_block_is_removed(installer, tmp_path):
    init = tmp_path / ".nuke" / "init.py"
    init.parent.mkdir()
    user = "import nuke\n# my own settings\nnuke.knobDefault('Write.exr.compression', '2')\n"
    init.write_text(user)
    installer.register_with_nuke(Path("/opt/venv/bin/python"))
    with init.open("a") as stream:
        stream.write("print('added after mattekit')\n")
    installer.unregister_from_nuke()
    assert init.read_text() == user + "print('added after mattekit')\n"


def test_when_the_install_is_unchanged_then_the_fingerprint_is_stable(installer):
    assert installer.install_fingerprint("cpu") == installer.install_fingerprint("cpu")
    assert installer.install_fingerprint("cpu") != installer.install_fingerprint("gpu")


def test_when_train_is_asked_for_then_torch_is_in_the_extras_and_the_fingerprint_changes(
        installer):
    assert installer.pip_extras("cpu") == "cpu,dev,farm"
    assert installer.pip_extras("gpu", train=True) == "gpu,dev,farm,train"
    plain = installer.install_fingerprint(installer.pip_extras("cpu"))
    train = installer.install_fingerprint(installer.pip_extras("cpu", train=True))
    assert plain != train
    assert train == installer.install_fingerprint(installer.pip_extras("cpu", train=True))


def test_when_rerun_with_the_same_flags_then_pip_is_not_run_again(installer, tmp_path,
                                                                  monkeypatch):
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    calls = []
    monkeypatch.setattr(installer, "venv_python", lambda venv_dir=None: python)
    monkeypatch.setattr(installer, "STAMP", tmp_path / "venv" / "stamp")
    monkeypatch.setattr(installer, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(installer, "pip", lambda py, *args: calls.append(args))
    installer.set_up_venv(force=False, train=True)
    assert calls[0] == ("-e", f"{ROOT}[cpu,dev,farm,train]")
    count = len(calls)
    installer.set_up_venv(force=False, train=True)
    assert len(calls) == count  # same flags: a no-op
    installer.set_up_venv(force=False, train=False)
    assert calls[count] == ("-e", f"{ROOT}[cpu,dev,farm]")  # other flags: pip runs again


def test_when_train_is_given_on_the_command_line_then_set_up_gets_it(installer, monkeypatch):
    seen = {}

    def set_up(force, train=False):
        seen.update(force=force, train=train)
        return Path("/opt/venv/bin/python")

    monkeypatch.setattr(installer, "set_up_venv", set_up)
    assert installer.main(["--train"]) == 0
    assert seen == {"force": False, "train": True}
