"""Property tests: whatever the lengths, arrival order and batch company, each caller of a padded
batch gets exactly what running its item alone gives; the token budget is never exceeded; dtypes and
devices are preserved; length-aware and FIFO forming agree. Then the same for the real MiniLM."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microbatch import Batcher
from microbatch.tensors import PadCollate

WAIT = 10.0  # bounds how long a broken run can hang; nothing waits for it to pass

PADS = {"input_ids": 99, "attention_mask": 0, "weights": -1.0}


# ---------------------------------------------------------------------- a deterministic model


@dataclass(frozen=True)
class Backend:
    """The few array operations the fake model needs, for torch or numpy."""

    name: str
    array: Callable[[Sequence[Any], Any], Any]
    cast: Callable[[Any, Any], Any]
    stack: Callable[[list[Any]], Any]
    equal: Callable[[Any, Any], bool]


TORCH = Backend(
    "torch",
    lambda values, dtype: torch.tensor(values, dtype=dtype),
    lambda x, dtype: x.to(dtype),
    lambda xs: torch.stack(xs, dim=-1),
    lambda a, b: torch.equal(a, b),
)
NUMPY = Backend(
    "numpy",
    lambda values, dtype: np.asarray(values, dtype=dtype),
    lambda x, dtype: x.astype(dtype),
    lambda xs: np.stack(xs, axis=-1),
    lambda a, b: bool(np.array_equal(a, b)),
)
DTYPES: dict[str, dict[str, list[Any]]] = {
    "torch": {
        "ids": [torch.int32, torch.int64],
        "mask": [torch.bool, torch.int64],
        "weights": [torch.float16, torch.float32],
    },
    "numpy": {"ids": [np.int32, np.int64], "mask": [np.bool_, np.int64], "weights": [np.float16, np.float32]},
}


def model(backend: Backend, features: dict[str, Any]) -> dict[str, Any]:
    """A per-token function that honours the attention mask, like a real encoder, plus a pooled output.

    Positions are counted among real tokens (as a left-padding model must do), so a caller's tokens
    come out the same whatever padding surrounds them; the padded positions hold other values, so a
    result that was not trimmed, or trimmed on the wrong side, differs from the item run alone.
    """
    ids, weights = features["input_ids"], features["weights"]
    mask = backend.cast(features["attention_mask"], ids.dtype)
    live = ids * mask
    position = mask.cumsum(1) - 1
    tokens = live.cumsum(1) * 1000 + position
    hidden = backend.stack([weights * backend.cast(mask, weights.dtype), weights])
    return {"tokens": tokens, "hidden": hidden, "pooled": live.sum(1)}


@dataclass
class Recorder:
    """Records what every call of the batch function was given; holds the first call until released."""

    backend: Backend
    release: threading.Event
    shapes: list[tuple[int, int]] = field(default_factory=list)
    real: list[int] = field(default_factory=list)
    kinds: list[dict[str, tuple[str, str]]] = field(default_factory=list)

    def record(self, features: dict[str, Any]) -> dict[str, Any]:
        rows, padded = features["input_ids"].shape
        self.shapes.append((int(rows), int(padded)))
        self.real.append(int((features["attention_mask"] != 0).sum()))
        self.kinds.append({name: describe(value) for name, value in features.items()})
        if len(self.shapes) == 1:
            self.release.wait(WAIT)  # the other callers queue up meanwhile, so later batches have company
        return model(self.backend, features)

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        return self.record(features)


class AsyncRecorder(Recorder):
    async def __call__(self, features: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return await asyncio.to_thread(self.record, features)


def describe(value: Any) -> tuple[str, str]:
    """An array's (dtype, device)."""
    return str(value.dtype), str(getattr(value, "device", "cpu"))


class CountingCollate:
    """Wraps a PadCollate and sets ``all_submitted`` once ``expected`` items have been measured at submission."""

    def __init__(self, inner: PadCollate, expected: int) -> None:
        self.inner = inner
        self.expected = expected
        self.seen = 0
        self.lock = threading.Lock()
        self.all_submitted = threading.Event()

    def size(self, item: Any) -> int:
        n = self.inner.size(item)
        with self.lock:
            self.seen += 1
            if self.seen == self.expected:
                self.all_submitted.set()
        return n

    def collate(self, items: list[Any]) -> Any:
        return self.inner.collate(items)

    def split(self, output: Any, items: list[Any]) -> Sequence[Any]:
        return self.inner.split(output, items)


# ---------------------------------------------------------------------- callers


