"""Synthetic telecom customers with the case study's feature families.

Contract/payment/age/region/plan; RFM (recency, frequency, monetary, tenure,
activity trend); usage (calls, duration, data, international and peak ratios);
support (tickets, escalations, unresolved, frustration index, computed as in the
case study). The churn label comes from a nonlinear latent score plus noise, so a
good model reaches AUC-ROC around 0.85, not 1.0.

Knobs:
- `drift` (0..1+): shifts feature distributions and the concept, for monitoring.
- `bias` (0..1+): makes churn depend strongly on a sensitive attribute (age
  group), so a model trained on it fails the fairness gate.
- `corrupt`: one of CORRUPTIONS, for validation tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kfct.data.corruptions import CORRUPTIONS

CONTRACTS = (["monthly", "annual", "two_year"], [0.52, 0.30, 0.18])
PAYMENTS = (["auto_debit", "credit_card", "bank_transfer", "cash"], [0.35, 0.30, 0.20, 0.15])
AGES = (["18_35", "36_55", "56_plus"], [0.35, 0.40, 0.25])
REGIONS = (["north", "center", "south", "islands"], [0.40, 0.25, 0.25, 0.10])


_GAIN = 1.4  # sharpens the latent score: a good model reaches AUC ~0.87
_INTERCEPT = -3.9  # ~17% churners


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def churn_logit(df: pd.DataFrame, drift: float = 0.0, bias: float = 0.0) -> np.ndarray:
    """The generator's ground truth: a customer's churn log-odds before noise, from its features.

    `generate` draws `churned` from it; `realized_outcomes` draws what "really happened"
    later for customers that were served predictions, so the whole outcome loop runs on
    the embedded default.
    """
    d = float(drift)
    is_monthly = (df["contract_type"] == "monthly").to_numpy()
    is_two_year = (df["contract_type"] == "two_year").to_numpy()
    payment = df["payment_method"].to_numpy()
    frustration = df["frustration_index"].to_numpy(float)
    recency_days = df["recency_days"].to_numpy(float)
    activity_trend = df["activity_trend"].to_numpy(float)
    tenure_days = df["tenure_days"].to_numpy(float)
    plan = df["plan_monthly_eur"].to_numpy(float)
    data_gb = df["data_usage_gb_30d"].to_numpy(float)
    intl = df["international_calls_ratio"].to_numpy(float)
    age = df["age_group"].to_numpy()
    region = df["region"].to_numpy()
    signal = (
        1.15 * is_monthly
        - 0.65 * is_two_year
        + 0.45 * (payment == "cash")
        - 0.30 * (payment == "auto_debit")
        + (2.2 - 1.2 * d) * frustration
        + 0.9 * frustration * is_monthly
        + 1.1 * _sigmoid((recency_days - 40.0) / 8.0)
        - 0.95 * np.log(activity_trend)
        - 0.45 * np.log1p(tenure_days / 365.0)
        + 0.35 * (plan > 55)
        + 0.5 * (data_gb < 2.0) * is_monthly
        + 0.6 * d * (intl > 0.15)
        + 0.04 * (age == "18_35")
        + 0.03 * (region == "islands")
    )
    z = _INTERCEPT + _GAIN * signal
    if bias:
        z = z + 2.2 * float(bias) * (age == "18_35") - 1.2 * float(bias) * (age == "56_plus")
    return np.asarray(z, dtype=np.float64)


def realized_outcomes(
    predictions: pd.DataFrame,
    seed: int = 0,
    drift: float = 0.0,
    max_delay_days: float = 28.0,
    id_column: str = "customer_id",
    label: str = "churned",
) -> pd.DataFrame:
    """What "really happened" to the customers in a prediction log, drawn from the ground truth.

    One outcome per customer, observed 1..max_delay_days after its last logged
    prediction (inside the default 30-day label horizon).
    """
    if len(predictions) == 0:
        raise ValueError("the prediction log is empty: serve some predictions first")
    last = predictions.sort_values("ts", kind="stable").drop_duplicates("customer_id", keep="last")
    rng = np.random.default_rng(seed)
    z = churn_logit(last, drift=drift) + rng.normal(0.0, 0.45, len(last))
    y = (rng.random(len(last)) < _sigmoid(z)).astype(np.int64)
    delay = pd.to_timedelta(rng.uniform(1.0, max_delay_days, len(last)), unit="D")
    ts = pd.to_datetime(last["ts"], utc=True)
    return pd.DataFrame({id_column: last["customer_id"].astype(str).to_numpy(), label: y, "observed_at": (ts + delay).to_numpy()})


def generate(rows: int = 100_000, seed: int = 42, drift: float = 0.0, bias: float = 0.0) -> pd.DataFrame:
    """Return `rows` customers; deterministic for a given (rows, seed, drift, bias).

    The feature families are drawn in a fixed order from one generator (the order is
    part of the determinism), then the label from the latent churn score (`churn_logit`).
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    d = float(drift)
    cols = _categories(rng, rows, d)
    cols.update(_rfm(rng, rows, d, cols["contract_type"]))
    cols.update(_usage(rng, rows, d, cols["activity_trend"]))
    cols.update(_support(rng, rows, d, cols["contract_type"] == "monthly"))
    df = pd.DataFrame(
        {"customer_id": [f"C{seed % 1000:03d}-{i:08d}" for i in range(rows)], **{c: cols[c] for c in COLUMNS if c != "churned"}}
    )
    # Latent churn score (see churn_logit), then logit noise: the same draws, in the same order.
    z = churn_logit(df, drift=d, bias=bias) + rng.normal(0.0, 0.45, rows)
    df["churned"] = (rng.random(rows) < _sigmoid(z)).astype(np.int64)
    for col in ("contract_type", "payment_method", "age_group", "region"):
        df[col] = df[col].astype(str)
    return df


