"""The topology model: one validated description of the lab, its networks and nodes.

Everything after `load()` trusts what it gets; every check that can fail on user input is here.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from builder.phases import optional_services
from builder.plain import IMAGE as PLAIN_IMAGE
from builder.plain import PLAIN
from builder.roles import ROLES
from builder.sizes import format_size, parse_size

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(/\S*)?$")

Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size)]


def _dns_label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid DNS label: use 1-63 lowercase letters, digits "
            "and '-', not starting or ending with '-'"
        )
    return value


Label = Annotated[str, BeforeValidator(lambda v: _dns_label(v) if isinstance(v, str) else v)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lab(_Strict):
    name: Label = "stackseed"
    release: Literal["trixie", "bookworm"] = "trixie"
    region: str = Field("RegionOne", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    neutron_backend: Literal["openvswitch", "linuxbridge"] = "openvswitch"
    domain: str = "lab.test"
    tunnel_network: str | None = None
    # Where plain nodes (image: plain) get their role's packages: default, the lab host at its
    # management address; a site's own web server serving the same repository otherwise.
    repository: str | None = None
    # Optional services to run besides the default cloud (kolla's enable_<service>): the
    # phases in builder/data/phases.yaml marked `service: NAME`.
    enable: tuple[str, ...] = ()

    @field_validator("enable")
    @classmethod
    def _enable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = sorted(optional_services())
        for name in value:
            if name not in known:
                raise ValueError(
                    f"unknown optional service {name!r}; pick from: {', '.join(known)} "
                    "(the default cloud's services are always on)"
                )
        if len(set(value)) != len(value):
            raise ValueError("names a service twice; list each once")
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _URL.match(value):
            raise ValueError(
                f"repository {value!r} is not an http:// or https:// URL, e.g. "
                "http://repo.example.org/stackseed/"
            )
        return value if value.endswith("/") else value + "/"

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        for part in value.split("."):
            _dns_label(part)
        return value

    @model_validator(mode="after")
    def _backend_exists(self) -> Lab:
        # Neutron removed its Linux bridge ML2 driver in 2025.1; trixie ships no agent for it.
        if self.release == "trixie" and self.neutron_backend == "linuxbridge":
            raise At(
                "lab.neutron_backend: linuxbridge was removed from neutron in 2025.1, which "
                "trixie ships; use openvswitch, or release: bookworm (Zed) for Linux bridge",
                "lab",
                "neutron_backend",
            )
        return self


class Network(_Strict):
    name: Label
    purpose: Literal["management", "provider"]
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None = None
    pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None

    @model_validator(mode="after")
    def _inside(self) -> Network:
        if self.cidr.prefixlen > 29:
            raise ValueError(f"cidr {self.cidr} is too small for a lab; use /29 or larger")
        usable = set(self.cidr.hosts())
        if self.gateway is not None and self.gateway not in usable:
            raise ValueError(f"gateway {self.gateway} is outside {self.cidr}")
        if self.pool is not None:
            start, end = self.pool
            for address in self.pool:
                if address not in usable:
                    raise ValueError(f"pool address {address} is outside {self.cidr}")
            if start > end:
                raise ValueError(f"pool starts at {start}, after its end {end}")
            if self.gateway is not None and start <= self.gateway <= end:
                raise ValueError(f"gateway {self.gateway} is inside the pool {start}-{end}")
        return self

    @property
    def host_address(self) -> ipaddress.IPv4Address:
        """The host's own address on the lab bridge: the gateway, or the first host address."""
        return self.gateway or next(self.cidr.hosts())


class Nic(_Strict):
    network: str
    mac: str | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.lower()
            if not _MAC.match(value):
                raise ValueError(f"{value!r} is not a MAC address like 52:54:00:12:34:56")
            if int(value[:2], 16) & 1:
                raise ValueError(f"{value} is a multicast MAC; the first octet must be even")
        return value


class Disk(_Strict):
    size: Size
    purpose: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    serial: str

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: str) -> str:
        if not _SERIAL.match(value):
            raise ValueError(
                f"serial {value!r} must be 1-20 characters of letters, digits, '-' or '_' "
                "(virtio's limit)"
            )
        return value


