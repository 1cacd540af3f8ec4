"""The ``microbatch`` command: ``microbatch serve package.module:target`` runs a model host.

The flags of ``serve`` that configure the Batcher are derived from :class:`~microbatch.Batcher`'s own
keyword options (names, types, defaults), so the command follows the engine without a second list.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

from . import Batcher
from ._options import OPTIONS, BatcherOptions

__all__ = ["main"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
URL_ENV = "MICROBATCH_REDIS_URL"


class _Option:
    """One Batcher keyword option as a command-line flag."""

    __slots__ = ("name", "flag", "convert", "choices", "default", "boolean")

    def __init__(self, name: str, hint: Any, default: Any) -> None:
        self.name = name
        self.flag = "--" + name.replace("_", "-")
        self.default = default
        self.choices: tuple[Any, ...] | None = None
        self.boolean = hint is bool
        self.convert = _converter(hint, self)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        shown = f" (Batcher default: {self.default})"
        if self.name == "name":
            shown = "; clients use it: RemoteBatcher(NAME) (default: the function's name)"
        if self.boolean:
            parser.add_argument(self.flag, dest=self.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=f"Batcher option {self.name}{shown}")
        else:
            parser.add_argument(self.flag, dest=self.name, type=self.convert, choices=self.choices,
                                default=argparse.SUPPRESS, metavar=None if self.choices else self.name.upper(),
                                help=f"Batcher option {self.name}{shown}")

    def __repr__(self) -> str:
        return f"<_Option {self.flag}>"


def _converter(hint: Any, option: _Option) -> Callable[[str], Any]:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if typing.get_origin(base) is Literal:
        option.choices = typing.get_args(base)
        return str
    if base not in (int, float, str, bool):
        raise TypeError(f"no flag for a Batcher option of type {hint!r}")

    def convert(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        return base(text)

    convert.__name__ = base.__name__  # argparse names the type in its error messages
    return convert


def batcher_options() -> list[_Option]:
    """Every Batcher option with a plain type (the ones a command line can give), from the option schema."""
    hints = typing.get_type_hints(BatcherOptions)
    options = []
    for name, option in OPTIONS.items():
        try:
            options.append(_Option(name, hints[name], option.default))
        except TypeError:
            continue  # collate and the like: set them in a factory
    return options


def _parser() -> tuple[argparse.ArgumentParser, list[_Option]]:
    parser = argparse.ArgumentParser(prog="microbatch", description="microbatch command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a model host for microbatch.remote",
        description="Serve a batch function to every RemoteBatcher of --name through Redis. TARGET is "
        "package.module:name, naming a batch function (the Batcher options below apply), a Batcher, or a "
        "zero-argument factory returning a Batcher (so the model loads in the host only). SIGTERM drains.",
    )
    serve.add_argument("target", metavar="TARGET", help="package.module:function, a Batcher or a factory")
    serve.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
                       help=f"Redis URL (default: ${URL_ENV} or {DEFAULT_URL})")
    serve.add_argument("--prefetch", type=int, default=None,
                       help="most items held at once (default: 4 x max_batch_size, at most max_queue_size)")
    serve.add_argument("--claim-idle", type=float, default=5.0,
                       help="seconds before a silent host's requests are taken over (default: 5)")
    serve.add_argument("--report-interval", type=float, default=1.0,
                       help="seconds between stats reports to Redis (default: 1)")
    serve.add_argument("--codec", choices=("msgpack", "pickle"), default="msgpack",
                       help="wire codec; pickle runs code from Redis, use it only when every writer is trusted")
    serve.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    options = batcher_options()
    group = serve.add_argument_group("Batcher options (for a batch-function TARGET)")
    for option in options:
        option.add_to(group)  # type: ignore[arg-type]
    return parser, options


def load_target(spec: str, options: dict[str, Any]) -> Batcher[Any, Any]:
    """The Batcher ``spec`` names, built with ``options`` when it is a batch function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"microbatch serve: TARGET must look like package.module:name, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the project's own packages import
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"microbatch serve: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SystemExit(f"microbatch serve: {module_name!r} has no attribute {attr!r}") from None
    given = {k: v for k, v in options.items() if k != "name"}
    if isinstance(target, Batcher):
        made: Any = target
    elif callable(target) and _takes_no_arguments(target):
        made = target()
        if not isinstance(made, Batcher):
            raise SystemExit(f"microbatch serve: the factory {spec} returned {type(made).__name__}, not a Batcher")
    elif callable(target):
        return Batcher(target, **options)
    else:
        raise SystemExit(f"microbatch serve: {spec} is a {type(target).__name__}, not a function or a Batcher")
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise SystemExit(f"microbatch serve: {flags} apply to a batch function; {spec} gives a ready Batcher, "
                         "so set its options where it is built")
    return made  # type: ignore[no-any-return]


def _takes_no_arguments(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


def main(argv: Sequence[str] | None = None) -> None:
    parser, options = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    given = {o.name: getattr(args, o.name) for o in options if hasattr(args, o.name)}
    try:
        from .remote import MsgpackCodec, PickleCodec, serve
    except ImportError as exc:
        raise SystemExit(f"microbatch serve needs the remote extra: pip install 'microbatch[remote]' ({exc})") from exc
    batcher = load_target(args.target, given)
    codec = PickleCodec() if args.codec == "pickle" else MsgpackCodec()
    try:
        serve(batcher, url=args.url, name=given.get("name"), codec=codec, prefetch=args.prefetch,
              claim_idle=args.claim_idle, report_interval=args.report_interval)
    except ValueError as exc:
        raise SystemExit(f"microbatch serve: {exc}") from exc
