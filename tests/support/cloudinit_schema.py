"""cloud-init's own schema validator, from Debian trixie's cloud-init package (what nodes run).

The host may be older (bookworm ships 22.4, which has no network-config schema), so the trixie
.deb is fetched from Debian's archive once with apt's own client and unpacked into the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder.images.debcache import private_apt_options
from builder.paths import cache_root

SUITE = "trixie"


def validator_root() -> Path:
    return cache_root() / "tools" / f"cloud-init-{SUITE}"


def _apt_options(work: Path) -> list[str]:
    return private_apt_options(work)


def ensure_validator() -> Path:
    root = validator_root()
    package = root / "usr/lib/python3/dist-packages/cloudinit"
    if package.is_dir():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "lists/partial").mkdir(parents=True)
        (work / "archives/partial").mkdir(parents=True)
        (work / "sources.list").write_text(f"deb http://deb.debian.org/debian {SUITE} main\n")
        opts = _apt_options(work)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        subprocess.run(
            ["apt-get", *opts, "-q", "update"], check=True, env=env, cwd=work, capture_output=True
        )
        subprocess.run(
            ["apt-get", *opts, "download", "cloud-init"],
            check=True,
            env=env,
            cwd=work,
            capture_output=True,
        )
        deb = next(work.glob("cloud-init_*.deb"))
        staging = root.with_name(root.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        staging.rename(root)
    return root


def validate(path: Path, schema_type: str) -> subprocess.CompletedProcess[str]:
    """Run `cloud-init schema` of the trixie package on one file; returncode 0 means valid."""
    root = ensure_validator()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(root / "usr/lib/python3/dist-packages"),
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        [
            "/usr/bin/python3",
            "-m",
            "cloudinit.cmd.main",
            "schema",
            "-t",
            schema_type,
            "-c",
            str(path),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


class Validator:
    """One long-lived cloud-init process validating many files (for property-based tests)."""

    def __init__(self) -> None:
        root = ensure_validator()
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(root / "usr/lib/python3/dist-packages"),
            "LC_ALL": "C.UTF-8",
        }
        server = Path(__file__).with_name("cloudinit_schema_server.py")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(server)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def check(self, path: Path, schema_type: str) -> tuple[bool, str]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{schema_type}\t{path}\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return answer["ok"], answer["error"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
