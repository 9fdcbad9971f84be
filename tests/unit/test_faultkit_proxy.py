"""The fault-injecting proxy itself: each mode does what the fault tests rely on."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.faultkit.proxy import FaultProxy


class EchoServer:
    """Echoes every byte back; `big` answers one request with a 64 KiB reply."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                c.sendall(b"x" * 65536 if data == b"big" else data)

    def close(self):
        self._stop = True
        self.sock.close()


@pytest.fixture
def echo():
    srv = EchoServer()
    yield srv
    srv.close()


def _talk(port: int, payload: bytes, expect: int, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < expect:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pass_forwards_both_ways(echo):
    with FaultProxy("127.0.0.1", echo.port) as p:
        assert _talk(p.port, b"hello", 5) == b"hello"
        assert len(_talk(p.port, b"big", 65536)) == 65536
        assert p.bytes_down >= 65536 + 5


def test_refuse_closes_the_port_and_resets_open_connections_then_comes_back(echo):
    with FaultProxy("127.0.0.1", echo.port) as p:
        port = p.port
        held = socket.create_connection(("127.0.0.1", port), timeout=2)
        held.sendall(b"a")
        assert held.recv(1) == b"a"
        p.mode = "refuse"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            held.sendall(b"b")
            time.sleep(0.1)
            held.sendall(b"c")
            assert held.recv(1) == b""  # closed without reset is not what refuse promises
        held.close()
        p.mode = "pass"
        assert p.port == port
        assert _talk(port, b"back", 4) == b"back"


def test_refuse_from_the_start():
    with FaultProxy("127.0.0.1", 9, mode="refuse") as p, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), timeout=2)


def test_hang_accepts_but_moves_nothing_until_pass(echo):
    with FaultProxy("127.0.0.1", echo.port, mode="hang") as p:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=0.3)
        s.sendall(b"ping")
        with pytest.raises(socket.timeout):
            s.recv(4)
        p.mode = "pass"
        s.settimeout(2)
        assert s.recv(4) == b"ping"  # held bytes are delivered, nothing lost
        s.close()


def test_slow_limits_throughput(echo):
    with FaultProxy("127.0.0.1", echo.port, mode="slow", slow_bytes=4096, delay=0.02) as p:
        t0 = time.monotonic()
        got = _talk(p.port, b"big", 65536, timeout=5)
        took = time.monotonic() - t0
    assert len(got) == 65536
    assert took >= 16 * 0.02 * 0.9  # 64 KiB in 4 KiB steps, 20 ms each


def test_cut_closes_mid_stream_after_n_bytes(echo):
    with FaultProxy("127.0.0.1", echo.port, mode="cut", cut_after=1000) as p:
        got = _talk(p.port, b"big", 65536)
        assert len(got) == 1000
        p.cut_after = 0
        assert _talk(p.port, b"big", 65536) == b""  # the answer never arrives
        p.mode = "pass"
        assert len(_talk(p.port, b"big", 65536)) == 65536


def test_unknown_mode_is_a_clear_error(echo):
    with FaultProxy("127.0.0.1", echo.port) as p, pytest.raises(ValueError, match="unknown proxy mode 'down'"):
        p.mode = "down"
