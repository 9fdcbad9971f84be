"""A fault-injecting TCP proxy for tests: put it between kfct and a real server on loopback.

    with FaultProxy("127.0.0.1", upstream_port) as proxy:
        client_url = f"http://127.0.0.1:{proxy.port}"
        proxy.mode = "refuse"   # pass | refuse | hang | slow | cut

- pass:   bytes flow both ways unchanged;
- refuse: new connections are accepted and closed at once (the client sees a reset /
          connection closed before any answer, like a restarting server);
- hang:   connections are accepted and nothing is ever answered (a dead peer behind a LB);
- slow:   every chunk upstream -> client is delayed by `delay` seconds;
- cut:    the request is forwarded, the connection is closed before the answer comes back
          (the server did the work, the client never hears of it); with `cut_match` set
          (bytes), only answers to requests containing it are cut.
The mode is read per connection (and per chunk for slow/cut), so tests flip it while a
client keeps retrying.
"""

from __future__ import annotations

import socket
import threading
import time

MODES = ("pass", "refuse", "hang", "slow", "cut")


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, mode: str = "pass", delay: float = 1.0):
        self.upstream = (upstream_host, int(upstream_port))
        self.mode = mode
        self.delay = delay
        self.connections = 0
        self.cut_match: bytes | None = None
        self.cuts = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []

    def __enter__(self) -> "FaultProxy":
        t = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        for s in list(self._open):
            try:
                s.close()
            except OSError:
                pass
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            mode = self.mode
            if mode == "refuse":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: connection reset by peer
                continue
            self._open.append(client)
            if mode == "hang":
                continue  # never read, never answer
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._open.append(upstream)
            last = {"request": b""}
            for src, dst, down in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pipe, args=(src, dst, down, last), daemon=True)
                t.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool, last: dict) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if self.mode == "refuse":  # established (keep-alive) connections drop too
                    try:
                        src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    except OSError:
                        pass
                    break
                if not downstream and self.mode == "hang":
                    while not self._stop.is_set() and self.mode == "hang":
                        time.sleep(0.05)
                if not downstream:  # headers and body may come in separate chunks
                    starts = data[:8].split(b" ", 1)[0] in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD")
                    last["request"] = data if starts else last["request"] + data
                if downstream and self.mode == "cut" and (self.cut_match is None or self.cut_match in last["request"]):
                    self.cuts += 1
                    break  # the answer never reaches the client
                if downstream and self.mode == "slow":
                    time.sleep(self.delay)
                if downstream and self.mode == "hang":
                    while not self._stop.is_set() and self.mode == "hang":
                        time.sleep(0.05)
                try:
                    dst.sendall(data)
                except OSError:
                    break
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass
