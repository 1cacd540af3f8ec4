"""Codecs: how items and results become bytes on the wire (msgpack by default, pickle only on request)."""

from __future__ import annotations

import pickle
import sys
import threading
from typing import Any, Protocol, runtime_checkable

import msgpack

__all__ = ["Codec", "MsgpackCodec", "PickleCodec"]

# msgpack extension type codes for arrays: [dtype, shape, raw bytes], C order, little-endian as numpy writes.
_NUMPY = 1
_TORCH = 2


@runtime_checkable
class Codec(Protocol):
    """Turns a list of items (or results) into bytes and back. Both ends of a batcher use the same one.

    ``name`` travels with every request, so a host refuses a client speaking another codec instead
    of misreading its bytes. ``encode`` raises TypeError for a value it cannot represent.
    """

    @property
    def name(self) -> str: ...

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class MsgpackCodec:
    """The default codec: msgpack plus numpy arrays and torch tensors as typed arrays; never runs code.

    Round trips str, bytes, int, float, bool, None, lists and dicts (tuples come back as lists),
    numpy arrays and scalars (dtype and shape kept) and torch tensors (dtype and shape kept, on the
    CPU). numpy and torch are imported only to encode or decode a value that is one.
    """

    __slots__ = ()

    name = "msgpack"

    def encode(self, value: Any) -> bytes:
        try:
            return _packer().pack(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"microbatch.remote's msgpack codec cannot encode this value ({exc}): send str, bytes, numbers, "
                "lists, dicts, numpy arrays or torch tensors, or give both ends another codec (codec=...)"
            ) from None

    def decode(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=_from_ext, raw=False, strict_map_key=False)

    def __repr__(self) -> str:
        return "MsgpackCodec()"


class PickleCodec:
    """Pickle, for items msgpack cannot carry. UNSAFE: unpickling runs code chosen by whoever can
    write to your Redis, so use it only when every client, host and Redis user is trusted.

    Opt in on both ends: ``RemoteBatcher(..., codec=PickleCodec())`` and
    ``serve(..., codec=PickleCodec())`` (``--codec pickle`` on the command line). A host started
    without it refuses pickled requests unread.
    """

    __slots__ = ()

    name = "pickle"

    def encode(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"the pickle codec cannot encode this value: {exc}") from None

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)  # noqa: S301 - the user opted in, see the class docstring

    def __repr__(self) -> str:
        return "PickleCodec()"


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer: ``msgpack.packb`` builds a new one (and its buffer) per call, 4x the cost of a
    small value's packing. A Packer is not thread-safe, and it resets itself after an error."""
    try:
        return _local.packer
    except AttributeError:
        _local.packer = packer = msgpack.Packer(default=_to_ext, use_bin_type=True)
        return packer


def _to_ext(value: Any) -> msgpack.ExtType:
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        return msgpack.ExtType(_NUMPY, _pack_array(numpy.asarray(value)))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return msgpack.ExtType(_TORCH, _pack_tensor(value, torch))
    raise TypeError(f"cannot serialize {type(value).__module__}.{type(value).__qualname__} object")


def _pack_array(array: Any) -> bytes:
    if array.dtype.hasobject:
        raise TypeError("cannot serialize a numpy array of Python objects")
    array = array if array.flags.c_contiguous else array.copy(order="C")
    return msgpack.packb([array.dtype.str, list(array.shape), array.tobytes()], use_bin_type=True)  # type: ignore[no-any-return]


def _pack_tensor(tensor: Any, torch: Any) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    dtype = str(tensor.dtype).removeprefix("torch.")
    # The raw bytes without numpy (which lacks bfloat16): view the storage as uint8.
    raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    return msgpack.packb([dtype, list(tensor.shape), raw], use_bin_type=True)  # type: ignore[no-any-return]


def _from_ext(code: int, data: bytes) -> Any:
    dtype, shape, raw = msgpack.unpackb(data, raw=False)
    if code == _NUMPY:
        import numpy

        array = numpy.frombuffer(raw, dtype=numpy.dtype(dtype)).reshape(shape).copy()
        return array[()] if not shape else array
    if code == _TORCH:
        import torch

        torch_dtype = getattr(torch, dtype)
        if not raw:
            return torch.empty(shape, dtype=torch_dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch_dtype).reshape(shape)
    raise TypeError(f"unknown msgpack extension type {code}: the sender uses a newer or custom codec")
