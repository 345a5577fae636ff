"""A real webhook receiver for tests: a threaded http.server on 127.0.0.1 that records every request
and answers with the statuses it is told to (a script of codes, then 200)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: str
    path: str

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict[str, Any]:
        """Verified by the standardwebhooks library (signature and timestamp), or it raises."""
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 drops concurrent connects (a 1 s SYN retry each)


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[int] = []  # statuses to answer, in order; then `default`
        self.default = 200
        self.reply_body = b"ok"
        self.delay_s = 0.0
        self.on_received: Callable[[int], None] | None = None  # called with the count, before answering
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    if 200 <= status < 300:
                        receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()},
                                                          body, self.path))
                    else:
                        receiver.refused.append(self.headers.get("webhook-id", ""))
                    count = len(receiver.received)
                if receiver.on_received is not None:
                    receiver.on_received(count)
                self.send_response(status)
                self.send_header("content-length", str(len(receiver.reply_body)))
                self.end_headers()
                self.wfile.write(receiver.reply_body)

            def log_message(self, *args: Any) -> None:
                pass

        self.refused: list[str] = []
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def payloads(self, secret: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r.verify(secret) for r in self.received]

    def types(self) -> list[str]:
        with self._lock:
            return [json.loads(r.body)["type"] for r in self.received]


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
