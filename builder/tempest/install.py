"""Tempest in a virtual environment of its own under the user's cache, pinned and made once.

`<cache>/tempest/<version>/venv` holds tempest and its dependencies; the marker file
`<cache>/tempest/<version>/installed` (the version, written last) says the environment is
whole, so every later run uses it without touching the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from builder.errors import PrerequisiteError
from builder.paths import cache_root

# The newest tempest at the time of writing; its release notes list 2025.1 among the releases
# it supports (2026.2, 2026.1, 2025.2, 2025.1).
TEMPEST_VERSION = "47.0.0"
LOG_TAIL = 15  # lines of pip's log shown when an install fails


def tempest_root(version: str = TEMPEST_VERSION) -> Path:
    return cache_root() / "tempest" / version


def venv_dir(version: str = TEMPEST_VERSION) -> Path:
    return tempest_root(version) / "venv"


def marker(version: str = TEMPEST_VERSION) -> Path:
    return tempest_root(version) / "installed"


def tempest_bin(version: str = TEMPEST_VERSION) -> Path:
    return venv_dir(version) / "bin" / "tempest"


def is_installed(version: str = TEMPEST_VERSION) -> bool:
    mark = marker(version)
    return mark.is_file() and mark.read_text().strip() == version and tempest_bin(version).is_file()


def install_commands(version: str = TEMPEST_VERSION, python: str | None = None) -> list[list[str]]:
    """The two commands that make the environment: a venv, then pip with the pinned tempest."""
    venv = venv_dir(version)
    return [
        [python or sys.executable, "-m", "venv", str(venv)],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            f"tempest=={version}",
        ],
    ]


def ensure_tempest(
    version: str = TEMPEST_VERSION, say: Callable[[str], None] = lambda _: None
) -> Path:
    """The tempest executable, installing it first when the cache does not hold it whole.

    A half-made environment (no marker) is removed and made again. pip's output goes to
    `<cache>/tempest/<version>/install.log`; a failure names it and what to do."""
    if is_installed(version):
        return tempest_bin(version)
    root = tempest_root(version)
    shutil.rmtree(venv_dir(version), ignore_errors=True)
    marker(version).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    log = root / "install.log"
    say(f"installing tempest {version} into {venv_dir(version)} (once; later runs are offline)")
    started = time.monotonic()
    with log.open("w") as handle:
        for command in install_commands(version):
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            result = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            if result.returncode != 0:
                shutil.rmtree(venv_dir(version), ignore_errors=True)
                raise PrerequisiteError(
                    f"installing tempest {version} failed ({command[0]} exited "
                    f"{result.returncode}):\n{_tail(log)}",
                    fix=_fix(command),
                    log=str(log),
                )
    marker(version).write_text(version + "\n")
    say(f"tempest {version} installed in {time.monotonic() - started:.0f}s")
    return tempest_bin(version)


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(f"  {line}" for line in lines[-LOG_TAIL:])


def _fix(command: list[str]) -> str:
    if command[1:3] == ["-m", "venv"]:
        return "install Python's venv module (Debian: apt-get install python3-venv), then re-run"
    return (
        "make PyPI reachable from this host (pip's own settings, a proxy in HTTPS_PROXY), then "
        "re-run; a lab network whose range covers the package index's address hides it while "
        "the lab is up: run 'lab tempest --install-only' before 'lab up'"
    )
