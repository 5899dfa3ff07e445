"""What the simulated till does besides scanning each item once: quantity scans over several
identical items, voids (re-scanned, not kept, or kept: unpaid), keyed and weighed produce (and the
produce switch: a cheaper code keyed for what lies on the scale) and double scans. Each case is
recorded in truth.json (`pos_cases`), so scoring can tell how many loss alerts the legitimate ones
drew (none is the target)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from retail_reid.compat import StrEnum
from retail_reid.pipeline.pos import EntryMethod, PosEvent, PosEventType

QTY_RUN = (2, 3)  # identical items one quantity scan pays for
VOID_AFTER_S = (1.5, 3.0)  # a void comes this long after the scan it cancels
RESCAN_AFTER_S = (0.5, 1.5)  # ... and the re-scan this long after the void
DOUBLE_AFTER_S = (0.3, 0.6)  # a double scan this long after the first, while the item is still near
WEIGHT_KG = (0.2, 2.0)
QUIET_S = 1.5  # the next item enters no sooner than this after a case's last till event
QTY_REACH_S = 8.0  # a quantity run ends before an item entering later than this after its scan (qty_window_s is 10)


class PosCaseKind(StrEnum):
    """A till case planted in a simulated lane: the legitimate ones must draw no loss alert; the
    others are anomalies (`void_kept` a non_scan, `keyed_switch` a product_switch, `double_scan`
    a customer-service event)."""

    QUANTITY = "quantity"  # one scan with qty N for N identical items passing one after another
    VOID_RESCANNED = "void_rescanned"  # scanned, voided, scanned again
    VOID_NOT_KEPT = "void_not_kept"  # a scan voided with no item in the lane
    DOUBLE_VOIDED = "double_voided"  # scanned twice, the second voided
    KEYED = "keyed"  # produce keyed or weighed with its own code
    VOID_KEPT = "void_kept"  # scanned, voided, not scanned again, the item taken: unpaid
    DOUBLE_SCAN = "double_scan"  # scanned twice: the customer is overcharged
    KEYED_SWITCH = "keyed_switch"  # a cheaper code keyed for what lies on the scale

    @property
    def legit(self) -> bool:
        return self not in (PosCaseKind.VOID_KEPT, PosCaseKind.DOUBLE_SCAN, PosCaseKind.KEYED_SWITCH)


@dataclass(frozen=True)
class PosCase:
    """One planted till case, from the first pass it concerns (or its first till event) to its last till event."""

    case: PosCaseKind
    t_start: float
    t_end: float
    sku: str
    txn: str | None  # None: read from a truth file that names no transaction


@dataclass(frozen=True)
class TillRates:
    """Shares of passes given each case (rounded to counts, as the other rates)."""

    quantity: float = 0.0  # passes paid by a quantity scan, in runs of 2-3 identical items
    void: float = 0.0  # legitimate voids: re-scanned, not kept, or a double scan voided (in turn)
    void_kept: float = 0.0  # voided and kept: unpaid
    double_scan: float = 0.0
    keyed: float = 0.0  # produce keyed or weighed with its own code
    keyed_switch: float = 0.0  # produce keyed as another SKU

    def check(self, error: Callable[[str], Exception]) -> None:
        """Refuse a rate outside [0, 1], naming its flag, with the caller's error type."""
        for name, value in vars(self).items():
            if not 0.0 <= value <= 1.0:
                raise error(f"{name.replace('_', '-')} rate must be between 0 and 1, got {value}")

    @property
    def share(self) -> float:
        """The share of passes given a case (a scan voided without item rides on no pass)."""
        return sum(vars(self).values()) - self.void / 3


_LEGIT_VOIDS = (PosCaseKind.VOID_RESCANNED, PosCaseKind.VOID_NOT_KEPT, PosCaseKind.DOUBLE_VOIDED)


@dataclass
class _Run:
    """A quantity run in progress: its SKU, where its scan lies in the POS list, the items it has paid for so far."""

    sku: str
    scan_index: int
    start: float
    end: float
    paid: int
    left: int


