"""FakeCloud: a stand-in for the few keystone, neutron, nova and cinder calls a node's readiness
check makes. A fake, named so: a real OpenStack cannot run in the fast suite; the real services
answer the same calls in the e2e chain and in every `lab up --wait`.

It issues a token (recording the credentials it was given) with a catalog pointing back at
itself, and serves the agent, service, hypervisor and port listings a test sets in `listings`.
A port update is recorded in `updates` and, as ML2 does when the port's host has a live L2
agent, binds a port whose binding failed (`binds_to` its new vif_type; None leaves it failed).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeCloud:
    def __init__(self) -> None:
        self.listings: dict[str, list[dict[str, Any]]] = {
            "agents": [],
            "compute-services": [],
            "hypervisors": [],
            "volume-services": [],
            "ports": [],
        }
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.binds_to: str | None = "ovs"
        self.logins: list[dict[str, Any]] = []
        # Tokens it still accepts; revoke() empties it, as a restarted or restored keystone would.
        self.tokens: set[str] = set()
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v3/auth/tokens":
                    self._send(404, {})
                    return
                cloud.logins.append(request["auth"])
                token = f"fake-token-{len(cloud.logins)}"
                cloud.tokens.add(token)
                self._send(201, {"token": cloud.token()}, {"X-Subject-Token": token})

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                routes = {
                    "/network/v2.0/agents": ("agents", "agents"),
                    "/compute/v2.1/os-services": ("services", "compute-services"),
                    "/compute/v2.1/os-hypervisors/detail": ("hypervisors", "hypervisors"),
                    "/volume/v3/p1/os-services": ("services", "volume-services"),
                    "/network/v2.0/ports": ("ports", "ports"),
                }
                if path not in routes:
                    self._send(404, {})
                    return
                if self.headers.get("X-Auth-Token") not in cloud.tokens:
                    self._send(401, {"error": {"code": 401, "message": "token not valid"}})
                    return
                key, listing = routes[path]
                self._send(200, {key: cloud.listings[listing]})

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                prefix = "/network/v2.0/ports/"
                if self.headers.get("X-Auth-Token") not in cloud.tokens:
                    self._send(401, {"error": {"code": 401, "message": "token not valid"}})
                    return
                port_id = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
                ports = [p for p in cloud.listings["ports"] if p.get("id") == port_id]
                if not ports:
                    self._send(404, {"NeutronError": {"message": f"Port {port_id} not found"}})
                    return
                cloud.updates.append((port_id, request))
                port = ports[0]
                port.update(request.get("port", {}))
                if port.get("binding:vif_type") == "binding_failed" and cloud.binds_to:
                    port["binding:vif_type"] = cloud.binds_to
                self._send(200, {"port": port})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def token(self) -> dict[str, Any]:
        def service(type_: str, path: str) -> dict[str, Any]:
            return {
                "type": type_,
                "name": type_,
                "endpoints": [
                    {"interface": i, "region": "R1", "region_id": "R1", "url": self.url + path}
                    for i in ("public", "internal", "admin")
                ],
            }

        return {
            "methods": ["password"],
            "expires_at": "2099-01-01T00:00:00.000000Z",
            "issued_at": "2026-01-01T00:00:00.000000Z",
            "user": {"id": "u1", "name": "u", "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "p1", "name": "p", "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": "r1", "name": "admin"}],
            "catalog": [
                service("network", "/network"),
                service("compute", "/compute/v2.1"),
                service("volumev3", "/volume/v3/p1"),
            ],
        }

    def revoke(self) -> None:
        self.tokens.clear()

    def __enter__(self) -> FakeCloud:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
