"""How well a run's alerts (events.jsonl) agree with the truth about a scenario (truth.json).

An alert counts as found when an alert of the same type overlaps a true anomaly's time span,
give or take a tolerance; each true anomaly and each alert is used at most once, so a burst of
duplicate alerts for one non-scan costs precision instead of being free.

Beside precision and recall per type it reports what a store would see (`StoreRates`): false
loss alerts per 100 normal item passes and per 1,000 transactions, loss alerts per transaction,
and every error (missed anomaly or false alert) with its time, so it can be found in the report.
Double scans are customer-service events: scored as a type, never counted as loss alerts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, overload

from retail_reid.bounded_json import parse_object
from retail_reid.compat import StrEnum
from retail_reid.errors import ReidError
from retail_reid.gallery.integrity import file_sha256
from retail_reid.pipeline import records
from retail_reid.pipeline.harness.simulate import Anomaly, Pass, Truth
from retail_reid.pipeline.harness.simulate_pos import PosCase, PosCaseKind
from retail_reid.pipeline.pos import PosEventType
from retail_reid.pipeline.records import (
    ALERT_TYPES,
    MAX_EVENT_LINE_BYTES,
    PASS_ALERT_TYPES,
    BasketEvent,
    EventType,
    RecordError,
    event_from_dict,
)
from retail_reid.userfiles import read_user_file

# Always scored; "unknown_item" is scored only when the truth labels some, and the customer-service
# "double_scan" when the truth or the run has some.
SCORED_TYPES = tuple(str(t) for t in (EventType.NON_SCAN, EventType.PRODUCT_SWITCH, EventType.SCAN_WITHOUT_ITEM))
SPAN_TYPES = tuple(str(t) for t in ALERT_TYPES)  # event types with a time span: the alerts
LOSS_TYPES = tuple(str(t) for t in records.LOSS_TYPES)
PASS_TYPES = tuple(str(t) for t in PASS_ALERT_TYPES)  # anomalies of an item pass: the others are normal
POS_TYPES = frozenset(PosEventType)  # the `type` of a POS log's line: no events.jsonl line has one
DEFAULT_TOL = 1.0
TIMELINE_MARGIN_S = 30.0  # alerts this far outside the truth's time span cannot be about it
MAX_TRUTH_BYTES = 256 * 2**20  # a truth file of a day's lane is a few MB


class ScoreError(ReidError, ValueError):
    """A truth or events file that cannot be scored; the message names the file, line and field."""


@dataclass(frozen=True)
class Alert:
    """One time-span line of events.jsonl, as scoring (and `reid events`) needs it."""

    type: str
    t_start: float
    t_end: float
    seen_sku: str | None
    scanned_sku: str | None
    line: int
    confidence: float | None = None  # the seen SKU's calibrated confidence


@dataclass(frozen=True)
class BasketLine:
    """One `basket` line of events.jsonl: what the run saw and what it says the till scanned."""

    txn: str | None
    seen: Counter
    scanned: Counter
    line: int


@dataclass(frozen=True)
class Events:
    """Everything read from events.jsonl; `other` counts lines of types scoring has no use for."""

    alerts: tuple[Alert, ...]
    baskets: tuple[BasketLine, ...]
    other: Counter
    path: str = "events"


# --- reading -----------------------------------------------------------------------------------


SUMMARY = "summary.json"  # written beside events.jsonl by `reid replay` and `reid replay-batch`
SWAPPED = "give the truth file first, then the events file: reid score TRUTH EVENTS"


def _is_events_text(text: str) -> bool:
    """Whether text reads as events.jsonl: its first line an object with an event 'type' (no truth has one)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        obj = parse_object(first, "", max_bytes=MAX_EVENT_LINE_BYTES, error=ScoreError)
    except ScoreError:
        return False
    return "type" in obj and "anomalies" not in obj


def _is_truth_text(text: str) -> bool:
    """Whether text reads as truth.json: one object with the passes and anomalies of a scenario."""
    try:
        obj = parse_object(text, "", max_bytes=MAX_TRUTH_BYTES, error=ScoreError)
    except ScoreError:
        return False
    return "passes" in obj and "anomalies" in obj


