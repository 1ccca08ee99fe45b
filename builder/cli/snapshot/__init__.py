"""`lab snapshot [NAME]`, `lab snapshots`, `lab restore [NAME]` (and `lab up --from NAME`):
golden snapshots of a running lab, memory state included, kept in the cache outside libvirt so
they outlive `lab down`. The files and keys are builder/snapshot_manifest.py's, the libvirt
work vms/snapshots.py's, the clocks and the wait builder/resume.py's."""

from __future__ import annotations

import click

from builder.cli.snapshot.listing import snapshots_cmd
from builder.cli.snapshot.restore import restore_cmd, restore_lab
from builder.cli.snapshot.take import snapshot
from vms.commands import _explained

COMMANDS = (snapshot, snapshots_cmd, restore_cmd)
for _command in COMMANDS:
    _command.callback = _explained(_command.callback)  # type: ignore[arg-type]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)


__all__ = ["register", "restore_lab"]
