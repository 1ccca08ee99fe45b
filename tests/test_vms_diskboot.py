"""The seed a firmware boot test gives its guest (vms/diskboot.py), checked without booting."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.cloudinit_schema import validate

from vms.diskboot import REPORT, REPORTED, make_seed, seed_user_data


def test_seed_user_data_passes_cloud_init_schema(tmp_path: Path) -> None:
    target = tmp_path / "user-data"
    target.write_text(seed_user_data(REPORT))
    result = validate(target, "cloud-config")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_report_goes_through_the_kernel_log_and_matches_what_the_caller_waits_for(
    tmp_path: Path,
) -> None:
    """Run the runcmd with /dev/kmsg swapped for a file: the three report lines come out, and
    the last is the one boot_disk waits for."""
    (command,) = yaml.safe_load(seed_user_data(REPORT))["runcmd"]
    assert command[:2] == ["sh", "-c"]
    assert command[2].endswith("> /dev/kmsg")  # a tty write races serial-getty's hangup
    out = tmp_path / "kmsg"
    subprocess.run(["sh", "-c", command[2].replace("/dev/kmsg", str(out))], check=True)
    lines = out.read_text().splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "STACKSEED-EFI",
        "STACKSEED-CMDLINE",
        "STACKSEED-SB",
    ]
    assert REPORTED.search(lines[-1]) and not REPORTED.search("\n".join(lines[:-1]))
    assert re.fullmatch(r"STACKSEED-EFI=(yes|no)", lines[0])


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
def test_make_seed_writes_a_cidata_iso(tmp_path: Path) -> None:
    iso = make_seed(tmp_path / "seed", "echo hello", hostname="seedtest")
    listing = subprocess.run(
        ["xorriso", "-indev", str(iso), "-pvd_info", "-ls", "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Volume Id    : cidata" in listing
    assert "'meta-data'" in listing and "'user-data'" in listing
    assert "local-hostname: seedtest" in (tmp_path / "seed" / "meta-data").read_text()
