"""The controller's service catalog, as rendered into its first-boot facts, by official types.

Checked against the service-types authority's data as the os-service-types package carries it:
clients such as tempest and Horizon's Angular code look services up by the official type.
"""

from __future__ import annotations

import json
import re

import os_service_types
import pytest
import yaml
from conftest import DEFAULT

from builder import verify
from builder.loader import load
from builder.paths import TEMPLATES
from builder.plan import make_plan
from builder.render import ensure_keys, render_node
from builder.secrets import NAMES, load_or_create
from builder.state import LabState

AUTHORITY = os_service_types.ServiceTypes()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The catalog as the controller's rendered node.json carries it."""
    plan = make_plan(load(DEFAULT))
    state = LabState(tmp_path_factory.mktemp("state"))
    secrets = load_or_create(state.secrets_file)
    payload = render_node(plan, plan.node("controller"), secrets, ensure_keys(plan, state))
    files = {f["path"]: f for f in yaml.safe_load(payload.user_data)["write_files"]}
    return json.loads(files["/etc/stackseed/node.json"]["content"])["catalog"]


def test_every_service_is_registered_by_its_official_type(catalog: list[dict]) -> None:
    assert catalog
    for entry in catalog:
        assert AUTHORITY.is_official(entry["type"]), f"{entry['name']}: {entry['type']}"
        assert AUTHORITY.get_project_name(entry["type"]) == entry["user"], entry["name"]


def test_legacy_types_are_aliases_of_their_official_type(catalog: list[dict]) -> None:
    for entry in catalog:
        for legacy in entry.get("legacy", []):
            assert not AUTHORITY.is_official(legacy["type"])
            assert AUTHORITY.get_service_type(legacy["type"]) == entry["type"]
            assert legacy["name"] != entry["name"], "two services of one name confuse lookups"


def test_cinder_is_block_storage_with_volumev3_beside_it(catalog: list[dict]) -> None:
    types = {t for e in catalog for t in [e["type"], *(x["type"] for x in e.get("legacy", []))]}
    assert {"block-storage", "volumev3"} <= types


def test_catalog_names_only_real_secrets_and_roles_the_identity_phase_creates(
    catalog: list[dict],
) -> None:
    phase = (TEMPLATES / "firstboot/controller/31-identity.sh").read_text()
    maker = (TEMPLATES / "firstboot/stackseed-cloud").read_text()
    roles = re.search(r"^ROLES = \((.*)\)$", maker, re.M)
    assert roles, "stackseed-cloud declares the roles it creates"
    for entry in catalog:
        assert entry["secret"] in NAMES
        assert entry["secret"] in phase, "need_secrets must list it"
        for role in entry.get("roles", []):
            assert f'"{role}"' in roles.group(1)


def test_lab_verify_requires_the_official_types(catalog: list[dict]) -> None:
    official = {e["type"] for e in catalog} | {"identity"}
    assert official <= set(verify.REQUIRED_SERVICES)
    for required in verify.REQUIRED_SERVICES:
        assert AUTHORITY.get_service_type(required), f"{required} is no known service type"
