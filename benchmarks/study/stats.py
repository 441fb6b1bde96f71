"""Statistics over seeds: mean and sample std, and paired comparisons with a two-sided t-test at 5% (scipy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from scipy import stats as sps

ALPHA = 0.05  # two-sided significance level of every paired comparison


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the values that are not ``nan`` (std 0 for one value)."""
    v = [float(x) for x in values if not math.isnan(float(x))]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0


def t_critical(df: int) -> float:
    """Two-sided 5% critical value of Student's t with ``df`` degrees of freedom (2.776 for 4, 2.131 for 15)."""
    return float(sps.t.ppf(1 - ALPHA / 2, df))


def compare(label: str, a: Sequence[float], b: Sequence[float], kind: str = "greater", unit: str = "pt") -> dict:
    """A claimed ``a > b`` (``kind='not_worse'``: ``a`` not worse than ``b``) on paired per-seed values.

    A two-sided paired t-test at 5% (:func:`scipy.stats.ttest_rel`) on the pairs without ``nan``: "replicates"
    if significant in the claimed direction, "contradicted" if in the other, else "not resolved" ("consistent
    (no significant drop)" for ``not_worse``); "n/a" with fewer than two pairs. Equal differences give
    t = +-inf and p = 0 (nan if they are all 0).
    """
    pairs = [(x, y) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    d, n = [x - y for x, y in pairs], len(pairs)
    t = p = crit = math.nan
    if n >= 2:
        with warnings.catch_warnings():  # "precision loss" on nearly equal differences: t is still right
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
            res = sps.ttest_rel(*zip(*pairs))
        t, p, crit = float(res.statistic), float(res.pvalue), t_critical(n - 1)
    if n < 2:
        verdict = "n/a"
    elif p < ALPHA:
        verdict = "replicates" if t > 0 else "contradicted"
    else:
        verdict = "consistent (no significant drop)" if kind == "not_worse" else "not resolved"
    m, s = mean_std(d)
    return {
        "label": label,
        "kind": kind,
        "unit": unit,
        "n": n,
        "mean_diff": m,
        "std_diff": s,
        "t": t,
        "df": max(n - 1, 0),
        "p": p,
        "t_crit": crit,
        "wins": sum(x > 0 for x in d),
        "a_mean_std": mean_std(a),
        "b_mean_std": mean_std(b),
        "verdict": verdict,
    }


def claim(key: str, source: str, text: str, comparisons: list[dict[str, Any]]) -> dict[str, Any]:
    """One of the paper's claims with the statistics of the comparisons that test it, and their combined verdict."""
    verdicts = [s["verdict"] for s in comparisons if s["verdict"] != "n/a"]
    ok = [v for v in verdicts if v == "replicates" or v.startswith("consistent")]
    bad = [v for v in verdicts if v == "contradicted"]
    if not verdicts:
        overall = "not tested at this configuration"
    elif len(ok) == len(verdicts):
        overall = "replicates"
    elif bad and ok:
        overall = "mixed: partly replicates, partly contradicted"
    elif bad:
        overall = "does not replicate"
    elif ok:
        overall = "partly replicates (rest not resolved)"
    else:
        overall = "not resolved at this scale"
    counts = {"replicates": len(ok), "contradicted": len(bad), "total": len(verdicts)}
    return {
        "key": key,
        "source": source,
        "text": text,
        "verdict": overall,
        "counts": counts,
        "comparisons": comparisons,
    }
