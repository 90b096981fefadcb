"""plugin/ type-checks clean against the ``types-nuke`` stubs (and PySide6), on its own terms.

mypy runs with a config file of this test's own (not pyproject's ``[tool.mypy]``, which is for
the worker packages and Python 3.11): the oldest Python this mypy can target (3.9 when it still
can, else 3.10; 3.9 syntax itself is checked by test_host_stdlib_only), and no blanket
``ignore_missing_imports``: only ``nukescripts`` (no stubs exist) and PySide2 (Nuke 13-15's
binding, not installed here) may be missing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[mypy]
python_version = {version}
warn_unused_ignores = True
warn_redundant_casts = True
[mypy-nukescripts,nukescripts.*,PySide2,PySide2.*]
ignore_missing_imports = True
"""


def run_mypy(tmp_path: Path, version: str) -> subprocess.CompletedProcess:
    config = tmp_path / f"mypy-{version}.ini"
    config.write_text(CONFIG.format(version=version))
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                           "--cache-dir", str(tmp_path / "mypy-cache"), "plugin"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_when_mypy_checks_the_plugin_against_the_nuke_stubs_then_it_finds_nothing(tmp_path):
    result = run_mypy(tmp_path, "3.9")
    if "is not supported" in result.stderr:  # mypy >= 1.16 targets 3.10 at the oldest
        result = run_mypy(tmp_path, "3.10")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
