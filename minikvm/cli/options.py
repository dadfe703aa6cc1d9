"""Layer 8 — the options every sandboxed command shares, and what they mean.

``minikvm run``, ``minikvm serve`` and ``minikvm snapshot save`` take the same
policy, limit and environment options (:func:`add_sandbox_options`); this
module turns them into a :class:`~minikvm.sandbox.policy.Policy`
(:func:`policy_from`) and an environment (:func:`guest_environment`), so
that each command means the same thing by them.
"""

from __future__ import annotations

import argparse
import math
import os

from minikvm.cpu.layout import MAX_MEMORY_SIZE, MIN_MEMORY_SIZE
from minikvm.sandbox.policy import Policy
from minikvm.x86 import PAGE_SIZE

#: A command line minikvm does not understand (argparse's status too).
EXIT_USAGE = 2

SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
#: The longest time limit: setitimer(2) takes seconds in a time_t, and a
#: limit of decades is no limit (leave --timeout out instead).
MAX_TIMEOUT_SECONDS = 10 ** 9
#: The most open files a guest may ask for: Linux's default ``fs.nr_open``.
MAX_FDS_LIMIT = 1 << 20
#: The fewest: stdin, stdout, stderr and one more.
MIN_FDS_LIMIT = 4


def parse_size(text: str) -> int:
    """``512M`` → 536870912 (suffixes K, M, G; powers of 1024; a whole
    number of bytes, at least 1)."""
    shown = text
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = text[-1] if text and text[-1] in SIZE_SUFFIXES else ""
    number = text[:-1] if suffix else text
    try:
        scaled = float(number) * SIZE_SUFFIXES[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {shown!r} (try 256M or 1G)") from None
    if not math.isfinite(scaled) or scaled < 1:
        raise argparse.ArgumentTypeError(f"size must be at least one byte: {shown!r}")
    if scaled != int(scaled):
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {shown!r}")
    return int(scaled)


def parse_memory(text: str) -> int:
    """``--memory``: a size of whole 4 KiB pages, from :data:`MIN_MEMORY_SIZE`
    to :data:`MAX_MEMORY_SIZE`."""
    size = parse_size(text)
    if size % PAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of {PAGE_SIZE >> 10} KiB pages (try 256M or 1G)")
    if not MIN_MEMORY_SIZE <= size <= MAX_MEMORY_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside {MIN_MEMORY_SIZE >> 20}M to {MAX_MEMORY_SIZE >> 30}G: the "
            f"guest needs {MIN_MEMORY_SIZE >> 20} MiB for its page tables, its stack and a small "
            f"program")
    return size


def positive_int(text: str) -> int:
    """An option's value that must be a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def fd_limit(text: str) -> int:
    """``--max-fds``: from :data:`MIN_FDS_LIMIT` to :data:`MAX_FDS_LIMIT`."""
    value = positive_int(text)
    if not MIN_FDS_LIMIT <= value <= MAX_FDS_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{value} is outside {MIN_FDS_LIMIT} to {MAX_FDS_LIMIT} (the guest needs stdin, "
            f"stdout, stderr and one more; Linux allows at most {MAX_FDS_LIMIT})")
    return value


def seconds(text: str) -> float:
    """A time limit: a finite number of seconds above 0, at most
    :data:`MAX_TIMEOUT_SECONDS` (``nan``, ``inf``, 0 and negative numbers
    are refused: leave the option out for no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive number of seconds (leave the option out for no limit)")
    if value > MAX_TIMEOUT_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} seconds is more than {MAX_TIMEOUT_SECONDS} (leave the option out for no "
            f"limit)")
    return value


def env_assignment(text: str) -> str:
    """``--env NAME=VALUE``: a name that is not empty and has no ``=``."""
    name, equals, _ = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return text


def add_sandbox_options(parser: argparse.ArgumentParser, timeout_help: str =
                        "time limit for the program's start-up (to its first request)") -> None:
    """The policy, limit and environment options shared by ``run``, ``serve``
    and ``snapshot save``; only what ``--timeout`` limits differs."""
    parser.add_argument("--here", action="store_true",
                        help="allow reading and writing the current directory and below")
    parser.add_argument("--allow-read", action="append", default=[], metavar="DIR",
                        help="allow reading DIR and below (repeatable)")
    parser.add_argument("--allow-write", action="append", default=[], metavar="DIR",
                        help="allow reading and writing DIR and below (repeatable)")
    parser.add_argument("--allow-connect", action="append", default=[], metavar="HOST:PORT",
                        help="allow connecting to this endpoint (repeatable; unix:PATH too)")
    parser.add_argument("--memory", type=parse_memory, default=None, metavar="SIZE",
                        help="guest memory (default 1G)")
    parser.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                        help=timeout_help)
    parser.add_argument("--max-fds", type=fd_limit, default=1024, metavar="N",
                        help="most open files at once (EMFILE beyond)")
    parser.add_argument("--max-file-size", type=parse_size, default=None, metavar="SIZE",
                        help="largest file the program may write (EFBIG beyond)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        type=env_assignment,
                        help="set an environment variable (repeatable)")
    parser.add_argument("--unsetenv", action="append", default=[], metavar="NAME",
                        help="remove an environment variable (repeatable)")
    parser.add_argument("--clearenv", action="store_true",
                        help="start from an empty environment")


def policy_from(options: argparse.Namespace) -> Policy:
    """The policy the options ask for: ``--here`` is a write grant of the
    current directory.  Raises PolicyError, ValueError or OSError for a
    grant or endpoint that cannot be had."""
    read, write = list(options.allow_read), list(options.allow_write)
    if options.here:
        write.append(os.getcwd())
    return Policy(read=read, write=write, connect=options.allow_connect,
                  max_fds=options.max_fds, max_file_size=options.max_file_size)


def guest_environment(options: argparse.Namespace) -> dict[str, str]:
    """The program's environment: minikvm's own (or none, with
    ``--clearenv``), less ``--unsetenv``, plus ``--env NAME=VALUE``."""
    env = {} if options.clearenv else dict(os.environ)
    for name in options.unsetenv:
        env.pop(name, None)
    for item in options.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env
