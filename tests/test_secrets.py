"""Secrets: generated once, kept, 0600, and never seen outside the files meant to hold them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from conftest import DEFAULT, run_lab

from builder.secrets import NAMES, load_or_create

# Files under the state dir that are meant to carry a secret value.
HOLDERS = {"secrets.yaml", "admin-openrc", "clouds.yaml", "id_ed25519", "ssh_host_ed25519_key"}


def _tree(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_full_render_twice_is_stable_private_and_quiet(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = tmp_path / "out"
    first = run_lab("seed", "--all", "-o", str(out), "-t", str(DEFAULT), state_dir=state)
    assert first.returncode == 0, first.stderr
    values = yaml.safe_load((state / "stackseed" / "secrets.yaml").read_text())
    assert sorted(values) == sorted(NAMES)
    snapshot = _tree(state)
    second = run_lab("seed", "--all", "-o", str(out), "-t", str(DEFAULT), state_dir=state)
    assert second.returncode == 0, second.stderr
    assert _tree(state) == snapshot  # nothing regenerated or rewritten
    files = {**_tree(state), **_tree(out)}
    for path, data in files.items():
        holds = [name for name, value in values.items() if value.encode() in data]
        if path.suffix == ".iso" or path.name in HOLDERS:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        else:
            assert not holds, f"{path} holds {holds}"
    for directory in [p for p in state.rglob("*") if p.is_dir()]:
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, directory
    printed = first.stdout + first.stderr + second.stdout + second.stderr
    assert not [name for name, value in values.items() if value in printed]


def test_missing_values_are_filled_and_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    first = load_or_create(path)
    kept = dict(first)
    del kept["rabbit_password"]
    path.write_text(yaml.safe_dump(kept))
    os.chmod(path, 0o644)
    second = load_or_create(path)
    assert {k: v for k, v in second.items() if k != "rabbit_password"} == kept
    assert second["rabbit_password"] and second["rabbit_password"] != first["rabbit_password"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_values_are_distinct_and_strong(tmp_path: Path) -> None:
    values = load_or_create(tmp_path / "s.yaml")
    assert len(set(values.values())) == len(values)
    assert all(len(v) >= 32 for v in values.values())