# How a node starts. kernel: the lab's shortcut, the launcher hands QEMU the role image's kernel,
# initrd and command line. firmware: like a server, UEFI firmware boots the role's whole-disk
# image (build-images --format disk) with fresh NVRAM.
Boot = Literal["kernel", "firmware"]
Firmware = Literal["uefi", "uefi-secure"]
# Where a firmware-booted node finds its seed: a CD on SATA, or a USB stick.
SeedBus = Literal["cdrom", "usb"]
NicModel = Literal["virtio", "e1000e", "e1000", "rtl8139"]
# What is on the node's disk: its role's image (every package installed), or the plain image
# (Debian without them: first boot installs them from the lab's repository).
ImageKind = Literal["role", "plain"]
# A root disk smaller than this cannot hold a role image (the smallest is about 2.4GiB); the
# launcher compares it with the role image itself. Whole MiB: a qcow2's size is in sectors.
MIN_ROOT = 3 << 30
MAX_ROOT = 16 << 40


class Node(_Strict):
    name: Label
    role: str
    ip: ipaddress.IPv4Address
    nics: tuple[Nic, ...] | None = None
    memory: Size | None = None
    vcpus: int | None = Field(None, ge=1, le=64)
    cpu_weight: int | None = Field(None, ge=1, le=16)  # default: the role's (roles.yaml)
    disks: tuple[Disk, ...] = ()
    root_size: Size | None = None  # the root disk; default: the role's (builder/data/roles.yaml)
    boot: Boot = "kernel"
    firmware: Firmware | None = None  # boot: firmware only; default uefi
    seed: SeedBus | None = None  # boot: firmware only; default cdrom
    nic_model: NicModel = "virtio"
    image: ImageKind = "role"

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"unknown role {value!r}; known roles: {', '.join(ROLES)}")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | None) -> int | None:
        if value is not None and value < 512 << 20:
            raise ValueError("memory below 512MiB cannot boot a node")
        return value

    @field_validator("root_size")
    @classmethod
    def _root_size(cls, value: int | None) -> int | None:
        if value is None:
            return value
        if value % (1 << 20):
            raise ValueError(f"root_size {value} bytes is not whole MiB; write e.g. 20GiB")
        if not MIN_ROOT <= value <= MAX_ROOT:
            raise ValueError(
                f"root_size {format_size(value)} is outside {format_size(MIN_ROOT)} to "
                f"{format_size(MAX_ROOT)} (a role image alone takes up to 4.5GiB); e.g. 20GiB"
            )
        return value

    @property
    def root_disk(self) -> int:
        """The root disk's size in bytes: the node's root_size or its role's."""
        return self.root_size or parse_size(ROLES[self.role].root_size)

    @property
    def ram(self) -> int:
        return self.memory or parse_size(ROLES[self.role].memory)

    @property
    def cpus(self) -> int:
        return self.vcpus or ROLES[self.role].vcpus

    @property
    def weight(self) -> int:
        return self.cpu_weight or ROLES[self.role].cpu_weight

    @property
    def firmware_kind(self) -> Firmware | None:
        return (self.firmware or "uefi") if self.boot == "firmware" else None

    @property
    def seed_bus(self) -> SeedBus | None:
        return (self.seed or "cdrom") if self.boot == "firmware" else None

    @property
    def image_name(self) -> str:
        """The image the node boots: its role's, or the plain one."""
        return PLAIN_IMAGE if self.image == "plain" else self.role


