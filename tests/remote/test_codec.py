"""The wire codecs: what round-trips, what is refused (in the caller, before anything is sent)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
import torch

from microbatch.remote import MsgpackCodec, PickleCodec, RemoteError

from .conftest import ROOT


@pytest.mark.parametrize("value", [
    "text", "", b"\x00bytes", 0, -(2**63), 2**64 - 1, 1.5, True, None,
    {"k": [1, 2, {"nested": "x"}], "n": None}, {1: "int keys"}, ["é", "日本"],
])
def test_plain_values_round_trip(value: Any) -> None:
    codec = MsgpackCodec()
    assert codec.decode(codec.encode([value])) == [value]


def test_tuples_come_back_as_lists() -> None:
    codec = MsgpackCodec()
    assert codec.decode(codec.encode((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([[1, 2], [3, 4]], dtype=np.int64).T,  # not C-contiguous
    np.zeros((0, 384), dtype=np.float16),
    np.array([True, False]),
    np.array(["ab", "c"]),
])
def test_numpy_arrays_keep_dtype_and_shape(array: np.ndarray[Any, Any]) -> None:
    codec = MsgpackCodec()
    (back,) = codec.decode(codec.encode([array]))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_numpy_scalars_stay_numpy_scalars() -> None:
    codec = MsgpackCodec()
    back = codec.decode(codec.encode([np.float32(1.5), np.int8(-3)]))
    assert back == [1.5, -3] and type(back[0]) is np.float32 and type(back[1]) is np.int8


@pytest.mark.parametrize("tensor", [
    torch.arange(6, dtype=torch.float32).reshape(2, 3),
    torch.tensor([[1, 2], [3, 4]], dtype=torch.int64).t(),
    torch.ones(2, 2, dtype=torch.bfloat16) / 3,
    torch.zeros(0, 4),
    torch.tensor(7, dtype=torch.int32),
])
def test_torch_tensors_keep_dtype_and_shape(tensor: torch.Tensor) -> None:
    codec = MsgpackCodec()
    (back,) = codec.decode(codec.encode([tensor]))
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)


@pytest.mark.parametrize("value", [object(), {1, 2}, np.array([object()]), 2**70, lambda: None])
def test_values_msgpack_cannot_carry_are_refused_with_a_type_error_naming_the_fix(value: Any) -> None:
    with pytest.raises(TypeError, match="codec=") as refused:
        MsgpackCodec().encode([value])
    assert "cannot encode" in str(refused.value)


def test_plain_values_never_import_numpy_or_torch() -> None:
    code = ("import sys; from microbatch.remote import MsgpackCodec; c = MsgpackCodec(); "
            "assert c.decode(c.encode([{'a': [1.0, 'x']}])) == [{'a': [1.0, 'x']}]; "
            "assert 'numpy' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_an_unencodable_item_raises_in_the_caller_and_nothing_is_sent(
    remote: Callable[..., Any], r: redis.Redis
) -> None:
    rb = remote()
    with pytest.raises(TypeError, match="cannot encode"):
        rb(object())
    with pytest.raises(TypeError, match="cannot encode"):
        rb.map(["fine", object()])
    assert r.xlen("microbatch:t:requests") == 0
    assert rb.client_stats().submitted == 0


def test_a_msgpack_host_refuses_pickled_requests_unread(
    start_host: Callable[..., Any], remote: Callable[..., Any]
) -> None:
    start_host("echo")
    with pytest.raises(RemoteError, match="codec") as refused:
        remote(codec=PickleCodec())("x")
    assert refused.value.type_name == "TypeError"


def test_pickle_works_when_both_ends_opt_in(start_host: Callable[..., Any], remote: Callable[..., Any]) -> None:
    host = start_host("echo", "--codec", "pickle")
    assert remote(codec=PickleCodec())((1, frozenset({2}))) == [(1, frozenset({2})), host.pid]


def test_a_call_header_without_return_exceptions_is_the_five_fields_older_hosts_read() -> None:
    import msgpack

    from microbatch.remote._wire import Header

    plain = Header(7, False, 2.5, 3, "msgpack")
    assert len(msgpack.unpackb(plain.pack())) == 5 and Header.unpack(plain.pack()) == plain
    asks = Header(8, False, None, 2, "msgpack", return_exceptions=True)
    assert Header.unpack(asks.pack()) == asks