@dataclass
class TillPlan:
    """Which pass gets which till case. Nothing is drawn when every rate is 0, so lanes without
    till cases stay the same byte for byte."""

    cases: dict[int, PosCaseKind] = field(default_factory=dict)  # pass index -> case
    runs: dict[int, int] = field(default_factory=dict)  # first pass of a quantity run -> its length
    not_kept: int = 0  # scans voided with no item, placed in the gaps after item groups
    gaps: set[int] = field(default_factory=set)  # the item groups they follow
    busy_until: float = 0.0  # the last till event planted so far
    _run: _Run | None = None  # the quantity run in progress

    @classmethod
    def draw(cls, rates: TillRates, kinds: np.ndarray, txns: list[np.ndarray], rng: np.random.Generator) -> TillPlan:
        """Give cases to passes that are otherwise normal (`kinds` "ok"); a quantity run stays in one transaction."""
        plan = cls()
        n = len(kinds)
        if not any(vars(rates).values()):
            return plan
        txn_of = {int(i): t for t, idx in enumerate(txns) for i in idx}
        free = [int(i) for i in rng.permutation(n) if kinds[i] == "ok"]
        want = round(rates.quantity * n)
        for start in list(free):
            k = min(want, int(rng.integers(QTY_RUN[0], QTY_RUN[1] + 1)))
            run = range(start, start + k)
            if k >= 2 and all(i in free and txn_of.get(i) == txn_of[start] for i in run):
                plan.runs[start] = k
                for i in run:
                    plan.cases[i] = PosCaseKind.QUANTITY
                    free.remove(i)
                want -= k
        voids = [_LEGIT_VOIDS[i % 3] for i in range(round(rates.void * n))]
        plan.not_kept = voids.count(PosCaseKind.VOID_NOT_KEPT)
        on_pass: list[PosCaseKind] = [c for c in voids if c is not PosCaseKind.VOID_NOT_KEPT]
        for case, rate in (
            (PosCaseKind.VOID_KEPT, rates.void_kept),
            (PosCaseKind.DOUBLE_SCAN, rates.double_scan),
            (PosCaseKind.KEYED, rates.keyed),
            (PosCaseKind.KEYED_SWITCH, rates.keyed_switch),
        ):
            on_pass += [case] * round(rate * n)
        for case, i in zip(on_pass, free, strict=False):
            plan.cases[i] = case
        return plan

    def place_gaps(self, n_groups: int, taken: set[int], rng: np.random.Generator) -> None:
        """Choose the item groups after which a scan is made and voided with no item in the lane."""
        if self.not_kept:
            free = [int(g) for g in rng.permutation(n_groups) if int(g) not in taken]
            self.gaps = set(free[: self.not_kept])

    def pairable(self, *passes: int) -> bool:
        """Items with a till case cross alone, so their till events are theirs beyond doubt."""
        return not any(i in self.cases for i in passes)

    def item_sku(self, index: int, drawn: str) -> str:
        """The SKU of pass `index`: the run's for the later items of a quantity run."""
        if self.cases.get(index) is PosCaseKind.QUANTITY and index not in self.runs and self._run is not None:
            return self._run.sku
        return drawn

    def settle(
        self, plan: Any, index: int, rng: np.random.Generator, anomaly: type, switch_to: Callable[[str], str]
    ) -> None:
        """Turn the plain scan just planned for pass `index` (`plan.pos[-1]`, its pass `plan.passes[-1]`)
        into its case: events, truth pass, anomaly and `plan.cases` entry. `anomaly` builds truth anomalies."""
        case = self.cases.get(index)
        if case is None:
            return
        scan, done = plan.pos[-1], plan.passes[-1]
        sku, txn, start, end = done.sku, done.txn, done.t_start, done.t_end

        def event(ts: float, kind: PosEventType = PosEventType.SCAN, **extra: Any) -> PosEvent:
            self.busy_until = max(self.busy_until, round(ts, 3))
            return PosEvent(ts=round(ts, 3), type=kind, sku=extra.pop("sku", sku), txn=txn, **extra)

        def later(ts: float, span: tuple[float, float]) -> float:
            return ts + float(rng.uniform(*span))

        if case is PosCaseKind.QUANTITY:
            self._quantity(plan, index, start, end)
            return
        last = scan.ts
        if case in (PosCaseKind.KEYED, PosCaseKind.KEYED_SWITCH):
            entry = EntryMethod.WEIGHED if rng.random() < 0.5 else EntryMethod.KEYED
            weight = round(float(rng.uniform(*WEIGHT_KG)), 3) if entry is EntryMethod.WEIGHED else None
            code = sku if case is PosCaseKind.KEYED else switch_to(sku)
            plan.pos[-1] = event(scan.ts, sku=code, entry=entry, weight_kg=weight)
            if case is PosCaseKind.KEYED_SWITCH:
                plan.passes[-1] = replace(done, scanned_sku=code)
                plan.anomalies.append(
                    anomaly("product_switch", start, end, sku, code, txn, entry=entry, weight_kg=weight)
                )
        elif case in (PosCaseKind.DOUBLE_SCAN, PosCaseKind.DOUBLE_VOIDED):
            second = min(later(scan.ts, DOUBLE_AFTER_S), end + 0.4)
            last = max(second, scan.ts + 0.1)
            plan.pos.append(event(last))
            if case is PosCaseKind.DOUBLE_SCAN:
                plan.anomalies.append(anomaly("double_scan", round(last, 3), round(last, 3), sku, sku, txn))
            else:
                last = later(last, VOID_AFTER_S)
                plan.pos.append(event(last, PosEventType.VOID))
        else:  # the voids on a pass
            last = later(scan.ts, VOID_AFTER_S)
            plan.pos.append(event(last, PosEventType.VOID))
            if case is PosCaseKind.VOID_RESCANNED:
                last = later(last, RESCAN_AFTER_S)
                plan.pos.append(event(last))
            else:
                plan.passes[-1] = replace(done, scanned_sku=None)
                plan.anomalies.append(anomaly("non_scan", start, end, sku, None, txn, voided_sku=sku))
        plan.cases.append(PosCase(case, start, round(max(last, end), 3), sku, txn))

    def _quantity(self, plan: Any, index: int, start: float, end: float) -> None:
        """The first item of a run takes a quantity scan, the others none; an item entering too
        long after the scan (after a pause, or a scan without item between) ends the run early and
        keeps its own scan."""
        done, run = plan.passes[-1], self._run
        if index in self.runs:
            run = self._run = _Run(done.sku, len(plan.pos) - 1, start, end, 1, self.runs[index] - 1)
        elif run is not None and start <= plan.pos[run.scan_index].ts + QTY_REACH_S:
            plan.pos.pop()
            run.paid, run.left, run.end = run.paid + 1, run.left - 1, end
        else:
            del self.cases[index]
            if run is None:
                return
            run.left = 0
        if run.left == 0:
            self._run = None
            if run.paid > 1:  # else its first item was scanned as usual
                plan.pos[run.scan_index] = replace(plan.pos[run.scan_index], qty=run.paid)
                plan.cases.append(PosCase(PosCaseKind.QUANTITY, run.start, run.end, run.sku, done.txn))

    def after_group(
        self, plan: Any, group: int, clear: float, t_free: float, txn: str, sku: str, rng: np.random.Generator
    ) -> float:
        """Plant a scan voided with no item after `group` if it is one of the gaps; the next item
        group enters no sooner than `QUIET_S` after the last till event. Returns when it may enter."""
        if group in self.gaps:
            ts = round(clear + 1.5, 3)
            void = round(ts + float(rng.uniform(*VOID_AFTER_S)), 3)
            plan.pos += [
                PosEvent(ts=ts, type=PosEventType.SCAN, sku=sku, txn=txn),
                PosEvent(ts=void, type=PosEventType.VOID, sku=sku, txn=txn),
            ]
            plan.cases.append(PosCase(PosCaseKind.VOID_NOT_KEPT, ts, void, sku, txn))
            self.busy_until = max(self.busy_until, void)
        return max(t_free, self.busy_until + QUIET_S)
