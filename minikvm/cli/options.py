"""Layer 8 — the options every sandboxed command shares, and what they mean.

``minikvm run``, ``minikvm serve`` and ``minikvm snapshot save`` take the same
policy, limit and environment options (:func:`add_sandbox_options`); this
module turns them into a :class:`~minikvm.sandbox.policy.Policy`
(:func:`policy_from`) and an environment (:func:`guest_environment`), so
that each command means the same thing by them.

The same options can come from a policy file (``--policy FILE``, TOML: a
per-program profile a user keeps, like a firejail profile): its keys are
the options' names without ``--`` (:data:`FLAG_KEYS`, :data:`LIST_KEYS`,
:data:`VALUE_KEYS`), its values pass the same checks as the command line's
(:func:`read_policy_file`), and ``--print-policy`` writes the effective
options back in that form (:func:`policy_toml`).  The file's values are
the parser's defaults, so the command line adds to its lists and
overrides its single values.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, Any, Callable

from minikvm.cpu.layout import MAX_MEMORY_SIZE, MIN_MEMORY_SIZE
from minikvm.sandbox.grants import Mount
from minikvm.sandbox.policy import Policy
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.process.determinism import Determinism

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


def endpoint(text: str) -> str:
    """``--allow-connect``: an endpoint — numeric, ``unix:PATH``, or a host
    name (``NAME:PORT``, ``NAME:*``) — written correctly (checked while the
    options are parsed, so that a policy file's bad endpoint is named with
    its file and key).  A name is resolved later, when the policy is built."""
    from minikvm.sandbox.endpoints import EndpointError, named_endpoint
    try:
        named_endpoint(text)
    except EndpointError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def listen_endpoint(text: str) -> str:
    """``--allow-listen``: an IP address (or host name) and one port."""
    text = endpoint(text)
    if text.startswith("unix:") or text.endswith(":*"):
        raise argparse.ArgumentTypeError(f"{text!r}: a listening endpoint is an IP address "
                                         "and one port (0.0.0.0:8080, [::1]:8080)")
    return text


def x11_size(text: str) -> tuple[int, int]:
    """``--x11-size WxH`` (:func:`minikvm.cli.x11.parse_x11_size`)."""
    from minikvm.cli.x11 import parse_x11_size
    try:
        return parse_x11_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--x11-size ")) from None


def env_assignment(text: str) -> str:
    """``--env NAME=VALUE``: a name that is not empty and has no ``=``."""
    name, equals, _ = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return text


def seed(text: str) -> int:
    """``--seed N`` (:func:`minikvm.process.determinism.parse_seed`)."""
    from minikvm.process.determinism import parse_seed
    try:
        return parse_seed(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--seed: ")) from None


def add_determinism_options(parser: argparse.ArgumentParser) -> None:
    """``--deterministic`` and ``--seed`` (:mod:`minikvm.process.determinism`),
    for the commands that start a program: ``run``, ``serve`` and
    ``snapshot save`` (a snapshot keeps the seeded state it was saved with)."""
    parser.add_argument("--deterministic", action="store_true", default=False,
                        help="make the clocks, random bytes, thread schedule, CPUID and "
                             "directory order a function of --seed, so that two runs with "
                             "the same inputs see the same")
    parser.add_argument("--seed", type=seed, default=None, metavar="N",
                        help="the seed of --deterministic (default 0; giving it implies "
                             "--deterministic)")


def determinism_from(options: argparse.Namespace) -> Determinism | None:
    """The seeded sources the options ask for, or None without
    ``--deterministic`` and ``--seed``."""
    if not getattr(options, "deterministic", False) and getattr(options, "seed", None) is None:
        return None
    from minikvm.process.determinism import DEFAULT_SEED, Determinism
    return Determinism(DEFAULT_SEED if options.seed is None else options.seed)


def add_display_options(parser: argparse.ArgumentParser) -> None:
    """``run``'s ``--x11`` options (:mod:`minikvm.cli.x11`): only ``run``
    starts a nested display, so ``serve`` and ``snapshot save`` do not take
    them (an option accepted and ignored would be a surprise)."""
    parser.add_argument("--x11", action="store_true", default=False,
                        help="give the program a private nested X server (Xephyr in a window "
                             "on $DISPLAY; --x11=headless: Xvfb) and DISPLAY pointing at it; "
                             "the user's own display stays unreachable")
    parser.add_argument("--x11-server", choices=("auto", "xephyr", "headless"), default=None,
                        help=argparse.SUPPRESS)   # what --x11=MODE is rewritten to
    parser.add_argument("--x11-size", type=x11_size, default=None, metavar="WxH",
                        help="with --x11: the nested screen's size in pixels (default 1024x768)")
    parser.add_argument("--allow-pty", action="store_true", default=False,
                        help="let the program make new pseudo-terminals (/dev/ptmx: xterm, "
                             "script); it reaches only those, never the host's others "
                             "(--x11 gives it too)")


def add_sandbox_options(parser: argparse.ArgumentParser, timeout_help: str =
                        "time limit for the program's start-up (to its first request)",
                        policy: dict[str, Any] | None = None) -> None:
    """The policy, limit and environment options shared by ``run``, ``serve``
    and ``snapshot save``; only what ``--timeout`` limits differs.  *policy*
    (from :func:`read_policy_file`) replaces their defaults."""
    parser.add_argument("--policy", metavar="FILE", default=None,
                        help="read these options from a TOML file (the command line adds to "
                             "its lists and overrides its values)")
    parser.add_argument("--print-policy", action="store_true",
                        help="print the effective options as a --policy file and exit")
    parser.add_argument("--here", action="store_true",
                        help="allow reading and writing the current directory and below "
                             "(refused in / and in $HOME)")
    parser.add_argument("--no-system", dest="system", action="store_false", default=True,
                        help="do not show the read-only system view (the loader and "
                             "libraries, /usr/bin, /usr/share and /etc files without secrets; "
                             "--print-policy lists it)")
    parser.add_argument("--system-root", metavar="DIR", default="/", type=str,
                        help="take the system view from DIR instead of / (a chroot or a "
                             "test's fake root); the program still sees it at /")
    parser.add_argument("--no-tmp", dest="tmp", action="store_false", default=True,
                        help="no private /tmp and /var/tmp (the program then sees /tmp "
                             "only where a grant shows it)")
    parser.add_argument("--keep-tmp", metavar="DIR", default=None, type=str,
                        help="use DIR (created if missing, or empty) as the program's private "
                             "/tmp and /var/tmp and keep it, with the files the program left "
                             "there; without it the private /tmp is a fresh directory that is "
                             "removed when the sandbox ends")
    parser.add_argument("--allow-read", action="append", default=[], metavar="DIR",
                        help="allow reading DIR and below (repeatable)")
    parser.add_argument("--allow-write", action="append", default=[], metavar="DIR",
                        help="allow reading and writing DIR and below (repeatable)")
    parser.add_argument("--allow-connect", action="append", default=[], metavar="HOST:PORT",
                        type=endpoint,
                        help="allow connecting to this endpoint (repeatable): 10.0.0.1:443, "
                             "NAME:443 (every address NAME resolves to at start), HOST:* "
                             "(every port), [::1]:80, unix:PATH")
    parser.add_argument("--allow-net", action="store_true", default=False,
                        help="allow connecting to any IP address but this machine's own "
                             "(loopback) and link-local ones: the coarse choice")
    parser.add_argument("--allow-dns", action="store_true", default=False,
                        help="let the system resolver work: show /etc/resolv.conf and allow "
                             "UDP and TCP to its name servers' port 53")
    parser.add_argument("--resolv-conf", metavar="FILE", default=None, type=str,
                        help="with --allow-dns: the resolver configuration the program sees "
                             "as /etc/resolv.conf, and whose name servers it may reach "
                             "(default: the system view's /etc/resolv.conf)")
    parser.add_argument("--allow-listen", action="append", default=[], metavar="HOST:PORT",
                        type=listen_endpoint,
                        help="allow accepting connections on this address (repeatable; "
                             "0.0.0.0:PORT for every local address)")
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
    if policy:
        parser.set_defaults(**policy)


def policy_from(options: argparse.Namespace, *, private_tmp: bool = True) -> Policy:
    """The policy the options ask for: ``--here`` is a write grant of the
    current directory; the system view (unless ``--no-system``), the
    private ``/tmp`` (made here, and its watcher forked, unless
    *private_tmp* is false or a grant of the user's holds ``/tmp``) and
    ``--allow-dns``'s name servers are added.  Raises PolicyError,
    ValueError or OSError for a grant or endpoint that cannot be had."""
    from minikvm.sandbox.private_tmp import TMP_PATHS, PrivateTmp
    read, write = list(options.allow_read), list(options.allow_write)
    if options.here:
        write.append(here_directory())
    mounts = view_mounts(options)
    connect = list(options.allow_connect)
    if getattr(options, "allow_dns", False):
        connect += dns_endpoints(resolv_conf(options))
    tmp = None
    shown = tuple(path for path in TMP_PATHS if not covered(path, read + write))
    if private_tmp and getattr(options, "tmp", True) and shown:
        tmp = PrivateTmp(getattr(options, "keep_tmp", None))
        try:
            mounts += tmp.mounts(shown, [os.path.normpath(os.path.join(os.getcwd(), path))
                                         for path in read + write])
        except OSError as error:
            tmp.finish()
            raise ValueError(f"private /tmp {tmp.path}: cannot make the way down to a "
                             f"grant: {error.strerror}") from None
    try:
        policy = Policy(read=read, write=write, connect=connect,
                        max_fds=options.max_fds, max_file_size=options.max_file_size,
                        listen=options.allow_listen, allow_net=options.allow_net,
                        mounts=mounts)
    except BaseException:
        if tmp is not None:
            tmp.finish()
        raise
    if tmp is not None:
        tmp.watch()
    return policy


def view_mounts(options: argparse.Namespace) -> list[Mount]:
    """The read-only system view the options ask for (none with
    ``--no-system``), with ``/etc/resolv.conf`` under ``--allow-dns``."""
    from minikvm.sandbox.system_view import RESOLV_CONF, system_mounts
    dns = getattr(options, "allow_dns", False)
    mounts: list[Mount] = []
    if getattr(options, "system", True):
        mounts = system_mounts(getattr(options, "system_root", "/"),
                               dns=dns and getattr(options, "resolv_conf", None) is None)
    if dns and getattr(options, "resolv_conf", None) is not None:
        mounts.append(Mount(RESOLV_CONF, os.path.abspath(options.resolv_conf), False))
    elif dns and not any(mount.guest == RESOLV_CONF for mount in mounts):
        # --no-system --allow-dns: the resolver still needs its file.
        mounts.append(Mount(RESOLV_CONF, resolv_conf(options), False))
    return mounts


def resolv_conf(options: argparse.Namespace) -> str:
    """The host file the program sees as ``/etc/resolv.conf``."""
    if getattr(options, "resolv_conf", None) is not None:
        return os.path.abspath(options.resolv_conf)
    root = getattr(options, "system_root", "/")
    return os.path.join(root, "etc/resolv.conf")


def dns_endpoints(path: str) -> list[str]:
    """``HOST:53`` for each ``nameserver`` line of resolv.conf *path* (TCP
    and UDP both go to an allowed endpoint); with none, glibc's default
    127.0.0.1.  Raises ValueError for a file that cannot be read."""
    from minikvm.sandbox.endpoints import parse_nameservers
    try:
        with open(path, "rb") as file:
            text = file.read(1 << 16).decode("utf-8", "replace")
    except OSError as error:
        raise ValueError(f"--allow-dns: cannot read {path}: {error.strerror} (give "
                         f"--resolv-conf FILE)") from None
    return parse_nameservers(text)


def covered(path: str, grants: list[str]) -> bool:
    """Whether one of the user's *grants* holds guest *path* (then the
    user's grant is what the guest sees there)."""
    for grant in grants:
        top = os.path.normpath(os.path.join(os.getcwd(), grant))
        if top == "/" or path == top or path.startswith(top + "/"):
            return True
    return False


def here_directory() -> str:
    """The directory ``--here`` grants: the current one, unless it is ``/``
    or the home directory itself (a slip that would hand the program every
    file, or the user's shell start-up files and keys).  Below them is
    fine.  Raises ValueError saying how to grant it if that is meant."""
    cwd = os.getcwd()
    real = os.path.realpath(cwd)
    if real == "/":
        raise ValueError("--here in / would let the program write every file this user can; "
                         "give --allow-write / if that is really meant")
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and real == os.path.realpath(home):
        raise ValueError(f"--here in your home directory {home} would let the program write "
                         f"all of it (shell start-up files, ~/.ssh, ...); cd to a project "
                         f"directory, or give --allow-write {home} if that is really meant")
    return cwd


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


# -- policy files: --policy FILE and --print-policy ---------------------------------
#
# One table of keys, each an option's name without "--"; the value
# checks are the command line's own functions (a test checks that they
# are the ones add_sandbox_options gives the parser).

#: Keys that switch something on: ``true`` or ``false``.
FLAG_KEYS = ("here", "clearenv", "allow-net", "allow-dns")
#: Keys for what is on unless an option turns it off (``system = false``
#: is ``--no-system``): the key, and that option.
ON_BY_DEFAULT_KEYS = {"system": "--no-system", "tmp": "--no-tmp"}
#: Keys whose value is a list of strings, each checked like the option's
#: value (None: any string).
LIST_KEYS: dict[str, Callable[[str], str] | None] = {
    "allow-read": None,
    "allow-write": None,
    "allow-connect": endpoint,
    "allow-listen": listen_endpoint,
    "env": env_assignment,
    "unsetenv": None,
}
#: Keys with one value: a string or a number, checked like the option's.
VALUE_KEYS: dict[str, Callable[[str], Any]] = {
    "system-root": str,
    "keep-tmp": str,
    "resolv-conf": str,
    "memory": parse_memory,
    "timeout": seconds,
    "max-fds": fd_limit,
    "max-file-size": parse_size,
}


class PolicyFileError(ValueError):
    """A ``--policy`` file that cannot be read or has a bad key or value:
    a usage error (exit 2) naming the file and the key."""


def dest(key: str) -> str:
    """The option's attribute name: ``max-fds`` → ``max_fds``."""
    return key.replace("-", "_")


def load_toml(name: str) -> dict[str, Any]:
    """The TOML document in file *name*.  Python 3.11 has :mod:`tomllib`;
    on 3.10 the ``tomli`` package is used if it is installed (minikvm does
    not depend on it), and otherwise ``--policy`` is refused, saying so."""
    try:
        import tomllib as toml
    except ModuleNotFoundError:
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise PolicyFileError(
                f"{name}: --policy needs Python 3.11 or later (for tomllib), or the tomli "
                f"package on Python {sys.version_info[0]}.{sys.version_info[1]} "
                f"(pip install tomli); give the options on the command line instead") from None
    try:
        with open(name, "rb") as file:
            return toml.load(file)
    except OSError as error:
        raise PolicyFileError(f"{name}: cannot read the policy file: "
                              f"{error.strerror}") from None
    except toml.TOMLDecodeError as error:
        raise PolicyFileError(f"{name}: not a TOML file: {error}") from None


def read_policy_file(name: str) -> dict[str, Any]:
    """The options in policy file *name*, as the parser's defaults (keyed
    by attribute name, values checked and converted as on the command
    line).  Raises PolicyFileError naming the file, the key and the value."""
    document = load_toml(name)
    known = sorted([*FLAG_KEYS, *ON_BY_DEFAULT_KEYS, *LIST_KEYS, *VALUE_KEYS])
    defaults: dict[str, Any] = {}
    for key, value in document.items():
        where = f"{name}: {key}"
        if key in FLAG_KEYS or key in ON_BY_DEFAULT_KEYS:
            if not isinstance(value, bool):
                raise PolicyFileError(f"{where}: {value!r} is not true or false")
            defaults[dest(key)] = value
        elif key in LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise PolicyFileError(f"{where}: {value!r} is not a list of strings "
                                      f"(write {key} = [\"...\"])")
            check = LIST_KEYS[key]
            defaults[dest(key)] = [checked(where, check, item) if check else item
                                   for item in value]
        elif key in VALUE_KEYS:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise PolicyFileError(f"{where}: {value!r} is not a string or a number")
            defaults[dest(key)] = checked(where, VALUE_KEYS[key], str(value))
        else:
            raise PolicyFileError(f"{where}: not a policy key (the keys are the options' "
                                  f"names without --: {', '.join(known)})")
    return defaults


def checked(where: str, check: Callable[[str], Any], text: str) -> Any:
    """*check* (an option's type function) applied to *text*; its error
    becomes a PolicyFileError that names the file and key."""
    try:
        return check(text)
    except argparse.ArgumentTypeError as error:
        raise PolicyFileError(f"{where}: {error}") from None


def policy_toml(options: argparse.Namespace) -> str:
    """The effective options as a policy file that :func:`read_policy_file`
    reads back to the same policy: ``--here`` written out as the write
    grant it is, relative paths made absolute (the file may be used from
    elsewhere), the default memory size filled in; no key for "no limit".
    Raises ValueError for ``--here`` where it is refused, or a string TOML
    cannot hold."""
    from minikvm.cpu.layout import DEFAULT_MEMORY_SIZE
    cwd = os.getcwd()

    def absolute(path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(cwd, path)

    write = [absolute(path) for path in options.allow_write]
    if options.here:
        write.append(here_directory())
    lines = ["# minikvm policy: read it back with --policy FILE"]
    lists = {"allow-read": [absolute(path) for path in options.allow_read],
             "allow-write": write, "allow-connect": options.allow_connect,
             "allow-listen": options.allow_listen,
             "env": options.env, "unsetenv": options.unsetenv}
    for key in LIST_KEYS:
        lines.append(f"{key} = [{', '.join(toml_string(item) for item in lists[key])}]")
    lines.append(f"clearenv = {'true' if options.clearenv else 'false'}")
    lines.append(f"allow-net = {'true' if options.allow_net else 'false'}")
    lines.append(f"system = {'true' if options.system else 'false'}")
    lines.append(f"allow-dns = {'true' if options.allow_dns else 'false'}")
    lines.append(f"tmp = {'true' if options.tmp else 'false'}")
    if options.system_root != "/":
        lines.append(f"system-root = {toml_string(absolute(options.system_root))}")
    if options.resolv_conf is not None:
        lines.append(f"resolv-conf = {toml_string(absolute(options.resolv_conf))}")
    if options.keep_tmp is not None:
        lines.append(f"keep-tmp = {toml_string(absolute(options.keep_tmp))}")
    lines.append(f"memory = {toml_string(format_size(options.memory or DEFAULT_MEMORY_SIZE))}")
    lines.append(f"max-fds = {options.max_fds}")
    if options.max_file_size is not None:
        lines.append(f"max-file-size = {toml_string(format_size(options.max_file_size))}")
    if options.timeout is not None:
        lines.append(f"timeout = {options.timeout!r}")
    lines.extend(view_comment(options))
    return "\n".join(lines) + "\n"


def view_comment(options: argparse.Namespace) -> list[str]:
    """The complete view these options give, as TOML comments: each
    read-only entry of the system view and the private ``/tmp``."""
    from minikvm.sandbox.private_tmp import TMP_PATHS
    lines = ["#", "# The program sees (besides the grants above, /proc and /dev):"]
    try:
        mounts = view_mounts(options)
    except ValueError as error:
        mounts = []
        lines.append(f"#   (no DNS: {error})")
    for mount in mounts:
        where = "" if mount.host == mount.guest else f"  (from {mount.host})"
        lines.append(f"#   read-only   {mount.guest}{where}")
    if not mounts:
        lines.append("#   no system view (system = false)")
    write = [*options.allow_read, *options.allow_write] + (["."] if options.here else [])
    for path in TMP_PATHS if options.tmp else ():
        if not covered(path, write):
            kept = (f"kept in {options.keep_tmp}" if options.keep_tmp
                    else "a new empty directory, removed at the end")
            lines.append(f"#   read-write  {path}  (private: {kept})")
    return lines


def format_size(size: int) -> str:
    """A size as :func:`parse_size` reads it: ``1G`` when whole GiB, and so on."""
    for suffix in ("G", "M", "K"):
        if size % SIZE_SUFFIXES[suffix] == 0:
            return f"{size // SIZE_SUFFIXES[suffix]}{suffix}"
    return str(size)


def toml_string(text: str) -> str:
    """*text* as a TOML basic string: backslash, quote and every control
    character escaped (TOML refuses them raw, DEL included).  A string
    with undecodable bytes (a surrogate escape, from a file name that is
    not UTF-8) cannot be written: ValueError."""
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        raise ValueError(f"{text!r} is not valid UTF-8: a policy file cannot hold it "
                         f"(give it on the command line)")
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
