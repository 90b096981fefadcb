"""plugin/ runs inside Nuke's own Python (3.9+): standard library only, Python 3.9 syntax.

Every .py under plugin/ is parsed with ``ast`` (never imported): each import must be a standard
library module, one of the plugin's own modules, or a module the host application provides.
numpy, torch, onnxruntime, cv2 and mattekit.inference are named explicitly: Nuke ships its own
libtorch and numpy-free Python, and the worker's internals cross only as the protocol.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "plugin"
HOST_MODULES = {"mattekit_host", "nuke", "nukescripts", "PySide2", "PySide6"}
FORBIDDEN = ("numpy", "torch", "onnxruntime", "cv2", "mattekit.inference")
OLDEST_PYTHON = (3, 9)


def plugin_files() -> list[Path]:
    return sorted(p for p in PLUGIN.rglob("*.py") if "__pycache__" not in p.parts)


def own_modules() -> set[str]:
    """Top-level names the plugin folder itself provides (init, menu, its packages)."""
    names = {p.stem for p in PLUGIN.glob("*.py")}
    names |= {p.name for p in PLUGIN.iterdir() if (p / "__init__.py").is_file()}
    return names


def imported_modules(source: str, filename: str = "<plugin>") -> Iterator[tuple[int, str]]:
    """(line, dotted module name) of every absolute import, including importlib.import_module
    and __import__ calls with a literal name."""
    tree = ast.parse(source, filename=filename, feature_version=OLDEST_PYTHON)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.lineno, node.module
                for alias in node.names:  # `from mattekit import inference`
                    yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (func.attr if isinstance(func, ast.Attribute)
                    else func.id if isinstance(func, ast.Name) else "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str):
                yield node.lineno, first.value


def problems(source: str, filename: str = "<plugin>") -> list[str]:
    """What is wrong with the imports of one plugin file (empty when nothing is)."""
    stdlib = set(sys.stdlib_module_names)
    allowed = stdlib | HOST_MODULES | own_modules()
    found = []
    for line, module in imported_modules(source, filename):
        top = module.split(".")[0]
        forbidden = [f for f in FORBIDDEN if module == f or module.startswith(f + ".")]
        if forbidden:
            found.append(f"{filename}:{line}: imports {module} ({forbidden[0]} must never be "
                         "imported inside Nuke)")
        elif top not in allowed:
            found.append(f"{filename}:{line}: imports {module}, which is not in the standard "
                         "library nor a host module")
    return sorted(set(found))


needs_stdlib_names = pytest.mark.skipif(not hasattr(sys, "stdlib_module_names"),
                                        reason="sys.stdlib_module_names needs Python 3.10+")


def test_when_listing_plugin_files_then_the_host_package_is_among_them():
    names = {p.relative_to(PLUGIN).as_posix() for p in plugin_files()}
    assert {"mattekit_host/__init__.py", "mattekit_host/client.py",
            "mattekit_host/errors.py", "mattekit_host/paths.py"} <= names


@needs_stdlib_names
@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: p.relative_to(PLUGIN).as_posix())
def test_when_a_plugin_file_imports_then_only_stdlib_and_host_modules(path):
    assert problems(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: p.relative_to(PLUGIN).as_posix())
def test_when_a_plugin_file_is_parsed_as_python_3_9_then_it_compiles(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path), feature_version=OLDEST_PYTHON)
    compile(tree, str(path), "exec")


@needs_stdlib_names
@pytest.mark.parametrize("source, culprit", [
    ("import numpy as np\n", "numpy"),
    ("from torch import nn\n", "torch"),
    ("import onnxruntime\n", "onnxruntime"),
    ("import cv2\n", "cv2"),
    ("from mattekit.inference.exrio import read_exr\n", "mattekit.inference"),
    ("from mattekit import inference\n", "mattekit.inference"),
    ("import importlib\nimportlib.import_module('numpy.linalg')\n", "numpy"),
    ("import yaml\n", "yaml"),
    ("from mattekit import ocio\n", "mattekit"),
])
def test_when_a_file_imports_a_forbidden_module_then_the_check_reports_it(source, culprit):
    found = problems(source)
    assert any(culprit in line for line in found), found


@needs_stdlib_names
def test_when_a_file_imports_stdlib_and_host_modules_then_the_check_is_quiet():
    source = ("from __future__ import annotations\nimport json, socket\n"
              "from pathlib import Path\nimport nuke\nfrom PySide2 import QtCore\n"
              "from mattekit_host.client import WorkerClient\nfrom . import errors\n")
    assert problems(source) == []


def test_when_code_uses_python_3_10_syntax_then_the_3_9_parse_refuses_it():
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=OLDEST_PYTHON)


def test_when_imported_by_a_python_3_9_interpreter_then_every_host_module_loads():
    """The parse above cannot see runtime-only 3.10 features (``int | None`` evaluated at
    import, new stdlib names): import the package for real where a 3.9 can be found
    ($MATTEKIT_TEST_PYTHON39, else python3.9 on PATH)."""
    pyenv39 = sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python"))
    python39 = (os.environ.get("MATTEKIT_TEST_PYTHON39") or (str(pyenv39[-1]) if pyenv39 else None)
                or shutil.which("python3.9"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    probe = None
    if python39:
        probe = subprocess.run([python39, "-c", "import sys; print(sys.version_info[:2])"],
                               env=env, capture_output=True, text=True, timeout=60)
    if probe is None or probe.returncode != 0 or probe.stdout.strip() != "(3, 9)":
        pytest.skip("no working Python 3.9 (set MATTEKIT_TEST_PYTHON39 to one)")
    modules = sorted(f"mattekit_host.{p.stem}" for p in (PLUGIN / "mattekit_host").glob("*.py")
                     if p.stem != "__init__")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib; "
            "[importlib.import_module(m) for m in sys.argv[2:]]; "
            "print(sys.version_info[:2], sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('numpy', 'torch', 'onnxruntime', 'cv2', 'mattekit')))")
    result = subprocess.run([python39, "-c", code, str(PLUGIN), *modules], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 9) []", result.stdout
