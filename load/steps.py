r"""A load step's figures: Locust's records summarised (and several runs' pooled), and their report.

``compare.py`` runs the steps; this module turns their records into :class:`Step`\ s and prints,
writes and draws them: the table, the targets as measured, the comparison of several servers, the
CSV and the plot. It reads files and numbers only: no server, no Locust, no model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from outcomes import ACCEPTED, SHED

# ------------------------------------------------------------------------------------------ records


@dataclass
class Step:
    """One Locust run against one server, summarised."""

    step: str  # "closed", "mixed" or "rate"
    users: int
    mode: str
    seconds: float
    requests: int  # accepted (passed every check), completed in the window
    texts: int
    failures: int  # failed a check or errored; a 503 without Retry-After is one
    shed: int  # refused with 503 + Retry-After (the users waited it before their next request)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    bulk_p95_ms: float | None = None  # mixed: the bulk requests' p95 (the columns above: single texts)
    offered_rps: float | None = None  # rate: requests per second offered
    mean_batch: float | None = None  # batched: mean batch size in the window
    ceiling: float = math.nan  # the offline ceiling around this step (mean of the one before and after)
    loaded_ceiling: float | None = None  # the ceiling beside the load generator at this step's rate

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (an observed value); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(results: dict[str, Any], step: str, users: int, mode: str) -> Step:
    start, end = results["window"]
    records = results["records"]  # [name, start, latency s, texts, outcome]
    passed = [r for r in records if r[4] == ACCEPTED]
    shed = sum(1 for r in records if r[4] == SHED)
    single = [r[2] * 1000 for r in passed if r[0] != "/embed texts"]
    bulk = [r[2] * 1000 for r in passed if r[0] == "/embed texts"]
    return Step(
        step=step,
        users=users,
        mode=mode,
        seconds=end - start,
        requests=len(passed),
        texts=sum(r[3] for r in passed),
        failures=len(records) - len(passed) - shed,
        shed=shed,
        p50_ms=percentile(single, 0.50),
        p95_ms=percentile(single, 0.95),
        p99_ms=percentile(single, 0.99),
        bulk_p95_ms=percentile(bulk, 0.95) if step == "mixed" else None,
    )


def mean_batch(batch_sizes: dict[str, int]) -> float | None:
    """The mean size of the batches counted (``{size: batches}``); None when none ran (unbatched)."""
    batches = sum(batch_sizes.values())
    return sum(int(size) * n for size, n in batch_sizes.items()) / batches if batches else None


def pooled(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several Locust runs' records as one run's: their windows add up, their records join, and their
    failures and batch sizes add up."""
    failures: dict[str, int] = {}
    batch_sizes: dict[str, int] = {}
    for run in runs:
        for totals, counts in ((failures, run["failures"]), (batch_sizes, run.get("batch_sizes", {}))):
            for key, count in counts.items():
                totals[key] = totals.get(key, 0) + count
    seconds = sum(run["window"][1] - run["window"][0] for run in runs)
    return {"window": [0.0, seconds], "records": [r for run in runs for r in run["records"]], "failures": failures,
            "batch_sizes": batch_sizes}


