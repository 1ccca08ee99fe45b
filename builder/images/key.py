"""Content keys: what an image was built from, so an unchanged role is never rebuilt.

A key covers every file of every stackseed element the role pulls in (through element-deps),
the names of the diskimage-builder elements it uses (pinned by DIB's version), the role,
release, output format, DIB version and the packages the elements ask for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from builder.errors import StackseedError

# Bump when the way images are built changes in a way the element files do not show.
RECIPE = 1

# What diskimage-builder is asked for. There is one output format: a whole-disk image
# (build-images --format disk) is assembled from this one's root filesystem afterwards
# (builder/images/disk.py), so it needs no device-mapper and no second DIB run.
FORMAT_ELEMENTS = {
    "rootfs": ("stackseed-rootfs",),
}


def dib_version() -> str:
    try:
        return version("diskimage-builder")
    except PackageNotFoundError:
        return "missing"


@dataclass(frozen=True)
class Closure:
    ours: tuple[str, ...]  # stackseed elements found in the elements directory
    dib: tuple[str, ...]  # everything else, resolved by DIB from its own elements


def _deps(element_dir: Path) -> list[str]:
    deps = element_dir / "element-deps"
    if not deps.is_file():
        return []
    return [
        line.split("#", 1)[0].strip()
        for line in deps.read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]


def closure(roots: tuple[str, ...] | list[str], elements_dir: Path) -> Closure:
    """Every element reachable from `roots` through element-deps."""
    ours: set[str] = set()
    dib: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in ours or name in dib:
            continue
        element = elements_dir / name
        if element.is_dir():
            ours.add(name)
            todo.extend(_deps(element))
        else:
            dib.add(name)
    return Closure(tuple(sorted(ours)), tuple(sorted(dib)))


def _element_digest(element_dir: Path) -> dict[str, str]:
    files = {}
    for path in sorted(element_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(element_dir).as_posix()
            # The exec bit decides whether dib-run-parts runs a hook, so it is content too.
            mode = "x" if path.stat().st_mode & 0o111 else "-"
            files[rel] = mode + hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def packages(elements: tuple[str, ...], elements_dir: Path) -> list[str]:
    """Packages the given stackseed elements install (package-installs.yaml keys)."""
    names: set[str] = set()
    for name in elements:
        path = elements_dir / name / "package-installs.yaml"
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise StackseedError(
                f"{path}: not valid YAML ({exc})", fix="fix the element's package-installs.yaml"
            ) from None
        if not isinstance(data, dict):
            raise StackseedError(
                f"{path}: must map package names to options",
                fix="write one 'package-name:' per line",
            )
        names.update(str(k) for k in data)
    return sorted(names)


def content_key(
    element: str, role: str, release: str, fmt: str, elements_dir: Path, dib: str | None = None
) -> str:
    """The sha256 over everything that decides what the role's image contains."""
    if fmt not in FORMAT_ELEMENTS:
        raise StackseedError(
            f"unknown diskimage-builder output format {fmt!r}",
            fix=f"use one of: {', '.join(FORMAT_ELEMENTS)}",
        )
    if not (elements_dir / element).is_dir():
        raise StackseedError(
            f"element {element!r} for role {role!r} not found in {elements_dir}",
            fix="check the role's element in builder/data/roles.yaml",
        )
    found = closure((element, *FORMAT_ELEMENTS[fmt]), elements_dir)
    material = {
        "recipe": RECIPE,
        "role": role,
        "release": release,
        "format": fmt,
        "dib_version": dib or dib_version(),
        "elements": {name: _element_digest(elements_dir / name) for name in found.ours},
        "dib_elements": list(found.dib),
        "packages": packages(found.ours, elements_dir),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
