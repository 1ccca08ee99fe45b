"""Render each node's cloud-init payload (user-data, meta-data, network-config) from cloudinit/."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from builder import plain
from builder.aptrepo import ensure_key
from builder.paths import TEMPLATES
from builder.phases import TABLES, table_for
from builder.plan import Plan, PlannedNode, node_facts
from builder.sshkeys import ensure_keypair
from builder.state import LabState

FIRSTBOOT = TEMPLATES / "firstboot"
# stackseed-privsep's servers, one unit each (stackseed-privsep-<project>): the packages whose
# privsep contexts it forks daemons for, and the config files its helpers read. lib.sh's
# <PROJECT>_PRIVSEP_* name the same socket, files and contexts (tests/test_render.py).
PRIVSEP_SERVERS: dict[str, dict[str, list[str]]] = {
    "neutron": {
        "packages": ["neutron.privileged"],
        "config_files": ["/etc/neutron/neutron.conf"],
    },
    "nova": {
        "packages": [
            "nova.privsep",
            "vif_plug_ovs.privsep",
            "vif_plug_linux_bridge.privsep",
            "os_brick.privileged",
        ],
        "config_files": ["/etc/nova/nova.conf", "/etc/nova/nova-compute.conf"],
    },
}


@dataclass(frozen=True)
class Payload:
    user_data: str
    meta_data: str
    network_config: str

    def files(self) -> dict[str, bytes]:
        return {
            "user-data": self.user_data.encode(),
            "meta-data": self.meta_data.encode(),
            "network-config": self.network_config.encode(),
        }


@dataclass(frozen=True)
class LabKeys:
    """The lab's SSH identity: the operator key and one pinned host key per node."""

    public: str
    host_keys: dict[str, tuple[str, str]]  # node -> (private PEM, public line)
    # The public key the lab's package repository is signed with, when it has plain nodes.
    repo_public: bytes | None = None


def literal(text: str, indent: int) -> str:
    """File contents as a YAML literal block (readable in user-data), or a JSON string where a
    block could not hold the text exactly (leading or whitespace-only lines)."""
    body = text if text.endswith("\n") else text + "\n"
    lines = body.splitlines()
    if body != text or body[:1].isspace() or any(line.isspace() for line in lines):
        return json.dumps(text)
    pad = " " * indent
    return "|\n" + "\n".join(pad + line if line else "" for line in lines)


def environment(templates: Path = TEMPLATES) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML; values are quoted with tojson where they need it
    )
    env.filters["literal"] = literal
    return env


def ensure_keys(plan: Plan, state: LabState) -> LabKeys:
    _, public = ensure_keypair(state.ssh_key, f"stackseed@{plan.lab}")
    host_keys = {
        node.name: ensure_keypair(state.host_key(node.name), f"root@{node.fqdn}")
        for node in plan.nodes
    }
    repo_public = None
    if any(node.plain for node in plan.nodes):
        # gpg makes it: only a lab with plain nodes needs gpg on the host.
        repo_public = ensure_key(state.repo_key_dir, plan.lab).public
    return LabKeys(public=public, host_keys=host_keys, repo_public=repo_public)


def known_hosts(plan: Plan, keys: LabKeys) -> str:
    lines = []
    for node in plan.nodes:
        key = " ".join(keys.host_keys[node.name][1].split()[:2])
        lines.append(f"{node.ip},{node.name},{node.fqdn} {key}")
    return "\n".join(lines) + "\n"


def secrets_for(role: str, secrets: dict[str, str]) -> dict[str, str]:
    """Only the secrets a role's first boot reads travel to that node."""
    by_role = yaml.safe_load((FIRSTBOOT / "secrets-by-role.yaml").read_text())
    return {name: secrets[name] for name in by_role.get(role, [])}


def phases(role: str) -> list[tuple[str, str]]:
    """(file name, script) of the role's first-boot phases, common ones included, in run order."""
    scripts = [*FIRSTBOOT.glob("common/*.sh"), *FIRSTBOOT.glob(f"{role}/*.sh")]
    return [(p.name, p.read_text()) for p in sorted(scripts, key=lambda p: p.name)]


def node_phases(node: PlannedNode, enabled: Collection[str] = ()) -> list[tuple[str, str]]:
    """The node's first-boot phases: its role's, after the package install on a plain node;
    an optional service's phase only where `enabled` (lab.enable) names its service."""
    extra = [plain.phase()] if node.plain else []
    gone = TABLES[node.role].disabled(enabled)
    return [
        *extra,
        *((name, text) for name, text in phases(node.role) if name.removesuffix(".sh") not in gone),
    ]


def plain_context(plan: Plan, node: PlannedNode, keys: LabKeys) -> dict[str, Any] | None:
    """What a plain node's user-data adds: the repository's key and apt source, the package
    list and the role elements' hooks (builder/plain.py). None for a node on a role image."""
    if not node.plain:
        return None
    if keys.repo_public is None:
        raise ValueError(f"{node.name} is a plain node, and the lab keys have no repository key")
    return {
        "keyring_path": plain.KEYRING_PATH,
        "keyring": base64.b64encode(keys.repo_public).decode(),
        "source_path": plain.SOURCE_PATH,
        "source": plain.source_text(plan.topology.repository_url),
        "files": plain.node_files(node.role),
    }


def render_node(
    plan: Plan,
    node: PlannedNode,
    secrets: dict[str, str],
    keys: LabKeys,
    *,
    nested_virt: bool = False,
    env: jinja2.Environment | None = None,
) -> Payload:
    env = env or environment()
    facts = node_facts(plan, node, nested_virt=nested_virt)
    private, public = keys.host_keys[node.name]
    context: dict[str, Any] = {
        "node": node,
        "facts": facts,
        "hosts": plan.hosts,
        "controller_ip": facts["controller"]["ip"],
        "ssh_public_key": keys.public,
        "host_key_private": private.rstrip("\n"),
        "host_key_public": " ".join(public.split()[:2]),
        "node_secrets": secrets_for(node.role, secrets),
        "runner": (FIRSTBOOT / "stackseed-firstboot").read_text(),
        "services": (FIRSTBOOT / "stackseed-services").read_text(),
        "library": (FIRSTBOOT / "lib.sh").read_text(),
        "joined": (FIRSTBOOT / "stackseed-joined").read_text(),
        "cloud": (FIRSTBOOT / "stackseed-cloud").read_text(),
        "workers": (FIRSTBOOT / "stackseed-workers").read_text(),
        "privsep": (FIRSTBOOT / "stackseed-privsep").read_text(),
        "privsep_servers": PRIVSEP_SERVERS,
        "phases": node_phases(node, plan.topology.lab.enable),
        "phase_table": json.dumps(
            table_for(node.role, node.image_name, plan.topology.lab.enable).as_json(
                plan.topology.lab.neutron_backend
            ),
            indent=2,
        )
        + "\n",
        "plain": plain_context(plan, node, keys),
    }
    user_data = env.get_template(node.template).render(context)
    network_config = env.get_template("network-config.yaml.j2").render(context)
    # The instance-id follows the payload: a node made with a different payload is a different
    # instance. Once a node has booted, it keeps its instance whatever seed it sees later
    # (manual_cache_clean, in user-data.yaml.j2).
    digest = hashlib.sha256((user_data + network_config).encode()).hexdigest()[:16]
    context["instance_id"] = f"{plan.lab}-{node.name}-{digest}"
    meta_data = env.get_template("meta-data.yaml.j2").render(context)
    return Payload(user_data=user_data, meta_data=meta_data, network_config=network_config)
