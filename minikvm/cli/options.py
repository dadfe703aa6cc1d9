"""Layer 8 — the options every sandboxed command shares, and what they mean.

``minikvm run``, ``minikvm serve`` and ``minikvm snapshot save`` take the same
policy, limit and environment options (:func:`add_sandbox_options`); this
module turns them into a :class:`~minikvm.sandbox.policy.Policy`
(:func:`policy_from`) and an environment (:func:`guest_environment`), so
that each command means the same thing by them.
"""

from __future__ import annotations

import argparse
import os

from minikvm.sandbox.policy import Policy

#: A command line minikvm does not understand (argparse's status too).
EXIT_USAGE = 2

SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``512M`` → 536870912 (suffixes K, M, G; powers of 1024)."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = text[-1] if text and text[-1] in SIZE_SUFFIXES else ""
    number = text[:-1] if suffix else text
    try:
        value = int(float(number) * SIZE_SUFFIXES[suffix])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An option's value that must be a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


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
    parser.add_argument("--memory", type=parse_size, default=None, metavar="SIZE",
                        help="guest memory (default 1G)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help=timeout_help)
    parser.add_argument("--max-fds", type=int, default=1024, metavar="N",
                        help="most open files at once (EMFILE beyond)")
    parser.add_argument("--max-file-size", type=parse_size, default=None, metavar="SIZE",
                        help="largest file the program may write (EFBIG beyond)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
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
