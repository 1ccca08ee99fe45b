"""`lab ssh`: the lab's generated key, host keys pinned from the seeds (no trust on first use)."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from typing import IO

from builder.errors import PrerequisiteError, StackseedError
from builder.plan import Plan
from builder.state import LabState

log = logging.getLogger(__name__)
USER = "stackseed"  # the operator account the seed's user-data creates


def _env() -> dict[str, str]:
    keep = ("HOME", "TERM", "LANG", "USER", "LOGNAME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def command(plan: Plan, state: LabState, node: str, remote: tuple[str, ...] = ()) -> list[str]:
    try:
        target = plan.node(node)
    except KeyError:
        names = ", ".join(n.name for n in plan.nodes)
        raise StackseedError(f"no node {node!r} in the lab", fix=f"pick one of: {names}") from None
    if not state.ssh_key.exists() or not state.known_hosts.exists():
        raise StackseedError(
            f"no lab key in {state.ssh_key.parent}", fix="run 'lab up' first: it writes the keys"
        )
    ssh = shutil.which("ssh", path=_env()["PATH"])
    if ssh is None:
        raise PrerequisiteError("ssh is not installed", fix="apt-get install openssh-client")
    return [
        ssh,
        "-i",
        str(state.ssh_key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={state.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        # A TCG guest busy starting services can take well over 10 s to answer sshd's banner.
        "ConnectTimeout=45",
        "-o",
        "LogLevel=ERROR",
        *(["-o", "BatchMode=yes"] if remote else []),
        f"{USER}@{target.ip}",
        *remote,
    ]


def exec_ssh(plan: Plan, state: LabState, node: str, remote: tuple[str, ...]) -> None:
    argv = command(plan, state, node, remote)
    log.debug("%s", shlex.join(argv))
    os.execve(argv[0], argv, _env())


def run(
    plan: Plan, state: LabState, node: str, remote: tuple[str, ...], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`remote` as ssh takes it: words of one command line that the node's shell splits again
    (ssh joins them with spaces). An argument that must stay whole is quoted by the caller
    (shlex.join / shlex.quote)."""
    argv = command(plan, state, node, remote)
    log.debug("%s", shlex.join(argv))
    return subprocess.run(
        argv, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def popen(
    plan: Plan,
    state: LabState,
    node: str,
    remote: tuple[str, ...],
    *,
    tty: bool = False,
    stdout: int = subprocess.PIPE,
    stderr: int | IO[bytes] | None = None,
    stdin: int = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """ssh running `remote` on NODE with its output as a byte pipe (stdin: /dev/null unless
    asked). tty: a remote terminal, so the remote command ends with the connection (tail -f)."""
    argv = command(plan, state, node, remote)
    if tty:
        argv.insert(1, "-tt")
    log.debug("%s", shlex.join(argv))
    return subprocess.Popen(argv, env=_env(), stdin=stdin, stdout=stdout, stderr=stderr)
