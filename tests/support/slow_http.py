"""A real HTTP server on 127.0.0.1 that answers every GET after `delay` seconds, counting the
requests it took: what a CPU-starved service looks like to a probe (it accepts at once and
answers late)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), SlowHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/page"


class SlowHandler(BaseHTTPRequestHandler):
    server: SlowServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests += 1
        time.sleep(self.server.delay)
        body = b"rendered\n"
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up: the work was done anyway, as Apache's would be

    def log_message(self, *_args: object) -> None:
        pass


@contextmanager
def slow_server(delay: float) -> Iterator[SlowServer]:
    server = SlowServer(delay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
