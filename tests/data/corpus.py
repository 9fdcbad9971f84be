"""Real tables from installed packages, and corrupted copies, each with the verdict a user must see.

Real tables come from packages that ship them as files (never downloaded at run time):
palmerpenguins' `penguins-raw.csv` (a dev dependency: field notes with free text, a
date column, constant columns, nullable measurements and a nullable category) and
scikit-learn's iris. The corrupted copies are what arrives after a good champion.

A verdict is one of: "trains" (registered), "validation" (stops at validation; every
`lines` entry is in the error), "gate" (stops at the gate; every `lines` entry is in the
output), with `exit` the status `kfct run` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def penguins() -> pd.DataFrame:
    """penguins-raw.csv as palmerpenguins ships it, the rows whose Sex is known (the label)."""
    import palmerpenguins

    raw = pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / "penguins-raw.csv")
    return raw[raw["Sex"].isin(["MALE", "FEMALE"])].reset_index(drop=True)


def penguins_bad_batch() -> pd.DataFrame:
    """Next season's batch with a typo'd sample number and an egg dated in the future."""
    df = penguins()
    df["Sample Number"] = df["Sample Number"].astype("float64")
    df.loc[5, "Sample Number"] = 10.5
    df.loc[7, "Date Egg"] = "2999-11-11"
    return df


def penguins_inverted() -> pd.DataFrame:
    """The same birds with the label inverted: validation's label balance cannot see it."""
    df = penguins()
    df["Sex"] = df["Sex"].map({"MALE": "FEMALE", "FEMALE": "MALE"})
    return df


def iris_setosa() -> pd.DataFrame:
    """scikit-learn's iris as a yes/no question: is it a setosa? (petal size alone answers it)."""
    from sklearn.datasets import load_iris

    df = load_iris(as_frame=True).frame
    df["setosa"] = (df.pop("target") == 0).map({True: "yes", False: "no"})
    return df


@dataclass(frozen=True)
class Case:
    name: str
    table: Callable[[], pd.DataFrame]
    config: str  # which `kfct init` config the run uses (init runs on that config's table)
    verdict: str  # trains / validation / gate
    exit: int
    lines: tuple[str, ...] = field(default=())


# In order: each later case arrives after the earlier ones (the penguins champion exists).
CASES = (
    Case("penguins", penguins, "penguins", "trains", 0),
    Case(
        "penguins_bad_batch",
        penguins_bad_batch,
        "penguins",
        "validation",
        3,
        ("Sample Number", "whole numbers", "Date Egg", "2999-11-11"),
    ),
    Case(
        "penguins_inverted",
        penguins_inverted,
        "penguins",
        "gate",
        5,
        ("kfct: error: stopped: champion v1 collapsed on this data: roc_auc 0.",),
    ),
    Case(
        "iris_setosa",
        iris_setosa,
        "iris",
        "gate",
        0,
        ("decision    BLOCKED", "leakage: feature 'petal length (cm)' alone predicts the label"),
    ),
)

CONFIGS = {"penguins": (penguins, "Sex", "FEMALE"), "iris": (iris_setosa, "setosa", "yes")}
