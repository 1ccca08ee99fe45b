"""`lab doctor`'s disk estimate: what the lab may take on the host at most."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import DEFAULT

pytest.importorskip("libvirt")

from builder.loader import load, parse
from builder.plan import make_plan
from vms import doctor


def test_disk_estimate_counts_each_root_overlay_at_its_root_size(tmp_path: Path) -> None:
    plan = make_plan(load(DEFAULT))
    # No images found: the overlays at their root sizes (10 + 20 + 10 GiB) and block1's 20 GiB.
    check = doctor._disk(plan, tmp_path / "pool", {})
    assert "the lab may use up to 60GiB" in check.detail
    bigger = DEFAULT.read_text().replace(
        "    role: compute\n", "    role: compute\n    root_size: 120GiB\n"
    )
    check = doctor._disk(make_plan(parse(bigger, "lab.yaml")), tmp_path / "pool", {})
    assert "the lab may use up to 160GiB" in check.detail
    assert "root_size" in check.fix


def test_repository_tools_are_checked_for_plain_nodes(monkeypatch) -> None:
    assert doctor.repo_tools().ok == all(shutil.which(t) for t in doctor.REPO_TOOLS)
    monkeypatch.setattr(doctor.shutil, "which", lambda tool: None if tool == "gpg" else "/x")
    check = doctor.repo_tools()
    assert not check.ok and "gpg missing" in check.detail and "apt-get install gpg" in check.fix
