"""Statistics over seeds: mean and sample std, and paired comparisons with a two-sided t-test at 5% (scipy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy import stats as sps

ALPHA = 0.05  # two-sided significance level of every paired comparison


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the values that are not ``nan`` (std 0 for one value)."""
    v = [float(x) for x in values if not math.isnan(float(x))]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def t_critical(df: int) -> float:
    """Two-sided 5% critical value of Student's t with ``df`` degrees of freedom (2.776 for 4, 2.131 for 15)."""
    return float(sps.t.ppf(1 - ALPHA / 2, df))


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """The t statistic and two-sided p of the paired t-test of ``a`` against ``b`` (:func:`scipy.stats.ttest_rel`).

    Equal differences give t = +-inf and p = 0 (or nan and nan if they are all 0).
    """
    with warnings.catch_warnings():  # "precision loss" on nearly equal differences: t is still right
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        res = sps.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def fmt(ms: Sequence[float], digits: int = 1) -> str:
    """``mean ± std`` with ``digits`` decimals; an en dash for ``nan``."""
    m, s = ms
    return "–" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


@dataclass
class Comparison:
    """A claimed inequality ``a > b`` (or ``a`` not worse than ``b``), tested on paired per-seed values."""

    label: str
    a: list[float]
    b: list[float]
    kind: str = "greater"  # or "not_worse"
    unit: str = "pt"
    stats: dict[str, Any] = field(default_factory=dict)

    def evaluate(self) -> dict[str, Any]:
        """Paired statistics and the verdict."""
        pairs = [(x, y) for x, y in zip(self.a, self.b) if not (math.isnan(x) or math.isnan(y))]
        d = [x - y for x, y in pairs]
        n = len(d)
        m, s = mean_std(d)
        t, p = paired_t(*zip(*pairs)) if n >= 2 else (math.nan, math.nan)
        crit = t_critical(n - 1) if n >= 2 else math.nan
        if n < 2:
            verdict = "n/a"
        elif p < ALPHA and t > 0:
            verdict = "replicates"
        elif p < ALPHA and t < 0:
            verdict = "contradicted"
        elif self.kind == "not_worse":
            verdict = "consistent (no significant drop)"
        else:
            verdict = "not resolved"
        self.stats = {
            "label": self.label,
            "kind": self.kind,
            "unit": self.unit,
            "n": n,
            "mean_diff": m,
            "std_diff": s,
            "t": t,
            "df": max(n - 1, 0),
            "p": p,
            "t_crit": crit,
            "wins": sum(x > 0 for x in d),
            "a_mean_std": mean_std(self.a),
            "b_mean_std": mean_std(self.b),
            "verdict": verdict,
        }
        return self.stats


@dataclass
class Claim:
    """One of the paper's claims and the paired comparisons that test it here."""

    key: str
    source: str
    text: str
    comparisons: list[Comparison]

    def evaluate(self) -> dict[str, Any]:
        """Evaluate every comparison and combine their verdicts."""
        stats = [c.evaluate() for c in self.comparisons]
        verdicts = [s["verdict"] for s in stats if s["verdict"] != "n/a"]
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
        return {
            "key": self.key,
            "source": self.source,
            "text": self.text,
            "verdict": overall,
            "counts": {"replicates": len(ok), "contradicted": len(bad), "total": len(verdicts)},
            "comparisons": stats,
        }
