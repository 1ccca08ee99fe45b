"""Role definitions, read from data/roles.yaml (roles are data, not code)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from builder.paths import DATA


@dataclass(frozen=True)
class Role:
    name: str
    element: str
    template: str
    networks: tuple[str, ...]
    memory: str
    vcpus: int
    cpu_weight: int
    root_size: str
    needs_disk: str | None
    unique: bool
    joins: tuple[str, ...]
    join_as: str


def _load() -> dict[str, Role]:
    raw = yaml.safe_load((DATA / "roles.yaml").read_text())
    return {
        name: Role(
            name=name,
            **{**spec, "networks": tuple(spec["networks"]), "joins": tuple(spec["joins"])},
        )
        for name, spec in raw.items()
    }


ROLES: dict[str, Role] = _load()