def _read_text(path: Path, what: str) -> str:
    try:
        return read_user_file(path, what, ScoreError).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScoreError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _number(obj: dict, key: str, where: str) -> float:
    if key not in obj:
        raise ScoreError(f"{where}: missing field '{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ScoreError(f"{where}: field '{key}' must be a finite number, got {v!r}")
    return float(v)


@overload
def _sku(obj: dict, key: str, where: str, required: Literal[True]) -> str: ...
@overload
def _sku(obj: dict, key: str, where: str, required: bool = False) -> str | None: ...
def _sku(obj: dict, key: str, where: str, required: bool = False) -> str | None:
    v = obj.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise ScoreError(
            f"{where}: field '{key}' must be a non-empty string{'' if required else ' or null'}, got {v!r}"
        )
    return v


def _span(obj: dict, where: str) -> tuple[float, float]:
    start, end = _number(obj, "t_start", where), _number(obj, "t_end", where)
    if end < start:
        raise ScoreError(f"{where}: t_end {end} is before t_start {start}")
    return start, end


def _object(obj: object, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ScoreError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_truth(path: str | Path) -> Truth:
    """truth.json as written by `reid simulate` (or by hand for a recorded lane), fully checked."""
    p = Path(path)
    text = _read_text(p, "truth file")
    if _is_events_text(text):
        raise ScoreError(f"{p}: this is an events file (alerts, one per line), not a truth file; {SWAPPED}")
    top = parse_object(text, str(p), max_bytes=MAX_TRUTH_BYTES, error=ScoreError)
    for key in ("video", "fps", "size", "zone", "passes", "anomalies"):
        if key not in top:
            raise ScoreError(f"{p}: missing field '{key}'")
    if not isinstance(top["video"], str) or not top["video"]:
        raise ScoreError(f"{p}: field 'video' must be a file name")
    fps = _number(top, "fps", str(p))
    if fps <= 0:
        raise ScoreError(f"{p}: field 'fps' must be positive, got {fps}")
    for key, n in (("size", 2), ("zone", 4)):
        v = top[key]
        if not isinstance(v, list) or len(v) != n or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ScoreError(f"{p}: field '{key}' must be a list of {n} integers, got {v!r}")
    passes: list[Pass] = []
    anomalies: list[Anomaly] = []
    for key in ("passes", "anomalies"):
        if not isinstance(top[key], list):
            raise ScoreError(f"{p}: field '{key}' must be a list")
        for i, item in enumerate(top[key]):
            where = f"{p}: {key}[{i}]"
            obj = _object(item, where)
            start, end = _span(obj, where)
            txn = _sku(obj, "txn", where)
            if key == "passes":
                passes.append(
                    Pass(start, end, _sku(obj, "sku", where, required=True), _sku(obj, "scanned_sku", where), txn)
                )
                continue
            kind = obj.get("type")
            if kind not in SPAN_TYPES:
                raise ScoreError(f"{where}: field 'type' is {kind!r}, expected one of {', '.join(SPAN_TYPES)}")
            anomalies.append(_anomaly(obj, kind, start, end, txn, where))
    return Truth(
        top["video"],
        fps,
        tuple(top["size"]),
        tuple(top["zone"]),
        tuple(passes),
        tuple(anomalies),
        _pos_cases(top.get("pos_cases", []), p),
    )


def _anomaly(obj: dict, kind: str, start: float, end: float, txn: str | None, where: str) -> Anomaly:
    entry = obj.get("entry")
    if entry is not None and entry not in ("scanned", "keyed", "weighed"):
        raise ScoreError(f"{where}: field 'entry' is {entry!r}, expected scanned, keyed or weighed")
    weight = None if obj.get("weight_kg") is None else _number(obj, "weight_kg", where)
    return Anomaly(
        kind,
        start,
        end,
        _sku(obj, "seen_sku", where),
        _sku(obj, "scanned_sku", where),
        txn,
        entry=entry,
        weight_kg=weight,
        voided_sku=_sku(obj, "voided_sku", where),
    )


def _pos_cases(items: object, p: Path) -> tuple[PosCase, ...]:
    if not isinstance(items, list):
        raise ScoreError(f"{p}: field 'pos_cases' must be a list")
    out = []
    for i, item in enumerate(items):
        where = f"{p}: pos_cases[{i}]"
        obj = _object(item, where)
        case = obj.get("case")
        if not isinstance(case, str) or case not in PosCaseKind.__members__.values():
            raise ScoreError(f"{where}: field 'case' is {case!r}, expected one of {', '.join(PosCaseKind)}")
        start, end = _span(obj, where)
        out.append(
            PosCase(PosCaseKind(case), start, end, _sku(obj, "sku", where, required=True), _sku(obj, "txn", where))
        )
    return tuple(out)


def _counts(counts: dict[str, int]) -> Counter:
    return Counter({k: n for k, n in counts.items() if n})


def _recording_named_by(events_path: Path) -> Path | None:
    """The recording a replay's events came from, as the summary.json beside them names it (None
    without one: a live lane's events, a copied file)."""
    summary = events_path.parent / SUMMARY
    try:
        obj = parse_object(summary.read_bytes(), str(summary), max_bytes=MAX_TRUTH_BYTES, error=ScoreError)
    except (OSError, ScoreError):
        return None
    video = obj.get("video")
    return Path(video) if isinstance(video, str) and video else None


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths hold the same recording: the same file, or files of the same bytes."""
    if a.samefile(b):
        return True
    if not (a.is_file() and b.is_file()) or a.stat().st_size != b.stat().st_size:
        return False
    return file_sha256(a) == file_sha256(b)


def check_same_recording(truth_path: str | Path, truth: Truth, events: Events) -> None:
    """Refuse a replay's events of another recording than the truth's: the video its summary.json
    names must be the truth's own (the same file, or a copy of the same bytes). Where either is
    not at hand (a live lane's events, a truth whose video was not kept), `score` still refuses
    events that fall outside the truth's timeline or name none of its products."""
    ran_on = _recording_named_by(Path(events.path))
    described = Path(truth_path).parent / truth.video
    if ran_on is None:
        return
    try:
        if _same_file(ran_on, described):
            return
    except OSError:  # one of them is not here to compare
        return
    raise ScoreError(
        f"{events.path}: a run over {ran_on} (its {SUMMARY} says so), but the truth {truth_path} describes "
        f"{described}: another recording; score a run against its own recording's truth"
    )


def read_events(path: str | Path) -> Events:
    """events.jsonl from a replay (or a lane service), each line read as `records` reads it, with
    what scoring needs to refuse: a truth or a POS log given instead, a second basket of one
    transaction. Any malformed line is an error naming its line: a score that silently skipped
    alerts would be a wrong score. Lines of a type this version does not know are counted, not
    scored. An empty file is valid (no alerts)."""
    p = Path(path)
    raw = read_user_file(p, "events file", ScoreError)
    if _is_truth_text(raw.decode("utf-8-sig", errors="replace")):
        raise ScoreError(
            f"{p}: this is a truth file (a scenario's passes and anomalies), not an events file; {SWAPPED}"
        )
    alerts: list[Alert] = []
    baskets: list[BasketLine] = []
    other: Counter[str] = Counter()
    basket_lines: dict[str | None, int] = {}
    for lineno, data in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        where = f"{p}:{lineno}"
        if not data.strip():
            continue
        obj = parse_object(data, where, max_bytes=MAX_EVENT_LINE_BYTES, error=ScoreError)
        kind = obj.get("type")
        if not isinstance(kind, str) or not kind:
            raise ScoreError(f"{where}: missing or empty field 'type'")
        if kind in POS_TYPES and "ts" in obj and "t_start" not in obj:
            raise ScoreError(
                f"{where}: a till event ({kind!r} at 'ts'), not an alert: this is a POS log, not the events.jsonl "
                "of a run; give the events.jsonl that `reid replay` wrote"
            )
        if kind not in EventType.__members__.values():
            other[kind] += 1
            continue
        try:
            record = event_from_dict(obj, where)
        except RecordError as e:
            raise ScoreError(str(e)) from None
        if isinstance(record, BasketEvent):
            if record.txn in basket_lines:
                raise ScoreError(
                    f"{where}: a second basket for transaction {record.txn!r} "
                    f"(the first is on line {basket_lines[record.txn]})"
                )
            basket_lines[record.txn] = lineno
            baskets.append(BasketLine(record.txn, _counts(record.seen), _counts(record.scanned), lineno))
            continue
        alerts.append(
            Alert(
                type=kind,
                t_start=float(record.t_start),
                t_end=float(record.t_end),
                seen_sku=record.seen_sku,
                scanned_sku=record.scanned_sku,
                line=lineno,
                confidence=None if record.seen_confidence is None else float(record.seen_confidence),
            )
        )
    if other and not alerts and not baskets:
        found = ", ".join(f"{n} {k!r}" for k, n in other.most_common(3))
        raise ScoreError(
            f"{p}: none of its {other.total()} lines is an alert or a basket (types {found}): not the events.jsonl "
            "of a run"
        )
    return Events(tuple(alerts), tuple(baskets), other, str(p))


# --- matching and scoring ----------------------------------------------------------------------


def _gap(a: Anomaly | Alert | PosCase, b: Anomaly | Alert) -> float:
    """Seconds between two spans (0 when they overlap)."""
    return max(0.0, a.t_start - b.t_end, b.t_start - a.t_end)


def match(truth: list[Anomaly], alerts: list[Alert], tol: float) -> list[tuple[int, int]]:
    """A largest one-to-one pairing of true anomalies with alerts whose spans come within `tol`
    seconds, as (truth index, alert index), preferring the nearest alert. Kuhn's augmenting paths:
    a dozen lines here instead of SciPy on the edge box; spans are time-local, so paths stay short."""

    def nearest(t: Anomaly) -> list[int]:
        return sorted(
            (j for j, e in enumerate(alerts) if _gap(t, e) <= tol),
            key=lambda j: (_gap(t, alerts[j]), abs(alerts[j].t_start + alerts[j].t_end - t.t_start - t.t_end)),
        )

    near = [nearest(t) for t in truth]
    owner: dict[int, int] = {}  # alert index -> truth index

    def augment(i: int, tried: set[int]) -> bool:
        for j in near[i]:
            if j not in tried:
                tried.add(j)
                if j not in owner or augment(owner[j], tried):
                    owner[j] = i
                    return True
        return False

    for i in range(len(truth)):
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())


@dataclass(frozen=True)
class TypeScore:
    """Precision and recall of one alert type; None where undefined (nothing to divide by)."""

    type: str
    truth: int
    alerts: int
    matched: int
    missed: tuple[Anomaly, ...]
    false_alarms: tuple[Alert, ...]

    @property
    def precision(self) -> float | None:
        return self.matched / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        return self.matched / self.truth if self.truth else None


@dataclass(frozen=True)
class BasketCheck:
    """Transactions whose seen / scanned baskets the run reported exactly as the truth has them."""

    transactions: int
    reported: int
    seen_exact: int
    scanned_exact: int


class ErrorKind(StrEnum):
    MISSED = "missed"  # a true anomaly no alert found
    FALSE_ALERT = "false_alert"  # an alert no true anomaly explains


@dataclass(frozen=True, kw_only=True)
class ScoringError:
    """One thing the run got wrong, with its time so it can be looked at in the report; `line` is
    the false alert's line in events.jsonl."""

    kind: ErrorKind
    type: str
    t_start: float
    t_end: float
    seen_sku: str | None
    scanned_sku: str | None
    line: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class StoreRates:
    """What a store would see. Lanes add up with `+`, so a benchmark can pool them."""

    normal_passes: int = 0  # item passes that are no anomaly
    transactions: int = 0
    loss_alerts: int = 0  # alerts of LOSS_TYPES, true or false
    false_loss_alerts: int = 0
    customer_service: int = 0  # double_scan events, true or false
    false_customer_service: int = 0

    def __add__(self, other: StoreRates) -> StoreRates:
        return StoreRates(**{k: v + getattr(other, k) for k, v in vars(self).items()})

    @property
    def false_per_100_passes(self) -> float | None:
        return _ratio(100 * self.false_loss_alerts, self.normal_passes)

    @property
    def false_per_1000_transactions(self) -> float | None:
        return _ratio(1000 * self.false_loss_alerts, self.transactions)

    @property
    def alerts_per_transaction(self) -> float | None:
        return _ratio(self.loss_alerts, self.transactions)

    def to_dict(self) -> dict:
        return {
            **vars(self),
            "false_per_100_passes": self.false_per_100_passes,
            "false_per_1000_transactions": self.false_per_1000_transactions,
            "alerts_per_transaction": self.alerts_per_transaction,
        }


@dataclass(frozen=True, kw_only=True)
class CaseCheck:
    """The till cases of one kind planted in the lanes, and the false loss alerts within the
    tolerance of them (the target for the legitimate ones is none)."""

    case: PosCaseKind
    count: int
    false_loss_alerts: int


@dataclass(frozen=True)
class Score:
    tol: float
    types: tuple[TypeScore, ...]
    switches_matched: int
    switches_sku_right: int  # matched switches whose alert named the seen SKU right
    baskets: BasketCheck
    not_scored: dict[str, int]
    rates: StoreRates = StoreRates()
    errors: tuple[ScoringError, ...] = ()  # by time
    cases: tuple[CaseCheck, ...] = ()

    def to_dict(self) -> dict:
        return {
            "tol": self.tol,
            "types": {
                s.type: {
                    "truth": s.truth,
                    "alerts": s.alerts,
                    "matched": s.matched,
                    "precision": s.precision,
                    "recall": s.recall,
                    "missed": [asdict(a) for a in s.missed],
                    "false_alarm_lines": [e.line for e in s.false_alarms],
                }
                for s in self.types
            },
            "switch_seen_sku": {
                "matched": self.switches_matched,
                "right": self.switches_sku_right,
                "rate": _ratio(self.switches_sku_right, self.switches_matched),
            },
            "baskets": vars(self.baskets),
            "not_scored": self.not_scored,
            "store": self.rates.to_dict(),
            "pos_cases": {
                c.case: {"count": c.count, "false_loss_alerts": c.false_loss_alerts, "legit": c.case.legit}
                for c in self.cases
            },
            "errors": [e.to_dict() for e in self.errors],
        }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _true_baskets(truth: Truth) -> dict[str, tuple[Counter, Counter]]:
    """Per transaction: the SKUs that crossed the lane, and the SKUs the till scanned."""
    out: dict[str, tuple[Counter, Counter]] = {}
    for p in truth.passes:
        if p.txn is not None:
            seen, scanned = out.setdefault(p.txn, (Counter(), Counter()))
            seen[p.sku] += 1
            if p.scanned_sku:
                scanned[p.scanned_sku] += 1
    for a in truth.anomalies:  # scans that paid for no pass
        if a.type in ("scan_without_item", "double_scan") and a.txn is not None and a.scanned_sku:
            out.setdefault(a.txn, (Counter(), Counter()))[1][a.scanned_sku] += 1
    return out


def _check_baskets(truth: Truth, lines: tuple[BasketLine, ...]) -> BasketCheck:
    true = _true_baskets(truth)
    by_txn = {b.txn: b for b in lines}
    reported = [(by_txn[t], true[t]) for t in true if t in by_txn]
    return BasketCheck(
        len(true),
        len(reported),
        sum(b.seen == s for b, (s, _) in reported),
        sum(b.scanned == c for b, (_, c) in reported),
    )


def _check_they_belong(truth: Truth, events: Events) -> None:
    """Refuse events that cannot be about the truth's scenario (all-zero scores would read as a
    bad model): most alerts outside its timeline (a live run's Unix times not shifted back, a
    recording of something else), or alerts naming none of its products (another scenario)."""
    spans = [(p.t_start, p.t_end) for p in truth.passes] + [(a.t_start, a.t_end) for a in truth.anomalies]
    if not events.alerts or not spans:
        return
    lo, hi = min(s for s, _ in spans) - TIMELINE_MARGIN_S, max(e for _, e in spans) + TIMELINE_MARGIN_S
    outside = [a for a in events.alerts if a.t_end < lo or a.t_start > hi]
    if 2 * len(outside) > len(events.alerts):
        first, last = min(a.t_start for a in outside), max(a.t_end for a in outside)
        hint = (
            "; these look like Unix times: a live run's events must be shifted back by its clock origin"
            if first > 1e9
            else ""
        )
        raise ScoreError(
            f"{events.path}: {len(outside)} of its {len(events.alerts)} alerts lie at {first:.1f}-{last:.1f} s, "
            f"outside the truth's timeline ({lo + TIMELINE_MARGIN_S:.1f}-{hi - TIMELINE_MARGIN_S:.1f} s): "
            f"they cannot be from the run the truth describes{hint}"
        )
    truth_skus = {p.sku for p in truth.passes} | {p.scanned_sku for p in truth.passes}
    truth_skus |= {a.seen_sku for a in truth.anomalies} | {a.scanned_sku for a in truth.anomalies}
    named = {sku for a in events.alerts for sku in (a.seen_sku, a.scanned_sku) if sku is not None}
    if len(named) >= 2 and not named & truth_skus:
        raise ScoreError(
            f"{events.path}: none of the {len(named)} SKUs its alerts name ({', '.join(sorted(named)[:5])}) "
            "is a product of the truth's scenario: these alerts are from another scenario"
        )


def score(truth: Truth, events: Events, tol: float = DEFAULT_TOL) -> Score:
    """Score every alert type the truth or the run has (unknown_item only if the truth labels some)."""
    if not (math.isfinite(tol) and tol >= 0):
        raise ScoreError(f"tolerance must be a number of seconds >= 0, got {tol}")
    _check_they_belong(truth, events)
    present = {a.type for a in truth.anomalies} | ({"double_scan"} & {e.type for e in events.alerts})
    kinds = list(SCORED_TYPES) + sorted(present - set(SCORED_TYPES))
    not_scored = dict(events.other)
    for kind in set(SPAN_TYPES) - set(kinds):
        n = sum(e.type == kind for e in events.alerts)
        if n:
            not_scored[kind] = n
    types, switched, right = [], 0, 0
    for kind in kinds:
        t = [a for a in truth.anomalies if a.type == kind]
        e = [x for x in events.alerts if x.type == kind]
        pairs = match(t, e, tol)
        got_t, got_e = {i for i, _ in pairs}, {j for _, j in pairs}
        types.append(
            TypeScore(
                kind,
                len(t),
                len(e),
                len(pairs),
                tuple(a for i, a in enumerate(t) if i not in got_t),
                tuple(x for j, x in enumerate(e) if j not in got_e),
            )
        )
        if kind == "product_switch":
            switched = len(pairs)
            right = sum(e[j].seen_sku == t[i].seen_sku for i, j in pairs)
    unscored = [e for e in events.alerts if e.type in LOSS_TYPES and e.type not in kinds]  # none are true
    false_loss = [e for t in types if t.type in LOSS_TYPES for e in t.false_alarms] + unscored
    return Score(
        tol,
        tuple(types),
        switched,
        right,
        _check_baskets(truth, events.baskets),
        dict(sorted(not_scored.items())),
        _rates(truth, events, types, len(false_loss)),
        _errors(types, unscored),
        _cases(truth, false_loss, tol),
    )


def _rates(truth: Truth, events: Events, types: list[TypeScore], false_loss: int) -> StoreRates:
    unusual = {(a.t_start, a.t_end) for a in truth.anomalies if a.type in PASS_TYPES}
    txns = {p.txn for p in truth.passes} | {a.txn for a in truth.anomalies} | {c.txn for c in truth.pos_cases}
    txns.discard(None)
    service = [t for t in types if t.type == "double_scan"]
    return StoreRates(
        normal_passes=sum((p.t_start, p.t_end) not in unusual for p in truth.passes),
        transactions=len(txns),
        loss_alerts=sum(e.type in LOSS_TYPES for e in events.alerts),
        false_loss_alerts=false_loss,
        customer_service=sum(t.alerts for t in service),
        false_customer_service=sum(len(t.false_alarms) for t in service),
    )


def _errors(types: list[TypeScore], unscored: list[Alert]) -> tuple[ScoringError, ...]:
    said = ("type", "t_start", "t_end", "seen_sku", "scanned_sku")
    out = [ScoringError(kind=ErrorKind.MISSED, **{k: getattr(a, k) for k in said}) for t in types for a in t.missed]
    out += [
        ScoringError(kind=ErrorKind.FALSE_ALERT, line=e.line, **{k: getattr(e, k) for k in said})
        for e in [x for t in types for x in t.false_alarms] + unscored
    ]
    return tuple(sorted(out, key=lambda e: (e.t_start, e.t_end, e.type)))


def _cases(truth: Truth, false_loss: list[Alert], tol: float) -> tuple[CaseCheck, ...]:
    return tuple(
        CaseCheck(
            case=kind,
            count=sum(c.case is kind for c in truth.pos_cases),
            false_loss_alerts=sum(
                any(c.case is kind and _gap(c, e) <= tol for c in truth.pos_cases) for e in false_loss
            ),
        )
        for kind in PosCaseKind
        if any(c.case is kind for c in truth.pos_cases)
    )


def format_score(s: Score) -> str:
    """The score as a small table for people."""

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [
        f"matched within {s.tol:g} s",
        f"{'type':<18} {'truth':>6} {'alerts':>7} {'matched':>8} {'precision':>10} {'recall':>7}",
    ]
    rows += [
        f"{t.type:<18} {t.truth:>6} {t.alerts:>7} {t.matched:>8} {num(t.precision):>10} {num(t.recall):>7}"
        for t in s.types
    ]
    rows.append(
        f"product_switch: seen SKU named right in {s.switches_sku_right} of {s.switches_matched} matched"
        f" ({num(_ratio(s.switches_sku_right, s.switches_matched))})"
    )
    b = s.baskets
    rows.append(
        f"baskets: {b.reported} of {b.transactions} transactions reported; seen basket exact in {b.seen_exact},"
        f" scanned basket exact in {b.scanned_exact}"
    )
    if s.not_scored:
        rows.append("not scored: " + ", ".join(f"{n} {k}" for k, n in s.not_scored.items()))
    rows += format_rates(s.rates)
    if s.cases:
        rows.append(
            "till cases (false loss alerts near them): "
            + ", ".join(f"{c.case} {c.false_loss_alerts} of {c.count}" for c in s.cases)
        )
    if s.errors:
        rows.append(f"errors ({len(s.errors)}, by time):")
        rows += [
            f"  {e.t_start:8.2f}-{e.t_end:.2f}s  {e.kind:<11} {e.type:<17} seen {e.seen_sku or '-'}, "
            f"scanned {e.scanned_sku or '-'}" + ("" if e.line is None else f" (events line {e.line})")
            for e in s.errors
        ]
    return "\n".join(rows)


def format_rates(r: StoreRates) -> list[str]:
    """What a store would see, as lines for people (a benchmark prints its pooled rates with this too)."""

    def rate(x: float | None, digits: int) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    return [
        f"store view: {r.false_loss_alerts} false loss alerts of {r.loss_alerts}; "
        f"{rate(r.false_per_100_passes, 2)} per 100 normal item passes ({r.normal_passes}), "
        f"{rate(r.false_per_1000_transactions, 1)} per 1,000 transactions ({r.transactions}); "
        f"{rate(r.alerts_per_transaction, 2)} loss alerts per transaction",
        f"customer service: {r.customer_service} double scans reported, {r.false_customer_service} false",
    ]
