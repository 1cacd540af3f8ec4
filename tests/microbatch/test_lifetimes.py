"""Lifetimes of per-instance batchers: an ``@batch`` method's batcher holds its instance weakly, so
throwaway objects are collected, and their batchers' workers end; every instance's batcher reports
under the method's name, so the metrics label set stays one series per method."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import pytest

from microbatch import BatcherClosed, batch

WAIT = 10.0  # bounds a join that should return almost at once


def workers_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"microbatch-{name}"]


def test_twenty_throwaway_objects_are_collected_and_their_workers_end(is_async: bool) -> None:
    if is_async:

        class Model:
            @batch(max_wait_ms=0, name="throwaway-async")
            async def predict(self, xs: list[int]) -> list[int]:
                await asyncio.sleep(0)
                return [x + 1 for x in xs]
    else:

        class Model:  # type: ignore[no-redef]
            @batch(max_wait_ms=0, name="throwaway-sync")
            def predict(self, xs: list[int]) -> list[int]:
                return [x + 1 for x in xs]

    name = Model.predict.name
    models = [Model() for _ in range(20)]
    assert [m.predict(i) for i, m in enumerate(models)] == list(range(1, 21))
    workers = workers_named(name)
    assert len(workers) == 20, "each instance runs its own worker while it lives"
    refs = [weakref.ref(m) for m in models]

    del models
    gc.collect()

    assert [r() for r in refs] == [None] * 20, "no batcher or worker keeps its instance alive"
    for worker in workers:
        worker.join(WAIT)
    assert [w for w in workers if w.is_alive()] == [], "every worker ended with its instance"


def test_an_instance_kept_alive_keeps_its_batcher_serving() -> None:
    class Model:
        @batch(max_wait_ms=0, name="kept")
        def predict(self, xs: list[int]) -> list[int]:
            return [2 * x for x in xs]

    model = Model()
    gc.collect()
    assert model.predict(1) == 2
    gc.collect()
    assert model.predict.map([1, 2]) == [2, 4]
    model.predict.close()


def test_a_call_on_a_batcher_whose_instance_was_collected_fails_saying_so() -> None:
    class Model:
        @batch(max_wait_ms=0, name="orphan")
        def predict(self, xs: list[int]) -> list[int]:
            return xs

    model = Model()
    orphan = model.predict
    worker_count = len(workers_named("orphan"))
    del model
    gc.collect()

    # The batcher closes from a helper thread; once closed it refuses calls with the reason.
    for closer in [t for t in threading.enumerate() if t.name == "microbatch-close-orphan"]:
        closer.join(WAIT)
    assert orphan.closed
    with pytest.raises(BatcherClosed, match="closed"):
        orphan(1)
    assert len(workers_named("orphan")) == worker_count == 0, "a batcher never called never started a worker"


def test_every_instances_batcher_carries_the_methods_name_and_the_wrapper_attributes() -> None:
    class Model:
        @batch(max_wait_ms=0)
        def predict(self, xs: list[int]) -> list[int]:
            """Predict each x."""
            return xs

    models = [Model() for _ in range(3)]
    names = {m.predict.name for m in models}
    assert names == {Model.predict.name} == {"test_every_instances_batcher_carries_the_methods_name_and_the_"
                                             "wrapper_attributes.<locals>.Model.predict"}
    assert {(vars(m.predict)["__name__"], m.predict.__doc__) for m in models} == {("predict", "Predict each x.")}
    assert sorted(map(id, Model.predict.instances())) == sorted(id(m.predict) for m in models)
    for m in models:
        m.predict.close()


def test_the_collector_sums_a_methods_instances_under_one_label() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from microbatch.prometheus import BatcherCollector

    class Model:
        @batch(max_wait_ms=0, name="summed")
        def predict(self, xs: list[int]) -> list[int]:
            return xs

    models = [Model() for _ in range(5)]
    for m in models:
        assert m.predict.map([1, 2]) == [1, 2]
    registry = prometheus_client.CollectorRegistry()
    registry.register(BatcherCollector(lambda: {"predict": Model.predict.instances()}))

    text = prometheus_client.generate_latest(registry).decode()
    completed = [line for line in text.splitlines() if line.startswith("microbatch_completed_items_total")]
    assert completed == ['microbatch_completed_items_total{batcher="predict"} 10.0']
    assert registry.get_sample_value("microbatch_batch_size_count", {"batcher": "predict"}) == 5
    for m in models:
        m.predict.close()

    del models, m
    gc.collect()
    text = prometheus_client.generate_latest(registry).decode()
    assert 'batcher="predict"' not in text, "collected instances leave the sum; no label is left behind"


def test_instances_without_weak_reference_support_get_an_error_naming_the_fix() -> None:
    class Slotted:
        __slots__ = ("__dict__",)

        @batch(max_wait_ms=0)
        def predict(self, xs: list[Any]) -> list[Any]:
            return xs

    with pytest.raises(TypeError, match=r"add '__weakref__' to the class's __slots__"):
        Slotted().predict  # noqa: B018
