"""Lining item passes up with POS scans in time, and turning what does not add up into events.

All times here are on the POS clock. A scan belongs to at most one pass, within `window_before_s`
before the item enters and `window_after_s` after it leaves; passes that compete for scans (two
items in the zone together) get them jointly (`retail_reid.pipeline.association`). A pass is decided as soon
as no later scan could still belong to it (its window has closed), so alerts go out promptly
while a late scan is still matched; a scan is decided once no pass, finished or still in the
zone, could claim it.

What a till does besides scanning once per item: a quantity scan (`qty` N) pays for up to N
passes of its product, the first by the usual window and the rest up to `qty_window_s` after it;
a `void` cancels the latest matching scan of its transaction, so a pass it paid for is reopened
and is a non-scan (saying it was voided) unless it is scanned again within `void_window_s` (as
the voided product, or as one it looks like: a corrected code); a
second scan of the product a pass already paid for is a double scan, a customer-service event
(the customer is overcharged), not a scan without an item. Scans no pass claims wait
`void_window_s` (or until their transaction ends) before they are reported, since a void may
still cancel them.

With `till_labels`, the builder also says which paid passes the till labelled unambiguously
(`TillLabel`, in `Decisions.labelled`) once no void can reopen them in time: the pass's own scan,
of a known SKU, quantity 1, is the only scan (voided ones included) its window holds, paid for no
other pass, claimable by no other pass or open track, and the pass was never reopened by a void.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypedDict

from retail_reid.compat import StrEnum
from retail_reid.pipeline.association import assign, claimable
from retail_reid.pipeline.basket import Basket
from retail_reid.pipeline.config import BasketConfig, EventConfig
from retail_reid.pipeline.pos import EntryMethod, PosEvent, PosEventType
from retail_reid.pipeline.recognition import Judgement, Recognition
from retail_reid.pipeline.records import BasketEvent, Event, EventType, PassRecord, Verdict
from retail_reid.pipeline.types import ItemPass


class _PassSaid(TypedDict):
    """What the pass record (every pass) and its alert (some) both say."""

    track_id: int
    t_start: float
    t_end: float
    seen_sku: str | None
    seen_score: float
    scanned_score: float | None
    scan_ts: float | None
    txn: str | None


class _ScanSaid(TypedDict):
    """What a scan without item and a double scan both say of the scan."""

    t_start: float
    t_end: float
    scanned_sku: str | None
    scan_ts: float
    txn: str | None
    entry: EntryMethod
    weight_kg: float | None


RECENT_SCANS = 256  # a void looks this many scans back for the one it cancels
DONE_TXNS_KEPT = 1024  # transactions whose basket was reported, remembered to warn if one reappears
PAYS = (Verdict.OK, Verdict.UNCONFIRMED, Verdict.UNVERIFIED)  # a spare quantity unit pays for such a pass


class _State(StrEnum):
    """Where a scan is in its life: waiting for a pass, paying for passes, waiting for a void
    before it is reported alone, reported alone, or cancelled by a void."""

    PENDING = "pending"
    USED = "used"
    HELD = "held"
    REPORTED = "reported"
    VOIDED = "voided"


@dataclass
class _Txn:
    name: str
    start: float
    end: float | None = None  # None while open
    explicit: bool = False  # opened by a txn_start line, not inferred from its scans
    last_scan: float | None = None
    basket: Basket = field(default_factory=Basket)


@dataclass(eq=False)
class _Pass:
    item: ItemPass  # times already on the POS clock
    rec: Recognition
    judgement: Judgement | None = None  # once decided
    seen_in: tuple[_Txn, str] | None = None  # the basket and entry it was counted under, once decided
    alerted: tuple[EventType, str | None] | None = None  # the alert it raised and for which scan, if any
    reopened: bool = False  # a void reopened it once: the till no longer labels it


@dataclass(eq=False)
class _Scan:
    ts: float
    sku: str | None  # None: a barcode the catalogue does not know
    label: str  # what the scanned basket counts: the SKU, or "barcode:CODE"
    txn: str | None
    qty: int = 1
    entry: EntryMethod = EntryMethod.SCANNED
    weight_kg: float | None = None
    state: _State = _State.PENDING
    paid: list[_Pass] = field(default_factory=list)  # the passes it pays for
    counted: _Txn | None = None  # the basket its quantity was counted in
    double_of: _Pass | None = None  # held: the pass that this scan charges a second time

    @property
    def spare(self) -> int:
        return self.qty - len(self.paid)


@dataclass(eq=False)
class _Reopened:
    """A pass whose scan was voided: unpaid unless scanned again before its void window closes."""

    p: _Pass
    voided: _Scan
    void_ts: float


@dataclass(frozen=True, kw_only=True)
class TillLabel:
    """A pass the till labelled unambiguously (its crops, the scanned SKU), with what the camera
    made of it when it was decided."""

    item: ItemPass
    sku: str
    scan_ts: float
    txn: str | None
    seen_sku: str | None
    seen_score: float


@dataclass(frozen=True, kw_only=True)
class Decisions:
    """What one `EventBuilder.advance` or `flush` decided: alerts and baskets (`events`), every
    item pass decided, alert or not (`passes`), problems with the POS events added since the
    call before (`warnings`), and, with `till_labels`, the passes the till labelled (`labelled`)."""

    events: list[Event | BasketEvent] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    labelled: list[TillLabel] = field(default_factory=list)


class EventBuilder:
    """Feed it scans (`add_pos`) and recognised passes (`add_pass`) in any interleaving, then
    `advance(now, open_starts)` with the POS-clock time the lane has seen up to and the start
    times of tracks still in the zone; it returns what can be decided (`Decisions`)."""

    def __init__(
        self,
        judge: Callable[[Recognition, str | None], Judgement],
        config: EventConfig | None = None,
        basket: BasketConfig | None = None,
        resolve_barcode: Callable[[str], str | None] = lambda code: None,
        save_evidence: Callable[[ItemPass], tuple[str, ...]] = lambda item: (),
        till_labels: bool = False,
    ):
        self.judge = judge
        self.till_labels = till_labels
        self._labelled: list[TillLabel] = []  # since the last decisions
        self._spans: deque[tuple[int, float, float]] = deque(maxlen=RECENT_SCANS)  # recent passes: track, start, end
        self.config = config or EventConfig()
        self.basket = basket or BasketConfig()
        self.resolve_barcode = resolve_barcode
        self.save_evidence = save_evidence
        self._warnings: list[str] = []  # since the last decisions, which hand them out
        self._records: list[PassRecord] = []  # passes decided since the last decisions
        self._passes: list[_Pass] = []
        self._scans: list[_Scan] = []  # pending, by time
        self._recent: deque[_Scan] = deque(maxlen=RECENT_SCANS)  # every scan, for voids to find
        self._spare: list[_Scan] = []  # quantity scans in use with units left
        self._held: list[_Scan] = []  # claimed by no pass, waiting out the void window
        self._reopened: list[_Reopened] = []
        self._cancelled: list[tuple[_Scan, float]] = []  # pending scans voided: (scan, void time)
        self._txns: dict[str, _Txn] = {}
        self._done_txns: dict[str, None] = {}  # the latest DONE_TXNS_KEPT, oldest first
        # Paid passes keep their crops (the evidence of an alert a void would raise, or of a double
        # scan) until a void can no longer reopen them in time, nor a second scan charge them: by id,
        # (lane time they are shed at, pass). After that `_recent`
        # still holds the pass, without crops, so memory per scan stays small.
        self._crops_kept: dict[int, tuple[float, _Pass]] = {}
        self._loose = _Txn("", -math.inf)  # passes and scans outside any transaction
        self._pending_out: list[Event] = []  # decided outside `advance` (a void re-scanned at once)

    # --- input ---------------------------------------------------------------------------------

    def add_pos(self, event: PosEvent) -> None:
        if event.type is PosEventType.SCAN:
            self._add_scan(event)
        elif event.type is PosEventType.VOID:
            self._void(event)
        elif event.type is PosEventType.TXN_START:
            self._close_inferred(event.ts)
            assert event.txn is not None  # parse_pos_event refuses a txn_start or txn_end without one
            txn = self._txn(event.txn, event.ts)
            txn.start, txn.explicit, txn.end = event.ts, True, None
        elif event.type is PosEventType.TXN_END:
            assert event.txn is not None  # as above
            self._txn(event.txn, event.ts).end = event.ts

    def _product(self, event: PosEvent) -> tuple[str | None, str]:
        """The SKU a scan or void names (None for a barcode the catalogue lacks) and its basket label."""
        if event.sku is not None:
            return event.sku, event.sku
        # an unknown barcode is warned of when the lane receives the scan (lane.scan_warning)
        assert event.barcode is not None  # parse_pos_event refuses a scan or void with neither
        sku = self.resolve_barcode(event.barcode)
        return sku, sku or f"barcode:{event.barcode}"

    def _add_scan(self, event: PosEvent) -> None:
        sku, label = self._product(event)
        if event.txn is not None and event.txn not in self._txns:
            self._close_inferred(event.ts)
        txn = self._txn(event.txn, event.ts) if event.txn is not None else None
        if txn is not None:
            txn.last_scan = event.ts if txn.last_scan is None else max(txn.last_scan, event.ts)
            if not txn.explicit and txn.end is not None:
                txn.end = max(txn.end, event.ts)
        scan = _Scan(event.ts, sku, label, event.txn, event.qty, event.entry, event.weight_kg)
        self._scans.append(scan)
        self._scans.sort(key=lambda s: s.ts)
        self._recent.append(scan)

    def _void(self, event: PosEvent) -> None:
        """Cancel the latest scan of the same product (and transaction, when the void names one)."""
        _, label = self._product(event)
        target = next(
            (
                s
                for s in reversed(self._recent)
                if s.state is not _State.VOIDED
                and s.label == label
                and s.ts <= event.ts
                and (event.txn is None or s.txn == event.txn)
            ),
            None,
        )
        if target is None:
            txn = "" if event.txn is None else f" in transaction {event.txn!r}"
            self._warnings.append(f"{event.where}void of {label} at {event.ts:.2f}s has no scan{txn} to cancel")
            return
        surplus = next((s for s in self._held if target.state is _State.USED and s.double_of in target.paid), None)
        target = surplus or target  # a pass scanned twice keeps one scan, whichever of the two the void names
        state, target.state = target.state, _State.VOIDED
        self._count(target, -1)
        if state is _State.PENDING:
            self._scans.remove(target)
            self._cancelled.append((target, event.ts))
        elif state is _State.HELD:
            self._held.remove(target)
        elif state is _State.USED:
            if target in self._spare:
                self._spare.remove(target)
            for p in target.paid:
                self._reopen(_Reopened(p, target, event.ts))

    def _txn(self, name: str, ts: float) -> _Txn:
        if name in self._done_txns:
            self._warnings.append(f"transaction {name!r} reappears at {ts:.2f}s after its basket was reported")
            del self._done_txns[name]
        return self._txns.setdefault(name, _Txn(name, ts))

    def _close_inferred(self, ts: float) -> None:
        """A new transaction begins: one known only from its scans ends at its last scan."""
        for txn in self._txns.values():
            if not txn.explicit and txn.end is None:
                txn.end = txn.start if txn.last_scan is None else txn.last_scan

    def add_pass(self, item: ItemPass, rec: Recognition) -> None:
        self._passes.append(_Pass(item, rec))
        if self.till_labels:
            self._spans.append((item.track_id, item.t_start, item.t_end))

    # --- decisions -----------------------------------------------------------------------------

    def advance(self, now: float, open_starts: list[float]) -> Decisions:
        """Decide what the lane's clock at `now` settles, with the tracks begun at `open_starts` still in the zone."""
        return self._decisions(self._advance(now, open_starts))

    def flush(self) -> Decisions:
        """Decide everything still pending (end of the recording)."""
        out = self._advance(math.inf, [])
        for txn in self._txns.values():
            txn.end = math.inf if txn.end is None else txn.end
        out += self._baskets(math.inf, [])
        if self._loose.basket:
            out.append(self._loose.basket.event(None, self.basket))
            self._loose = _Txn("", -math.inf)
        return self._decisions(out)

    def _decisions(self, events: list[Event | BasketEvent]) -> Decisions:
        """`events` with the passes decided and the warnings met since the last decisions."""
        decided = Decisions(events=events, passes=self._records, warnings=self._warnings, labelled=self._labelled)
        self._records, self._warnings, self._labelled = [], [], []
        return decided

    def _advance(self, now: float, open_starts: list[float]) -> list[Event | BasketEvent]:
        out: list[Event | BasketEvent] = []
        after = self.config.window_after_s
        picked = self._pick_scans(open_starts, now)
        for p in sorted(self._passes, key=lambda p: p.item.t_end):
            scan = picked.get(id(p))
            # A scan inside the pass's own span cannot be bettered by a later one: decide now.
            if now >= p.item.t_end + after or (scan is not None and p.item.t_start <= scan.ts <= p.item.t_end):
                out += self._decide_pass(p, scan)
        out += self._decide_scans(now, open_starts)
        out += self._release(now, open_starts)
        out += self._baskets(now, open_starts)
        self._shed_crops(now, open_starts)
        return out

    def _claimable(self, scan: _Scan, start: float, end: float) -> bool:
        return claimable(start, end, scan.ts, self.config.window_before_s, self.config.window_after_s)

    def _pick_scans(self, open_starts: list[float], now: float) -> dict[int, _Scan]:
        """The scan each waiting pass would take now (by id of the pass), assigned jointly with the
        other waiting passes and the tracks still in the zone (spans so far), which compete for them."""
        if not self._passes or not self._scans:
            return {}  # the usual frame: nothing to assign
        spans = [(p.item.t_start, p.item.t_end) for p in self._passes] + [(t0, now) for t0 in open_starts]
        chosen = assign(spans, [s.ts for s in self._scans], self.config.window_before_s, self.config.window_after_s)
        return {id(p): self._scans[chosen[i]] for i, p in enumerate(self._passes) if i in chosen}

    def _decide_pass(self, p: _Pass, scan: _Scan | None) -> list[Event]:
        """A pass whose window has closed (or whose scan lies inside it): paid by its scan, by a spare
        unit of a quantity scan, reopened if the scan it would have had was voided, else a non-scan."""
        self._passes.remove(p)
        if scan is not None:
            return self._settle(p, scan)
        for unit in self._spare_units(p):
            judgement = self.judge(p.rec, unit.sku)
            if unit.sku is None or judgement.verdict in PAYS:
                return self._settle(p, unit, judgement)
        voided = next(((s, t) for s, t in self._cancelled if self._claimable(s, p.item.t_start, p.item.t_end)), None)
        if voided is not None:
            self._reopen(_Reopened(p, *voided))
            return []
        return self._settle(p, None)

    def _spare_units(self, p: _Pass) -> list[_Scan]:
        """Quantity scans with units left that may pay for this pass, nearest first."""
        mid = (p.item.t_start + p.item.t_end) / 2
        txn = self._txn_of(None, mid)
        near = [
            s
            for s in self._spare + [s for s in self._scans + self._held if s.qty > 1]
            if claimable(p.item.t_start, p.item.t_end, s.ts, self.config.qty_window_s, self.config.window_after_s)
            and (s.txn is None or txn is None or s.txn == txn)
        ]
        return sorted(near, key=lambda s: abs(s.ts - mid))

    def _settle(
        self, p: _Pass, scan: _Scan | None, judgement: Judgement | None = None, void: _Reopened | None = None
    ) -> list[Event]:
        """Decide a pass for good: paid by `scan`, or unpaid (a non-scan; `void` says why, if voided)."""
        item = p.item
        judgement = judgement or self.judge(p.rec, None if scan is None else scan.sku)
        if scan is not None:
            self._use(scan, p)
            # until a void can come, and until a second scan of it can (a double scan shows them)
            self._keep_crops(p, max(self._due(scan.ts, scan.txn), item.t_end + self.config.window_after_s))
            if scan.sku is None:
                judgement = replace(judgement, verdict=Verdict.UNVERIFIED, scanned_score=None, scanned_confidence=None)
        p.judgement = judgement
        txn_name = self._txn_of(scan.txn if scan is not None else None, (item.t_start + item.t_end) / 2)
        if p.seen_in is not None:  # decided before its scan was voided: counted again below
            txn, entry = p.seen_in
            txn.basket.see(entry, -1)
        txn = self._txns.get(txn_name, self._loose) if txn_name is not None else self._loose
        p.seen_in = (txn, txn.basket.see(judgement.seen_sku))
        said = _PassSaid(
            track_id=item.track_id,
            t_start=item.t_start,
            t_end=item.t_end,
            seen_sku=judgement.seen_sku,
            seen_score=judgement.seen_score,
            scanned_score=judgement.scanned_score,
            scan_ts=None if scan is None else scan.ts,
            txn=txn_name,
        )
        self._records.append(
            PassRecord(
                **said,
                verdict=judgement.verdict,
                scanned_sku=None if scan is None else scan.label,
                view_quality=tuple(c.quality for c in item.crops),
            )
        )
        alert = judgement.verdict.alert
        said_before, p.alerted = p.alerted, None if alert is None else (alert, None if scan is None else scan.label)
        if alert is None or p.alerted == said_before:  # voided and scanned again as before: already alerted
            return []
        return [
            Event(
                **said,
                type=alert,
                seen_confidence=judgement.seen_confidence,
                scanned_sku=None if scan is None else scan.sku,
                scanned_confidence=judgement.scanned_confidence,
                evidence=self.save_evidence(item),
                entry=None if scan is None else scan.entry,
                weight_kg=None if scan is None else scan.weight_kg,
                voided_sku=None if void is None else void.voided.label,
                void_ts=None if void is None else void.void_ts,
            )
        ]

    def _use(self, scan: _Scan, p: _Pass) -> None:
        """`scan` pays for pass `p`: its whole quantity counts in the scanned basket at its first use."""
        if scan.state is _State.PENDING:
            self._scans.remove(scan)
        elif scan.state is _State.HELD:
            self._held.remove(scan)
        first = not scan.paid
        scan.state = _State.USED
        scan.paid.append(p)
        if first:
            scan.counted = self._basket_of(scan)
            self._count(scan, +1)
        if scan.spare > 0 and scan not in self._spare:
            self._spare.append(scan)
        elif scan.spare <= 0 and scan in self._spare:
            self._spare.remove(scan)

    def _basket_of(self, scan: _Scan) -> _Txn:
        name = self._txn_of(
            scan.txn, scan.ts if not scan.paid else (scan.paid[0].item.t_start + scan.paid[0].item.t_end) / 2
        )
        return self._txns.get(name, self._loose) if name is not None else self._loose

    def _count(self, scan: _Scan, sign: int) -> None:
        """Add (or take back, for a void) the scan's quantity in the basket it was counted in."""
        if scan.counted is not None:
            scan.counted.basket.scan(scan.label, sign * scan.qty)

    def _keep_crops(self, p: _Pass, until: float) -> None:
        """Keep the pass's crops until lane time `until` at least."""
        kept = self._crops_kept.get(id(p))
        self._crops_kept[id(p)] = (until if kept is None else max(until, kept[0]), p)

    def _shed_crops(self, now: float, open_starts: list[float]) -> None:
        """Drop the crops of paid passes whose void window has closed and that no scan still pending
        may charge a second time (a double scan shows them). A void after that still reopens
        the pass, and its non-scan alert goes out with the evidence still in memory (the lane frame,
        a clip), without crops. With `till_labels`, a pass the till labelled goes out first."""
        for key, (until, p) in list(self._crops_kept.items()):
            if now >= until and not any(self._claimable(s, p.item.t_start, p.item.t_end) for s in self._scans):
                label = self._till_label(p, now, open_starts) if self.till_labels else None
                if label is not None:
                    self._labelled.append(label)
                p.item = replace(p.item, crops=())
                del self._crops_kept[key]

    def _till_label(self, p: _Pass, now: float, open_starts: list[float]) -> TillLabel | None:
        """The till's label of a paid pass, if unambiguous (the module's docstring says when)."""
        item = p.item
        in_window = [s for s in self._recent if self._claimable(s, item.t_start, item.t_end)]
        if p.reopened or p.judgement is None or len(in_window) != 1:
            return None
        scan = in_window[0]
        if scan.state is not _State.USED or scan.paid != [p] or scan.qty != 1 or scan.sku is None:
            return None
        others = [(t0, t1) for track, t0, t1 in self._spans if track != item.track_id]
        if any(self._claimable(scan, t0, t1) for t0, t1 in others + [(t0, now) for t0 in open_starts]):
            return None
        j = p.judgement
        return TillLabel(
            item=item, sku=scan.sku, scan_ts=scan.ts, txn=scan.txn, seen_sku=j.seen_sku, seen_score=j.seen_score
        )

    def _reopen(self, r: _Reopened) -> None:
        """Wait for a re-scan of a voided pass; a scan no pass claimed near the void is taken at once."""
        r.p.reopened = True
        self._keep_crops(r.p, self._due(r.void_ts, r.voided.txn))
        rescan = next((s for s in self._held if s.double_of is None and self._rescans(s, r)), None)
        if rescan is None:
            self._reopened.append(r)
        else:
            self._pending_out.extend(self._settle(r.p, rescan))

    def _rescans(self, scan: _Scan, r: _Reopened) -> bool:
        """Whether `scan` (claimed by no pass) scans the voided pass again: near the void, in its
        transaction, of the voided product or of one the item looks like (a corrected code)."""
        if abs(scan.ts - r.void_ts) > self.config.void_window_s or scan.txn != r.voided.txn:
            return False
        return scan.label == r.voided.label or scan.sku is None or self.judge(r.p.rec, scan.sku).verdict in PAYS

    def _txn_of(self, named: str | None, ts: float) -> str | None:
        """The transaction a scan names, else the one open at `ts` (the latest begun, if several)."""
        if named is not None:
            return named
        b, a = self.config.window_before_s, self.config.window_after_s
        live = [t for t in self._txns.values() if t.start - b <= ts and (t.end is None or ts <= t.end + a)]
        return max(live, key=lambda t: t.start).name if live else None

    def _unclaimed(self, scan: _Scan, now: float, open_starts: list[float]) -> bool:
        """No pass, finished or still in the zone, can claim the scan any more."""
        return (
            now >= scan.ts + self.config.window_before_s
            and not any(self._claimable(scan, q.item.t_start, q.item.t_end) for q in self._passes)
            and not any(self._claimable(scan, t0, now) for t0 in open_starts)
        )

    def _decide_scans(self, now: float, open_starts: list[float]) -> list[Event]:
        """Scans no pass can claim: a re-scan of a voided pass, or held to be reported alone."""
        out = []
        for scan in list(self._scans):
            if now < scan.ts + self.config.window_before_s:
                break  # scans are sorted: later ones are not due either
            if not self._unclaimed(scan, now, open_starts):
                continue
            # the latest void before the scan first: a re-scan follows its void
            candidates = [r for r in self._reopened if self._rescans(scan, r)]
            reopened = min(candidates, key=lambda r: (r.void_ts > scan.ts, abs(scan.ts - r.void_ts)), default=None)
            if reopened is not None:
                self._reopened.remove(reopened)
                out += self._settle(reopened.p, scan)
                continue
            self._scans.remove(scan)
            scan.state = _State.HELD
            scan.double_of = self._double_of(scan)
            if scan.double_of is not None:  # its crops are the double scan's evidence, when it goes out
                self._keep_crops(scan.double_of, self._due(scan.ts, scan.txn))
            self._held.append(scan)
        self._cancelled = [(s, t) for s, t in self._cancelled if not self._unclaimed(s, now, open_starts)]
        return out

    def _double_of(self, scan: _Scan) -> _Pass | None:
        """The pass a scan charges a second time: one paid for by an earlier scan of the same product
        whose window holds this scan too."""
        for s in reversed(self._recent):
            if s is not scan and s.state is _State.USED and s.label == scan.label and s.txn == scan.txn:
                for p in s.paid:
                    if self._claimable(scan, p.item.t_start, p.item.t_end):
                        return p
        return None

    def _due(self, ts: float, txn: str | None) -> float:
        """When a void can no longer come for what happened at `ts`: `void_window_s` later, or
        when its transaction ended, if sooner."""
        known = self._txns.get(txn) if txn is not None else None
        due = ts + self.config.void_window_s
        return due if known is None or known.end is None else min(due, max(ts, known.end))

    def _release(self, now: float, open_starts: list[float]) -> list[Event]:
        """Report what no void can change any more: scans claimed by no pass, and voided passes
        not scanned again; forget quantity units no pass can take any more."""
        out, self._pending_out = self._pending_out, []
        starts = [p.item.t_start for p in self._passes] + open_starts

        def unit_wanted(s: _Scan) -> bool:  # a pass may still take one of the scan's spare units
            reach = s.ts + self.config.qty_window_s
            return s.qty > 1 and (now < reach or any(t <= reach for t in starts))

        self._spare = [s for s in self._spare if unit_wanted(s)]
        for scan in list(self._held):
            if now >= self._due(scan.ts, scan.txn) and not unit_wanted(scan):
                self._held.remove(scan)
                out.append(self._alone(scan))
        for r in list(self._reopened):
            if now >= self._due(r.void_ts, r.voided.txn):
                self._reopened.remove(r)
                out += self._settle(r.p, None, void=r)
        return out

    def _alone(self, scan: _Scan) -> Event:
        """A scan no pass paid for, as a double scan (a pass already paid for it) or a scan without item."""
        scan.state = _State.REPORTED
        scan.counted = self._basket_of(scan)
        self._count(scan, +1)
        txn_name = self._txn_of(scan.txn, scan.ts)
        said = _ScanSaid(
            t_start=scan.ts,
            t_end=scan.ts,
            scanned_sku=scan.sku,
            scan_ts=scan.ts,
            txn=txn_name,
            entry=scan.entry,
            weight_kg=scan.weight_kg,
        )
        double = scan.double_of
        j = None if double is None else double.judgement
        if double is None or j is None:
            return Event(type=EventType.SCAN_WITHOUT_ITEM, **said)
        return Event(
            type=EventType.DOUBLE_SCAN,
            **said,
            track_id=double.item.track_id,
            seen_sku=j.seen_sku,
            seen_score=j.seen_score,
            seen_confidence=j.seen_confidence,
            scanned_score=j.scanned_score,
            scanned_confidence=j.scanned_confidence,
            evidence=self.save_evidence(double.item),  # the one item the camera saw, charged twice
        )

    def _baskets(self, now: float, open_starts: list[float]) -> list[BasketEvent]:
        out = []
        a = self.config.window_after_s
        for name, txn in list(self._txns.items()):
            if txn.end is None or now < txn.end + a:
                continue
            if any(p.item.t_start <= txn.end + a for p in self._passes) or any(t0 <= txn.end for t0 in open_starts):
                continue
            if any(s.txn == name for s in self._scans + self._held) or any(
                r.voided.txn == name for r in self._reopened
            ):
                continue
            del self._txns[name]
            self._done_txns[name] = None
            if len(self._done_txns) > DONE_TXNS_KEPT:
                del self._done_txns[next(iter(self._done_txns))]
            out.append(txn.basket.event(name, self.basket))
        return out
