"""Issue 11, item 3: /proc and /dev synthesized from the sandbox, never the host's.

``tests/programs/procfs.c`` reads /proc about itself and checks what it
reads against what it knows (its pointers, getpid, its fds, getrlimit,
sched_getaffinity, uname): its output is the same natively and in the
sandbox, line for line.  Busybox's ``cat /proc/cpuinfo``, ``free``,
``uptime``, ``ps``, ``df`` and ``ls -l /proc/self/fd`` show the sandbox's
machine.  ``tests/hostile/procfs_escape.c`` tries to reach the host through
/proc (the magic links, other pids, minikvm's own pid, a stdio fd opened on
a host file) and to break the synthesized files (writes, tiny getdents
buffers, huge offsets, bad pointers, a maps file of thousands of lines).
``/dev/tty`` is tested on a pseudo-terminal made the controlling terminal.
"""

from __future__ import annotations

import errno
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.guest_runs import minikvm_command, minikvm_environment, run_minikvm, run_native
from tests.programs.build import DEFAULT_BUILD_DIR, build, program

pytestmark = pytest.mark.kvm

BUSYBOX = Path("/bin/busybox")
VARIANTS = ("glibc-static", "musl-static")
HOSTILE = Path(__file__).resolve().parent / "hostile"
TIMEOUT_SECONDS = 90          # a backstop for a hung guest, never an assertion
needs_busybox = pytest.mark.skipif(not BUSYBOX.exists(),
                                   reason="no /bin/busybox (apt-get install busybox-static)")


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_program_reading_proc_about_itself_sees_what_it_knows(variant, tmp_path):
    """exe, cmdline, environ, maps (main in an r-xp line named by the
    program, a local in [stack], mprotect's split), status (Pid, PPid,
    Threads with a second thread), task/, fd/ (exactly the open fds), a
    pipe's fd link, limits, cpuinfo against sched_getaffinity, meminfo and
    uptime against sysinfo, the kernel's names against uname, seq-file
    lseek and reads past the end: the same lines natively and in the
    sandbox, and every check "ok"."""
    binary = program("procfs", variant).resolve()
    arguments = [binary, "first", "with space", ""]
    env = minikvm_environment()
    native = run_native(arguments, cwd=tmp_path, env=env, text=True, timeout=TIMEOUT_SECONDS)
    sandboxed = run_minikvm(["--", *arguments], cwd=tmp_path, env=env, text=True,
                            timeout=TIMEOUT_SECONDS)
    assert "Traceback" not in sandboxed.stderr, sandboxed.stderr
    assert sandboxed.returncode == native.returncode == 0, sandboxed.stderr
    assert sandboxed.stdout == native.stdout
    assert "WRONG" not in sandboxed.stdout, sandboxed.stdout
    assert sandboxed.stdout.count(": ok\n") >= 30
    assert "lseek-end: -1 22\n" in sandboxed.stdout and "read-far: 0\n" in sandboxed.stdout


def busybox(*arguments: object, options: tuple = (), cwd: Path) -> subprocess.CompletedProcess:
    result = run_minikvm([*options, "--", BUSYBOX, *arguments], cwd=cwd, text=True,
                         timeout=TIMEOUT_SECONDS)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@needs_busybox
