"""The first-boot phase table (builder/data/phases.yaml) against the phase scripts, and what
each node's seed carries of it."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import DEFAULT

from builder import phases
from builder.errors import StackseedError
from builder.loader import load
from builder.plan import make_plan
from builder.render import ensure_keys, render_node
from builder.render import phases as role_scripts
from builder.roles import ROLES
from builder.secrets import load_or_create
from builder.state import LabState


def script_names(role: str) -> list[str]:
    return [name.removesuffix(".sh") for name, _ in role_scripts(role)]


def test_every_role_has_a_table_and_no_table_lacks_a_role() -> None:
    assert set(phases.TABLES) == set(ROLES)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_table_matches_the_scripts_with_real_needs_and_no_cycle(role: str) -> None:
    assert phases.problems(phases.TABLES[role], script_names(role)) == []


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_phase_but_the_first_waits_for_base(role: str) -> None:
    """10-base brings up the management address and writes the service start-timeout drop-in
    (with a systemd reload) that concurrent phases must not race to write."""
    table = phases.TABLES[role]
    for name in table.needs:
        if name != "10-base":
            assert "10-base" in closure(table.needs, name), f"{role}: {name}"


def closure(needs: dict, name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(needs[name])
    while todo:
        need = todo.pop()
        if need not in seen:
            seen.add(need)
            todo.extend(needs[need])
    return seen


def test_controller_services_wait_for_what_they_use_and_run_side_by_side() -> None:
    needs = phases.TABLES["controller"].needs
    for api in ("40-glance", "41-placement", "42-nova", "43-neutron", "44-cinder"):
        assert {"20-mariadb", "31-identity"} <= closure(needs, api), api
    for rpc in ("42-nova", "43-neutron", "44-cinder"):
        assert "21-rabbitmq" in closure(needs, rpc), rpc
    assert "21-rabbitmq" not in closure(needs, "30-keystone")
    # Independent once keystone answers: neither needs the other.
    pairs = (("42-nova", "43-neutron"), ("43-neutron", "44-cinder"), ("40-glance", "44-cinder"))
    for a, b in pairs:
        assert a not in closure(needs, b) and b not in closure(needs, a)
    assert {"40-glance", "42-nova", "43-neutron"} <= closure(needs, "50-day-zero")


def test_problems_are_named() -> None:
    table = phases.parse(
        {
            "r": {
                "parallel": 0,
                "phases": {
                    "10-a": {"needs": ["30-c"]},
                    "20-b": {"needs": ["10-a", "99-gone"]},
                    "30-c": {"needs": ["20-b"]},
                    "40-d": {"needs": ["40-d"]},
                    "50-ghost": {},
                },
            }
        }
    )["r"]
    found = phases.problems(table, ["10-a", "20-b", "30-c", "40-d", "60-new"])
    assert found == [
        "r: parallel must be at least 1, not 0",
        "r: phase 50-ghost is in phases.yaml but has no script",
        "r: phase script 60-new has no entry in phases.yaml",
        "r: 20-b needs 99-gone, not a r phase",
        "r: 40-d needs itself",
        "r: the needs form a cycle: 10-a -> 30-c -> 20-b -> 10-a",
    ]


def test_cycle_finds_none_in_a_diamond() -> None:
    assert phases.cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_an_unknown_role_is_a_sentence_not_a_traceback() -> None:
    with pytest.raises(StackseedError, match="role network has no first-boot phase table"):
        phases.table_for("network")


def test_each_seed_carries_its_roles_table_as_json(tmp_path) -> None:
    plan = make_plan(load(DEFAULT))
    state = LabState(tmp_path)
    secrets = load_or_create(state.secrets_file)
    keys = ensure_keys(plan, state)
    for node in plan.nodes:
        user_data = yaml.safe_load(render_node(plan, node, secrets, keys).user_data)
        files = {f["path"]: f for f in user_data["write_files"]}
        carried = json.loads(files["/usr/local/lib/stackseed/phases.json"]["content"])
        table = phases.TABLES[node.role]
        assert carried["role"] == node.role and carried["parallel"] == table.parallel
        assert sorted(carried["phases"]) == script_names(node.role)
        for name, entry in carried["phases"].items():
            assert entry["needs"] == list(table.needs[name])
