"""The serving process's CPU for its prediction log, per request and per flush (not the encoder child's).

    python -m bench.predlog_cpu [--requests 15000] [--repeats 3]

A load-proof complement to `python -m bench --only tail`: wrk's tail on a shared 2-core machine
measures the machine as much as the server, while CPU time spent in the server's own threads is
what the log takes from request handling (all of it under the GIL except system calls). One
`PredictionLogger` as the server builds it (encoder child on, `tune_runtime`'s GC settings),
`--requests` single-instance requests logged as the router logs them (each with its own
probability and label arrays; 15,000 = one 5-s flush at 3,000 requests/s), then one flush:
process CPU (user + system, every thread of this process) over the `log()` calls, over the
collector's idle wakes after them, and over the flush. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time


def measure(requests: int, repeats: int) -> dict:
    import numpy as np
    import orjson

    from bench.serving import request_records
    from kfct.config import load_config
    from kfct.serving.prediction_log import PredictionLogger

    recs = request_records(load_config())
    bodies = [orjson.loads(orjson.dumps([recs[i % len(recs)]])) for i in range(requests)]  # as parsed
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 1_000)
    sys.setswitchinterval(0.0005)
    runs = []
    for _ in range(repeats):
        log = PredictionLogger(
            root=tempfile.mkdtemp(prefix="kfct-predlog-cpu-"),
            s3=False,
            flush_seconds=3600,
            flush_rows=1_000_000,
            encode_in_child=True,
        )
        try:
            log.log(time.time(), None, "m", "1", "champion", bodies[0], np.array([0.5]), np.array([0]), 0.5)
            log.flush(120)  # the encoder child is up
            t0 = time.process_time()
            for b in bodies:
                log.log(time.time(), None, "churn-classifier", "1", "champion", b, np.array([0.3]), np.array([0]), 0.5)
            t1 = time.process_time()
            time.sleep(0.6)  # the collector's wakes meanwhile
            t2 = time.process_time()
            if not log.flush(300):
                raise RuntimeError("flush did not finish")
            t3 = time.process_time()
            runs.append(
                {
                    "log_us_per_request": (t1 - t0) / requests * 1e6,
                    "idle_ms": (t2 - t1) * 1e3,
                    "flush_ms": (t3 - t2) * 1e3,
                    "rows_written": log.rows_written,
                }
            )
        finally:
            log.close()
    return {
        "requests": requests,
        "runs": runs,
        "median": {k: round(statistics.median(r[k] for r in runs), 2) for k in ("log_us_per_request", "idle_ms", "flush_ms")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.predlog_cpu", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=15_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.requests, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
