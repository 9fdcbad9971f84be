"""A fault-injecting TCP proxy (threads, standard library only).

Put it between the code under test and a real server (moto's S3 server, a real
`mlflow server`) and flip `mode` while traffic flows:

- ``pass``   forward bytes both ways.
- ``refuse`` nothing listens on the port (connect fails with ECONNREFUSED) and every open
  connection is reset: the dependency's pod is gone. The same port is bound again when the
  mode leaves ``refuse``, so clients configured with it reconnect by themselves.
- ``hang``   connections are accepted but no byte moves in either direction: a dead
  network path or a stuck server. Clients without a timeout wait forever. Bytes already
  read are held and delivered when the mode goes back to ``pass``.
- ``slow``   forward, but every chunk (at most ``slow_bytes``) waits ``delay`` seconds first.
- ``cut``    forward the request and ``cut_after`` bytes (default 0) of the server's answer on
  each connection, then close it: a connection dropped mid-stream (the server did the work,
  the client never hears all of it).

The mode applies to open connections too (a pooled keep-alive connection does not escape
an outage), and is checked every ``tick`` seconds.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time

MODES = ("pass", "refuse", "hang", "slow", "cut")


class FaultProxy:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        mode: str = "pass",
        host: str = "127.0.0.1",
        port: int = 0,
        cut_after: int = 0,
        slow_bytes: int = 65536,
        delay: float = 1.0,
        tick: float = 0.02,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}: one of {', '.join(MODES)}")
        self.upstream = (upstream_host, int(upstream_port))
        self.host = host
        self.cut_after = int(cut_after)
        self.slow_bytes = int(slow_bytes)
        self.delay = float(delay)
        self.tick = float(tick)
        self._mode = mode
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self.port = port
        self.accepted = 0  # connections accepted (all modes)
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        if mode != "refuse":
            self._listen()
        else:
            self._reserve_port()
        self._thread = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    # -- public ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown proxy mode {value!r}: one of {', '.join(MODES)}")
        with self._lock:
            old, self._mode = self._mode, value
            if value == "refuse" and old != "refuse":
                self._unlisten()
                conns = list(self._conns)
            elif old == "refuse" and value != "refuse":
                self._listen()
                conns = []
            else:
                conns = []
        for c in conns:
            c.reset()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections accepted so far (all modes)."""
        return self.accepted

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._unlisten()
            conns = list(self._conns)
        for c in conns:
            c.reset()
        self._thread.join(2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- listening -----------------------------------------------------------------------------
    def _reserve_port(self) -> None:
        if self.port == 0:
            s = socket.socket()
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
            s.close()

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self._listener = s

    def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # shutdown first: a select() in the accept thread would keep the socket listening
                self._listener.shutdown(socket.SHUT_RDWR)
            try:
                self._listener.close()
            finally:
                self._listener = None

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            lst = self._listener
            if lst is None:
                time.sleep(self.tick)
                continue
            try:
                ready, _, _ = select.select([lst], [], [], self.tick * 5)
                if not ready:
                    continue
                client, _ = lst.accept()
            except (OSError, ValueError):  # listener closed under us (mode -> refuse)
                continue
            self.accepted += 1
            conn = _Conn(self, client)
            with self._lock:
                self._conns.add(conn)
            conn.start()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)


class _Conn:
    """One proxied connection: a thread that moves bytes while the mode lets it."""

    def __init__(self, proxy: FaultProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.down = 0  # server -> client bytes on this connection
        self._dead = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="faultproxy-conn", daemon=True).start()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0): the peer sees ECONNRESET, like a pod that vanished."""
        self._dead.set()
        for s in (self.client, self.server):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.close()

    def _close(self) -> None:
        self._dead.set()
        for s in (self.client, self.server):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _run(self) -> None:
        p = self.proxy
        try:
            while p.mode == "hang" and not self._dead.is_set():  # accepted, never connected upstream
                time.sleep(p.tick)
            if self._dead.is_set():
                return
            try:
                self.server = socket.create_connection(p.upstream, timeout=5)
                self.server.settimeout(None)
            except OSError:
                self.reset()  # upstream itself is down: the client sees a reset
                return
            self._pump()
        except OSError:
            pass
        finally:
            if not self._dead.is_set():
                self._close()
            p._forget(self)

    def _pump(self) -> None:  # noqa: C901 - one select loop whose fault modes share its per-socket state
        p = self.proxy
        c, s = self.client, self.server
        pending = {c: b"", s: b""}  # bytes read from key, waiting to go to the other side
        eof = {c: False, s: False}
        while not self._dead.is_set():
            mode = p.mode
            if mode == "hang":
                time.sleep(p.tick)
                continue
            want = [x for x in (c, s) if not eof[x] and not pending[x]]
            if not want and not any(pending.values()):
                return
            if want:
                try:
                    readable, _, _ = select.select(want, [], [], p.tick)
                except (OSError, ValueError):
                    return
                for src in readable:
                    size = p.slow_bytes if mode == "slow" else 65536
                    data = src.recv(size)
                    if not data:
                        eof[src] = True
                        dst = s if src is c else c
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                    else:
                        pending[src] += data
            for src in (c, s):
                data = pending[src]
                if not data or p.mode == "hang":
                    continue
                dst = s if src is c else c
                if p.mode == "cut" and src is s:
                    room = p.cut_after - self.down
                    if room <= 0:
                        self._close()
                        return
                    data = data[:room]
                if p.mode == "slow":
                    time.sleep(p.delay)
                if src is s:
                    self.down += len(data)
                    p.bytes_down += len(data)
                else:
                    p.bytes_up += len(data)
                dst.sendall(data)
                pending[src] = pending[src][len(data) :]
                if p.mode == "cut" and src is s and self.down >= p.cut_after:
                    self._close()
                    return
            if eof[c] and eof[s] and not any(pending.values()):
                return
