"""The HTTP server that hands the lab's package repository to plain nodes.

`lab up` starts it as a detached process (its own session: a Ctrl-C to `lab up --wait` does not
reach it, and no init system is needed) bound to the host's address on the management network
only, which is the one address a lab node can reach; `lab down` stops it. Its pid, address and
port are kept in `<state>/repo-server.json`, its request log in `<state>/repo-server.log`.

It serves the files at the top of the repository directory by name and nothing else: no
listing, no subdirectory, no hidden file. Any web server can serve the same directory for
real servers (docs/bare-metal.md); this one exists so a lab needs none.

    python -m builder.repo_server --root DIR --bind ADDRESS --port PORT --ready FILE
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import posixpath
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from builder.errors import StackseedError
from builder.fsutil import write_private
from builder.paths import REPO

MODULE = "builder.repo_server"
# Linux's IP_FREEBIND: bind the management address before libvirt has put it on the bridge
# (and keep serving when the bridge goes down and up again with the network).
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        super().server_bind()


class _Handler(SimpleHTTPRequestHandler):
    server_version = "stackseed-repo"
    sys_version = ""
    # Keep-alive: apt fetches hundreds of files, one after the other, on one connection.
    protocol_version = "HTTP/1.1"

    def translate_path(self, path: str) -> str:
        """The file for a request: a plain name at the top of the directory, or a path that does
        not exist (a 404). apt asks for `./InRelease` and `./name.deb` in a flat repository."""
        name = posixpath.normpath(unquote(urlsplit(path).path)).lstrip("/")
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            return os.path.join(self.directory, ".stackseed-no-such-file")
        return os.path.join(self.directory, name)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "no listing")
        return None

    def log_message(self, format: str, *args: object) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stderr.write(f"{stamp} {self.address_string()} {format % args}\n")
        sys.stderr.flush()


def serve(root: Path, bind: str, port: int, ready: Path) -> None:
    """Serve `root` until SIGTERM; `ready` gets the real address once the socket listens."""
    handler = partial(_Handler, directory=str(root))
    with _Server((bind, port), handler) as server:
        host, real_port = server.server_address[:2]
        info = {"pid": os.getpid(), "bind": host, "port": real_port}
        write_private(ready, json.dumps(info).encode())
        signal.signal(signal.SIGTERM, lambda *_: _stop(server))
        print(f"serving {root} on {host}:{real_port}", file=sys.stderr, flush=True)
        server.serve_forever(poll_interval=0.5)


def _stop(server: ThreadingHTTPServer) -> None:
    # shutdown() waits for serve_forever, which runs in this very thread: ask from another one.
    threading.Thread(target=server.shutdown, daemon=True).start()


# --- the host side: start, find, stop ----------------------------------------------------------


@dataclass(frozen=True)
class Running:
    pid: int
    bind: str
    port: int
    root: str

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}/"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited


def _ours(pid: int, root: str) -> bool:
    """The process is a repository server for `root` (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in argv and root.encode() in argv


def running(record: Path) -> Running | None:
    """The server the record names, when it is still that server and still running."""
    try:
        data = json.loads(record.read_text())
        found = Running(int(data["pid"]), str(data["bind"]), int(data["port"]), str(data["root"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _alive(found.pid) and _ours(found.pid, found.root):
        return found
    return None


def ensure(record: Path, log: Path, root: Path, bind: str, port: int) -> tuple[Running, bool]:
    """The server for `root` on bind:port, started unless it already runs; (it, started now).
    One serving something else under this record is stopped first."""
    root_s = str(root.resolve())
    found = running(record)
    if found is not None:
        if (found.root, found.bind) == (root_s, bind) and port in (0, found.port):
            return found, False
        stop(record)
    record.unlink(missing_ok=True)
    ready = record.with_name(f".{record.name}.ready-{os.getpid()}")
    ready.unlink(missing_ok=True)
    if not log.exists():
        write_private(log, b"")  # 0600 in a 0700 directory, like the rest of the state
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", MODULE, "--root", root_s, "--bind", bind, "--port", str(port)]
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [*command, "--ready", str(ready)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not ready.is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise StackseedError(
                    f"the repository server did not start on {bind}:{port}: {' / '.join(tail)}",
                    fix=f"see {log}; is the port taken? (ss -ltnp 'sport = :{port}')",
                )
            time.sleep(0.05)
        info = json.loads(ready.read_text())
    finally:
        ready.unlink(missing_ok=True)
    found = Running(int(info["pid"]), str(info["bind"]), int(info["port"]), root_s)
    write_private(record, json.dumps(found.__dict__, indent=2).encode())
    return found, True


def stop(record: Path) -> int | None:
    """Stop the server the record names; its pid, or None when none was running."""
    found = running(record)
    record.unlink(missing_ok=True)
    if found is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(found.pid) and time.monotonic() < deadline:
        _reap(found.pid)
        time.sleep(0.05)
    if _alive(found.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGKILL)
    _reap(found.pid)
    return found.pid


def _reap(pid: int) -> None:
    """Collect the exit of a server this very process started (a test, `lab up` then `down` in
    one process); others are init's to reap."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.root, args.bind, args.port, args.ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