def test_cpuinfo_shows_one_processor_as_cpuid_does(tmp_path):
    result = busybox("cat", "/proc/cpuinfo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("processor")] == \
        ["processor\t: 0"]
    flags = next(line for line in result.stdout.splitlines() if line.startswith("flags"))
    assert " lm " in flags + " " and " sse2 " in flags + " "
    assert busybox("nproc", cwd=tmp_path).stdout == "1\n"


@needs_busybox
def test_free_shows_the_memory_limit(tmp_path):
    """``free`` reads /proc/meminfo: the total is the guest's memory (the
    ``--memory`` limit less minikvm's page tables), no swap."""
    result = busybox("free", "-m", options=("--memory", "256M"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    memory = result.stdout.splitlines()[1].split()
    assert memory[0] == "Mem:" and 200 <= int(memory[1]) <= 256, result.stdout
    assert result.stdout.splitlines()[-1].split()[1:] == ["0", "0", "0"]   # swap


@needs_busybox
def test_uptime_ps_and_df_see_the_sandbox(tmp_path):
    """The sandbox came up just now; the only process is the guest (pid
    1000, parent 999); df lists the view's mounts, which all exist."""
    up = busybox("uptime", cwd=tmp_path)
    assert up.returncode == 0 and " up 0 min" in up.stdout, up.stdout
    ps = busybox("ps", "-o", "pid,ppid,comm", cwd=tmp_path)
    assert ps.returncode == 0, ps.stderr
    assert [line.split() for line in ps.stdout.splitlines()[1:]] == [["1000", "999", "busybox"]]
    grant = tmp_path / "granted"
    grant.mkdir()
    df = busybox("df", options=("--allow-read", grant), cwd=tmp_path)
    assert df.returncode == 0, df.stderr
    assert df.stdout.splitlines()[-1].split()[-1] == str(grant)


@needs_busybox
def test_ls_of_proc_self_fd_lists_the_guests_fds(tmp_path):
    """stdin a pipe, stdout a pipe, stderr a granted file: each link shows
    the guest's view, and nothing else is listed."""
    grant = tmp_path / "granted"
    grant.mkdir()
    log = grant / "err.log"
    with open(log, "w") as stderr:
        result = subprocess.run(
            minikvm_command(["--allow-read", grant, "--", BUSYBOX, "ls", "-l", "/proc/self/fd/"]),
            input="", stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=tmp_path,
            env=minikvm_environment(), timeout=TIMEOUT_SECONDS)
    links = {line.split()[-3]: line.split()[-1] for line in result.stdout.splitlines()
             if " -> " in line}
    assert set(links) == {"0", "1", "2"}, result.stdout
    assert links["0"].startswith("pipe:[") and links["1"].startswith("pipe:[")
    assert links["2"] == str(log)


@needs_busybox
def test_a_link_out_of_proc_is_the_guests_path(tmp_path):
    """``/proc/self/cwd/f`` and ``/proc/self/root/<grant>/f`` are the
    granted file, read through the policy; ``mkdir /proc/self/cwd/d`` makes
    ``d`` in the working directory, as on Linux."""
    grant = tmp_path / "granted"
    grant.mkdir()
    (grant / "f").write_text("through the link\n")
    read = busybox("cat", "/proc/self/cwd/f", f"/proc/self/root{grant}/f",
                   options=("--allow-write", grant), cwd=grant)
    assert read.returncode == 0, read.stderr
    assert read.stdout == "through the link\n" * 2
    made = busybox("mkdir", "/proc/self/cwd/d", options=("--allow-write", grant), cwd=grant)
    assert made.returncode == 0, made.stderr
    assert (grant / "d").is_dir()


# --- hostile ---------------------------------------------------------------------------
#: What procfs_escape.c must get: ENOENT for everything of the host,
#: refusals for every write, no leak, sane answers for abuse.
ESCAPES: dict[str, int] = {
    **{name: errno.ENOENT for name in (
        "root-shadow", "root-outside", "thread-self-root", "task-root-outside", "cwd-dotdot",
        "root-dotdot", "fd-dir-dotdot", "openat-root", "pid1-environ", "pid1-root",
        "host-environ", "host-cmdline", "host-maps", "host-stat", "kcore", "sysrq",
        "self-mem", "sys-kernel-other")},
    "fd-root": 0, "fd-dir-inside": 0,
    **{name: 0 for name in ("leak-proc-listing", "leak-mountinfo", "leak-mounts",
                            "leak-maps", "leak-stdin-link", "leak-dev-stdin-link",
                            "leak-environ-host", "leak-cmdline-host")},
    **{name: errno.EACCES for name in (
        "write-status", "rdwr-maps", "trunc-environ", "write-hostname", "write-overcommit",
        "create-in-proc", "mkdir-proc", "unlink-proc", "rmdir-proc", "rename-proc",
        "symlink-proc", "truncate-proc", "access-write")},
    "create-excl": errno.EEXIST, "write-dir": errno.EISDIR, "chmod-proc": errno.EPERM,
    "write-ro-fd": errno.EBADF, "pwrite-ro-fd": errno.EBADF, "ftruncate-proc": errno.EINVAL,
    "fchmod-proc": errno.EPERM, "mmap-proc": errno.ENODEV,
    "lseek-huge": 0, "read-huge": 0, "pread-huge": 0, "pread-negative": errno.EINVAL,
    "lseek-negative": errno.EINVAL, "lseek-end": errno.EINVAL, "lseek-data": errno.EINVAL,
    "read-bad-pointer": errno.EFAULT, "read-kernel-pointer": errno.EFAULT,
    "readlink-bad-pointer": errno.EFAULT, "readlink-small-buffer": 0,
    "readlink-not-link": errno.EINVAL, "open-bad-path": errno.EFAULT,
    "getdents-1": errno.EINVAL, "getdents-0": errno.EINVAL,
    "getdents-bad-pointer": errno.EFAULT, "getdents-small-end": 0,
    "getdents-same-count": 1, "getdents-past-end": 0, "read-directory": errno.EISDIR,
    "getdents-file": errno.ENOTDIR, "maps-lines-over-2000": 1, "maps-has-last": 1,
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_proc_gives_nothing_of_the_host(variant, tmp_path):
    """The magic links lead only into the view; pid 1 and minikvm's own
    host pid do not exist; a stdio fd opened on a host file outside the
    view does not name it; /proc cannot be written; abuse of its files is
    answered as Linux answers it, without a traceback."""
    binary = build(HOSTILE / "procfs_escape.c", DEFAULT_BUILD_DIR / "hostile", variant)
    grant, outside = tmp_path / "grant", tmp_path / "outside"
    grant.mkdir()
    outside.mkdir()
    (grant / "inside").write_text("inside\n")
    (outside / "secret").write_text("TOPSECRET\n")
    env = dict(minikvm_environment(), MINIKVM_HOST_ONLY="1")
    with open(outside / "secret") as stdin:
        # minikvm's own pid is the one /proc/<pid> that would hold the host's
        # secrets; the guest is given it as an argument and must not find it.
        process = subprocess.Popen(
            [sys.executable, "-c",
             "import os, sys; os.execv(sys.executable, [sys.executable, '-m', 'minikvm', "
             "'run', '--clearenv', '--allow-read', sys.argv[1], '--', sys.argv[2], "
             "sys.argv[1], sys.argv[3], str(os.getpid())])",
             str(grant), str(binary), str(outside)],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=grant, env=env)
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert process.returncode == 0, stderr
    assert "TOPSECRET" not in stdout
    results = {}
    for line in stdout.splitlines():
        name, _, value = line.partition(": ")
        results[name] = int(value)
    wrong = {name: (results.get(name), wanted) for name, wanted in ESCAPES.items()
             if results.get(name) != wanted}
    assert not wrong, f"(got, wanted): {wrong}"


# --- /dev/tty ---------------------------------------------------------------------------
@needs_busybox
def test_dev_tty_without_a_controlling_terminal_is_enxio(tmp_path):
    """A sandbox started without a controlling terminal (a new session)
    gets ENXIO for /dev/tty, as Linux answers such a process."""
    script = "echo x > /dev/tty; echo status=$?"
    native = subprocess.run([BUSYBOX, "sh", "-c", script], capture_output=True, text=True,
                            start_new_session=True, timeout=TIMEOUT_SECONDS)
    sandboxed = subprocess.run(minikvm_command(["--", BUSYBOX, "sh", "-c", script]),
                               capture_output=True, text=True, start_new_session=True,
                               env=minikvm_environment(), timeout=TIMEOUT_SECONDS)
    assert "Traceback" not in sandboxed.stderr
    assert (sandboxed.stdout, sandboxed.stderr) == (native.stdout, native.stderr)
    assert "status=1" in native.stdout and "No such device or address" in native.stderr


def _run_on_a_terminal(argv: list[str]) -> bytes:
    """Run *argv* with a pseudo-terminal as its controlling terminal and
    stdio; everything it wrote to the terminal."""
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execve(argv[0], argv, minikvm_environment())
        finally:
            os._exit(127)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], TIMEOUT_SECONDS)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:          # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        os.waitpid(pid, 0)
    return output


@needs_busybox
def test_dev_tty_is_the_controlling_terminal(tmp_path):
    """With a controlling terminal, /dev/tty is it: what the guest writes
    there reaches the terminal, though its stdout is redirected away."""
    script = "echo to-the-terminal > /dev/tty 2>/dev/null; echo status=$? > /dev/tty"
    output = _run_on_a_terminal([sys.executable, "-m", "minikvm", "run", "--", str(BUSYBOX),
                                 "sh", "-c", f"exec > /dev/null; {script}"])
    assert b"to-the-terminal" in output, output
    assert b"status=0" in output, output


@needs_busybox
def test_exe_of_a_program_started_by_a_symlink_is_the_file_itself(tmp_path):
    """/proc/self/exe is the file with its symlinks resolved, as Linux has
    it (Firefox's /usr/bin/firefox-esr is a link, and it looks for its
    libraries next to the file the link leads to)."""
    link = tmp_path / "readlink"           # busybox runs the applet its name says
    link.symlink_to(BUSYBOX)
    native = run_native([link, "/proc/self/exe"], cwd=tmp_path, text=True,
                        timeout=TIMEOUT_SECONDS)
    assert native.stdout == f"{BUSYBOX.resolve()}\n"
    sandboxed = run_minikvm(["--here", "--", link, "/proc/self/exe"], cwd=tmp_path,
                            text=True, timeout=TIMEOUT_SECONDS)
    assert (sandboxed.returncode, sandboxed.stdout) == (0, native.stdout), sandboxed.stderr
