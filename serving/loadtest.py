"""A small load generator for the model server: latency percentiles and throughput.

    python -m serving.loadtest --url http://127.0.0.1:8080 --model churn-classifier \
        --requests 5000 --concurrency 1

Why not httpx/requests: their per-request client overhead (0.3-0.5 ms) is larger than
the server's own time, and would be measured as server latency. This client keeps
HTTP/1.1 connections open and writes pre-encoded requests on raw asyncio streams
(uvloop when available), so nearly all of the measured time is the server's.
Records come from `kfct.datagen.generate`, one instance per request by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlparse


def build_requests(model: str, host: str, n_distinct: int = 256, batch: int = 1, protocol: str = "v1",
                   seed: int = 11) -> list[bytes]:
    from kfct.datagen import generate

    df = generate(max(n_distinct * batch, 10), seed=seed).drop(columns=["churned"])
    df = df.astype(object).where(df.notna(), None)
    recs = df.to_dict("records")
    out = []
    for i in range(n_distinct):
        chunk = recs[i * batch:(i + 1) * batch]
        if protocol == "v1":
            path = f"/v1/models/{model}:predict"
            body = json.dumps({"instances": chunk}).encode()
        else:
            path = f"/v2/models/{model}/infer"
            inputs = []
            for k in chunk[0]:
                vals = [r[k] for r in chunk]
                dt = "BYTES" if isinstance(vals[0], str) else "FP64"
                inputs.append({"name": k, "shape": [len(vals)], "datatype": dt, "data": vals})
            body = json.dumps({"inputs": inputs}).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


async def _read_response(reader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    if length:
        await reader.readexactly(length)
    return status


async def _worker(host, port, reqs, count, offset, lat, statuses, deadline):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        n = len(reqs)
        for i in range(count):
            if deadline and time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            writer.write(reqs[(offset + i) % n])
            status = await _read_response(reader)
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run_async(url: str, model: str, requests: int, concurrency: int, warmup: int = 200,
                    batch: int = 1, protocol: str = "v1", duration: float | None = None) -> dict:
    u = urlparse(url)
    host, port = u.hostname, u.port or 80
    reqs = build_requests(model, f"{host}:{port}", batch=batch, protocol=protocol)
    if warmup:
        await _worker(host, port, reqs, warmup, 0, [], {}, None)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    per = max(1, requests // concurrency)
    deadline = time.perf_counter() + duration if duration else None
    t0 = time.perf_counter()
    await asyncio.gather(*[_worker(host, port, reqs, per if not duration else 10**9, i * 7919, lat, statuses,
                                   deadline) for i in range(concurrency)])
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")

    return {"requests": len(lat), "concurrency": concurrency, "batch": batch, "protocol": protocol,
            "wall_s": round(wall, 3), "throughput_rps": round(len(lat) / wall, 1),
            "p50_ms": round(pct(0.50), 3), "p90_ms": round(pct(0.90), 3), "p99_ms": round(pct(0.99), 3),
            "max_ms": round(lat[-1] * 1e3, 3) if lat else None, "statuses": statuses}


def run(url: str, model: str, requests: int = 5000, concurrency: int = 1, **kw) -> dict:
    try:
        import uvloop

        return uvloop.run(run_async(url, model, requests, concurrency, **kw))
    except ImportError:  # pragma: no cover
        return asyncio.run(run_async(url, model, requests, concurrency, **kw))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.loadtest", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", default="churn-classifier")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--batch", type=int, default=1, help="instances per request")
    p.add_argument("--protocol", choices=["v1", "v2"], default="v1")
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args(argv)
    res = run(args.url, args.model, args.requests, args.concurrency, warmup=args.warmup, batch=args.batch,
              protocol=args.protocol)
    print(json.dumps(res))
    return 0 if set(res["statuses"]) == {200} else 1


if __name__ == "__main__":
    raise SystemExit(main())
