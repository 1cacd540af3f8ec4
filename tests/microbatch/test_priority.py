"""Priority: requests of at most ``small_request_size`` items go ahead of larger ones, FIFO among
equals; a large map is split across batches and shares them with small requests; and a large
request is never overtaken by a small one that arrived more than the aging delay after it.

Each test holds the worker in a gate on a first batch, queues requests one by one (waiting until
each is queued, so their arrival order is known), then releases the gate and reads the batches.
"""

from __future__ import annotations

from typing import Any


def test_small_requests_are_served_before_a_large_request_queued_earlier_which_is_split_and_shares_batches(
    make_batcher: Any, gate: Any, hold: Any, enqueue: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, small_request_size=2, max_wait_ms=0, aging_ms=60_000, name="small-first")
    hold(b, gate)

    large, single, small_map = enqueue(b, ["L0", "L1", "L2", "L3", "L4", "L5"], "s", ["m0"])
    gate.open()

    assert large.result() == [("out", f"L{i}") for i in range(6)]
    assert single.result() == ("out", "s")
    assert small_map.result() == [("out", "m0")]
    # A batch carrying small requests is topped up with large items to 3/4 of max_batch_size.
    assert gate.calls == [["blocker"], ["s", "m0", "L0"], ["L1", "L2", "L3", "L4"], ["L5"]]


def test_requests_of_equal_priority_are_served_first_in_first_out(
    make_batcher: Any, gate: Any, hold: Any, enqueue: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, small_request_size=2, max_wait_ms=0, aging_ms=60_000, name="fifo")
    hold(b, gate)

    calls = enqueue(b, ["A0", "A1", "A2"], "a", ["B0", "B1", "B2"], ["b", "c"], "d", "e", ["f", "g"])
    gate.open()

    for call in calls:
        call.result()
    assert gate.calls[1:] == [
        ["a", "b", "c", "d"],  # small requests, in arrival order
        ["e", "f", "g"],  # a batch carrying small requests takes large items only up to 3/4 full
        ["A0", "A1", "A2", "B0"],  # then the large ones, in arrival order
        ["B1", "B2"],
    ]


def test_with_aging_ms_zero_every_request_is_served_in_arrival_order(
    make_batcher: Any, gate: Any, hold: Any, enqueue: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, small_request_size=2, max_wait_ms=0, aging_ms=0, name="aging-0")
    hold(b, gate)

    calls = enqueue(b, ["L0", "L1", "L2", "L3"], "s")
    gate.open()

    for call in calls:
        call.result()
    assert gate.calls[1:] == [["L0", "L1", "L2", "L3"], ["s"]]


def test_a_large_request_is_not_overtaken_by_small_ones_arriving_more_than_aging_ms_after_it(
    make_batcher: Any, gate: Any, fake_clock: Any, hold: Any, enqueue: Any
) -> None:
    b = make_batcher(gate, max_batch_size=4, small_request_size=2, max_wait_ms=0, aging_ms=100, name="aging")
    hold(b, gate)

    calls = enqueue(b, ["L0", "L1", "L2", "L3", "L4", "L5"])
    fake_clock.advance(0.050)
    calls += enqueue(b, "early")  # within the aging delay: may overtake
    fake_clock.advance(0.051)
    calls += enqueue(b, "late-0", ["late-1", "late-2"])  # past it: may not
    gate.open()

    for call in calls:
        call.result()
    assert gate.calls[1:] == [
        ["early", "L0", "L1"],  # the early small one overtook; the batch carrying it is 3/4 full
        ["L2", "L3", "L4", "L5"],  # the late small ones did not
        ["late-0", "late-1", "late-2"],
    ]


def test_the_default_aging_delay_is_sixteen_full_batch_run_times(
    make_batcher: Any, make_gate: Any, fake_clock: Any, hold: Any, enqueue: Any
) -> None:
    """With ``aging_ms=None`` a large request yields for 16 times the measured cost of a full batch."""

    def one_tenth_of_a_second(items: list[Any]) -> list[Any]:
        fake_clock.advance(0.100)
        return [("out", x) for x in items]

    gate = make_gate(one_tenth_of_a_second)
    gate.release()
    b = make_batcher(gate, max_batch_size=4, small_request_size=2, max_wait_ms=0, name="default-aging")
    assert b.map(list("wxyz")) == [("out", x) for x in "wxyz"]  # measures a full batch: 0.1 s, so aging is 1.6 s
    hold(b, gate)

    calls = enqueue(b, ["L0", "L1", "L2", "L3", "L4", "L5"])
    fake_clock.advance(1.599)
    calls += enqueue(b, "early")
    fake_clock.advance(0.002)
    calls += enqueue(b, "late")
    gate.open()

    for call in calls:
        call.result()
    assert gate.calls[2:] == [["early", "L0", "L1"], ["L2", "L3", "L4", "L5"], ["late"]]
