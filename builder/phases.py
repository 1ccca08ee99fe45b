"""First-boot phase ordering, read from data/phases.yaml: per role, which phase needs which on
the node and how many run at once. Each node's seed carries its role's table as phases.json,
which the runner (cloudinit/firstboot/stackseed-firstboot) schedules from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.errors import StackseedError
from builder.paths import DATA


@dataclass(frozen=True)
class PhaseTable:
    role: str
    parallel: int
    needs: Mapping[str, tuple[str, ...]]
    seconds: Mapping[str, float]

    def as_json(self) -> dict[str, Any]:
        """What the node reads (phases.json): plain JSON, the runner needs no YAML."""
        return {
            "role": self.role,
            "parallel": self.parallel,
            "phases": {
                name: {"needs": list(self.needs[name]), "seconds": self.seconds[name]}
                for name in sorted(self.needs)
            },
        }


def parse(raw: Mapping[str, Any]) -> dict[str, PhaseTable]:
    tables = {}
    for role, spec in raw.items():
        phases = spec["phases"]
        tables[role] = PhaseTable(
            role=role,
            parallel=int(spec["parallel"]),
            needs={name: tuple(entry.get("needs", [])) for name, entry in phases.items()},
            seconds={name: float(entry.get("seconds", 0)) for name, entry in phases.items()},
        )
    return tables


def load(path: Path = DATA / "phases.yaml") -> dict[str, PhaseTable]:
    return parse(yaml.safe_load(path.read_text()))


def cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One dependency cycle as [a, b, ..., a], or None. Needs outside the table are ignored."""
    state: dict[str, str] = {}  # name -> "open" while on the path, "done" once cleared

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for need in needs[name]:
            if need not in needs:
                continue
            if state.get(need) == "open":
                return [*path[path.index(need) :], need]
            if need not in state and (found := visit(need, [*path, need])):
                return found
        state[name] = "done"
        return None

    for name in sorted(needs):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def problems(table: PhaseTable, scripts: Sequence[str]) -> list[str]:
    """Everything wrong with a role's table against the phase names its node will have."""
    found = []
    if table.parallel < 1:
        found.append(f"{table.role}: parallel must be at least 1, not {table.parallel}")
    have = set(scripts)
    for name in sorted(set(table.needs) - have):
        found.append(f"{table.role}: phase {name} is in phases.yaml but has no script")
    for name in sorted(have - set(table.needs)):
        found.append(f"{table.role}: phase script {name} has no entry in phases.yaml")
    for name, needs in sorted(table.needs.items()):
        for need in needs:
            if need not in table.needs:
                found.append(f"{table.role}: {name} needs {need}, not a {table.role} phase")
            elif need == name:
                found.append(f"{table.role}: {name} needs itself")
    if (loop := cycle(table.needs)) and len(loop) > 2:
        found.append(f"{table.role}: the needs form a cycle: {' -> '.join(loop)}")
    return found


TABLES: dict[str, PhaseTable] = load()


def table_for(role: str) -> PhaseTable:
    try:
        return TABLES[role]
    except KeyError:
        raise StackseedError(
            f"role {role} has no first-boot phase table",
            fix=f"add '{role}:' with its phases and their needs to builder/data/phases.yaml",
        ) from None
