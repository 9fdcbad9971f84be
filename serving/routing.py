"""Who goes where: the sticky canary split and who sent a request (pure, no I/O).

When an instance carries the id column (`customer_id`), the split is sticky:
`crc32(salt:customer_id) % 10000 < percent * 100`, so a customer always sees the same
version and, as the percent grows, customers already on the canary stay there. A
request mixing customers is split per instance. Without ids, whole requests are split
at random.
"""

from __future__ import annotations

import itertools
import random
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kfct.serving.predictor import ChurnPredictor

BUCKETS = 10_000
_anonymous = itertools.count(1)


def customer_key(records: list[dict[str, Any]], id_column: str | None) -> int:
    """Who sent a request, for window stats: crc32 of the first record's id; a fresh negative
    number for requests without one (each then counts as its own customer)."""
    cid = records[0].get(id_column) if id_column and records else None
    if cid is None:
        return -next(_anonymous)
    return zlib.crc32(str(cid).encode("utf-8", "surrogatepass"))  # never raises on client text


def bucket(customer_id: object, salt: str = "") -> int:
    return zlib.crc32(f"{salt}:{customer_id}".encode("utf-8", "surrogatepass")) % BUCKETS


def to_canary(customer_id: object, percent: float, salt: str = "") -> bool:
    """Sticky assignment: the same id, salt and percent always give the same answer."""
    return bucket(customer_id, salt) < percent * (BUCKETS / 100.0)


@dataclass(frozen=True)
class Route:
    champion: ChurnPredictor | None
    canary: ChurnPredictor | None
    percent: float
    mode: str
    salt: str

    @property
    def splitting(self) -> bool:
        return self.canary is not None and self.mode == "canary" and self.percent > 0


def assign(
    route: Route, records: list[dict[str, Any]], id_column: str | None, rng: random.Random
) -> list[tuple[str, ChurnPredictor | None, np.ndarray | None]]:
    """[(role, predictor, row indices or None for all)]"""
    if not route.splitting:
        return [("champion", route.champion, None)]
    idc = id_column
    pct = route.percent
    if pct >= 100.0:
        return [("canary", route.canary, None)]
    first = records[0].get(idc) if idc else None
    if first is None:
        pick = rng.random() * 100.0 < pct
        return [("canary", route.canary, None) if pick else ("champion", route.champion, None)]
    if len(records) == 1:
        if to_canary(first, pct, route.salt):
            return [("canary", route.canary, None)]
        return [("champion", route.champion, None)]
    assert idc is not None  # `first` was read by it
    flags = np.fromiter(
        (r.get(idc) is not None and to_canary(r.get(idc), pct, route.salt) for r in records), dtype=np.bool_, count=len(records)
    )
    if flags.all():
        return [("canary", route.canary, None)]
    if not flags.any():
        return [("champion", route.champion, None)]
    return [("champion", route.champion, np.flatnonzero(~flags)), ("canary", route.canary, np.flatnonzero(flags))]
