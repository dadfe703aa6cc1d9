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