# ------------------------------------------------------------------------------------------ report


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def table(steps: list[Step]) -> str:
    header = ("step", "users", "mode", "texts/s", "req/s", "p50 ms", "p95 ms", "p99 ms", "fails", "shed", "batch",
              "vs unbatched", "ceiling", "of ceiling", "loaded ceiling", "of loaded")
    rows = [header]
    for s in steps:
        other = next((o for o in steps if (o.step, o.users) == (s.step, s.users) and o.mode == "unbatched"), None)
        ratio = s.texts_per_s / other.texts_per_s if other and other.texts_per_s and s.mode == "batched" else None
        label = {"closed": "closed loop", "mixed": "mixed 3:1", "rate": f"rate {fmt(s.offered_rps, 0)}/s"}[s.step]
        rows.append((
            label, str(s.users), s.mode, fmt(s.texts_per_s), fmt(s.requests_per_s), fmt(s.p50_ms), fmt(s.p95_ms),
            fmt(s.p99_ms), str(s.failures), str(s.shed), fmt(s.mean_batch), "-" if ratio is None else f"{ratio:.2f}x",
            fmt(s.ceiling, 0), f"{s.texts_per_s / s.ceiling:.2f}", fmt(s.loaded_ceiling, 0),
            "-" if not s.loaded_ceiling else f"{s.texts_per_s / s.loaded_ceiling:.2f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    lines = [line(r) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def notes(steps: list[Step]) -> list[str]:
    """The bulk requests of the mixed step, the shed requests, and the issue's targets as measured (reported,
    never asserted)."""
    lines = [f"mixed, {s.mode}: bulk requests (16-64 texts) p95 {fmt(s.bulk_p95_ms)} ms"
             for s in steps if s.step == "mixed"]
    shed = [s for s in steps if s.shed]
    if shed:
        lines.append("shed (503 + Retry-After, waited by the users; not in texts/s or the latencies): " + ", ".join(
            f"{s.step} {s.users}u {s.mode} {s.shed / (s.shed + s.requests + s.failures):.0%}" for s in shed))
    closed = {(s.users, s.mode): s for s in steps if s.step == "closed"}
    for users in sorted({u for u, _ in closed}):
        b, u = closed.get((users, "batched")), closed.get((users, "unbatched"))
        if b is None or u is None:
            continue
        if users >= 32 and u.texts_per_s:
            ratio, share = b.texts_per_s / u.texts_per_s, b.texts_per_s / b.ceiling
            lines.append(f"{users} users: batched is {ratio:.2f}x unbatched (target >= 3: {met(ratio >= 3)}), "
                         f"{share:.2f} of the ceiling (target >= 0.7: {met(share >= 0.7)})")
        if users == 1:
            gap = b.p50_ms - u.p50_ms
            lines.append(f"1 user: p50 batched {b.p50_ms:.2f} ms, unbatched {u.p50_ms:.2f} ms, "
                         f"difference {gap:+.2f} ms (target within 1 ms: {met(gap <= 1)})")
    return lines


def met(ok: bool) -> str:
    return "met" if ok else "missed"


def write_csv(steps: list[Step], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        fields = list(asdict(steps[0])) if steps else []
        writer.writerow([*fields, "texts_per_s", "requests_per_s", "share_of_ceiling", "share_of_loaded_ceiling"])
        for s in steps:
            loaded = f"{s.texts_per_s / s.loaded_ceiling:.4f}" if s.loaded_ceiling else ""
            writer.writerow([*asdict(s).values(), f"{s.texts_per_s:.3f}", f"{s.requests_per_s:.3f}",
                             f"{s.texts_per_s / s.ceiling:.4f}", loaded])


def plot(steps: list[Step], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, style in (("batched", "o-"), ("unbatched", "s--")):
        points = sorted((s.users, s.texts_per_s, s.p95_ms) for s in steps if s.step == "closed" and s.mode == mode)
        if points:
            users, throughput, p95 = zip(*points, strict=True)
            left.plot(users, throughput, style, label=mode)
            right.plot(users, p95, style, label=mode)
    for label, style, key in (("offline ceiling", ":", "ceiling"), ("ceiling beside the load", "-.", "loaded_ceiling")):
        line = sorted((s.users, float(getattr(s, key))) for s in steps
                      if s.step == "closed" and s.mode == "batched" and getattr(s, key))
        if line:
            left.plot(*zip(*line, strict=True), style, color="grey", label=label)
    left.set(title="throughput", xlabel="users (closed loop)", ylabel="texts per second", ylim=(0, None))
    right.set(title="p95 latency", xlabel="users (closed loop)", ylabel="milliseconds", yscale="log")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({s.users for s in steps if s.step == "closed"}))
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def across(compared: dict[tuple[str, str], list[Step]]) -> list[str]:
    """The servers side by side at the largest closed-loop user count they share: each one's share of its
    loaded ceiling (target >= 0.85), and Django's texts/s over Flask's (target >= 0.9)."""
    if len(compared) < 2:
        return []
    top: dict[tuple[str, str], Step] = {}
    for target, steps in compared.items():
        closed = [s for s in steps if s.step == "closed" and s.mode == "batched"]
        if closed:
            top[target] = max(closed, key=lambda s: s.users)
    lines = []
    for (framework, server), s in top.items():
        share = s.texts_per_s / s.loaded_ceiling if s.loaded_ceiling else math.nan
        lines.append(f"{framework} on {server}, {s.users} users: {s.texts_per_s:.1f} texts/s, {share:.2f} of the "
                     f"loaded ceiling (target >= 0.85: {met(share >= 0.85)})")
    flask = next((s for (f, _), s in top.items() if f == "flask"), None)
    for (framework, server), s in top.items():
        if framework == "django" and flask is not None and flask.texts_per_s and s.users == flask.users:
            ratio = s.texts_per_s / flask.texts_per_s
            lines.append(f"django on {server} is {ratio:.2f} of flask's texts/s at {s.users} users "
                         f"(target >= 0.9: {met(ratio >= 0.9)})")
    return lines
