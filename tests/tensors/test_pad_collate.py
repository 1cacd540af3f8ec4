"""PadCollate on its own and inside a Batcher: padding, list conversion, splitting, trimming, errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from microbatch import Batcher, BatchSizeMismatch, Collate, ItemTooLarge
from microbatch.tensors import PadCollate

PADS = {"input_ids": 7, "attention_mask": 0}


def tokens(ids: list[int], dtype: torch.dtype = torch.int64) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor(ids, dtype=dtype), "attention_mask": torch.ones(len(ids), dtype=dtype)}


def np_tokens(ids: list[int], dtype: Any = np.int64) -> dict[str, np.ndarray]:
    return {"input_ids": np.asarray(ids, dtype=dtype), "attention_mask": np.ones(len(ids), dtype=dtype)}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )


# ---------------------------------------------------------------------- import and backends


def test_importing_the_module_imports_neither_torch_nor_numpy() -> None:
    done = run_python(
        """
        import sys
        import microbatch.tensors
        from microbatch.tensors import PadCollate
        PadCollate().size({"input_ids": [1, 2], "attention_mask": [1, 1]})
        print(sorted(m for m in ("torch", "numpy") if m in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_works_with_numpy_when_torch_is_not_installed() -> None:
    # sys.modules["torch"] = None makes `import torch` fail exactly as if it were not installed.
    done = run_python(
        """
        import sys
        sys.modules["torch"] = None
        from microbatch import Batcher
        from microbatch.tensors import PadCollate

        seen = []
        def forward(features):
            seen.append({k: (type(v).__name__, str(v.dtype), v.shape) for k, v in features.items()})
            return features["input_ids"] * features["attention_mask"]

        with Batcher(forward, collate=PadCollate({"input_ids": 0, "attention_mask": 0}), max_batch_tokens=64) as b:
            out = b.map([
                {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]},
                {"input_ids": [8], "attention_mask": [1]},
            ])
        print([o.tolist() for o in out], type(out[0]).__name__, seen[0]["input_ids"])
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[5, 6, 7], [8]] ndarray ('ndarray', 'int64', (2, 3))"


# ---------------------------------------------------------------------- collate: padding


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float16, torch.bool])
def test_torch_features_are_padded_with_their_own_value_keeping_dtype(side: str, dtype: torch.dtype) -> None:
    pads = {"a": 1, "b": 0}
    collate = PadCollate(pads, side=side)  # type: ignore[arg-type]
    items = [
        {"a": torch.tensor([0, 1, 0], dtype=dtype), "b": torch.tensor([1, 1, 1], dtype=dtype)},
        {"a": torch.tensor([0], dtype=dtype), "b": torch.tensor([1], dtype=dtype)},
    ]
    batch = collate.collate(items)
    assert list(batch) == ["a", "b"]
    if side == "right":
        expected_a, expected_b = [[0, 1, 0], [0, 1, 1]], [[1, 1, 1], [1, 0, 0]]
    else:
        expected_a, expected_b = [[0, 1, 0], [1, 1, 0]], [[1, 1, 1], [0, 0, 1]]
    for name, expected in (("a", expected_a), ("b", expected_b)):
        assert batch[name].dtype == dtype
        assert batch[name].device == items[0][name].device
        assert torch.equal(batch[name], torch.tensor(expected, dtype=dtype))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.bool_])
def test_numpy_features_are_padded_with_their_own_value_keeping_dtype(side: str, dtype: Any) -> None:
    collate = PadCollate({"a": 1, "b": 0}, side=side)  # type: ignore[arg-type]
    items = [
        {"a": np.array([0, 1, 0], dtype=dtype), "b": np.array([1, 1, 1], dtype=dtype)},
        {"a": np.array([0], dtype=dtype), "b": np.array([1], dtype=dtype)},
    ]
    batch = collate.collate(items)
    padded_a = [0, 1, 1] if side == "right" else [1, 1, 0]
    padded_b = [1, 0, 0] if side == "right" else [0, 0, 1]
    assert batch["a"].dtype == dtype and batch["b"].dtype == dtype
    assert np.array_equal(batch["a"], np.array([[0, 1, 0], padded_a], dtype=dtype))
    assert np.array_equal(batch["b"], np.array([[1, 1, 1], padded_b], dtype=dtype))


def test_float_pad_values_and_non_default_devices_are_kept() -> None:
    # The meta device has no data but is a real device: a collation that forced cpu would move it.
    collate = PadCollate({"x": -1.5})
    meta = [{"x": torch.empty(n, dtype=torch.float16, device="meta")} for n in (2, 5)]
    assert collate.collate(meta)["x"].device.type == "meta"
    batch = collate.collate([
        {"x": torch.tensor([0.25], dtype=torch.float16)},
        {"x": torch.zeros(3, dtype=torch.float16)},
    ])
    assert batch["x"].tolist() == [[0.25, -1.5, -1.5], [0.0, 0.0, 0.0]]


def test_lists_follow_the_items_other_features() -> None:
    collate = PadCollate(PADS)
    torch_item = {"input_ids": torch.tensor([3, 4]), "attention_mask": [1, 1]}
    numpy_item = {"input_ids": np.array([3, 4]), "attention_mask": [1, 1]}
    assert isinstance(collate.collate([torch_item])["attention_mask"], torch.Tensor)
    assert isinstance(collate.collate([numpy_item])["attention_mask"], np.ndarray)


def test_all_list_items_become_torch_when_torch_is_imported_unless_configured() -> None:
    item = {"input_ids": [3, 4], "attention_mask": [1, 1]}
    batch = PadCollate(PADS).collate([item])
    assert isinstance(batch["input_ids"], torch.Tensor) and batch["input_ids"].dtype == torch.int64
    forced = PadCollate(PADS, list_type="numpy").collate([item])
    assert isinstance(forced["input_ids"], np.ndarray) and forced["input_ids"].dtype == np.int64


def test_a_batch_mixing_dtypes_raises_and_isolation_runs_the_items_apart() -> None:
    collate = PadCollate(PADS)
    mixed = [tokens([1, 2], torch.int32), tokens([3], torch.int64)]
    with pytest.raises(TypeError, match="feature 'input_ids' mixes torch.Tensor torch.int32 on cpu and "
                                        "torch.Tensor torch.int64 on cpu in one batch"):
        collate.collate(mixed)
    seen: list[torch.dtype] = []

    def forward(features: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(features["input_ids"].dtype)
        return features["input_ids"]

    with Batcher(forward, collate=collate, max_batch_tokens=64) as b:
        assert [o.tolist() for o in b.map(mixed)] == [[1, 2], [3]]
    assert seen == [torch.int32, torch.int64]  # each alone, each with its own dtype


# ---------------------------------------------------------------------- size: validation at submission


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        (["input_ids"], TypeError, "each item must be a dict of feature name"),
        ({}, ValueError, "empty item: it has no features"),
        ({"input_ids": [], "attention_mask": []}, ValueError, "empty item: its features have no tokens"),
        ({"input_ids": [1], "attention_mask": [1], "token_type_ids": [0]}, ValueError,
         r"feature\(s\) 'token_type_ids' have no pad value: add them to pad_values"),
        ({"input_ids": [1]}, ValueError, r"the item lacks feature\(s\) 'attention_mask' named in pad_values"),
        ({"input_ids": [1, 2], "attention_mask": [1]}, ValueError,
         "the features of one item must have equal lengths, got input_ids=2, attention_mask=1"),
        ({"input_ids": torch.ones(1, 3), "attention_mask": torch.ones(3)}, ValueError,
         r"feature 'input_ids' must be 1-D .* got shape \(1, 3\); tokenize one text without return_tensors"),
        ({"input_ids": [[1, 2]], "attention_mask": [1]}, TypeError,
         "feature 'input_ids' must be a flat list of numbers"),
        ({"input_ids": "hello", "attention_mask": [1]}, TypeError,
         "feature 'input_ids' must be a 1-D torch tensor, numpy array or list, got str"),
    ],
)
def test_malformed_items_are_refused_at_submission(item: Any, error: type[Exception], message: str) -> None:
    calls: list[Any] = []
    with Batcher(calls.append, collate=PadCollate(PADS), max_batch_tokens=64) as b:
        with pytest.raises(error, match=message):
            b(item)
        assert b.stats.submitted == 0
    assert calls == []


def test_size_is_the_items_length_and_an_item_over_the_budget_is_refused() -> None:
    collate = PadCollate(PADS)
    assert collate.size(tokens([1, 2, 3])) == 3
    assert collate.size(np_tokens([1])) == 1
    assert collate.size({"input_ids": (1, 2), "attention_mask": [1, 1]}) == 2
    with Batcher(lambda features: features["input_ids"], collate=collate, max_batch_tokens=4) as b:
        with pytest.raises(ItemTooLarge, match="the item has 5 tokens, more than batcher .* max_batch_tokens=4"):
            b(tokens([1, 2, 3, 4, 5]))
        assert b.stats.submitted == 0
        assert b(tokens([1, 2, 3, 4])).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pad_values": {}}, "pad_values must be a non-empty dict"),
        ({"pad_values": {"input_ids": None}}, "pad_values maps feature names"),
        ({"side": "middle"}, "side must be 'left' or 'right'"),
        ({"trim": "last_hidden_state"}, r"did you mean trim=\{'last_hidden_state'\}\?"),
        ({"trim": [1.5]}, "trim must be 'auto', True, False, or a collection"),
        ({"list_type": "jax"}, "list_type must be 'auto', 'torch' or 'numpy'"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        PadCollate(**options)


def test_it_is_a_collate_with_a_readable_repr() -> None:
    collate = PadCollate({"input_ids": 0}, side="left", trim={"hidden"})
    assert isinstance(collate, Collate)
    assert repr(collate) == "PadCollate(pad_values={'input_ids': 0}, side='left', trim={'hidden'}, list_type='auto')"


# ---------------------------------------------------------------------- split and trim


class Pair(NamedTuple):
    tokens: Any
    pooled: Any


@pytest.mark.parametrize("side", ["right", "left"])
def test_outputs_with_the_length_axis_are_trimmed_per_caller(side: str) -> None:
    collate = PadCollate(PADS, side=side)  # type: ignore[arg-type]
    items = [tokens([1, 2, 3]), tokens([4])]
    batch = collate.collate(items)
    hidden = torch.stack([batch["input_ids"], -batch["input_ids"]], dim=-1).to(torch.float16)  # (2, 3, 2)
    output = OrderedDict(hidden=hidden, pooled=batch["input_ids"].sum(1), extra=(batch["input_ids"], None))
    first, second = collate.split(output, items)
    assert type(first) is dict and list(first) == ["hidden", "pooled", "extra"]
    assert first["hidden"].tolist() == [[1, -1], [2, -2], [3, -3]]
    assert second["hidden"].tolist() == [[4, -4]] and second["hidden"].dtype == torch.float16
    assert first["pooled"].item() == 6 and second["pooled"].item() == 4 + 7 + 7  # pooled: not trimmed
    assert second["extra"][0].tolist() == [4] and second["extra"][1] is None
    pair_first, pair_second = collate.split(Pair(batch["input_ids"], batch["input_ids"].sum(1)), items)
    assert isinstance(pair_second, Pair) and pair_second.tokens.tolist() == [4]


def test_numpy_outputs_are_split_into_copies() -> None:
    collate = PadCollate(PADS, side="left")
    items = [np_tokens([1, 2, 3], np.int32), np_tokens([4], np.int32)]
    batch = collate.collate(items)
    output = batch["input_ids"] * 2
    first, second = collate.split(output, items)
    assert first.tolist() == [2, 4, 6] and second.tolist() == [8] and second.dtype == np.int32
    output[:] = 0  # the callers' results are their own, not views of the batch
    assert second.tolist() == [8] and second.base is None


def test_torch_results_hold_no_reference_to_the_batch() -> None:
    collate = PadCollate(PADS)
    items = [tokens([1, 2, 3]), tokens([4])]
    output = collate.collate(items)["input_ids"].float()
    _, second = collate.split(output, items)
    output.zero_()
    assert second.tolist() == [4.0]
    assert second.untyped_storage().nbytes() == second.numel() * second.element_size()


def test_auto_can_mistake_a_pooled_output_for_a_token_output_and_naming_outputs_fixes_it() -> None:
    items = [tokens([1, 2, 3, 4]), tokens([5, 6])]
    pooled = torch.arange(8.0).reshape(2, 4)  # width 4 == the padded length: "auto" cannot tell
    output = {"tokens": torch.zeros(2, 4), "pooled": pooled}
    guessed = PadCollate(PADS).split(output, items)
    assert guessed[1]["pooled"].shape == (2,)  # wrongly cut
    named = PadCollate(PADS, trim={"tokens"}).split(output, items)
    assert named[1]["pooled"].tolist() == [4.0, 5.0, 6.0, 7.0] and named[1]["tokens"].shape == (2,)
    assert PadCollate(PADS, trim=False).split(pooled, items)[1].shape == (4,)
    assert PadCollate(PADS, trim=True).split(pooled, items)[1].shape == (2,)
    positional = PadCollate(PADS, trim={0}).split((torch.zeros(2, 4), pooled), items)
    assert positional[1][0].shape == (2,) and positional[1][1].shape == (4,)


@pytest.mark.parametrize(
    ("trim", "output", "error", "message"),
    [
        ("auto", torch.zeros(3, 4), BatchSizeMismatch, "returned 3 outputs for a batch of 2 inputs"),
        ("auto", torch.tensor(1.0), ValueError, "the output is a scalar"),
        ("auto", [torch.zeros(2)], TypeError, "the output is a list: with PadCollate, fn must return a torch tensor"),
        ("auto", {"x": "text"}, TypeError, r"the output\['x'\] is a str"),
        (True, torch.zeros(2, 5), ValueError,
         r"has shape \(2, 5\): trim selects it, but its axis 1 is not the padded length 4"),
        ({"hidden"}, {"pooled": torch.zeros(2)}, ValueError,
         "trim names 'hidden', which the output lacks; it has 'pooled'"),
        ({"hidden"}, torch.zeros(2, 4), TypeError, "trim names outputs 'hidden', but the output is a single array"),
    ],
)
def test_outputs_that_cannot_be_split_raise_a_clear_error(
    trim: Any, output: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PadCollate(PADS, trim=trim).split(output, [tokens([1, 2, 3, 4]), tokens([5])])


def test_a_split_error_is_bisected_down_to_the_item_that_caused_it() -> None:
    sizes: list[int] = []

    def forward(features: dict[str, torch.Tensor]) -> Any:
        ids = features["input_ids"]
        sizes.append(len(ids))
        return ids[1:] if bool((ids == 0).any()) else ids  # a zero token makes the output one row short

    good, bad = tokens([1, 2]), tokens([0])
    with Batcher(forward, collate=PadCollate(PADS), max_batch_tokens=64) as b:
        # One map puts both items in one batch; its failure is bisected down to the bad item.
        with pytest.raises(BatchSizeMismatch, match="returned 0 outputs for a batch of 1 inputs"):
            b.map([good, bad])
        assert sizes == [2, 1, 1]
        assert [o.tolist() for o in b.map([good, good])] == [[1, 2], [1, 2]]


# ---------------------------------------------------------------------- inside a Batcher, sync and async


def test_async_forward_from_threads_and_an_event_loop() -> None:
    release = threading.Event()
    shapes: list[tuple[int, ...]] = []

    async def forward(features: dict[str, torch.Tensor]) -> torch.Tensor:
        shapes.append(tuple(features["input_ids"].shape))
        await asyncio.to_thread(release.wait, 10)  # the first batch waits until every caller has submitted
        return features["input_ids"] * 10

    items = [tokens(list(range(1, n + 1)), torch.int32) for n in (3, 1, 2, 5)]

    async def release_forward() -> None:
        release.set()

    async def callers(b: Batcher[Any, Any]) -> list[Any]:
        tasks = [asyncio.create_task(b.acall(item)) for item in items]
        # Tasks start in creation order and each submits before its first await, so this one
        # runs once all four callers are queued (or running).
        await asyncio.create_task(release_forward())
        return list(await asyncio.gather(*tasks))

    with Batcher(forward, collate=PadCollate(PADS), max_batch_tokens=10) as b:
        results = asyncio.run(callers(b))
        from_thread = b(tokens([9, 9]))
    assert [r.tolist() for r in results] == [[10, 20, 30], [10], [10, 20], [10, 20, 30, 40, 50]]
    assert all(r.dtype == torch.int32 for r in results) and from_thread.tolist() == [90, 90]
    assert all(rows * length <= 10 for rows, length in shapes)
    assert sum(rows for rows, _ in shapes) == 5
