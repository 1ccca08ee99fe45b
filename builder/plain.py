"""The plain image and what a plain node's first boot carries (data in builder/data/plain.yaml).

A plain node (topology `image: plain`) boots Debian without its role's packages. Its seed
brings the role's package list, read from the same package-installs.yaml files the role image
is built from, and the role elements' hooks that the build runs around those installs (the
debconf answers before, the units left disabled after), so the node ends up as the role image
would have started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.errors import StackseedError
from builder.images.key import closure
from builder.paths import DATA, ELEMENTS, TEMPLATES
from builder.roles import ROLES

IMAGE = "plain"
ARCH = "amd64"
FIRSTBOOT_PLAIN = TEMPLATES / "firstboot" / "plain"
# diskimage-builder's hook directories (dib-run-parts runs each one's files by name).
HOOK_DIRS = (
    "environment.d",
    "extra-data.d",
    "root.d",
    "block-device.d",
    "pre-install.d",
    "install.d",
    "post-install.d",
    "finalise.d",
    "cleanup.d",
)


@dataclass(frozen=True)
class Plain:
    element: str
    roles: tuple[str, ...]
    port: int
    before: tuple[str, ...]  # "element/pre-install.d/name", run before apt-get install
    after: tuple[str, ...]  # run after it
    tools: tuple[str, ...]  # put on those hooks' PATH
    in_image: tuple[str, ...]  # the plain element has an identical copy
    build_only: dict[str, str]  # hook -> why a node does not need it


def _load(path: Path = DATA / "plain.yaml") -> Plain:
    raw = yaml.safe_load(path.read_text())
    boot = raw["first_boot"]
    return Plain(
        element=raw["element"],
        roles=tuple(raw["roles"]),
        port=int(raw["port"]),
        before=tuple(boot["before"]),
        after=tuple(boot["after"]),
        tools=tuple(boot["tools"]),
        in_image=tuple(raw["in_image"]),
        build_only=dict(raw["build_only"]),
    )


PLAIN = _load()


@dataclass(frozen=True)
class FirstBoot:
    """What a plain node of one role gets in its seed besides the phase itself."""

    packages: tuple[str, ...]
    before: tuple[tuple[str, str], ...]  # (file name, script), in run order
    after: tuple[tuple[str, str], ...]
    tools: tuple[tuple[str, str], ...]


def role_elements(role: str, elements_dir: Path = ELEMENTS) -> tuple[str, ...]:
    """Every stackseed element the role's image is built from."""
    return closure((ROLES[role].element,), elements_dir).ours


def missing_elements(role: str, elements_dir: Path = ELEMENTS) -> tuple[str, ...]:
    """The role's stackseed elements that the plain image is not built from."""
    plain = set(closure((PLAIN.element,), elements_dir).ours)
    return tuple(e for e in role_elements(role, elements_dir) if e not in plain)


def hooks(element: str, elements_dir: Path = ELEMENTS) -> list[str]:
    """The element's hooks as 'element/<phase>.d/name'."""
    found = []
    for phase in HOOK_DIRS:
        directory = elements_dir / element / phase
        if directory.is_dir():
            found += [f"{element}/{phase}/{p.name}" for p in sorted(directory.iterdir())]
    return found


def _wanted(name: str, spec: Any, path: Path) -> bool:
    """Whether package-installs installs `name` on amd64, in the image it leaves behind."""
    if spec is None:
        return True
    specs = spec if isinstance(spec, list) else [spec]
    for item in specs:
        if not isinstance(item, dict):
            raise StackseedError(f"{path}: {name}: options must be a mapping")
        if "when" in item:
            # A condition on the build's environment: the node cannot know how it came out.
            raise StackseedError(
                f"{path}: {name}: 'when' conditions cannot be carried to a plain node",
                fix="list the package without 'when', or keep the role off plain nodes",
            )
        if item.get("uninstall") or item.get("build-only"):
            return False
        arches = str(item.get("arch", ARCH)).replace(" ", "").split(",")
        if ARCH not in arches or ARCH in str(item.get("not-arch", "")).split(","):
            return False
    return True


