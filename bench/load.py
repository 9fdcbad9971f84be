"""HTTP load generator: per-request latency, throughput and errors at a fixed concurrency.

    python -m bench.load --url http://127.0.0.1:8080/v1/models/m:predict --bodies bodies.json \
        --concurrency 1,16 --duration 3 --warmup 0.5

Why this shape:
- It runs in its own process (the benchmark starts it with `subprocess`), so the client
  and the server under test never share a GIL; on a 2-core machine they still share the
  cores, which the report says.
- `concurrency` keep-alive HTTP/1.1 connections, each a closed loop (send, wait for the
  whole response, send the next), on raw asyncio streams with pre-encoded requests:
  per-request client overhead is tens of microseconds, where an httpx/requests client
  would add a few hundred, larger than a fast server's own time. uvloop is used when
  installed.
- Latency is `perf_counter_ns` from writing the request to reading the last byte of
  the response. Any non-2xx status, a dropped connection or a request still unanswered
  `request_timeout` seconds after the end of the run counts as an error; a dropped
  connection is reopened.
- Standard library only (uvloop optional), so the process starts in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """One measured run: every completed request's latency plus the error tally."""

    concurrency: int
    duration_s: float
    wall_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_ns)

    def summary(self) -> dict:
        """Plain numbers for the report: p50/p99 in ms, requests/s over the run, errors."""
        lat = sorted(self.latencies_ns)
        return {
            "concurrency": self.concurrency,
            "requests": self.ok,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "rps": round(self.ok / self.wall_s, 1) if self.wall_s > 0 else 0.0,
            "p50_ms": percentile_ms(lat, 50),
            "p90_ms": percentile_ms(lat, 90),
            "p99_ms": percentile_ms(lat, 99),
            "p999_ms": percentile_ms(lat, 99.9),
            "max_ms": percentile_ms(lat, 100),
            "statuses": dict(self.statuses),
            "error_kinds": dict(self.error_kinds),
        }


def percentile_ms(sorted_ns: list[int], q: float) -> float | None:
    """Nearest-rank percentile of sorted nanosecond latencies, in milliseconds."""
    if not sorted_ns:
        return None
    k = max(0, min(len(sorted_ns) - 1, math.ceil(q / 100.0 * len(sorted_ns)) - 1))
    return round(sorted_ns[k] / 1e6, 4)


def encode_requests(host: str, port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    """Whole HTTP/1.1 POST requests, encoded once so the loop only writes bytes."""
    out = []
    for body in bodies:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii")
        out.append(head + body)
    return out


class _Closed(ConnectionError):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response (Content-Length or chunked). Returns (status, keep_alive)."""
    line = await reader.readline()
    if not line:
        raise _Closed("server closed the connection")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ConnectionError(f"bad status line {line[:60]!r}")
    status = int(parts[1])
    length, chunked, keep_alive = await _read_headers(reader, parts[0] != b"HTTP/1.0")
    if chunked:
        await _skip_chunked(reader)
    elif length:
        await reader.readexactly(length)
    elif length is None and status not in (204, 304) and not 100 <= status < 200:
        await reader.read()  # body delimited by close
        keep_alive = False
    return status, keep_alive


async def _read_headers(reader: asyncio.StreamReader, keep_alive: bool) -> tuple[int | None, bool, bool]:
    """(content-length, chunked, keep-alive) from the response's headers."""
    length, chunked = None, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n"):
            return length, chunked, keep_alive
        if not h:
            raise _Closed("connection closed in headers")
        k, _, v = h.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
        elif k == b"connection":
            keep_alive = b"close" not in v.lower()


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    """Read past a chunked body and its trailers."""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return
        await reader.readexactly(size + 2)


class _Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def ensure(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def drop(self):
        if self.writer is not None:
            with contextlib.suppress(OSError, RuntimeError):  # a transport already gone, or its loop closed
                self.writer.close()
        self.reader = self.writer = None


def _count(d: dict, key: str) -> None:
    d[key] = d.get(key, 0) + 1


async def _worker(conn: _Conn, reqs: list[bytes], start: int, stop_ns: int, res: LoadResult, last_done: list[int]):
    n = len(reqs)
    i = start
    perf = time.perf_counter_ns
    while perf() < stop_ns:
        req = reqs[i % n]
        i += 1
        try:
            await conn.ensure()
            t0 = perf()
            conn.writer.write(req)
            status, keep = await read_response(conn.reader)
            t1 = perf()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            res.errors += 1
            _count(res.error_kinds, type(exc).__name__)
            conn.drop()
            await asyncio.sleep(0.001)
            continue
        _count(res.statuses, str(status))
        if 200 <= status < 300:
            res.latencies_ns.append(t1 - t0)
        else:
            res.errors += 1
            _count(res.error_kinds, f"http_{status}")
        if t1 > last_done[0]:
            last_done[0] = t1
        if not keep:
            conn.drop()


async def _phase(conns: list[_Conn], reqs: list[bytes], duration: float, request_timeout: float) -> LoadResult:
    res = LoadResult(concurrency=len(conns), duration_s=duration)
    t0 = time.perf_counter_ns()
    stop = t0 + int(duration * 1e9)
    last = [t0]
    stride = max(1, len(reqs) // max(1, len(conns)))
    tasks = [asyncio.ensure_future(_worker(c, reqs, k * stride, stop, res, last)) for k, c in enumerate(conns)]
    done, pending = await asyncio.wait(tasks, timeout=duration + request_timeout)
    for t in pending:  # a request unanswered long after the end of the run
        t.cancel()
        res.errors += 1
        _count(res.error_kinds, "timeout")
    for t in done:
        if t.exception() is not None:
            res.errors += 1
            _count(res.error_kinds, type(t.exception()).__name__)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        for c, t in zip(conns, tasks):
            if t in pending:
                c.drop()
    res.wall_s = (last[0] - t0) / 1e9
    return res


async def run_async(
    url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float = 0.5, request_timeout: float = 10.0
) -> LoadResult:
    """Warm up, then measure `concurrency` closed-loop connections for `duration` seconds."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"url must be http://host:port/path, got {url!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not bodies:
        raise ValueError("no request bodies")
    host, port = u.hostname, u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    reqs = encode_requests(host, port, path, bodies)
    conns = [_Conn(host, port) for _ in range(concurrency)]
    try:
        if warmup > 0:
            await _phase(conns, reqs, warmup, request_timeout)
        return await _phase(conns, reqs, duration, request_timeout)
    finally:
        for c in conns:
            c.drop()


def run(
    url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float = 0.5, request_timeout: float = 10.0
) -> LoadResult:
    """Blocking wrapper (uvloop when installed)."""
    coro = run_async(url, bodies, concurrency, duration, warmup, request_timeout)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="http://host:port/path to POST to")
    p.add_argument("--bodies", required=True, help="JSON file: a list of request bodies (JSON values)")
    p.add_argument("--concurrency", default="1", help="comma-separated, e.g. 1,16 (run in that order)")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per concurrency")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--raw", action="store_true", help="also print every latency (ns)")
    args = p.parse_args(argv)
    try:
        with Path(args.bodies).open("rb") as fh:
            values = json.load(fh)
        if not isinstance(values, list) or not values:
            raise ValueError("the bodies file must hold a non-empty JSON list")
        bodies = [json.dumps(v, separators=(",", ":")).encode() for v in values]
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except (OSError, ValueError) as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 2
    out = []
    for c in levels:
        res = run(args.url, bodies, c, args.duration, args.warmup, args.request_timeout)
        row = res.summary()
        if args.raw:
            row["latencies_ns"] = res.latencies_ns
        out.append(row)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
