"""Seed ISOs read back identically by pycdlib and by an independent reader (xorriso)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from conftest import DEFAULT, run_lab

from builder.seed import NAMES, VOLUME_ID, iso_bytes, read_seed


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("seeds")
    result = run_lab(
        "seed", "--all", "-o", str(base / "out"), "-t", str(DEFAULT), state_dir=base / "state"
    )
    assert result.returncode == 0, result.stderr
    return base


def _xorriso(iso: Path, *commands: str) -> str:
    """xorriso's answer to the commands (its own chatter goes to stderr)."""
    result = subprocess.run(
        ["xorriso", "-indev", str(iso), *commands], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_all_nodes_written_private(seeds: Path) -> None:
    isos = sorted((seeds / "out").glob("*.iso"))
    assert [p.stem for p in isos] == ["block1", "compute1", "controller"]
    for iso in isos:
        assert stat.S_IMODE(iso.stat().st_mode) == 0o600


@pytest.mark.parametrize("node", ["controller", "compute1", "block1"])
def test_independent_reader_agrees(seeds: Path, node: str, tmp_path: Path) -> None:
    iso = seeds / "out" / f"{node}.iso"
    ours = read_seed(iso)
    assert sorted(ours) == sorted(NAMES)
    assert ours["user-data"].startswith(b"#cloud-config\n")
    assert f"local-hostname: {node}".encode() in ours["meta-data"]
    report = _xorriso(iso, "-pvd_info")
    assert f"Volume Id    : {VOLUME_ID}" in report
    listing = _xorriso(iso, "-find", "/", "-type", "f")
    assert sorted(line.strip("'") for line in listing.split()) == [
        f"/{name}" for name in sorted(NAMES)
    ]
    for name in NAMES:
        target = tmp_path / name
        _xorriso(iso, "-osirrox", "on", "-extract", f"/{name}", str(target))
        assert target.read_bytes() == ours[name]


def test_joliet_names_match(seeds: Path) -> None:
    iso = seeds / "out" / "compute1.iso"
    out = subprocess.run(
        ["isoinfo", "-J", "-f", "-i", str(iso)], capture_output=True, text=True, check=True
    ).stdout
    assert sorted(out.split()) == [f"/{name}" for name in sorted(NAMES)]


def test_byte_identical_for_identical_input() -> None:
    files = {
        "user-data": b"#cloud-config\n",
        "meta-data": b"instance-id: x\n",
        "network-config": b"version: 2\n",
    }
    assert iso_bytes(files) == iso_bytes(dict(reversed(files.items())))
    assert iso_bytes(files) != iso_bytes({**files, "meta-data": b"instance-id: y\n"})


def test_rerun_leaves_seeds_unchanged(seeds: Path) -> None:
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (seeds / "out").glob("*")}
    result = run_lab(
        "seed", "--all", "-o", str(seeds / "out"), "-t", str(DEFAULT), state_dir=seeds / "state"
    )
    assert result.returncode == 0
    assert "unchanged" in result.stdout
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (seeds / "out").glob("*")}
    assert after == before


def test_single_node_seed(seeds: Path, tmp_path: Path) -> None:
    target = tmp_path / "c1.iso"
    result = run_lab(
        "seed", "compute1", "-o", str(target), "-t", str(DEFAULT), state_dir=seeds / "state"
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == (seeds / "out" / "compute1.iso").read_bytes()


def test_unknown_node_writes_nothing(seeds: Path, tmp_path: Path) -> None:
    target = tmp_path / "x.iso"
    result = run_lab(
        "seed", "compute9", "-o", str(target), "-t", str(DEFAULT), state_dir=tmp_path / "fresh"
    )
    assert result.returncode != 0
    assert "no node 'compute9'" in result.stderr and "compute1" in result.stderr
    assert not target.exists()
    assert not (tmp_path / "fresh").exists()
