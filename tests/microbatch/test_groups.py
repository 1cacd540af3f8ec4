"""Only compatible calls share a batch (``group_by``): a batch holds one group key; the top-priority request
anchors it, so small-request priority and the aging bound hold across groups and no group starves; a
key function that fails fails only its caller; each group keeps its own cost model."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest

from microbatch import Batcher
from microbatch._cost import CostModel
from microbatch._groups import GroupCosts, group_keys
from microbatch._policy import WaitPolicy

from .conftest import Call, FakeClock, Gate

first = operator.itemgetter(0)  # items are (key, name): the group is the first element


def keys_of(call: list[Any]) -> set[Any]:
    return {item[0] for item in call if item != "blocker"}


def test_a_batch_only_holds_items_of_the_anchors_key(
    make_batcher: Callable[..., Batcher[Any, Any]], gate: Gate, hold: Callable[..., Call], enqueue: Callable[..., Any]
) -> None:
    b = make_batcher(gate, max_batch_size=8, group_by=lambda item: "blocker" if item == "blocker" else item[0])
    blocker = hold(b, gate)
    requests = [("de", 1), ("fr", 1), ("de", 2), [("fr", 2), ("de", 3)], ("en", 1), ("de", 4)]
    calls = enqueue(b, *requests)
    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert [c.result() for c in calls] == [
        [("out", x) for x in r] if isinstance(r, list) else ("out", r) for r in requests
    ]
    assert gate.calls[1:] == [
        [("de", 1), ("de", 2), ("de", 4)],  # the map's ("de", 3) comes after its ("fr", 2), in order
        [("fr", 1), ("fr", 2)],
        [("de", 3)],
        [("en", 1)],
    ]


def test_a_map_with_mixed_keys_runs_in_runs_of_one_key_and_returns_in_order(
    make_batcher: Callable[..., Batcher[Any, Any]], gate: Gate, hold: Callable[..., Call], enqueue: Callable[..., Any]
) -> None:
    b = make_batcher(gate, max_batch_size=8, small_request_size=0, group_by=lambda item: str(item)[0])
    blocker = hold(b, gate)
    (mapped,) = enqueue(b, ["a1", "a2", "b1", "a3", "b2"])
    gate.open()
    assert blocker.result() == ("out", "blocker")
    assert mapped.result() == [("out", x) for x in ["a1", "a2", "b1", "a3", "b2"]]
    assert gate.calls[1:] == [["a1", "a2"], ["b1"], ["a3"], ["b2"]]


def test_small_request_priority_holds_across_groups(
    make_batcher: Callable[..., Batcher[Any, Any]], gate: Gate, hold: Callable[..., Call], enqueue: Callable[..., Any]
) -> None:
    b = make_batcher(gate, max_batch_size=4, small_request_size=1, aging_ms=60_000, group_by=first)
    blocker = hold(b, gate)
    large, small = enqueue(b, [("bulk", i) for i in range(6)], ("chat", 0))
    gate.open()
    assert blocker.result() == ("out", "blocker") and small.result() == ("out", ("chat", 0))
    assert large.result() == [("out", ("bulk", i)) for i in range(6)]
    assert gate.calls[1] == [("chat", 0)]  # the small call anchors the next batch, alone in its group


def test_the_aging_bound_holds_across_groups(
    make_batcher: Callable[..., Batcher[Any, Any]], gate: Gate, fake_clock: FakeClock, queued: Callable[..., None]
) -> None:
    # max_wait_ms=0: the blocker "ran" for the second the clock advanced, which the adaptive wait would learn
    b = make_batcher(gate, max_batch_size=4, small_request_size=1, aging_ms=500, max_wait_ms=0, group_by=first)
    blocker = Call(b, ("x", "blocker"))
    gate.wait_blocked()
    large = Call(b.map, [("bulk", i) for i in range(3)])
    queued(b, 3)
    fake_clock.advance(1.0)  # later than the aging delay: a small call arriving now is behind the large one
    small = Call(b, ("chat", 0))
    queued(b, 4)
    gate.open()
    assert blocker.result() and large.result() and small.result()
    assert gate.calls[1:] == [[("bulk", 0), ("bulk", 1), ("bulk", 2)], [("chat", 0)]]


def test_no_group_starves_while_another_keeps_arriving(
    make_batcher: Callable[..., Batcher[Any, Any]], gate: Gate, enqueue: Callable[..., list[Call]]
) -> None:
    b = make_batcher(gate, max_batch_size=2, group_by=first)
    blocker = Call(b, ("busy", -1))
    gate.wait_blocked()
    calls = enqueue(b, *[("busy", i) for i in range(4)])
    (rare,) = enqueue(b, ("rare", 0))
    for round_ in range(3):  # the busy group gets two new calls before every batch, more than it can run
        calls += enqueue(b, ("busy", 10 + 2 * round_), ("busy", 11 + 2 * round_))
        gate.release()
        gate.wait_calls(round_ + 2)
    gate.open()
    assert rare.result() == ("out", ("rare", 0)) and blocker.result()
    assert all(c.result() for c in calls)
    # the four busy calls that arrived before it run first, then the rare one's batch, whatever came later
    assert gate.calls[1:4] == [[("busy", 0), ("busy", 1)], [("busy", 2), ("busy", 3)], [("rare", 0)]]


def test_a_failing_or_unhashable_key_fails_only_that_caller_and_queues_nothing(
    make_batcher: Callable[..., Batcher[Any, Any]],
) -> None:
    def key(item: Any) -> Any:
        if item == "boom":
            raise LookupError("no language")
        return [item] if item == "list" else item

    b = make_batcher(lambda items: items, group_by=key)
    with pytest.raises(LookupError, match="no language"):
        b("boom")
    with pytest.raises(TypeError, match=r"group_by of batcher .* unhashable key for item 1: \['list'\]; return a hash"):
        b.map(["ok", "list"])
    assert b.stats.submitted == 0
    assert b("fine") == "fine"


def test_group_by_must_be_callable() -> None:
    with pytest.raises(TypeError, match="group_by must be a function of one item returning its group key"):
        Batcher(lambda items: items, group_by="lang")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="size_of must be a function of one item returning its length"):
        Batcher(lambda items: items, size_of=3)  # type: ignore[call-overload]


def test_length_aware_forming_keeps_groups_apart_and_under_the_budget(
    make_batcher: Callable[..., Batcher[Any, Any]], gate: Gate, queued: Callable[..., None]
) -> None:
    b = make_batcher(gate, max_batch_size=4, max_batch_tokens=12, size_of=lambda item: len(item[1]), group_by=first)
    blocker = Call(b, ("x", "blocker"))
    gate.wait_blocked()
    items = [("de", "aaaa"), ("fr", "bb"), ("de", "cc"), ("fr", "dddddd"), ("de", "e"), ("fr", "f"), ("de", "ggg")]
    calls = [Call(b, item) for item in items]
    queued(b, len(items))
    gate.open()
    assert blocker.result() and [c.result() for c in calls] == [("out", item) for item in items]
    for call in gate.calls[1:]:
        assert len(keys_of(call)) == 1 and max(len(x[1]) for x in call) * len(call) <= 12, gate.calls
    assert sorted(x for call in gate.calls[1:] for x in call) == sorted(items)


def test_group_keys_are_computed_per_item() -> None:
    assert group_keys(first, [("a", 1), ("b", 2)], "n") == ["a", "b"]


def test_each_group_keeps_its_own_cost_model_and_old_groups_are_forgotten() -> None:
    costs = GroupCosts(limit=2)
    for n in (1, 4):
        costs.add("steps=50", n, 0.5 + 0.1 * n, None)
        costs.add("steps=10", n, 0.1 + 0.02 * n, 40 * n)
    slow, fast = costs.batch_cost("steps=50"), costs.batch_cost("steps=10")
    assert slow is not None and fast is not None
    assert slow.estimate(8) == pytest.approx(1.3) and fast.estimate(8) == pytest.approx(0.26)
    assert costs.token_cost("steps=50") is None and costs.token_cost("steps=10") is not None
    costs.add("steps=25", 1, 0.3, None)  # a third group pushes out the least recently run one
    assert costs.batch_cost("steps=50") is None and len(costs) == 2


def test_the_wait_for_company_reads_the_cost_of_the_group_that_will_run() -> None:
    policy = WaitPolicy(None, None, 8)
    for n in (1, 2):
        policy.cost.add(n, 0.0001 * n)  # the batcher-wide model: no fixed cost, never worth waiting
    expensive = CostModel()
    for n in (1, 2):
        expensive.add(n, 0.5 + 0.01 * n)  # this group's batches cost half a second each, whatever their size
    for i in range(20):
        policy.arrived(100.0 + i * 0.01, 1)  # a steady arrival rate of about 100 items a second
    now = 100.2
    assert policy.company_delay(now, lambda default: default) == 0.0
    assert policy.company_delay(now, lambda default: default, expensive) > 0.0
