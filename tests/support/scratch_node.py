"""A scratch root holding what a seed writes for the first-boot runner: lib.sh, facts, secrets,
tiny phase scripts and, when a test gives one, the phase table. The real runner runs in it with
every path under STACKSEED_ROOT and a file standing in for the serial console."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from builder.paths import TEMPLATES

FIRSTBOOT = TEMPLATES / "firstboot"
RUNNER = FIRSTBOOT / "stackseed-firstboot"
SECRET = "5ec12e7c0ffee5ec12e7c0ffee5ec12e"  # looks like builder.secrets' hex values


class Root:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.lib_dir = base / "usr/local/lib/stackseed"
        self.phases = self.lib_dir / "firstboot.d"
        self.phases.mkdir(parents=True)
        self.console = base / "console"
        etc = base / "etc/stackseed"
        etc.mkdir(parents=True)
        facts = {"node": {"name": "node7", "role": "compute", "ip": "10.0.0.7"}, "region": "R1"}
        (etc / "node.json").write_text(json.dumps(facts))
        secrets = etc / "secrets.json"
        secrets.write_text(json.dumps({"rabbit_password": SECRET}))
        secrets.chmod(0o600)
        shutil.copyfile(FIRSTBOOT / "lib.sh", self.lib_dir / "lib.sh")

    @property
    def log(self) -> Path:
        return self.base / "var/log/stackseed/firstboot.log"

    def phase_log(self, phase: str) -> Path:
        return self.base / "var/log/stackseed/phases" / f"{phase}.log"

    @property
    def done(self) -> Path:
        return self.base / "var/lib/stackseed/done"

    def phase(self, name: str, body: str) -> None:
        path = self.phases / name
        path.write_text('#!/bin/bash\nset -eu -o pipefail\n. "$STACKSEED_LIB"\n' + body + "\n")
        path.chmod(0o755)

    def table(self, parallel: int, phases: dict[str, dict[str, Any]]) -> None:
        """phases.json as render writes it from builder/data/phases.yaml."""
        table = {"role": "compute", "parallel": parallel, "phases": phases}
        (self.lib_dir / "phases.json").write_text(json.dumps(table))

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "STACKSEED_ROOT": str(self.base),
            "STACKSEED_CONSOLE": str(self.console),
            **extra,
        }

    def run(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(RUNNER)],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def popen(self, **extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(RUNNER)], env=self.env(**extra), start_new_session=True
        )

    def console_lines(self) -> list[str]:
        if not self.console.exists():
            return []
        return [line.rstrip("\r") for line in self.console.read_text().splitlines()]