def packages(role: str, elements_dir: Path = ELEMENTS) -> tuple[str, ...]:
    """The packages the role's elements install (their package-installs.yaml), sorted."""
    names: set[str] = set()
    for element in role_elements(role, elements_dir):
        path = elements_dir / element / "package-installs.yaml"
        if not path.is_file():
            continue
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise StackseedError(f"{path}: must map package names to options")
        names.update(str(k) for k, v in data.items() if _wanted(str(k), v, path))
    return tuple(sorted(names))


def _files(entries: tuple[str, ...], ours: tuple[str, ...], elements_dir: Path) -> list[Path]:
    chosen = [elements_dir / e for e in entries if e.split("/", 1)[0] in ours]
    return sorted(chosen, key=lambda p: p.name)


def first_boot(role: str, elements_dir: Path = ELEMENTS) -> FirstBoot:
    """The package list, hooks and tools a plain node of `role` carries."""
    if role not in PLAIN.roles:
        raise StackseedError(
            f"role {role} cannot boot the plain image",
            fix=f"give it a role image, or one of the roles {', '.join(PLAIN.roles)}",
        )
    ours = role_elements(role, elements_dir)

    def read(paths: list[Path]) -> tuple[tuple[str, str], ...]:
        return tuple((p.name, p.read_text()) for p in paths)

    return FirstBoot(
        packages=packages(role, elements_dir),
        before=read(_files(PLAIN.before, ours, elements_dir)),
        after=read(_files(PLAIN.after, ours, elements_dir)),
        tools=read(_files(PLAIN.tools, ours, elements_dir)),
    )


# Every image build-images makes, by name: one per role, and the plain image.
IMAGES: dict[str, str] = {
    **{name: role.element for name, role in ROLES.items()},
    IMAGE: PLAIN.element,
}


# Where a plain node's seed puts the repository's key and its one apt source.
KEYRING_PATH = "/etc/apt/keyrings/stackseed-lab.gpg"
SOURCE_PATH = "/etc/apt/sources.list.d/stackseed-lab.sources"
# Where the package list, the hooks and their tools land (05-packages.sh reads them there).
NODE_DIR = "/usr/local/lib/stackseed/plain"


def source_text(url: str) -> str:
    """The node's apt source (deb822): the flat repository at `url`, trusted only with the
    lab's key."""
    return (
        "# Written by stackseed: the lab's package repository, this node's only apt source\n"
        "# (first boot set Debian's aside in /var/lib/stackseed/apt-sources-off).\n"
        "Types: deb\n"
        f"URIs: {url}\n"
        "Suites: ./\n"
        f"Signed-By: {KEYRING_PATH}\n"
    )


def node_files(role: str, elements_dir: Path = ELEMENTS) -> list[tuple[str, str, str]]:
    """(path, mode, content) of what a plain node of `role` needs besides the phase itself."""
    boot = first_boot(role, elements_dir)
    listing = "".join(f"{name}\n" for name in boot.packages)
    files = [
        (
            f"{NODE_DIR}/packages",
            "0644",
            f"# role {role}: what its image's elements install (package-installs.yaml)\n" + listing,
        ),
        (f"{NODE_DIR}/bin/systemctl", "0755", (FIRSTBOOT_PLAIN / "systemctl").read_text()),
    ]
    files += [(f"{NODE_DIR}/bin/{name}", "0755", text) for name, text in boot.tools]
    files += [(f"{NODE_DIR}/before/{name}", "0755", text) for name, text in boot.before]
    files += [(f"{NODE_DIR}/after/{name}", "0755", text) for name, text in boot.after]
    return files


def phase() -> tuple[str, str]:
    """The first-boot phase that installs the packages: (file name, script)."""
    path = FIRSTBOOT_PLAIN / "05-packages.sh"
    return path.name, path.read_text()
