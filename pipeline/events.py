"""Lining item passes up with POS scans in time, and turning what does not add up into events.

All times here are on the POS clock. A scan belongs to at most one pass, within `window_before_s`
before the item enters and `window_after_s` after it leaves; passes that compete for scans (two
items in the zone together) get them jointly (`retail_reid.pipeline.association`). A pass is decided as soon
as no later scan could still belong to it (its window has closed), so alerts go out promptly
while a late scan is still matched; a scan is decided once no pass, finished or still in the
zone, could claim it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from retail_reid.pipeline.association import assign, claimable
from retail_reid.pipeline.basket import compare
from retail_reid.pipeline.config import BasketConfig, EventConfig
from retail_reid.pipeline.pos import PosEvent, PosEventType
from retail_reid.pipeline.recognition import Judgement, Recognition
from retail_reid.pipeline.types import BasketEvent, Event, EventType, ItemPass, PassRecord, Verdict

UNKNOWN = "unknown"  # the seen-basket entry for an item the gallery could not name


@dataclass
class _Scan:
    ts: float
    sku: str | None  # None: a barcode the catalogue does not know
    label: str  # what the scanned basket counts: the SKU, or "barcode:CODE"
    txn: str | None


@dataclass
class _Pass:
    item: ItemPass  # times already on the POS clock
    rec: Recognition


@dataclass
class _Txn:
    name: str
    start: float
    end: float | None = None  # None while open
    explicit: bool = False  # opened by a txn_start line, not inferred from its scans
    last_scan: float | None = None
    seen: Counter = field(default_factory=Counter)
    scanned: Counter = field(default_factory=Counter)


class EventBuilder:
    """Feed it scans (`add_pos`) and recognised passes (`add_pass`) in any interleaving, then
    `advance(now, open_starts)` with the POS-clock time the lane has seen up to and the start
    times of tracks still in the zone; it returns the events that can be decided."""

    def __init__(
        self,
        judge: Callable[[Recognition, str | None], Judgement],
        config: EventConfig | None = None,
        basket: BasketConfig | None = None,
        resolve_barcode: Callable[[str], str | None] = lambda code: None,
        save_evidence: Callable[[ItemPass], tuple[str, ...]] = lambda item: (),
        on_pass: Callable[[PassRecord], None] | None = None,
    ):
        self.judge = judge
        self.config = config or EventConfig()
        self.basket = basket or BasketConfig()
        self.resolve_barcode = resolve_barcode
        self.save_evidence = save_evidence
        self.on_pass = on_pass
        self.warnings: list[str] = []
        self._passes: list[_Pass] = []
        self._scans: list[_Scan] = []
        self._txns: dict[str, _Txn] = {}
        self._done_txns: set[str] = set()
        self._loose = _Txn("", -math.inf)  # passes and scans outside any transaction

    # --- input ---------------------------------------------------------------------------------

    def add_pos(self, event: PosEvent) -> None:
        if event.type is PosEventType.SCAN:
            self._add_scan(event)
        elif event.type is PosEventType.TXN_START:
            self._close_inferred(event.ts)
            txn = self._txn(event.txn, event.ts)
            txn.start, txn.explicit, txn.end = event.ts, True, None
        elif event.type is PosEventType.TXN_END:
            self._txn(event.txn, event.ts).end = event.ts

    def _add_scan(self, event: PosEvent) -> None:
        sku, label = event.sku, event.sku
        if sku is None:  # an unknown barcode is warned of when the lane receives the scan (lane.scan_warning)
            sku = self.resolve_barcode(event.barcode)
            label = sku or f"barcode:{event.barcode}"
        if event.txn is not None and event.txn not in self._txns:
            self._close_inferred(event.ts)
        txn = self._txn(event.txn, event.ts) if event.txn is not None else None
        if txn is not None:
            txn.last_scan = event.ts if txn.last_scan is None else max(txn.last_scan, event.ts)
            if not txn.explicit and txn.end is not None:
                txn.end = max(txn.end, event.ts)
        self._scans.append(_Scan(event.ts, sku, label, event.txn))
        self._scans.sort(key=lambda s: s.ts)

    def _txn(self, name: str, ts: float) -> _Txn:
        if name in self._done_txns:
            self.warnings.append(f"transaction {name!r} reappears at {ts:.2f}s after its basket was reported")
            self._done_txns.discard(name)
        return self._txns.setdefault(name, _Txn(name, ts))

    def _close_inferred(self, ts: float) -> None:
        """A new transaction begins: one known only from its scans ends at its last scan."""
        for txn in self._txns.values():
            if not txn.explicit and txn.end is None:
                txn.end = txn.start if txn.last_scan is None else txn.last_scan

    def add_pass(self, item: ItemPass, rec: Recognition) -> None:
        self._passes.append(_Pass(item, rec))

    # --- decisions -----------------------------------------------------------------------------

    def advance(self, now: float, open_starts: list[float]) -> list[Event | BasketEvent]:
        out: list[Event | BasketEvent] = []
        after = self.config.window_after_s
        picked = self._pick_scans(open_starts, now)
        for p in sorted(self._passes, key=lambda p: p.item.t_end):
            scan = picked.get(id(p))
            # A scan inside the pass's own span cannot be bettered by a later one: decide now.
            if now >= p.item.t_end + after or (scan is not None and p.item.t_start <= scan.ts <= p.item.t_end):
                out += self._decide_pass(p, scan)
        out += self._decide_scans(now, open_starts)
        out += self._baskets(now, open_starts)
        return out

    def flush(self) -> list[Event | BasketEvent]:
        """Decide everything still pending (end of the recording)."""
        out = self.advance(math.inf, [])
        for txn in self._txns.values():
            txn.end = math.inf if txn.end is None else txn.end
        out += self._baskets(math.inf, [])
        if self._loose.seen or self._loose.scanned:
            out.append(self._basket_event(None, self._loose))
            self._loose = _Txn("", -math.inf)
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
        self._passes.remove(p)
        item = p.item
        judgement = self.judge(p.rec, None if scan is None else scan.sku)
        if scan is not None:
            self._scans.remove(scan)
            if scan.sku is None:
                judgement = replace(judgement, verdict=Verdict.UNVERIFIED, scanned_score=None, scanned_confidence=None)
        txn_name = self._txn_of(scan.txn if scan is not None else None, (item.t_start + item.t_end) / 2)
        txn = self._txns.get(txn_name, self._loose) if txn_name is not None else self._loose
        txn.seen[judgement.seen_sku or UNKNOWN] += 1
        if scan is not None:
            txn.scanned[scan.label] += 1
        # What the pass record (every pass) and the alert (some) both say.
        said = dict(
            track_id=item.track_id,
            t_start=item.t_start,
            t_end=item.t_end,
            seen_sku=judgement.seen_sku,
            seen_score=judgement.seen_score,
            scanned_score=judgement.scanned_score,
            scan_ts=None if scan is None else scan.ts,
            txn=txn_name,
        )
        if self.on_pass is not None:
            self.on_pass(
                PassRecord(**said, verdict=judgement.verdict, scanned_sku=None if scan is None else scan.label)
            )
        alert = judgement.verdict.alert
        if alert is None:
            return []
        return [
            Event(
                **said,
                type=alert,
                seen_confidence=judgement.seen_confidence,
                scanned_sku=None if scan is None else scan.sku,
                scanned_confidence=judgement.scanned_confidence,
                evidence=self.save_evidence(item),
            )
        ]

    def _txn_of(self, named: str | None, ts: float) -> str | None:
        """The transaction a scan names, else the one open at `ts` (the latest begun, if several)."""
        if named is not None:
            return named
        b, a = self.config.window_before_s, self.config.window_after_s
        live = [t for t in self._txns.values() if t.start - b <= ts and (t.end is None or ts <= t.end + a)]
        return max(live, key=lambda t: t.start).name if live else None

    def _decide_scans(self, now: float, open_starts: list[float]) -> list[Event]:
        out = []
        for scan in list(self._scans):
            if now < scan.ts + self.config.window_before_s:
                break  # scans are sorted: later ones are not due either
            if any(self._claimable(scan, q.item.t_start, q.item.t_end) for q in self._passes):
                continue
            if any(self._claimable(scan, t0, now) for t0 in open_starts):
                continue
            self._scans.remove(scan)
            txn_name = self._txn_of(scan.txn, scan.ts)
            txn = self._txns.get(txn_name, self._loose) if txn_name is not None else self._loose
            txn.scanned[scan.label] += 1
            out.append(
                Event(
                    type=EventType.SCAN_WITHOUT_ITEM,
                    t_start=scan.ts,
                    t_end=scan.ts,
                    scanned_sku=scan.sku,
                    scan_ts=scan.ts,
                    txn=txn_name,
                )
            )
        return out

    def _baskets(self, now: float, open_starts: list[float]) -> list[BasketEvent]:
        out = []
        a = self.config.window_after_s
        for name, txn in list(self._txns.items()):
            if txn.end is None or now < txn.end + a:
                continue
            if any(p.item.t_start <= txn.end + a for p in self._passes) or any(t0 <= txn.end for t0 in open_starts):
                continue
            if any(s.txn == name for s in self._scans):
                continue
            del self._txns[name]
            self._done_txns.add(name)
            out.append(self._basket_event(name, txn))
        return out

    def _basket_event(self, name: str | None, txn: _Txn) -> BasketEvent:
        s = compare(txn.seen, txn.scanned, self.basket.tversky_alpha, self.basket.tversky_beta)
        return BasketEvent(
            txn=name,
            seen=dict(txn.seen),
            scanned=dict(txn.scanned),
            jaccard=s.jaccard,
            dice=s.dice,
            overlap=s.overlap,
            tversky=s.tversky,
        )
