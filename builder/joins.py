"""What each node must have joined before it is ready: roles.yaml's `joins`, resolved per backend.

The node's last first-boot phase polls the controller's APIs for exactly these entries (they
travel in node.json), and `lab verify` judges the cluster by the same table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import yaml

from builder.paths import DATA
from builder.roles import ROLES


@dataclass(frozen=True)
class Join:
    """One service a node runs, as the controller's API lists it."""

    name: str
    api: str
    unit: str
    agent_type: str | None = None
    binary: str | None = None


def _load() -> dict[str, Any]:
    return yaml.safe_load((DATA / "joins.yaml").read_text())


_TABLE = _load()


def _per_backend(value: Any, backend: str) -> Any:
    return value[backend] if isinstance(value, dict) else value


def joins_for(role: str, backend: str) -> list[Join]:
    """The services a node of this role must have joined, for the lab's neutron backend."""
    result = []
    for name in ROLES[role].joins:
        spec = _TABLE["services"][name]
        result.append(
            Join(
                name=name,
                api=spec["api"],
                unit=_per_backend(spec["unit"], backend),
                agent_type=_per_backend(spec.get("agent_type"), backend),
                binary=spec.get("binary"),
            )
        )
    return result


def join_facts(role: str, backend: str) -> dict[str, Any]:
    """node.json's `joins`: the account to ask as (its secret's name, never its value) and the
    services to find alive."""
    return {
        "account": dict(_TABLE["accounts"][ROLES[role].join_as]),
        "services": [asdict(j) for j in joins_for(role, backend)],
    }
