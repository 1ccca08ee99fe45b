"""Human sizes ("20GiB", "512M") to bytes. Units are binary whatever the spelling."""

from __future__ import annotations

import re

_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt])(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: object) -> int:
    """Bytes for a size string; ValueError with the accepted forms otherwise."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"{text!r} is not a size; write it with a unit, like 20GiB or 512MiB")
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; write it with a unit, like 20GiB or 512MiB")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1 << 20:
        raise ValueError(f"{text!r} is smaller than 1MiB")
    return int(value)


def format_size(size: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
