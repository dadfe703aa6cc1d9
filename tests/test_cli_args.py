"""The command line's own parsing: pure tests, no guest."""

from minikvm.cli.main import run_only_option, spell_trace_file
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
    (["run", "--sample-hz", "0"], "--sample-hz", "0"),
    (["run", "--sample-hz", "100000"], "--sample-hz", "100000"),
    (["run", "--sample-hz", "abc"], "--sample-hz", "abc"),
    (["run", "--flamegraph", "out.txt"], "--flamegraph", "out.txt"),
    (["serve", "--workers", "0"], "--workers", "0"),
    (["serve", "--workers", "100000"], "--workers", "100000"),
    (["serve", "--workers", "autox"], "--workers", "autox"),
    (["serve", "--request-timeout", "nan"], "--request-timeout", "nan"),
    (["serve", "--listen", "127.0.0.1:99999"], "--listen", "127.0.0.1:99999"),
    (["serve", "--listen", "nowhere"], "--listen", "nowhere"),
    (["snapshot", "run", "--timeout", "inf"], "--timeout", "inf"),
    (["snapshot", "run", "--gdb", "10.0.0.1:5"], "--gdb", "10.0.0.1"),
    (["snapshot", "run", "--gdb", "1234"], "--gdb", "no port"),
    (["run", "--seed", "-1"], "--seed", "-1"),
    (["run", "--seed", "seven"], "--seed", "seven"),
    (["snapshot", "save", "--seed", "0x"], "--seed", "0x"),
]


