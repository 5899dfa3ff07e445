"""Which scan belongs to which item pass: a joint assignment over passes whose scan windows overlap.

Deciding pass by pass goes wrong when two items are in the zone together: a scan that fits the
follower a little better is given to it, the follower then takes its own scan too (or is offered
both), and the lead item is left with none (a false non-scan plus a false scan-without-item).
Jointly, each group of passes and scans that compete is solved at once: as many passes as
possible get a scan (a till scans each item once), and among those assignments the one whose
scans sit closest to their passes (first in time outside the pass, then from its middle, where
the scanner is) wins.
"""

from __future__ import annotations

from collections.abc import Sequence

GAP_WEIGHT = 4.0  # a second outside a pass costs as much as four seconds off its middle
EXACT_MAX = 6  # passes in one competing group solved exactly (at most 7^6 branches); larger groups (rare) greedily


def cost(start: float, end: float, ts: float) -> float:
    """How badly a scan at `ts` fits a pass over [start, end]: its distance outside the span,
    weighted, plus its distance from the middle (the scanner sits mid-zone)."""
    gap = max(0.0, start - ts, ts - end)
    return GAP_WEIGHT * gap + abs(ts - (start + end) / 2)


def claimable(start: float, end: float, ts: float, before: float, after: float) -> bool:
    """Whether a scan at `ts` may belong to a pass over [start, end]: inside it, or up to `before`
    seconds before its start or `after` seconds after its end."""
    return start - before <= ts <= end + after


def assign(spans: Sequence[tuple[float, float]], scans: Sequence[float], before: float, after: float) -> dict[int, int]:
    """Span index -> scan index, each scan to a span that can claim it (`claimable`); each span and
    each scan is used at most once."""
    edges = {
        i: [j for j, ts in enumerate(scans) if claimable(start, end, ts, before, after)]
        for i, (start, end) in enumerate(spans)
    }
    result: dict[int, int] = {}
    for group in _groups(edges):
        solve = _exact if len(group) <= EXACT_MAX else _greedy
        result.update(solve(group, edges, spans, scans))
    return result


def _groups(edges: dict[int, list[int]]) -> list[list[int]]:
    """Spans that compete for a scan, directly or through others (connected components)."""
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(node: tuple[str, int]) -> tuple[str, int]:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for i, claimable in edges.items():
        for j in claimable:
            parent[root(("span", i))] = root(("scan", j))
    groups: dict[tuple[str, int], list[int]] = {}
    for i, claimable in edges.items():
        if claimable:
            groups.setdefault(root(("span", i)), []).append(i)
    return list(groups.values())


def _exact(
    group: list[int], edges: dict[int, list[int]], spans: Sequence[tuple[float, float]], scans: Sequence[float]
) -> dict[int, int]:
    best: tuple[int, float, dict[int, int]] = (0, 0.0, {})

    def search(k: int, used: set[int], matched: int, total: float, chosen: dict[int, int]) -> None:
        nonlocal best
        if k == len(group):
            if matched > best[0] or (matched == best[0] and total < best[1]):
                best = (matched, total, dict(chosen))
            return
        if matched + len(group) - k < best[0]:
            return  # cannot match as many as the best found
        i = group[k]
        for j in edges[i]:
            if j not in used:
                chosen[i] = j
                search(k + 1, used | {j}, matched + 1, total + cost(*spans[i], scans[j]), chosen)
                del chosen[i]
        search(k + 1, used, matched, total, chosen)

    search(0, set(), 0, 0.0, {})
    return best[2]


def _greedy(
    group: list[int], edges: dict[int, list[int]], spans: Sequence[tuple[float, float]], scans: Sequence[float]
) -> dict[int, int]:
    pairs = sorted((cost(*spans[i], scans[j]), i, j) for i in group for j in edges[i])
    out: dict[int, int] = {}
    taken: set[int] = set()
    for _, i, j in pairs:
        if i not in out and j not in taken:
            out[i] = j
            taken.add(j)
    return out