def call_from_threads(b: Batcher[Any, Any], items: list[Any], order: list[int]) -> list[Any]:
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = b(items[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a caller hung"
    return results


def call_from_event_loop(b: Batcher[Any, Any], items: list[Any], order: list[int]) -> list[Any]:
    async def main() -> list[Any]:
        # Tasks start in creation order, so items are submitted exactly in `order`.
        tasks = {i: asyncio.create_task(b.acall(items[i])) for i in order}
        await asyncio.wait_for(asyncio.gather(*tasks.values()), WAIT)
        return [tasks[i].result() for i in range(len(items))]

    return asyncio.run(main())


# ---------------------------------------------------------------------- the property


@dataclass
class Case:
    backend: str
    ids_dtype: Any
    mask_dtype: Any
    weights_dtype: Any
    lengths: list[int]
    order: list[int]
    side: str
    trim: Any
    group_by_length: bool
    async_fn: bool
    from_threads: bool
    max_batch_size: int
    budget: int
    seed: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    backend = draw(st.sampled_from(["torch", "numpy"]))
    dtypes = DTYPES[backend]
    lengths = draw(st.lists(st.integers(1, 24), min_size=1, max_size=14))
    longest = max(lengths)
    return Case(
        backend=backend,
        ids_dtype=draw(st.sampled_from(dtypes["ids"])),
        mask_dtype=draw(st.sampled_from(dtypes["mask"])),
        weights_dtype=draw(st.sampled_from(dtypes["weights"])),
        lengths=lengths,
        order=draw(st.permutations(range(len(lengths)))),
        side=draw(st.sampled_from(["right", "left"])),
        trim=draw(st.sampled_from(["auto", frozenset({"tokens", "hidden"})])),
        group_by_length=draw(st.booleans()),
        async_fn=draw(st.booleans()),
        from_threads=draw(st.booleans()),
        max_batch_size=draw(st.integers(1, 8)),
        budget=draw(st.integers(longest, longest * 5)),
        seed=draw(st.integers(0, 2**16)),
    )


def make_items(case: Case, backend: Backend) -> list[dict[str, Any]]:
    rng = np.random.default_rng(case.seed)
    return [
        {
            "input_ids": backend.array(rng.integers(1, 90, n).tolist(), case.ids_dtype),
            "attention_mask": backend.array([1] * n, case.mask_dtype),
            "weights": backend.array(rng.uniform(-4, 4, n).tolist(), case.weights_dtype),
        }
        for n in case.lengths
    ]


def alone(backend: Backend, item: dict[str, Any]) -> dict[str, Any]:
    """The item run by itself: a batch of one, no padding, nothing to trim."""
    output = model(backend, {name: value[None] for name, value in item.items()})
    return {name: value[0] for name, value in output.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_each_caller_gets_what_its_item_gives_alone(case: Case) -> None:
    backend = TORCH if case.backend == "torch" else NUMPY
    items = make_items(case, backend)
    collate = CountingCollate(PadCollate(PADS, side=case.side, trim=case.trim), len(items))  # type: ignore[arg-type]
    # The first batch is held until every caller has submitted.
    recorder = (AsyncRecorder if case.async_fn else Recorder)(backend, collate.all_submitted)
    b = Batcher(
        recorder, collate=collate, max_batch_tokens=case.budget, max_batch_size=case.max_batch_size,
        group_by_length=case.group_by_length,
    )
    with b:
        caller = call_from_threads if case.from_threads else call_from_event_loop
        results = caller(b, items, case.order)

    for item, result in zip(items, results, strict=True):
        expected = alone(backend, item)
        assert list(result) == list(expected)
        for name, value in expected.items():
            got = result[name]
            assert type(got) is type(value), name
            assert describe(got) == describe(value), name
            assert tuple(got.shape) == tuple(value.shape), name
            assert backend.equal(got, value), (name, got, value)
    assert sum(rows for rows, _ in recorder.shapes) == len(items)  # no failures, so no retries
    for rows, padded in recorder.shapes:
        assert rows * padded <= case.budget
        assert rows <= case.max_batch_size
    item_kinds = {name: describe(value) for name, value in items[0].items()}
    assert all(kinds == item_kinds for kinds in recorder.kinds)
    padded_tokens = sum(rows * padded for rows, padded in recorder.shapes)
    assert b.stats.padding_efficiency == sum(recorder.real) / padded_tokens


# ---------------------------------------------------------------------- the real transformer


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(2, 40), min_size=2, max_size=8),
    side=st.sampled_from(["right", "left"]),
    group_by_length=st.booleans(),
    data=st.data(),
)
def test_minilm_on_tokenized_requests_matches_each_request_alone(
    minilm: Any, lengths: list[int], side: str, group_by_length: bool, data: st.DataObject
) -> None:
    order = data.draw(st.permutations(range(len(lengths))))
    transformer = minilm.transformer
    shapes: list[tuple[int, int]] = []

    def forward(features: dict[str, torch.Tensor]) -> torch.Tensor:
        rows, padded = features["input_ids"].shape
        shapes.append((rows, padded))
        if len(shapes) == 1:
            collate.all_submitted.wait(WAIT)  # hold the first batch so that the others queue together
        with torch.inference_mode():
            hidden: torch.Tensor = transformer(**features).last_hidden_state
            return hidden

    def request(tokens: int) -> dict[str, list[int]]:
        features = minilm.features(minilm.text_of(tokens))
        assert len(features["input_ids"]) == tokens
        # Positions among real tokens: BERT's default positions would shift under left padding.
        return {**features, "position_ids": list(range(tokens))}

    items = [request(n) for n in lengths]
    budget = max(lengths) * 3
    pads = {"input_ids": minilm.tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "position_ids": 0}
    collate = CountingCollate(PadCollate(pads, side=side), len(items))  # type: ignore[arg-type]
    with Batcher(forward, collate=collate, max_batch_tokens=budget, group_by_length=group_by_length) as b:
        results = call_from_event_loop(b, items, order)

    for item, result in zip(items, results, strict=True):
        with torch.inference_mode():
            features = {name: torch.tensor([values]) for name, values in item.items()}
            expected = transformer(**features).last_hidden_state[0]
        assert result.dtype == expected.dtype == torch.float32 and result.device == expected.device
        assert result.shape == expected.shape == (len(item["input_ids"]), 384)
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)
    assert all(rows * padded <= budget for rows, padded in shapes)