def minikvm_command(arguments: list[str], *, cwd: Path = ROOT,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m minikvm ARGUMENTS`` in *cwd*, with PATH /usr/bin:/bin and
    *env* added."""
    return subprocess.run([sys.executable, "-m", "minikvm", *arguments], cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
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


# -- finding the program: PATH, 126 and 127 as a shell reports them -----------------
#
# These stop before any guest (the file is refused, or --print-policy
# exits first); a program found in PATH and run is tests/test_sandbox_cli.py's.

import os  # noqa: E402


def test_a_file_without_execute_permission_is_126(tmp_path: Path) -> None:
    plain = tmp_path / "prog"
    plain.write_bytes(b"\x7fELF")
    plain.chmod(0o644)
    result = minikvm_command(["run", "--", str(plain)])
    assert result.returncode == 126, result.stderr
    assert result.stderr == f"minikvm: {plain}: permission denied: the file is not executable " \
                            f"(chmod +x {plain} if it should be)\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_file_that_is_not_regular_is_126(tmp_path: Path, kind: str) -> None:
    target = tmp_path / kind
    if kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(target)       # reading it would block minikvm for ever
    result = minikvm_command(["run", "--", str(target)])
    assert result.returncode == 126, result.stderr
    assert result.stderr.startswith(f"minikvm: {target}: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_missing_file_is_127(tmp_path: Path) -> None:
    result = minikvm_command(["run", "--", str(tmp_path / "none")])
    assert (result.returncode, result.stderr) == (127, f"minikvm: {tmp_path / 'none'}: "
                                                       f"no such file\n")


def test_a_name_not_in_path_is_command_not_found(tmp_path: Path) -> None:
    skipped = tmp_path / "bin" / "tool"
    skipped.parent.mkdir()
    skipped.write_bytes(b"")
    skipped.chmod(0o644)
    (tmp_path / "dir" / "tool").mkdir(parents=True)
    path = f"{tmp_path / 'dir'}:{tmp_path / 'bin'}"
    result = minikvm_command(["run", "tool"], env={"PATH": path})
    assert result.returncode == 127, result.stderr
    assert result.stderr.startswith("minikvm: tool: command not found in PATH"), result.stderr


def test_path_lookup_is_execvps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-executables and directories are skipped, the first executable
    wins, an empty entry is the current directory, a name with a slash is
    not looked up; the host's own lookup (``shutil.which``) agrees."""
    import shutil
    from minikvm.cli.launch import LaunchError, find_program
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for directory in (first, second, third):
        directory.mkdir()
    (first / "tool").write_bytes(b"")                 # not executable: skipped
    (second / "tool").mkdir()                         # a directory: skipped
    for found in (third / "tool", tmp_path / "here"):
        found.write_bytes(b"")
        found.chmod(0o755)
    monkeypatch.setenv("PATH", f"{first}:{second}:{third}")
    assert find_program("tool") == str(third / "tool") == shutil.which("tool")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{first}::{third}")
    assert find_program("here") == "here"
    with pytest.raises(LaunchError) as error:
        find_program("./tool")                        # a slash: that file, not PATH
    assert error.value.status == 127
    monkeypatch.setenv("PATH", str(first))
    with pytest.raises(LaunchError) as error:
        find_program("tool")
    assert error.value.status == 127 and str(first / "tool") in str(error.value)


# -- --here where it would hand over everything -------------------------------------


@pytest.mark.parametrize("where", ["root", "home"])
def test_here_in_root_or_home_is_refused(tmp_path: Path, where: str) -> None:
    cwd = Path("/") if where == "root" else tmp_path
    result = minikvm_command(["run", "--here", "--", "/bin/true"], cwd=cwd,
                             env={"HOME": str(tmp_path)})
    assert_usage_error(result, "--here", f"--allow-write {cwd}")
    # The same for the other commands that take it, and for --print-policy.
    for command in (["serve", "--here", "--", "/bin/true"],
                    ["snapshot", "save", "-o", str(tmp_path / "x"), "--here", "/bin/true"],
                    ["run", "--here", "--print-policy"]):
        assert_usage_error(minikvm_command(command, cwd=cwd, env={"HOME": str(tmp_path)}),
                           "--here", f"--allow-write {cwd}")


def test_here_below_home_is_granted(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    result = minikvm_command(["run", "--here", "--print-policy"], cwd=project,
                             env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f'allow-write = ["{project}"]' in result.stdout.splitlines()


def test_version_is_the_one_definition() -> None:
    import tomllib
    from minikvm.cli import __version__
    result = minikvm_command(["--version"])
    assert (result.returncode, result.stdout) == (0, f"minikvm {__version__}\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "minikvm.cli.__version__"}


# -- --policy FILE and --print-policy --------------------------------------------------

POLICY_OPTIONS = ["--allow-read", "/usr", "--allow-read", "relative/dir", "--allow-write",
                  "/tmp", "--allow-connect", "127.0.0.1:8080", "--allow-connect",
                  "unix:/run/x.sock", "--allow-connect", "localhost:5432", "--allow-connect",
                  "10.0.0.1:*", "--allow-listen", "127.0.0.1:8000", "--allow-net",
                  "--memory", "256M", "--timeout", "2.5", "--max-fds", "64",
                  "--max-file-size", "1000", "--env", 'QUOTE="\\\x7f\ttab', "--unsetenv",
                  "HOME", "--clearenv"]


def test_print_policy_reads_back_to_the_same_policy(tmp_path: Path) -> None:
    printed = minikvm_command(["run", *POLICY_OPTIONS, "--print-policy"], cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert 'allow-read = ["/usr", "%s"]' % (tmp_path / "relative/dir") in printed.stdout
    profile = tmp_path / "profile.toml"
    profile.write_text(printed.stdout)
    # From another directory: relative paths were written absolute.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = minikvm_command(["run", "--policy", str(profile), "--print-policy"], cwd=elsewhere)
    assert (again.returncode, again.stdout) == (0, printed.stdout), again.stderr
    # And the file parses to the options the command line gave.
    from minikvm.cli.main import build_parser
    from minikvm.cli.options import read_policy_file
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        given = build_parser().parse_args(["run", *POLICY_OPTIONS, "true"])
    finally:
        os.chdir(here)
    for name, value in read_policy_file(str(profile)).items():
        if name.startswith("allow_") and isinstance(value, list):
            value = [item.replace(f"{tmp_path}/", "") for item in value]
        assert getattr(given, name) == value, name


def test_the_command_line_adds_to_lists_and_overrides_values(tmp_path: Path) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text('allow-read = ["/usr"]\nmax-fds = 99\nmemory = "512M"\n'
                       'env = ["A=1"]\n')
    result = minikvm_command(["run", "--allow-read", "/etc", "--policy", str(profile),
                              "--max-fds", "50", "--env", "B=2", "--print-policy"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for line in ('allow-read = ["/usr", "/etc"]', "max-fds = 50", 'memory = "512M"',
                 'env = ["A=1", "B=2"]'):
        assert line in lines, result.stdout


#: (the file's text, the key named in the error, a word of the reason)
BAD_POLICY_FILES = [
    ("memory = 4097\n", "memory", "4097"),                    # the --memory check itself
    ('memory = "100G"\n', "memory", "outside"),
    ("timeout = nan\n", "timeout", "nan"),
    ("timeout = -1\n", "timeout", "-1"),
    ("max-fds = 3\n", "max-fds", "3"),
    ("max-fds = true\n", "max-fds", "True"),                  # a bool is no number
    ("max-file-size = 0\n", "max-file-size", "0"),
    ('env = ["NOEQUALS"]\n', "env", "NOEQUALS"),
    ('allow-connect = ["bad!name:80"]\n', "allow-connect", "nor a host name"),
    ('allow-listen = ["127.0.0.1:*"]\n', "allow-listen", "one port"),
    ('allow-read = "/usr"\n', "allow-read", "list of strings"),
    ("allow-read = [1]\n", "allow-read", "list of strings"),
    ('here = "yes"\n', "here", "true or false"),
    ("allow-reads = []\n", "allow-reads", "not a policy key"),
    ("policy = \"other.toml\"\n", "policy", "not a policy key"),
    ("[sandbox]\nmemory = \"1G\"\n", "sandbox", "not a policy key"),
    ("memory = [\n", "", "not a TOML file"),
]


@pytest.mark.parametrize("text, key, reason", BAD_POLICY_FILES,
                         ids=[text.splitlines()[0] for text, _, _ in BAD_POLICY_FILES])
def test_a_bad_policy_file_is_a_usage_error(tmp_path: Path, text: str, key: str,
                                            reason: str) -> None:
    profile = tmp_path / "profile.toml"
    profile.write_text(text)
    result = minikvm_command(["run", "--policy", str(profile), "--", "/bin/true"])
    assert_usage_error(result, f"{profile}: {key}", reason)


def test_a_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    result = minikvm_command(["run", "--policy", str(tmp_path / "none.toml"), "/bin/true"])
    assert_usage_error(result, str(tmp_path / "none.toml"), "No such file")


def test_policy_keys_use_the_command_lines_checks() -> None:
    """The file's table and the parser must not drift apart: every key is
    an option of ``run``, with the same check function."""
    from minikvm.cli.main import build_parser
    from minikvm.cli.options import FLAG_KEYS, LIST_KEYS, ON_BY_DEFAULT_KEYS, VALUE_KEYS
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    actions = {option: action for action in run._actions for option in action.option_strings}
    for key in FLAG_KEYS:
        assert actions[f"--{key}"].const is True, key
    for key, option in ON_BY_DEFAULT_KEYS.items():
        assert (actions[option].const, actions[option].dest, actions[option].default) == \
            (False, key, True), key
    for key, check in {**LIST_KEYS, **VALUE_KEYS}.items():
        assert actions[f"--{key}"].type is check, key
    sandbox = {action.dest for action in run._actions if action.dest in {
        "here", "allow_read", "allow_write", "allow_connect", "allow_listen", "allow_net",
        "memory", "timeout", "max_fds",
        "max_file_size", "env", "unsetenv", "clearenv", "system", "tmp", "allow_dns",
        "system_root", "keep_tmp", "resolv_conf"}}
    assert sandbox == {key.replace("-", "_") for key in
                       [*FLAG_KEYS, *ON_BY_DEFAULT_KEYS, *LIST_KEYS, *VALUE_KEYS]}


def test_without_a_toml_reader_policy_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10 has no tomllib: without tomli, --policy says so."""
    from minikvm.cli.options import PolicyFileError, read_policy_file
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    profile = tmp_path / "profile.toml"
    profile.write_text("max-fds = 64\n")
    with pytest.raises(PolicyFileError, match="needs Python 3.11 or later"):
        read_policy_file(str(profile))


def test_strings_toml_cannot_hold_are_refused_by_print_policy(tmp_path: Path) -> None:
    from minikvm.cli.options import toml_string
    with pytest.raises(ValueError, match="not valid UTF-8"):
        toml_string(os.fsdecode(b"/data/\xff"))


def test_the_how_to_s_policy_file_reads(tmp_path: Path) -> None:
    """The example profile in docs/howto/sandbox-a-command.md is a file
    --policy accepts, with the values it shows."""
    import re
    from minikvm.cli.options import read_policy_file
    page = (ROOT / "docs" / "howto" / "sandbox-a-command.md").read_text()
    example = re.search(r"```toml\n(.*?)```", page, re.DOTALL).group(1)
    profile = tmp_path / "fetch.toml"
    profile.write_text(example)
    values = read_policy_file(str(profile))
    assert values["memory"] == 256 << 20 and values["max_fds"] == 64
    assert values["allow_connect"] == ["192.0.2.1:443"] and values["clearenv"] is True


@pytest.mark.parametrize("arguments", [
    ["serve", "--x11", "--", "/bin/true"],
    ["serve", "--allow-read", "/tmp", "--x11=headless", "/bin/true"],
    ["snapshot", "save", "-o", "x.snapshot", "--x11-size", "10x10", "/bin/true"],
    ["serve", "--allow-pty", "/bin/true"],
], ids=["serve --x11", "serve --x11=headless", "snapshot save --x11-size", "serve --allow-pty"])
def test_run_only_options_elsewhere_say_they_are_for_run(arguments: list[str]) -> None:
    option = next(word for word in arguments if word.startswith(("--x11", "--allow-pty")))
    result = minikvm_command(arguments)
    assert_usage_error(result, option.partition("=")[0], "is an option of run only")


def test_a_programs_own_x11_argument_is_its_own() -> None:
    assert run_only_option(["serve", "--allow-read", "/tmp", "./prog", "--x11"]) is None
    assert run_only_option(["serve", "--", "./prog", "--allow-pty"]) is None
    assert run_only_option(["run", "--x11", "./prog"]) is None
