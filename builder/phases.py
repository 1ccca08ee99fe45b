"""First-boot phase ordering, read from data/phases.yaml: per role, which phase needs which on
the node and how many run at once, and which services each phase owns; per image that is not a
role's own (a plain node's), the phases it adds ahead of the role's. Each node's seed carries
its table as phases.json, which the runner (cloudinit/firstboot/stackseed-firstboot) schedules
first boot from and stackseed-services every later boot's services."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from builder.errors import StackseedError
from builder.paths import DATA

# The neutron backends a unit may differ by (builder.topology's lab.neutron_backend).
BACKENDS = ("openvswitch", "linuxbridge")
# What the services walker understands (cloudinit/firstboot/stackseed-services, probe()).
PROBES = {"tcp": (1, 1), "http": (1, 9), "address": (2, 2), "joined": (0, 0)}
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PLACEHOLDERS = ("ip", "controller")
COMMON_KEYS = ("needs", "seconds", "units", "then", "wait", "up", "run")
# `service`: the optional service a role phase belongs to (lab.enable turns it on).
KEYS = (*COMMON_KEYS, "service")
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
SERVICE_KEYS = ("units", "then", "wait", "up", "run")
# phases.yaml's top-level key for the phases an image adds (every other key is a role), and
# the key only those phases may have besides KEYS.
IMAGES = "images"
IMAGE_KEYS = (*COMMON_KEYS, "first")

# A unit by name, or by neutron backend ({openvswitch: ..., linuxbridge: ...}).
UnitSpec = str | Mapping[str, str]


@dataclass(frozen=True)
class Services:
    """What a phase leaves running, and how a later boot knows it is back (phases.yaml)."""

    units: tuple[UnitSpec, ...] = ()
    then: tuple[UnitSpec, ...] = ()
    wait: tuple[str, ...] = ()
    up: tuple[str, ...] = ()
    run: tuple[str, ...] = ()

    def unit_names(self, backend: str) -> list[str]:
        return [resolve(unit, backend) for unit in (*self.units, *self.then)]

    def as_json(self, backend: str) -> dict[str, list[str]]:
        """Only the keys that are set, units resolved for the lab's backend."""
        found = {
            "units": [resolve(unit, backend) for unit in self.units],
            "then": [resolve(unit, backend) for unit in self.then],
            "wait": list(self.wait),
            "up": list(self.up),
            "run": list(self.run),
        }
        return {key: value for key, value in found.items() if value}


def resolve(unit: UnitSpec, backend: str) -> str:
    return unit if isinstance(unit, str) else unit[backend]


@dataclass(frozen=True)
class PhaseTable:
    role: str
    parallel: int
    needs: Mapping[str, tuple[str, ...]]
    seconds: Mapping[str, float]
    services: Mapping[str, Services] = field(default_factory=dict)
    unknown: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # misspelt keys
    optional: Mapping[str, str] = field(default_factory=dict)  # phase -> its optional service

    def disabled(self, enabled: Collection[str]) -> set[str]:
        """The optional phases a lab that enables only `enabled` leaves out."""
        return {name for name, service in self.optional.items() if service not in enabled}

    def with_services(self, enabled: Collection[str]) -> PhaseTable:
        """The table without the optional phases whose service is not enabled. Only a phase of
        the same service needs an optional one (problems() says so), so no remaining edge
        points at a dropped phase."""
        gone = self.disabled(enabled)
        if not gone:
            return self
        return replace(
            self,
            needs={
                n: tuple(x for x in v if x not in gone)
                for n, v in self.needs.items()
                if n not in gone
            },
            seconds={n: v for n, v in self.seconds.items() if n not in gone},
            services={n: v for n, v in self.services.items() if n not in gone},
            optional={n: v for n, v in self.optional.items() if n not in gone},
        )

    def as_json(self, backend: str = BACKENDS[0]) -> dict[str, Any]:
        """What the node reads (phases.json): plain JSON, the runner needs no YAML; every unit
        named for the lab's neutron backend."""
        return {
            "role": self.role,
            "parallel": self.parallel,
            "phases": {
                name: {
                    "needs": list(self.needs[name]),
                    "seconds": self.seconds[name],
                    **self.services.get(name, Services()).as_json(backend),
                }
                for name in sorted(self.needs)
            },
        }

    def units(self, backend: str) -> dict[str, list[str]]:
        """phase -> the units it owns, for one backend."""
        return {
            name: self.services[name].unit_names(backend)
            for name in sorted(self.services)
            if self.services[name].unit_names(backend)
        }