def generate_chunks(
    rows: int, seed: int = 42, drift: float = 0.0, bias: float = 0.0, chunk_rows: int = 250_000
) -> Iterator[pd.DataFrame]:
    """Yield `rows` customers as DataFrames of at most `chunk_rows` rows, one chunk in memory at a time.

    For datasets larger than one process should hold (`kfct data generate --part-rows`,
    `generate://N?part_rows=K`). Chunk i is `generate(n_i, seed=(seed, i))` with customer ids
    renumbered to be unique across chunks; deterministic for (rows, seed, drift, bias, chunk_rows),
    and the same distribution as `generate` (not the same rows: each chunk has its own draws).
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    offset = 0
    for i in range((rows + chunk_rows - 1) // chunk_rows):
        n = min(chunk_rows, rows - offset)
        df = generate(n, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), drift=drift, bias=bias)
        df["customer_id"] = [f"C{seed % 1000:03d}-{j:08d}" for j in range(offset, offset + n)]
        offset += n
        yield df


# Column order of the generated frame (after customer_id).
COLUMNS = (
    "contract_type",
    "payment_method",
    "age_group",
    "region",
    "plan_monthly_eur",
    "recency_days",
    "frequency",
    "monetary_total",
    "monetary_avg",
    "monetary_std",
    "tenure_days",
    "activity_trend",
    "calls_count_30d",
    "calls_duration_avg_30d",
    "data_usage_gb_30d",
    "international_calls_ratio",
    "peak_hour_ratio",
    "support_tickets_90d",
    "support_escalations_90d",
    "unresolved_tickets",
    "frustration_index",
    "churned",
)


def _categories(rng: np.random.Generator, n: int, d: float) -> dict:
    """Contract, payment, age group, region; drift moves customers to monthly contracts and cash."""

    def pick(choices: Sequence[str], probs: Sequence[float], shift: np.ndarray | None = None) -> np.ndarray:
        p = np.asarray(probs, dtype=float)
        if shift is not None:
            p = np.clip(p + shift, 0.01, None)
            p = p / p.sum()
        return rng.choice(np.asarray(choices, dtype=object), size=n, p=p)

    return {
        "contract_type": pick(*CONTRACTS, shift=np.array([0.15, -0.08, -0.07]) * d),
        "payment_method": pick(*PAYMENTS, shift=np.array([-0.10, 0.0, 0.0, 0.10]) * d),
        "age_group": pick(*AGES),
        "region": pick(*REGIONS),
    }


def _rfm(rng: np.random.Generator, n: int, d: float, contract: np.ndarray) -> dict:
    """Tenure, plan price, recency / frequency / monetary, activity trend."""
    is_monthly, is_two_year = contract == "monthly", contract == "two_year"
    tenure_scale = np.where(is_two_year, 900.0, np.where(is_monthly, 380.0, 650.0))
    tenure_days = np.maximum(1, rng.gamma(1.6, tenure_scale / 1.6)).astype(np.int64)
    tenure_days = np.minimum(tenure_days, 19_000)
    plan = np.round(np.clip(rng.lognormal(np.log(28.0) + 0.15 * d, 0.45, n), 5, 400), 2)
    frequency = rng.poisson(tenure_days / 30.0 * rng.uniform(0.6, 1.4, n)).astype(np.int64) + 1
    monetary_avg = np.round(np.clip(plan * rng.lognormal(0.0, 0.2, n), 1, 5000), 2)
    monetary_std = np.round(monetary_avg * rng.uniform(0.05, 0.5, n), 2)
    monetary_std[frequency < 2] = np.nan  # std of one transaction is undefined
    activity_trend = np.round(np.clip(rng.lognormal(-0.05 - 0.35 * d, 0.45, n), 0.01, 40), 4)
    recency_days = np.round(np.clip(rng.exponential(18.0 * (1 + 0.8 * d), n), 0, 3000), 1)
    return {
        "tenure_days": tenure_days,
        "plan_monthly_eur": plan,
        "frequency": frequency,
        "monetary_avg": monetary_avg,
        "monetary_total": np.round(monetary_avg * frequency, 2),
        "monetary_std": monetary_std,
        "activity_trend": activity_trend,
        "recency_days": recency_days,
    }


def _usage(rng: np.random.Generator, n: int, d: float, activity_trend: np.ndarray) -> dict:
    """Calls, data, international and peak-hour shares over the last 30 days."""
    return {
        "calls_count_30d": rng.poisson(60 * activity_trend.clip(0.2, 3)).astype(np.int64),
        "calls_duration_avg_30d": np.round(np.clip(rng.gamma(3.0, 60.0, n), 0, 7000), 1),
        "data_usage_gb_30d": np.round(np.clip(rng.gamma(2.0, 6.0 * (1 + 0.6 * d), n), 0, 1900), 3),
        "international_calls_ratio": np.round(rng.beta(1.2, 14.0, n), 4),
        "peak_hour_ratio": np.round(rng.beta(4.0, 4.0, n), 4),
    }


def _support(rng: np.random.Generator, n: int, d: float, is_monthly: np.ndarray) -> dict:
    """Tickets, escalations, unresolved tickets and the frustration index built from them."""
    tickets = rng.poisson(0.9 + 0.6 * d + 0.5 * is_monthly, n).astype(np.int64)
    escalations = rng.binomial(tickets, 0.2).astype(np.int64)
    unresolved = rng.binomial(tickets, 0.3).astype(np.int64)
    return {
        "support_tickets_90d": tickets,
        "support_escalations_90d": escalations,
        "unresolved_tickets": unresolved,
        "frustration_index": np.clip(tickets * 2 + escalations * 5 + unresolved * 3, 0, 20) / 20.0,
    }


def corrupt(df: pd.DataFrame, kind: str, seed: int = 0) -> pd.DataFrame:
    """Return a copy of `df` broken in one named way (for validation tests)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}")
    rng = np.random.default_rng(seed)
    out = df.copy()
    n = len(out)
    k = max(1, n // 50)
    idx = rng.choice(n, size=k, replace=False)
    if kind == "label_nulls":
        out["churned"] = out["churned"].astype("float64")
        out.loc[out.index[idx], "churned"] = np.nan
    elif kind == "unknown_category":
        out.loc[out.index[idx], "contract_type"] = "lifetime"
    elif kind == "out_of_range":
        out.loc[out.index[idx], "frustration_index"] = 7.5
        out.loc[out.index[idx], "recency_days"] = -3.0
    elif kind == "missing_column":
        out = out.drop(columns=["frustration_index"])
    elif kind == "duplicated_rows":
        dup = out.sample(n=max(1, n // 10), random_state=seed)
        out = pd.concat([out, dup], ignore_index=True)
    elif kind == "too_few_rows":
        out = out.head(50).copy()
    elif kind == "wrong_dtype":
        out["tenure_days"] = out["tenure_days"].astype(str) + " days"
    return out


def write_frame(df: pd.DataFrame, path: str | Path) -> Path:
    """Write parquet or CSV by extension."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".csv":
        df.to_csv(p, index=False)
    elif p.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(p, index=False)
    else:
        raise ValueError(f"unsupported output format {p.suffix!r} for {p}: use .parquet or .csv")
    return p
