"""A lab's state directory: secrets, keys, credentials and seeds, all private to the user."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.paths import state_root


@dataclass(frozen=True)
class LabState:
    root: Path

    @classmethod
    def for_lab(cls, lab: str, base: Path | None = None) -> LabState:
        return cls((base or state_root()) / lab)

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.yaml"

    @property
    def ssh_key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    def host_key(self, node: str) -> Path:
        return self.root / "hostkeys" / node / "ssh_host_ed25519_key"

    @property
    def admin_openrc(self) -> Path:
        return self.root / "admin-openrc"

    @property
    def clouds_yaml(self) -> Path:
        return self.root / "clouds.yaml"

    @property
    def seeds_dir(self) -> Path:
        return self.root / "seeds"

    def seed(self, node: str) -> Path:
        return self.seeds_dir / f"{node}.iso"

    def payload_dir(self, node: str) -> Path:
        return self.root / "payloads" / node

    def console_log(self, node: str) -> Path:
        return self.root / "console" / f"{node}.log"

    @property
    def repo_dir(self) -> Path:
        """The package repository plain nodes install from (builder/aptrepo.py)."""
        return self.root / "repo"

    @property
    def repo_key_dir(self) -> Path:
        """The GnuPG home holding the key the repository is signed with."""
        return self.root / "repo-key"

    @property
    def repo_server(self) -> Path:
        """The repository's HTTP server while `lab up` keeps it running: pid, address, port."""
        return self.root / "repo-server.json"

    @property
    def repo_server_log(self) -> Path:
        return self.root / "repo-server.log"

    @property
    def last_verify(self) -> Path:
        """`lab verify`'s last verdict (time and ok); what a snapshot records as `verified`."""
        return self.root / "last-verify.json"
