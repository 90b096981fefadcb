"""The code base stays lint-clean and type-checked (ruff, mypy), as CI sees it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_when_ruff_checks_the_tree_then_it_finds_nothing():
    result = run_tool("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_when_mypy_checks_the_packages_then_it_finds_nothing():
    result = run_tool("mypy", "inference", "ocio", "install.py")
    assert result.returncode == 0, result.stdout + result.stderr
