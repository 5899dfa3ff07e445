"""What the precision page charts beside its tables: each lane's precision per ISO week, and each
live lane's loss alerts per lane-hour per day.

A lane-hour is a clock hour (UTC) in which the lane was at work: it received a POS event (its own
record, `pos.jsonl` and `pos.1.jsonl`) or raised an alert. A replay's alerts are dated by the run,
not by the lane's clock, so only `--state` folders count here (a replay's rates are in its report).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from retail_reid.pipeline.charts import line_chart
from retail_reid.pipeline.console.alerts import AlertFolder, SourceKind
from retail_reid.pipeline.console.formatting import utc_day
from retail_reid.pipeline.console.verdicts import PrecisionRow

RATE_DAYS = 28  # the most recent days of alerts per lane-hour shown
HOUR_S = 3600


@dataclass(frozen=True)
class LaneWeek:
    lane: str
    week: str  # ISO week, e.g. 2026-W01
    confirmed: int
    dismissed: int

    @property
    def precision(self) -> float:
        return self.confirmed / (self.confirmed + self.dismissed)


@dataclass(frozen=True)
class LaneDay:
    lane: str
    day: str  # UTC, YYYY-MM-DD
    alerts: int
    lane_hours: int  # hours of the day in which the lane was at work

    @property
    def per_lane_hour(self) -> float:
        return self.alerts / self.lane_hours


def weekly_precision(rows: Iterable[PrecisionRow]) -> list[LaneWeek]:
    """Per lane and week, the verdicts of all its alert types together, by lane then week."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        c = counts[r.lane, r.week]
        c[0] += r.confirmed
        c[1] += r.dismissed
    return [LaneWeek(lane=k[0], week=k[1], confirmed=c[0], dismissed=c[1]) for k, c in sorted(counts.items())]


def alerts_per_lane_hour(alerts: dict[str, list[float]], at_work: dict[str, list[float]]) -> list[LaneDay]:
    """Per lane and UTC day, the alerts (their times in `alerts`) and the lane-hours: the hours
    holding an alert or a time in `at_work` (its POS events). By lane then day; the most recent
    RATE_DAYS days of any lane only."""
    hours: dict[str, set[int]] = defaultdict(set)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for lane, times in alerts.items():
        for t in times:
            counts[lane, utc_day(t)] += 1
            hours[lane].add(int(t // HOUR_S))
    for lane, times in at_work.items():
        hours[lane].update(int(t // HOUR_S) for t in times)
    per_day: dict[tuple[str, str], int] = defaultdict(int)
    for lane, held in hours.items():
        for h in held:
            per_day[lane, utc_day(h * HOUR_S)] += 1
    recent = set(sorted({d for _, d in per_day})[-RATE_DAYS:])
    return [
        LaneDay(lane=lane, day=d, alerts=counts[lane, d], lane_hours=n)
        for (lane, d), n in sorted(per_day.items())
        if d in recent
    ]


def lane_activity(folders: Iterable[AlertFolder]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The live lanes' loss alert times and POS event times, by lane (a state folder is one lane:
    its POS events are the lane's its alerts name, or the folder's when it has none yet)."""
    alerts: dict[str, list[float]] = defaultdict(list)
    at_work: dict[str, list[float]] = defaultdict(list)
    for folder in folders:
        if folder.kind is not SourceKind.LANE:
            continue
        every = folder.alerts()
        lane = every[0].lane if every else folder.name
        for a in every:
            if a.type.loss:
                alerts[a.lane].append(a.when)
        at_work[lane] += [e.ts for pos in folder.pos_files for e in pos.events()[0]]
    return alerts, at_work


def precision_chart(name: str, title: str, weeks: list[LaneWeek]) -> str:
    """Precision per lane (one line each) over the weeks."""
    x, series = _lines([(w.lane, w.week, w.precision) for w in weeks])
    return line_chart(name, title, x, series, "precision", 1.0)


def rate_chart(days: list[LaneDay]) -> str:
    """Loss alerts per lane-hour, one line per lane over the days."""
    x, series = _lines([(d.lane, d.day, d.per_lane_hour) for d in days])
    top = max(d.per_lane_hour for d in days)
    return line_chart("lane-hour-rate", "Loss alerts per lane-hour", x, series, "loss alerts per lane-hour", top)


def _lines(points: list[tuple[str, str, float]]) -> tuple[list[str], dict[str, list[float | None]]]:
    """(lane, period, value) points as the periods in order and each lane's values over them."""
    x = sorted({period for _, period, _ in points})
    series: dict[str, list[float | None]] = {}
    for lane, period, value in points:
        series.setdefault(lane, [None] * len(x))[x.index(period)] = value
    return x, series
