"""`lab ...` or `build-images ...` that stops once it holds its lock, for tests/test_lock.py.

The step after the lock (the lab's seeds, the image build) waits until the file named by
$HOLD_UNTIL exists, after printing 'holding': the real command, the real lock, held for as long
as the test needs. The image build itself is skipped: nothing is built.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from builder.cli import lab as cli_lab
from builder.cli.build import command as build_command
from builder.cli.common import invoke
from builder.images import build


def _pause() -> None:
    print("holding", flush=True)
    release = Path(os.environ["HOLD_UNTIL"])
    while not release.exists():
        time.sleep(0.05)


def main() -> int:
    entry, args = sys.argv[1], sys.argv[2:]
    if entry == "lab":
        real = cli_lab.write_all_seeds

        def seeds(*a: Any, **k: Any) -> Any:
            _pause()
            return real(*a, **k)

        cli_lab.write_all_seeds = seeds  # type: ignore[assignment]
        return invoke(cli_lab.lab, args, "lab")

    def no_build(*a: Any, **k: Any) -> list[build.Outcome]:
        _pause()
        return []

    build.build = no_build  # type: ignore[assignment]
    return invoke(build_command, args, "build-images")


if __name__ == "__main__":
    sys.exit(main())
