"""Measure the issue-12 target at full size: 600,000 prediction-log rows (10 minutes at 1,000 req/s)
logged while S3 refuses connections, then the store returns. Not a test (about 1-2 minutes):

    RATE=10000 .venv/bin/python -m tests.faultkit.outage_scale

RATE is rows per second offered by the loop (10,000 compresses the 10 minutes into one).
Prints the backlog (rows, files, MiB on disk, drops), the slowest `log()` call, the time to
upload after the store returns, and whether every row arrived exactly once.
"""

import os
import tempfile
import time
import uuid

import numpy as np

from tests.faultkit.proxy import FaultProxy
from tests.faultkit.servers import moto_s3


def main() -> None:
    tmp = tempfile.mkdtemp()
    bucket = f"scale-{uuid.uuid4().hex[:6]}"
    with moto_s3() as (h, p), FaultProxy(h, p) as proxy:
        os.environ.update(
            KFCT_HOME=tmp + "/home",
            KFCT_S3_ENDPOINT=proxy.address,
            KFCT_S3_ACCESS_KEY="t",
            KFCT_S3_SECRET_KEY="t",
            KFCT_S3_BUCKET=bucket,
            KFCT_S3_REGION="us-east-1",
        )
        from kfct.contracts.prediction_log import read_prediction_log
        from kfct.data import s3
        from kfct.data.datagen import generate
        from kfct.serving.prediction_log import PredictionLogger

        s3.client().make_bucket(bucket)
        recs = generate(5000, seed=1).drop(columns=["churned"]).to_dict("records")
        proxy.mode = "refuse"
        lg = PredictionLogger(flush_seconds=0.5)
        t0 = time.perf_counter()
        worst = 0.0
        rate = float(os.environ.get("RATE", "10000"))
        n = 0
        for b in range(120):
            for i, r in enumerate(recs):
                n += 1
                if n % 500 == 0:
                    time.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
                t = time.perf_counter()
                lg.log(
                    time.time(),
                    f"b{b}-{i}",
                    "churn-classifier",
                    "1",
                    "champion",
                    [dict(r, customer_id=f"C{b}-{i}")],
                    np.array([0.3]),
                    np.array([0]),
                    0.5,
                )
                worst = max(worst, time.perf_counter() - t)
        lg.flush(5)
        st = lg.status()
        spill = sum(f.stat().st_size for f in lg.backlog.directory.glob("part-*.parquet"))
        print(
            f"outage: {st['backlog_rows']} rows waiting in {st['backlog_files']} files, {spill / 2**20:.1f} MiB on disk, "
            f"dropped {st['dropped']}, logged in {time.perf_counter() - t0:.1f} s, slowest log() call {worst * 1e6:.0f} us"
        )
        proxy.mode = "pass"
        t1 = time.perf_counter()
        ok = lg.flush(300)
        lg.close()
        print(f"store back: all uploaded={ok} in {time.perf_counter() - t1:.1f} s")
        df = read_prediction_log()
        print(f"in store: {len(df)} rows, unique ids: {df['customer_id'].is_unique}")


if __name__ == "__main__":
    main()
