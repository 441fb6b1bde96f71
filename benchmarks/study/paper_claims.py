"""The BWLM paper's claims, each as paired comparisons over seeds of the study's per-seed records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

from .common import SHOTS
from .paper_study import ROWS, Recipe
from .stats import Claim, Comparison

W_PAIRS = (("+CE", "+CEW"), ("+CB", "+CBW"), ("+BS", "+BSW"), ("+BFS", "+BWLM"))  # each loss with and without "W"


def norm_gap(record: dict[str, Any], counts: Sequence[int], recipe: Recipe) -> tuple[float, float]:
    """(Many/Few ratio of mean class-weight norms, its |log|): Fig. 5a's head-to-tail gap."""
    norms = record["weight_norms"]
    many = [n for n, c in zip(norms, counts) if c > recipe.many_threshold]
    few = [n for n, c in zip(norms, counts) if c < recipe.few_threshold]
    if not many or not few:
        return math.nan, math.nan
    ratio = (sum(many) / len(many)) / (sum(few) / len(few))
    return ratio, abs(math.log(ratio))


class Table:
    """Per-seed values by (row, metric, IF), in seed order; metrics are in percent (accuracies) or ratios."""

    def __init__(self, results: dict[str, Any], recipe: Recipe) -> None:
        self.recipe = recipe
        self.seeds = list(recipe.seeds)
        counts = {(j["imbalance_factor"], j["seed"]): j["train_counts"] for j in results["jobs"]}
        self.values: dict[tuple[str, str, float], dict[int, float]] = {}
        for r in results["runs"] + [{**a, "row": f"alpha={a['alpha']:g}"} for a in results["alpha_runs"]]:
            key = (r["imbalance_factor"], r["seed"])
            ratio, gap = norm_gap(r, counts[key], recipe)
            metrics = {k: 100.0 * r[k] for k in SHOTS}
            metrics.update(norm_ratio=ratio, norm_gap=gap)
            for metric, value in metrics.items():
                self.values.setdefault((r["row"], metric, r["imbalance_factor"]), {})[r["seed"]] = value

    def get(self, row: str, metric: str, imbalance_factor: float) -> list[float]:
        """Per-seed values of ``metric`` for ``row`` at ``imbalance_factor`` (``nan`` where missing)."""
        found = self.values.get((row, metric, imbalance_factor), {})
        return [found.get(s, math.nan) for s in self.seeds]

    def has(self, row: str, imbalance_factor: float) -> bool:
        """Whether ``row`` was run at ``imbalance_factor``."""
        return (row, "all", imbalance_factor) in self.values


