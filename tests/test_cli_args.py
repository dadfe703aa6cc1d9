"""The command line's own parsing: pure tests, no guest."""

from minikvm.cli.main import spell_trace_file
from minikvm.cli.options import parse_size


def test_trace_file_form_is_rewritten_among_minikvm_options() -> None:
    argv = ["run", "--trace=out.txt", "--allow-read", "/data", "./prog", "--trace=x"]
    assert spell_trace_file(argv) == ["run", "--trace-file=out.txt", "--allow-read", "/data",
                                      "./prog", "--trace=x"]


def test_program_arguments_are_never_rewritten() -> None:
    argv = ["run", "--trace", "--", "./prog", "--trace=x"]
    assert spell_trace_file(argv) == argv
    assert spell_trace_file(["run", "./prog", "--trace=y"]) == ["run", "./prog", "--trace=y"]


def test_sizes() -> None:
    assert parse_size("512M") == 512 << 20
    assert parse_size("1G") == 1 << 30
    assert parse_size("4096") == 4096


# -- bad values are usage errors: exit 2, one line naming the option and the value --------
#
# Each runs the real command line (``python -m minikvm``) in a subprocess: the
# check is what a user sees, not what a function returns.  None of them gets
# as far as a guest (the values are refused while the options are parsed, or
# when the server binds its address), so they need no /dev/kvm.

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: (the command line after ``minikvm``, the option, the bad value as shown)
BAD_VALUES = [
    (["run", "--memory", "4097"], "--memory", "4097"),          # not whole pages (a traceback once)
    (["run", "--memory", "1M"], "--memory", "1M"),              # below the page tables ("0 of -1 MiB")
    (["run", "--memory", "100G"], "--memory", "100G"),
    (["run", "--memory", "1.5"], "--memory", "1.5"),
    (["run", "--memory", "lots"], "--memory", "lots"),
    (["run", "--timeout", "nan"], "--timeout", "nan"),
    (["run", "--timeout", "inf"], "--timeout", "inf"),
    (["run", "--timeout", "-1"], "--timeout", "-1"),
    (["run", "--timeout", "0"], "--timeout", "0"),
    (["run", "--timeout", "1e300"], "--timeout", "1e300"),
    (["run", "--env", "NOEQUALS"], "--env", "NOEQUALS"),
    (["run", "--env", "=value"], "--env", "=value"),
    (["run", "--max-fds", "3"], "--max-fds", "3"),
    (["run", "--max-fds", "99999999999"], "--max-fds", "99999999999"),
    (["run", "--max-file-size", "0"], "--max-file-size", "0"),
    (["run", "--max-threads", "0"], "--max-threads", "0"),
    (["serve", "--workers", "0"], "--workers", "0"),
    (["serve", "--workers", "100000"], "--workers", "100000"),
    (["serve", "--request-timeout", "nan"], "--request-timeout", "nan"),
    (["serve", "--listen", "127.0.0.1:99999"], "--listen", "127.0.0.1:99999"),
    (["serve", "--listen", "nowhere"], "--listen", "nowhere"),
    (["snapshot", "run", "--timeout", "inf"], "--timeout", "inf"),
]


def minikvm_command(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minikvm", *arguments], cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_usage_error(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    for word in named:
        assert word in last, f"{word!r} not named in {last!r}"


@pytest.mark.parametrize("arguments, option, value", BAD_VALUES,
                         ids=[" ".join(arguments) for arguments, _, _ in BAD_VALUES])
def test_a_bad_value_is_a_usage_error(arguments: list[str], option: str, value: str) -> None:
    # A program that exists, so that only the bad value can be the error.
    tail = ["x.snapshot"] if arguments[0] == "snapshot" else ["--", "/bin/true"]
    assert_usage_error(minikvm_command([*arguments, *tail]), option, value)


def test_a_serve_address_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = minikvm_command(["serve", "--listen", f"127.0.0.1:{port}", "--", "/bin/true"])
    assert_usage_error(result, f"127.0.0.1:{port}", "in use")


def test_memory_bounds_are_what_the_layout_needs() -> None:
    """The bounds themselves, without a guest (that the smallest runs a
    program is tests/test_sandbox_cli.py's)."""
    from minikvm.cli.options import parse_memory
    from minikvm.cpu.layout import MAX_MEMORY_SIZE, MIN_MEMORY_SIZE
    assert parse_memory(f"{MIN_MEMORY_SIZE >> 20}M") == MIN_MEMORY_SIZE
    assert parse_memory(f"{MAX_MEMORY_SIZE >> 30}G") == MAX_MEMORY_SIZE
    for bad in (f"{(MIN_MEMORY_SIZE >> 20) - 1}M", f"{(MAX_MEMORY_SIZE >> 30) + 1}G"):
        with pytest.raises(Exception, match="outside"):
            parse_memory(bad)


def test_serve_reset_choices_are_the_snapshot_mechanisms() -> None:
    """The parser spells them itself (to import no snapshot code for ``run``):
    they must stay the same as the snapshot layer's."""
    from minikvm.cli.main import build_parser
    from minikvm.snapshot.fork import MECHANISMS
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    reset = next(action for action in serve._actions if action.dest == "reset")
    assert tuple(reset.choices) == MECHANISMS
