"""Plan: the pure step from a topology to concrete names, MACs, bridges and node facts.

Nothing here touches the disk or libvirt; the same topology always gives the same plan.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from builder.joins import join_facts
from builder.paths import DATA
from builder.roles import ROLES
from builder.topology import Network, Node, Topology

# QEMU's locally administered OUI: what libvirt itself hands out.
_OUI = "52:54:00"
MAX_CPU_SHARES = 262144  # cgroup v1 cpu.shares, the largest libvirt takes
WAIT_SECONDS = 1800.0  # `lab up --wait` on role images: a TCG first boot, with room to spare
PLAIN_INSTALL_SECONDS = 2400.0  # more when a node installs its packages first (image: plain)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("/".join(parts).encode()).digest()


def derive_mac(lab: str, node: str, index: int) -> str:
    tail = _digest("mac", lab, node, str(index))[:3]
    return _OUI + "".join(f":{b:02x}" for b in tail)


def bridge_name(lab: str, network: str) -> str:
    """A Linux bridge name (max 15 chars) that is the lab's own and cannot be 'virbr0'."""
    return "ssd" + _digest("bridge", lab, network).hex()[:10]


@dataclass(frozen=True)
class PlannedNic:
    network: str
    mac: str
    bridge: str
    ip: str | None  # None: up without an address (provider)
    prefix: int
    purpose: str

    @property
    def name(self) -> str:
        """The interface name the node gives it (set by MAC match, the same on VMs and servers)."""
        return {"management": "mgmt0", "provider": "provider0"}.get(self.purpose, self.network)


@dataclass(frozen=True)
class PlannedDisk:
    serial: str
    size: int
    purpose: str


@dataclass(frozen=True)
class PlannedNode:
    name: str
    role: str
    fqdn: str
    ip: str
    memory: int
    vcpus: int
    nics: tuple[PlannedNic, ...]
    disks: tuple[PlannedDisk, ...]
    element: str
    template: str
    root_size: int  # bytes: the root disk the node gets (its image grows to fill it on boot)
    boot: str = "kernel"  # kernel (direct kernel boot) | firmware (UEFI boots the whole disk)
    firmware: str | None = None  # uefi | uefi-secure, for boot firmware
    seed_bus: str | None = None  # cdrom (SATA) | usb, for boot firmware
    nic_model: str = "virtio"
    # The image it boots: its role's (the role's name), or "plain" (Debian without the role's
    # packages, which first boot installs from the lab's repository). "" means the role's.
    image: str = ""
    cpu_weight: int = 1

    @property
    def cpu_shares(self) -> int:
        """libvirt's cputune shares: the node's claim on host CPU beside the other nodes."""
        return min(1024 * self.vcpus * self.cpu_weight, MAX_CPU_SHARES)

    @property
    def domain_name(self) -> str:
        return self.name

    @property
    def image_name(self) -> str:
        return self.image or self.role

    @property
    def plain(self) -> bool:
        return self.image_name != self.role

    @property
    def boots_firmware(self) -> bool:
        return self.boot == "firmware"


@dataclass(frozen=True)
class PlannedNetwork:
    name: str
    purpose: str
    bridge: str
    cidr: str
    host_ip: str
    prefix: int


@dataclass(frozen=True)
class Plan:
    topology: Topology
    lab: str
    networks: tuple[PlannedNetwork, ...]
    nodes: tuple[PlannedNode, ...]
    hosts: tuple[tuple[str, str, str], ...] = field(default=())  # (ip, fqdn, short)

    def node(self, name: str) -> PlannedNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def wait_seconds(self, names: list[str]) -> float:
        """`lab up --wait`'s default bound for these nodes: a plain node's first boot installs
        its role's packages first (about 400 under TCG, 35-40 minutes here beside the rest)."""
        if any(node.plain for node in self.nodes if node.name in names):
            return WAIT_SECONDS + PLAIN_INSTALL_SECONDS
        return WAIT_SECONDS

    def libvirt_name(self, name: str) -> str:
        """Domain, network and volume names carry the lab name so labs never collide."""
        return f"{self.lab}-{name}"


