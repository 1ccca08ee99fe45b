"""Where stackseed keeps its files: the repo's data, the user's state and cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TEMPLATES = REPO / "cloudinit"
ELEMENTS = REPO / "elements"
DEFAULT_TOPOLOGY = DATA / "lab.yaml"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def state_root() -> Path:
    """Per-lab state (secrets, seeds, keys) lives under here; STACKSEED_STATE_DIR overrides."""
    override = os.environ.get("STACKSEED_STATE_DIR")
    return Path(override) if override else _xdg("XDG_STATE_HOME", ".local/state") / "stackseed"


def cache_root() -> Path:
    """Built images and the shared .deb cache; STACKSEED_CACHE_DIR overrides."""
    override = os.environ.get("STACKSEED_CACHE_DIR")
    return Path(override) if override else _xdg("XDG_CACHE_HOME", ".cache") / "stackseed"