def build_claims(tab: Table) -> list[Claim]:
    """Every claim of the paper that the study tests, with its comparisons at the study's imbalance factors."""
    r = tab.recipe
    ifs = list(r.imbalance_factors)
    high = [f for f in ifs if f >= 100]
    g = tab.get

    def each(fs: Sequence[float], *specs: tuple[str, ...]) -> list[Comparison]:
        """``a > b`` on ``metric`` (``kind``: optional) for every IF of ``fs`` and every ``(a, b, metric[, kind])``."""
        return [
            Comparison(f"{a} > {b}, {m}, IF={f:g}", g(a, m, f), g(b, m, f), kind=kind[0] if kind else "greater")
            for f in fs
            for a, b, m, *kind in specs
        ]

    def gap(a: str, b: str, f: float) -> Comparison:
        return Comparison(f"norm gap {a} > {b}, IF={f:g}", g(a, "norm_gap", f), g(b, "norm_gap", f), unit="log ratio")

    claims = [
        Claim(
            "weight_transfer",
            "Table 2/3 (+CE 44.6 vs naive 39.6 All on ImageNet-LT)",
            "Two-stage weight transfer with plain CE beats the one-stage naive model on All accuracy.",
            each(ifs, ("+CE", "naive", "all")),
        ),
        Claim(
            "transfer_tradeoff",
            "Sec. 3.2, Table 2 (Many 57.6 -> 55.5, Medium 32.5 -> 48.5, Few 13.4 -> 19.4)",
            "Weight transfer raises Medium and Few accuracy and lowers Many accuracy.",
            each(ifs, ("+CE", "naive", "medium"))
            + each(high, ("+CE", "naive", "few"))
            + each(ifs, ("naive", "+CE", "many")),
        ),
        Claim(
            "weight_decay_helps",
            "Table 2 (CEW 46.4 > CE 44.6, CBW 47.0 > CB 41.5, BSW 47.3 > BS 44.6, BWLM 47.5 > BFS 44.5)",
            "Adding the classifier weight decay improves every loss on All accuracy.",
            each(ifs, *[(w, p, "all") for p, w in W_PAIRS]),
        ),
        Claim(
            "bfs_balances",
            "Sec. 4.3 text on Table 2",
            "CB favours Many and BS favours Few; BFS combines them: better Few than CB and better Many than BS.",
            each(high, ("+CB", "+BS", "many"), ("+BS", "+CB", "few"), ("+BFS", "+CB", "few"), ("+BFS", "+BS", "many")),
        ),
        Claim(
            "bwlm_best",
            "Table 2 (ImageNet-LT) and Table 4 (CIFAR-100-LT, best at IF = 100 and 200)",
            "BWLM has the highest All accuracy of all rows.",
            each(ifs, *[("+BWLM", other, "all") for other in ROWS if other != "+BWLM"]),
        ),
        Claim(
            "bsw_few_cbw_many",
            "Sec. 4.4 on Table 3 (CBW Many 61.7 > BSW 58.2; BSW Few 29.7 > CBW 26.3)",
            "CBW is better than BSW on Many classes, BSW better than CBW on Few classes.",
            each(high, ("+CBW", "+BSW", "many"), ("+BSW", "+CBW", "few")),
        ),
    ]

    def drop(row: str, f: float) -> list[float]:
        return [lo - hi for lo, hi in zip(g(row, "all", 10), g(row, "all", f))]

    drops = [
        Comparison(f"drop(naive) > drop(+BWLM), All, IF=10 -> {f:g}", drop("naive", f), drop("+BWLM", f))
        for f in (high if 10 in ifs else [])
    ]
    claims.append(
        Claim(
            "slower_decline",
            "Table 4 / Fig. 5b (IF 10 -> 100: others lose 17-25 pt, BWLM about 10 pt)",
            "BWLM's All accuracy falls less than the one-stage CE model's as the imbalance factor grows.",
            drops,
        )
    )
    ones = [1.0] * len(tab.seeds)
    norms = []
    for f in high:
        norms.append(
            Comparison(f"naive Many/Few norm ratio > 1, IF={f:g}", g("naive", "norm_ratio", f), ones, unit="ratio")
        )
        norms += [gap("naive", w, f) for w in ("+CBW", "+BWLM")] + [gap(p, w, f) for p, w in W_PAIRS]
        norms.append(
            Comparison(
                f"+BWLM Few/Many norm ratio > 1 (upward trend), IF={f:g}",
                [1.0 / v for v in g("+BWLM", "norm_ratio", f)],
                ones,
                unit="ratio",
            )
        )
    claims.append(
        Claim(
            "weight_norms",
            "Fig. 5a",
            "Naive classifier norms fall from head to tail; weight decay narrows the Many-Few norm gap; BWLM's norms "
            "trend slightly upward towards the tail. (Here: ratio = mean norm of the Many classes / mean norm of the "
            "Few classes; norm gap = abs(log ratio), so a smaller gap is a flatter profile in either direction.)",
            norms,
        )
    )
    claims.append(alpha_claim(tab))
    claims.append(
        Claim(
            "per_class",
            "Fig. 7 (CIFAR-100-LT, IF = 200)",
            "Against the naive model, BWLM improves Medium and Few classes without compromising Many classes.",
            each(
                [max(ifs)],
                ("+BWLM", "naive", "medium"),
                ("+BWLM", "naive", "few"),
                ("+BWLM", "naive", "many", "not_worse"),
            ),
        )
    )
    return claims


def alpha_claim(tab: Table) -> Claim:
    """Fig. 4: the smallest against the largest alpha of the sweep, per group."""
    r, g = tab.recipe, tab.get
    f = r.alpha_sweep_if
    lo, hi = min(r.alpha_sweep), max(r.alpha_sweep)
    A, B = f"alpha={lo:g}", f"alpha={hi:g}"
    better: Callable[[str, str, str], Comparison] = lambda m, a, b: Comparison(  # noqa: E731
        f"{m.capitalize()}: {a} > {b}, IF={f:g}", g(a, m, f), g(b, m, f)
    )
    comparisons = []
    if tab.has(A, f) and tab.has(B, f) and lo != hi:
        comparisons = [better("many", B, A)] + [better(m, A, B) for m in ("medium", "few", "all")]
    return Claim(
        "alpha",
        "Fig. 4",
        "Large alpha (more CB) favours Many classes, small alpha (more BS) favours Medium and Few; All accuracy "
        "declines slowly as alpha grows, so alpha = 0.1 is a good default.",
        comparisons,
    )