def make_plan(topo: Topology) -> Plan:
    lab = topo.lab.name
    networks = tuple(_plan_network(lab, n) for n in topo.networks)
    nodes = tuple(_plan_node(topo, node) for node in topo.nodes)
    macs = [nic.mac for node in nodes for nic in node.nics]
    if len(set(macs)) != len(macs):  # a derived MAC colliding with one the user gave
        raise ValueError("two NICs share a MAC; give one of them an explicit mac")
    hosts = tuple((n.ip, n.fqdn, n.name) for n in nodes)
    return Plan(topology=topo, lab=lab, networks=networks, nodes=nodes, hosts=hosts)


def _plan_network(lab: str, net: Network) -> PlannedNetwork:
    return PlannedNetwork(
        name=net.name,
        purpose=net.purpose,
        bridge=bridge_name(lab, net.name),
        cidr=str(net.cidr),
        host_ip=str(net.host_address),
        prefix=net.cidr.prefixlen,
    )


def _plan_node(topo: Topology, node: Node) -> PlannedNode:
    lab = topo.lab.name
    nics = []
    for index, nic in enumerate(topo.nics_of(node)):
        net = topo.network(nic.network)
        nics.append(
            PlannedNic(
                network=net.name,
                mac=nic.mac or derive_mac(lab, node.name, index),
                bridge=bridge_name(lab, net.name),
                ip=str(node.ip) if net.purpose == "management" else None,
                prefix=net.cidr.prefixlen,
                purpose=net.purpose,
            )
        )
    role = ROLES[node.role]
    return PlannedNode(
        name=node.name,
        role=node.role,
        fqdn=f"{node.name}.{topo.lab.domain}",
        ip=str(node.ip),
        memory=node.ram,
        vcpus=node.cpus,
        nics=tuple(nics),
        disks=tuple(PlannedDisk(d.serial, d.size, d.purpose) for d in node.disks),
        element=role.element,
        template=role.template,
        root_size=node.root_disk,
        boot=node.boot,
        firmware=node.firmware_kind,
        seed_bus=node.seed_bus,
        nic_model=node.nic_model,
        image=node.image_name,
        cpu_weight=node.weight,
    )


def node_facts(plan: Plan, node: PlannedNode, *, nested_virt: bool = False) -> dict[str, Any]:
    """What first-boot scripts know about the node and the cluster: no secrets in here."""
    topo = plan.topology
    provider = topo.provider
    return {
        "lab": plan.lab,
        "release": topo.lab.release,
        "region": topo.lab.region,
        "neutron_backend": topo.lab.neutron_backend,
        "domain": topo.lab.domain,
        "nested_virt": nested_virt,
        "node": {
            "name": node.name,
            "role": node.role,
            "fqdn": node.fqdn,
            "ip": node.ip,
            "tunnel_ip": _tunnel_ip(plan, node),
            "nics": [
                {"name": n.name, "network": n.network, "mac": n.mac, "purpose": n.purpose}
                for n in node.nics
            ],
            "disks": [{"serial": d.serial, "purpose": d.purpose} for d in node.disks],
        },
        "controller": {
            "name": topo.controller.name,
            "ip": str(topo.controller.ip),
            "auth_url": f"http://{topo.controller.ip}:5000/v3",
        },
        "joins": join_facts(node.role, topo.lab.neutron_backend),
        "catalog": catalog(),
        "management": {
            "cidr": str(topo.management.cidr),
            "host_ip": str(topo.management.host_address),
        },
        "provider": None
        if provider is None
        else {
            "cidr": str(provider.cidr),
            "gateway": str(provider.host_address),
            "pool": [str(a) for a in provider.pool] if provider.pool else None,
        },
        "nodes": [{"name": n.name, "role": n.role, "ip": n.ip, "fqdn": n.fqdn} for n in plan.nodes],
    }


# The services the controller registers (builder/data/catalog.yaml): data, no secrets. Read
# once; every node's facts carry a copy.
_CATALOG: list[dict[str, Any]] = yaml.safe_load((DATA / "catalog.yaml").read_text())["services"]


def catalog() -> list[dict[str, Any]]:
    return copy.deepcopy(_CATALOG)


def _tunnel_ip(plan: Plan, node: PlannedNode) -> str:
    # Only the management network carries an address today, so VXLAN rides on it.
    return node.ip
