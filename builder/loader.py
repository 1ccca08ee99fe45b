"""Read a topology file and turn every problem into one sentence naming file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from builder.errors import TopologyError
from builder.topology import Topology

Path_ = tuple[str | int, ...]


# A topology is a few KiB; the bound keeps a device or a huge file from being read into memory.
MAX_BYTES = 1 << 20


def load(path: Path) -> Topology:
    return parse(_read(path), str(path))


def _read(path: Path) -> str:
    fix = "pass an existing file with --topology, or run 'lab init' to write the default"
    try:
        if path.exists() and not path.is_file():
            # /dev/zero or a FIFO would never end (or never start); only regular files are read.
            raise TopologyError(f"{path}: cannot read the topology (not a regular file)", fix=fix)
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read the topology ({exc.strerror})", fix=fix) from None
    if len(data) > MAX_BYTES:
        raise TopologyError(f"{path}: larger than {MAX_BYTES >> 20} MiB: not a topology", fix=fix)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise TopologyError(f"{path}: not UTF-8 text: not a topology", fix=fix) from None


def parse(text: str, source: str) -> Topology:
    try:
        data = yaml.safe_load(text)
        lines = _lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError(
            f"{where}: not valid YAML: {problem}", fix="correct the YAML syntax at that line"
        ) from None
    if not isinstance(data, dict):
        raise TopologyError(
            f"{source}: the topology must be a mapping with 'lab', 'networks' and 'nodes'",
            fix="start from the file 'lab init' writes",
        )
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(_describe(exc, source, data, lines), fix=_fix(exc)) from None


def _describe(exc: ValidationError, source: str, data: Any, lines: dict[Path_, int]) -> str:
    out = []
    for err in exc.errors():
        loc = _trim(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if hasattr(cause, "loc"):
            loc = cause.loc  # always the full path from the top of the file
        line = _line_for(loc, lines)
        where = f"{source}:{line}" if line else source
        key = _dotted(loc, data)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the topology reference in README.md"
        elif err["type"] == "missing":
            message = "required key is missing"
        if hasattr(cause, "loc"):
            key = ""  # model-level messages already say which node or network they are about
        out.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
    return "\n".join(out)


def _fix(exc: ValidationError) -> str:
    if any(err["type"] == "extra_forbidden" for err in exc.errors()):
        return "remove or rename the unknown key"
    return "edit the key named above; 'lab init' writes a valid example"


def _trim(loc: tuple[Any, ...]) -> Path_:
    # pydantic appends validator tags (e.g. 'function-after[...]') that are not keys of the file.
    return tuple(p for p in loc if isinstance(p, int) or "[" not in str(p))


def _dotted(loc: Path_, data: Any) -> str:
    """'nodes[1](compute1).ip': indexes get the item's name where it has one."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(part, int):
            name = node[part].get("name") if _indexable(node, part) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{part}]" + (f"({name})" if name else "")]
            node = node[part] if _indexable(node, part) else None
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts)


def _indexable(node: Any, index: int) -> bool:
    return isinstance(node, list) and index < len(node) and isinstance(node[index], dict)


def _lines(root: yaml.Node | None) -> dict[Path_, int]:
    """Map each key path in the document to its 1-based line."""
    out: dict[Path_, int] = {}

    def walk(node: yaml.Node, path: Path_) -> None:
        out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, key.value)
                walk(value, sub)
                out[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return out


def _line_for(loc: Path_, lines: dict[Path_, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines and (end or loc == ()):
            return lines[loc[:end]]
    return None