class Topology(_Strict):
    lab: Lab = Lab()
    networks: tuple[Network, ...]
    nodes: tuple[Node, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        _unique("networks", "name", [n.name for n in self.networks], "networks")
        _unique("nodes", "name", [n.name for n in self.nodes], "nodes")
        _unique("nodes", "ip", [str(n.ip) for n in self.nodes], "nodes")
        purposes = [n.purpose for n in self.networks]
        if purposes.count("management") != 1:
            raise At(
                f"networks: exactly one network needs purpose 'management', found "
                f"{purposes.count('management')}",
                "networks",
            )
        if purposes.count("provider") > 1:
            raise At("networks: at most one network may have purpose 'provider'", "networks")
        for i, a in enumerate(self.networks):
            for b in self.networks[i + 1 :]:
                if a.cidr.overlaps(b.cidr):
                    raise At(
                        f"networks: {a.name} ({a.cidr}) overlaps {b.name} ({b.cidr})",
                        "networks",
                        self.networks.index(b),
                        "cidr",
                    )
        names = {n.name for n in self.networks}
        if self.lab.tunnel_network is not None and self.lab.tunnel_network not in names:
            raise At(
                f"lab.tunnel_network: no network named {self.lab.tunnel_network!r}; "
                f"networks are {', '.join(sorted(names))}",
                "lab",
                "tunnel_network",
            )
        tunnel = self.lab.tunnel_network
        if tunnel is not None and tunnel in names and self.network(tunnel).purpose != "management":
            raise At(
                f"lab.tunnel_network: {tunnel} is not the management network; nodes only have "
                "addresses there, so VXLAN can only ride on it",
                "lab",
                "tunnel_network",
            )
        controllers = [n.name for n in self.nodes if n.role == "controller"]
        if len(controllers) != 1:
            raise At(
                f"nodes: exactly one node needs role 'controller', found {len(controllers)}"
                + (f" ({', '.join(controllers)})" if controllers else ""),
                "nodes",
            )
        seen_macs: dict[str, str] = {}
        mgmt = self.management
        for index, node in enumerate(self.nodes):
            self._check_node(index, node, names, mgmt)
            for nic_index, nic in enumerate(node.nics or ()):
                if nic.mac in seen_macs:
                    raise At(
                        f"nodes: {node.name}: mac {nic.mac} is already used by "
                        f"{seen_macs[nic.mac]}",
                        "nodes",
                        index,
                        "nics",
                        nic_index,
                        "mac",
                    )
                if nic.mac:
                    seen_macs[nic.mac] = node.name
        return self

    def _check_node(self, index: int, node: Node, names: set[str], mgmt: Network) -> None:
        where = f"nodes: {node.name}"
        at = ("nodes", index)
        if node.ip not in set(mgmt.cidr.hosts()):
            raise At(
                f"{where}: ip {node.ip} is outside the management network {mgmt.cidr}", *at, "ip"
            )
        if node.ip == mgmt.host_address:
            raise At(f"{where}: ip {node.ip} is the host's address on {mgmt.name}", *at, "ip")
        for nic_index, nic in enumerate(node.nics or ()):
            if nic.network not in names:
                raise At(
                    f"{where}: nic on unknown network {nic.network!r}; "
                    f"networks are {', '.join(sorted(names))}",
                    *at,
                    "nics",
                    nic_index,
                    "network",
                )
        if node.nics is not None:
            nets = [nic.network for nic in node.nics]
            if mgmt.name not in nets:
                raise At(f"{where}: needs a nic on the management network {mgmt.name}", *at, "nics")
            _unique(where, "nic network", nets, *at, "nics")
        _unique(where, "disk serial", [d.serial for d in node.disks], *at, "disks")
        if node.boot == "kernel":
            for key in ("firmware", "seed"):
                if getattr(node, key) is not None:
                    raise At(
                        f"{where}: {key} applies only to a node that boots its firmware; add "
                        f"'boot: firmware' (its role then needs build-images --format disk), or "
                        f"remove {key}",
                        *at,
                        key,
                    )
        if node.image == "plain" and node.role not in PLAIN.roles:
            raise At(
                f"{where}: image plain is for roles {', '.join(PLAIN.roles)}; a {node.role} "
                "node needs its role image (its build does work a first boot does not redo, "
                "see builder/data/plain.yaml)",
                *at,
                "image",
            )
        needed = ROLES[node.role].needs_disk
        if needed and not any(d.purpose == needed for d in node.disks):
            raise At(
                f"{where}: role {node.role} needs a disk with purpose {needed!r}, e.g. "
                f"disks: [{{size: 20GiB, purpose: {needed}, serial: {needed}0}}]",
                *at,
            )

    @cached_property
    def management(self) -> Network:
        return next(n for n in self.networks if n.purpose == "management")

    @cached_property
    def provider(self) -> Network | None:
        return next((n for n in self.networks if n.purpose == "provider"), None)

    @cached_property
    def controller(self) -> Node:
        return next(n for n in self.nodes if n.role == "controller")

    @property
    def plain_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.image == "plain")

    @property
    def repository_url(self) -> str:
        """Where plain nodes get their packages: lab.repository, else the lab host's own
        address on the management network (the only place a lab node can reach)."""
        return self.lab.repository or f"http://{self.management.host_address}:{PLAIN.port}/"

    @property
    def tunnel(self) -> Network:
        name = self.lab.tunnel_network
        return next((n for n in self.networks if n.name == name), self.management)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def nics_of(self, node: Node) -> tuple[Nic, ...]:
        """The node's NICs in order; by the role's defaults when the topology lists none."""
        if node.nics is not None:
            return node.nics
        wanted = ROLES[node.role].networks
        return tuple(Nic(network=n.name) for p in wanted for n in self.networks if n.purpose == p)


class At(ValueError):
    """A model-level problem that knows which key of the file it is about (for the line).

    `loc` is the full path from the top of the file, whichever model raises it."""

    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc = loc


def _unique(where: str, key: str, values: list[str], *loc: str | int) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise At(f"{where}: duplicate {key} {value}", *loc, index)
        seen.add(value)
