"""Joint scan-to-pass assignment (retail_reid.pipeline.association), on the cases that pass-by-pass choice got wrong."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from retail_reid.pipeline.association import EXACT_MAX, assign, cost


def test_lead_item_scanned_while_the_follower_crosses_the_middle_keeps_its_scan():
    # from a simulated lane: the lead item (3.93-5.13) was scanned at 4.97, nearer the follower's
    # middle (4.53-5.87); the follower's own scan came at 5.28
    assert assign([(3.933, 5.133), (4.533, 5.867)], [4.966, 5.278], 1.0, 0.5) == {0: 0, 1: 1}


def test_among_full_assignments_the_scans_nearest_their_passes_win():
    spans = [(32.667, 33.667), (33.133, 34.267)]
    assert assign(spans, [33.531, 33.684], 1.0, 0.5) == {0: 0, 1: 1}
    assert assign(spans, [33.684, 33.531], 1.0, 0.5) == {0: 1, 1: 0}  # the order scans are listed in does not matter


def test_one_scan_for_two_passes_goes_to_the_one_that_was_crossing_the_middle():
    assert assign([(10.0, 11.0), (10.6, 11.6)], [11.05], 1.0, 0.5) == {1: 0}
    assert assign([(10.0, 11.0), (10.6, 11.6)], [10.45], 1.0, 0.5) == {0: 0}


def test_scans_outside_every_window_and_passes_without_scans_stay_unassigned():
    assert assign([(1.0, 2.0), (20.0, 21.0)], [2.4, 9.0], 1.0, 0.5) == {0: 0}
    assert assign([], [1.0], 1.0, 0.5) == {} and assign([(1.0, 2.0)], [], 1.0, 0.5) == {}


def test_cost_prefers_inside_the_span_then_the_middle():
    assert cost(0.0, 2.0, 1.0) == 0.0 and cost(0.0, 2.0, 0.5) == 0.5
    assert cost(0.0, 2.0, 2.1) > cost(0.0, 2.0, 0.2)  # just outside is worse than far off-centre inside


def brute_force(spans, scans, before, after):
    """Every assignment: most passes matched, then least total cost."""
    best = (-1, 0.0)

    def go(i, used, matched, total):
        nonlocal best
        if i == len(spans):
            if matched > best[0] or (matched == best[0] and total < best[1] - 1e-12):
                best = (matched, total)
            return
        go(i + 1, used, matched, total)
        for j, ts in enumerate(scans):
            if j not in used and spans[i][0] - before <= ts <= spans[i][1] + after:
                go(i + 1, used | {j}, matched + 1, total + cost(*spans[i], ts))

    go(0, frozenset(), 0, 0.0)
    return best


spans_st = st.lists(
    st.tuples(st.floats(0, 30), st.floats(0.3, 2.5)).map(lambda t: (t[0], t[0] + t[1])), max_size=EXACT_MAX
)


@settings(max_examples=150, deadline=None)
@given(spans=spans_st, scans=st.lists(st.floats(0, 33), max_size=7))
def test_assignment_is_optimal_and_valid(spans, scans):
    got = assign(spans, scans, 1.0, 0.5)
    assert len(set(got.values())) == len(got)  # a scan goes to one pass at most
    for i, j in got.items():
        assert spans[i][0] - 1.0 <= scans[j] <= spans[i][1] + 0.5
    matched, total = brute_force(spans, scans, 1.0, 0.5)
    assert len(got) == matched
    assert abs(sum(cost(*spans[i], scans[j]) for i, j in got.items()) - total) < 1e-9


def test_a_long_queue_of_overlapping_passes_is_still_assigned_validly():
    spans = [(0.5 * k, 0.5 * k + 1.2) for k in range(EXACT_MAX + 12)]  # one big competing group: greedy
    scans = [0.5 * k + 0.6 for k in range(EXACT_MAX + 12)]
    got = assign(spans, scans, 1.0, 0.5)
    assert len(got) == len(spans) and len(set(got.values())) == len(got)
