"""SSH keys made in-process (no ssh-keygen command line): the lab key and per-node host keys."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.fsutil import write_private


def ensure_keypair(private: Path, comment: str) -> tuple[str, str]:
    """(private OpenSSH PEM, public line); generated once, then read back."""
    if private.exists():
        key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        write_private(private, pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {comment}"
    pub_path = private.with_name(private.name + ".pub")
    if not pub_path.exists() or pub_path.read_text().strip() != line:
        write_private(pub_path, (line + "\n").encode())
    return private.read_text(), line