def _services(entry: Mapping[str, Any]) -> Services:
    return Services(**{key: tuple(entry.get(key) or ()) for key in SERVICE_KEYS})


@dataclass(frozen=True)
class ImagePhases:
    """The phases a node's image adds to its role's table (phases.yaml's `images`): a plain
    node installs its role's packages before anything else."""

    image: str
    needs: Mapping[str, tuple[str, ...]]
    seconds: Mapping[str, float]
    services: Mapping[str, Services]
    first: tuple[str, ...]  # what every phase of the role that needs nothing needs instead
    unknown: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    not_bool: tuple[str, ...] = ()  # phases whose `first` is neither true nor false


def _unknown(phases: Mapping[str, Any], keys: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return {
        name: tuple(sorted(set(entry) - set(keys)))
        for name, entry in phases.items()
        if set(entry) - set(keys)
    }


def parse(raw: Mapping[str, Any]) -> dict[str, PhaseTable]:
    """The roles' tables (every top-level key but `images`)."""
    tables = {}
    for role, spec in raw.items():
        if role == IMAGES:
            continue
        phases = spec["phases"]
        tables[role] = PhaseTable(
            role=role,
            parallel=int(spec["parallel"]),
            needs={name: tuple(entry.get("needs", [])) for name, entry in phases.items()},
            seconds={name: float(entry.get("seconds", 0)) for name, entry in phases.items()},
            services={name: _services(entry) for name, entry in phases.items()},
            unknown=_unknown(phases, KEYS),
            optional={
                name: entry["service"] for name, entry in phases.items() if "service" in entry
            },
        )
    return tables


def parse_images(raw: Mapping[str, Any]) -> dict[str, ImagePhases]:
    """What each image adds (phases.yaml's `images`: image -> its phases)."""
    found = {}
    for image, phases in (raw.get(IMAGES) or {}).items():
        found[image] = ImagePhases(
            image=image,
            needs={name: tuple(entry.get("needs", [])) for name, entry in phases.items()},
            seconds={name: float(entry.get("seconds", 0)) for name, entry in phases.items()},
            services={name: _services(entry) for name, entry in phases.items()},
            first=tuple(sorted(name for name, entry in phases.items() if entry.get("first"))),
            unknown=_unknown(phases, IMAGE_KEYS),
            not_bool=tuple(
                sorted(
                    name
                    for name, entry in phases.items()
                    if not isinstance(entry.get("first", False), bool)
                )
            ),
        )
    return found


def load(path: Path = DATA / "phases.yaml") -> dict[str, PhaseTable]:
    return parse(yaml.safe_load(path.read_text()))


def load_images(path: Path = DATA / "phases.yaml") -> dict[str, ImagePhases]:
    return parse_images(yaml.safe_load(path.read_text()))


def with_image(table: PhaseTable, extra: ImagePhases) -> PhaseTable:
    """The role's table on a node of `extra`'s image: its phases added, and every role phase
    that needed nothing needing the image's `first` phases instead. The role's own entries win
    a name clash (image_problems names it)."""
    needs = {name: wanted or extra.first for name, wanted in table.needs.items()}
    return PhaseTable(
        role=table.role,
        parallel=table.parallel,
        needs={**extra.needs, **needs},
        seconds={**extra.seconds, **table.seconds},
        services={**extra.services, **table.services},
        unknown={**extra.unknown, **table.unknown},
        optional=table.optional,
    )


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
    for name, keys in sorted(table.unknown.items()):
        found.append(
            f"{table.role}: {name} has unknown keys {', '.join(keys)} (known: {', '.join(KEYS)})"
        )
    for name, service in sorted(table.optional.items()):
        if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
            found.append(f"{table.role}: {name}: service {service!r} is not a name like 'etcd'")
    for name, needs in sorted(table.needs.items()):
        for need in needs:
            # An optional phase may need one of its own service, dropped or kept with it.
            if need in table.optional and table.optional.get(name) != table.optional[need]:
                found.append(
                    f"{table.role}: {name} needs {need}, which runs only where lab.enable "
                    f"names {table.optional[need]}"
                )
    found.extend(service_problems(table))
    return found


def image_problems(extra: ImagePhases, table: PhaseTable, scripts: Sequence[str]) -> list[str]:
    """Everything wrong with an image's phases on a node of `table`'s role, whose phase
    scripts are `scripts` (the role's and the image's): what `problems` finds in the table the
    node's seed carries, and what is the image's own doing."""
    where = f"{table.role} on image {extra.image}"
    found = []
    for name in sorted(set(extra.needs) & set(table.needs)):
        found.append(f"{where}: {name} is a {table.role} phase already")
    for name, keys in sorted(extra.unknown.items()):
        known = ", ".join(IMAGE_KEYS)
        found.append(f"{where}: {name} has unknown keys {', '.join(keys)} (known: {known})")
    for name in extra.not_bool:
        found.append(f"{where}: {name}: first is true or false")
    for name in extra.first:
        if extra.needs[name]:
            found.append(f"{where}: {name} is first and cannot need {', '.join(extra.needs[name])}")
    if not extra.first:
        found.append(f"{where}: no phase is first: nothing orders the image's phases")
    carried = with_image(table, extra)
    found += [
        f"{where}: {problem.removeprefix(f'{table.role}: ')}"
        for problem in problems(replace(carried, unknown=table.unknown), scripts)
    ]
    return list(dict.fromkeys(found))


def probe_problem(probe: Any) -> str | None:
    """Why a probe is not one stackseed-services can run; None when it is."""
    if not isinstance(probe, str) or not probe.split():
        return f"probe {probe!r} is not a string like 'tcp {{ip}}:3306'"
    kind, *args = probe.split()
    if kind not in PROBES:
        return f"probe {probe!r}: unknown kind {kind} (known: {', '.join(PROBES)})"
    least, most = PROBES[kind]
    if not least <= len(args) <= most:
        return f"probe {probe!r}: {kind} takes {least}-{most} arguments, not {len(args)}"
    for name in PLACEHOLDER.findall(probe):
        if name not in PLACEHOLDERS:
            known = ", ".join(PLACEHOLDERS)
            return f"probe {probe!r}: unknown placeholder {{{name}}} (known: {known})"
    if kind == "tcp" and not re.fullmatch(r"\S+:\d+", args[0]):
        return f"probe {probe!r}: tcp wants HOST:PORT"
    if kind == "http":
        if not args[0].startswith(("http://", "https://")):
            return f"probe {probe!r}: http wants a URL first"
        if not all(re.fullmatch(r"[1-5]\d\d", status) for status in args[1:]):
            return f"probe {probe!r}: http statuses are three-digit codes"
    return None


def service_problems(table: PhaseTable) -> list[str]:
    """The services part of a role's table: units named per backend, each owned by one phase,
    probes the walker understands."""
    found = []
    owner: dict[tuple[str, str], str] = {}
    for name, services in sorted(table.services.items()):
        for unit in (*services.units, *services.then):
            if isinstance(unit, Mapping):
                if set(unit) != set(BACKENDS) or not all(isinstance(v, str) for v in unit.values()):
                    found.append(
                        f"{table.role}: {name}: a unit by backend names each of "
                        f"{', '.join(BACKENDS)}, not {dict(unit)}"
                    )
                    continue
            elif not isinstance(unit, str) or not re.fullmatch(r"[A-Za-z0-9@._-]+", unit):
                found.append(f"{table.role}: {name}: {unit!r} is not a systemd unit name")
                continue
            for backend in BACKENDS:
                resolved = resolve(unit, backend)
                if (other := owner.setdefault((backend, resolved), name)) != name:
                    found.append(
                        f"{table.role}: unit {resolved} is owned by both {other} and {name}"
                    )
        for probe in (*services.wait, *services.up):
            if problem := probe_problem(probe):
                found.append(f"{table.role}: {name}: {problem}")
        for command in services.run:
            if not isinstance(command, str) or not command.strip():
                found.append(f"{table.role}: {name}: run wants shell command strings")
    return list(dict.fromkeys(found))


TABLES: dict[str, PhaseTable] = load()
IMAGE_PHASES: dict[str, ImagePhases] = load_images()


def optional_services() -> set[str]:
    """Every service lab.enable may name: those of the optional phases of any role."""
    return {service for table in TABLES.values() for service in table.optional.values()}


def table_for(role: str, image: str | None = None, enabled: Collection[str] = ()) -> PhaseTable:
    """The table a node of `role` carries: the role's own on its role image (image None or
    the role's name), with the image's phases added on any other; optional phases only for
    the services in `enabled`."""
    try:
        table = TABLES[role]
    except KeyError:
        raise StackseedError(
            f"role {role} has no first-boot phase table",
            fix=f"add '{role}:' with its phases and their needs to builder/data/phases.yaml",
        ) from None
    table = table.with_services(enabled)
    if image is None or image == role:
        return table
    try:
        return with_image(table, IMAGE_PHASES[image])
    except KeyError:
        raise StackseedError(
            f"image {image} has no first-boot phases",
            fix=f"add '{image}:' under '{IMAGES}:' in builder/data/phases.yaml",
        ) from None
