"""The sandbox policy against a real file system: every escape is refused.

Each test builds its own directory tree in ``tmp_path``: a grant, files and
symlinks inside it, and a secret outside it that no path may reach.
"""

from __future__ import annotations

import ast
import errno
import os
import pathlib
import shutil
import socket
import subprocess
import threading

import pytest

from minikvm.errors import SyscallError
from minikvm.sandbox import openat2, policy as P
from minikvm.sandbox.policy import Policy, PolicyDenied, PolicyError

O_RDONLY, O_WRONLY, O_RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> dict[str, str]:
    """grant/ (read-only), grant/w/ (read-write), outside/secret, and traps."""
    grant = tmp_path / "grant"
    (grant / "sub").mkdir(parents=True)
    (grant / "w").mkdir()
    (grant / "file").write_text("inside")
    (grant / "sub" / "deep").write_text("deep")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("SECRET")
    (grant / "abs-link").symlink_to(outside / "secret")
    (grant / "rel-link").symlink_to("../outside/secret")
    (grant / "dotdot-dir").symlink_to("..")
    (grant / "ok-link").symlink_to("sub/deep")
    (grant / "proc-root").symlink_to("/proc/self/root")
    (grant / "etc-link").symlink_to("/etc")
    return {"root": str(tmp_path), "grant": str(grant), "w": str(grant / "w"),
            "outside": str(outside), "secret": str(outside / "secret")}


@pytest.fixture
def policy(tree: dict[str, str]):
    with Policy(read=[tree["grant"]], write=[tree["w"]]) as p:
        yield p


def read_via(policy: Policy, path: str, cwd: str, flags: int = O_RDONLY) -> bytes:
    fd = policy.open(path, flags, 0, cwd)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def assert_denied(call, err: int = errno.EACCES) -> PolicyDenied:
    with pytest.raises(PolicyDenied) as info:
        call()
    assert info.value.errno == err, str(info.value)
    return info.value


def assert_hidden(call) -> PolicyDenied:
    """A path outside the grants does not exist: ENOENT, recorded as hidden."""
    denial = assert_denied(call, errno.ENOENT)
    assert denial.hidden and str(denial.reason).startswith("hidden:"), str(denial)
    return denial


# --- reading ---------------------------------------------------------------------


def test_read_inside_grant(policy, tree):
    assert read_via(policy, tree["grant"] + "/file", "/") == b"inside"
    assert read_via(policy, "sub/deep", tree["grant"]) == b"deep"
    assert read_via(policy, "./sub/../file", tree["grant"]) == b"inside"


def test_symlink_that_stays_inside_is_followed(policy, tree):
    assert read_via(policy, "ok-link", tree["grant"]) == b"deep"


def test_dotdot_escape_is_denied(policy, tree):
    denial = assert_hidden(lambda: policy.open("../../" * 10 + "etc/passwd", O_RDONLY, 0,
                                               tree["grant"]))
    assert "outside allowed paths" in denial.reason
    assert_hidden(lambda: policy.open(tree["grant"] + "/../outside/secret", O_RDONLY, 0, "/"))


def test_absolute_symlink_pointing_outside_is_denied(policy, tree):
    denial = assert_hidden(lambda: policy.open("abs-link", O_RDONLY, 0, tree["grant"]))
    assert "resolves outside grant" in denial.reason
    assert_hidden(lambda: policy.open("etc-link/passwd", O_RDONLY, 0, tree["grant"]))


def test_relative_symlink_pointing_outside_is_denied(policy, tree):
    assert_hidden(lambda: policy.open("rel-link", O_RDONLY, 0, tree["grant"]))
    assert_hidden(lambda: policy.open("dotdot-dir/outside/secret", O_RDONLY, 0, tree["grant"]))


def test_proc_magic_links_are_denied(policy, tree):
    assert_hidden(lambda: policy.open("/proc/self/root/etc/passwd", O_RDONLY, 0, "/"))
    assert_hidden(lambda: policy.open("proc-root/etc/passwd", O_RDONLY, 0, tree["grant"]))


def test_proc_magic_links_are_refused_even_inside_a_proc_grant(tree):
    # With /proc itself granted, /proc/self/root is a magic link: the kernel
    # refuses to cross it (RESOLVE_NO_MAGICLINKS -> ELOOP).
    secret_fd = os.open(tree["secret"], os.O_RDONLY)
    try:
        with Policy(read=["/proc"]) as p:
            for path in ("/proc/self/root/etc/passwd", f"/proc/self/fd/{secret_fd}",
                         f"/proc/{os.getpid()}/cwd/x"):
                with pytest.raises(OSError) as info:
                    os.close(p.open(path, O_RDONLY, 0, "/"))
                assert info.value.errno in (errno.ELOOP, errno.ENOENT), path
    finally:
        os.close(secret_fd)


def test_etc_shadow_is_denied(policy):
    assert_hidden(lambda: policy.open("/etc/shadow", O_RDONLY, 0, "/"))
    assert_hidden(lambda: policy.stat("/etc/shadow", "/"))


def test_nothing_is_granted_by_default(tree):
    with Policy() as p:
        assert_hidden(lambda: p.open(tree["grant"] + "/file", O_RDONLY, 0, "/"))
        assert_hidden(lambda: p.open(".", O_RDONLY, 0, tree["grant"]))


def test_prefix_must_end_at_a_component(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "f").write_text("x")
    with Policy(read=[tmp_path / "a"]) as p:
        assert_hidden(lambda: p.open(str(tmp_path / "ab" / "f"), O_RDONLY, 0, "/"))


def test_host_errors_pass_through(policy, tree):
    with pytest.raises(FileNotFoundError):
        policy.open("missing", O_RDONLY, 0, tree["grant"])
    with pytest.raises(OSError) as info:
        policy.open("", O_RDONLY, 0, tree["grant"])
    assert info.value.errno == errno.ENOENT
    with pytest.raises(NotADirectoryError):
        policy.open("file/", O_RDONLY, 0, tree["grant"])
    with pytest.raises(IsADirectoryError):
        policy.open("w", O_WRONLY, 0, tree["grant"])


def test_nofollow_is_honoured(policy, tree):
    with pytest.raises(OSError) as info:
        policy.open("ok-link", O_RDONLY | openat2.O_NOFOLLOW, 0, tree["grant"])
    assert info.value.errno == errno.ELOOP


def test_opened_fds_are_cloexec(policy, tree):
    fd = policy.open("file", O_RDONLY, 0, tree["grant"])
    try:
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_unknown_flag_bits_are_ignored_like_openat(policy, tree):
    assert read_via(policy, "file", tree["grant"], O_RDONLY | openat2.O_LARGEFILE | (1 << 30)) == b"inside"


def test_o_path_needs_only_a_read_grant(policy, tree):
    fd = policy.open("sub", openat2.O_PATH | O_RDWR | os.O_TRUNC, 0, tree["grant"])
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tree["grant"] + "/sub"))
    finally:
        os.close(fd)


def test_the_cwd_must_be_absolute(policy):
    with pytest.raises(ValueError, match="not absolute"):
        policy.open("file", O_RDONLY, 0, "relative/cwd")


# --- writing ---------------------------------------------------------------------


@pytest.mark.parametrize("flags", [O_WRONLY, O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND])
def test_write_in_read_only_grant_is_denied(policy, tree, flags):
    denial = assert_denied(lambda: policy.open("file", flags, 0o644, tree["grant"]))
    assert "read-only grant" in denial.reason
    assert pathlib.Path(tree["grant"], "file").read_text() == "inside"


def test_create_in_write_grant(policy, tree):
    fd = policy.open("w/new", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600, tree["grant"])
    os.write(fd, b"made")
    os.close(fd)
    assert pathlib.Path(tree["w"], "new").read_text() == "made"
    assert read_via(policy, tree["w"] + "/new", "/") == b"made"    # a write grant reads too
    with pytest.raises(FileExistsError):
        policy.open("w/new", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600, tree["grant"])


def test_creating_through_a_dangling_symlink_outside_is_denied(policy, tree):
    target = pathlib.Path(tree["outside"], "planted")
    pathlib.Path(tree["w"], "trap").symlink_to(target)
    assert_hidden(lambda: policy.open("trap", os.O_CREAT | O_WRONLY, 0o644, tree["w"]))
    assert not target.exists()


def test_mkdir_unlink_and_symlink_beneath_a_write_grant(policy, tree):
    with policy.resolve_parent("dir", tree["w"], write=True) as parent:
        os.mkdir(parent.name, 0o755, dir_fd=parent.dirfd)
    assert os.path.isdir(tree["w"] + "/dir")
    with policy.resolve_parent("dir/link", tree["w"], write=True) as parent:
        os.symlink(tree["secret"], parent.name, dir_fd=parent.dirfd)
    # The new link is harmless: following it is refused ...
    assert_hidden(lambda: policy.open("dir/link", O_RDONLY, 0, tree["w"]))
    # ... and unlinking it removes the link, not the file it names.
    with policy.resolve_parent("dir/link", tree["w"], write=True) as parent:
        os.unlink(parent.name, dir_fd=parent.dirfd)
    assert pathlib.Path(tree["secret"]).read_text() == "SECRET"


def test_resolve_parent_in_read_only_grant_is_denied_for_writing(policy, tree):
    assert_denied(lambda: policy.resolve_parent("file", tree["grant"], write=True))
    dirfd, name = policy.resolve_parent("file", tree["grant"], write=False)
    try:
        assert name == "file"
        assert os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_size == 6
    finally:
        os.close(dirfd)


def test_resolve_parent_through_a_symlinked_directory_outside_is_denied(policy, tree):
    assert_hidden(lambda: policy.resolve_parent("etc-link/passwd", tree["grant"], write=False))


def test_grant_directories_themselves_cannot_be_replaced(policy, tree):
    denial = assert_denied(lambda: policy.resolve_parent(tree["w"], "/", write=True))
    assert "grant directory itself" in denial.reason
    assert_denied(lambda: policy.resolve_parent("/", "/", write=True))


def rename_between(policy: Policy, src: str, dst: str, cwd: str) -> None:
    with policy.resolve_parent(src, cwd, write=True) as a, \
            policy.resolve_parent(dst, cwd, write=True) as b:
        os.rename(a.name, b.name, src_dir_fd=a.dirfd, dst_dir_fd=b.dirfd)


def link_between(policy: Policy, src: str, dst: str, cwd: str) -> None:
    with policy.resolve_parent(src, cwd, write=True) as a, \
            policy.resolve_parent(dst, cwd, write=True) as b:
        os.link(a.name, b.name, src_dir_fd=a.dirfd, dst_dir_fd=b.dirfd,
                follow_symlinks=False)


@pytest.mark.parametrize("operation", [rename_between, link_between])
def test_rename_and_link_with_one_end_outside_are_denied(policy, tree, operation):
    pathlib.Path(tree["w"], "mine").write_text("mine")
    assert_hidden(lambda: operation(policy, "mine", tree["outside"] + "/stolen", tree["w"]))
    assert_hidden(lambda: operation(policy, tree["secret"], "taken", tree["w"]))
    # A read-only file cannot be linked or moved into a write grant either:
    assert_denied(lambda: operation(policy, tree["grant"] + "/file", "file", tree["w"]))
    assert not os.path.exists(tree["outside"] + "/stolen")
    assert not os.path.exists(tree["w"] + "/taken")
    operation(policy, "mine", "moved", tree["w"])      # both ends inside: fine
    assert pathlib.Path(tree["w"], "moved").read_text() == "mine"


def test_a_read_only_grant_nested_in_a_write_grant_stays_read_only(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_text("keep")
    with Policy(write=[tmp_path], read=[tmp_path / "ro"]) as p:
        assert_denied(lambda: p.open("ro/f", O_WRONLY, 0, str(tmp_path)))
        assert_denied(lambda: p.resolve_parent("ro/f", str(tmp_path), write=True))
        assert_denied(lambda: p.resolve_parent("ro", str(tmp_path), write=True))
        fd = p.open("new", os.O_CREAT | O_WRONLY, 0o644, str(tmp_path))
        os.close(fd)


# --- stat, readlink, access ------------------------------------------------------------


def test_stat_follows_only_inside_the_grant(policy, tree):
    assert policy.stat("ok-link", tree["grant"]).st_size == 4
    assert os.path.stat.S_ISLNK(policy.stat("abs-link", tree["grant"], follow=False).st_mode)
    assert_hidden(lambda: policy.stat("abs-link", tree["grant"]))
    assert os.path.stat.S_ISDIR(policy.stat(tree["grant"], "/").st_mode)


def test_directories_above_a_grant_exist_and_hold_only_the_way_down(policy, tree):
    """SQLite lstat()s every directory on the way down to its database, and
    ls / find list them: the ones above a grant answer stat with the real
    directory's metadata, open read-only (an O_PATH fd the host never
    reads), access without W_OK, and list only the next step towards the
    grants; their other entries do not exist, and nothing may be made there."""
    root = tree["root"]
    for above in (root, os.path.dirname(root), "/"):
        assert os.path.samestat(policy.stat(above, "/", follow=False), os.stat(above))
    assert os.path.samestat(policy.stat("..", tree["grant"]), os.stat(root))
    assert_hidden(lambda: policy.stat(tree["outside"], "/"))
    assert_hidden(lambda: policy.stat(root + "/gran", "/"))     # a prefix, not a parent
    fd = policy.open(root, O_RDONLY | os.O_DIRECTORY, 0, "/")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(root))
        with pytest.raises(OSError):        # O_PATH: the host cannot read it
            os.listdir(fd)
    finally:
        os.close(fd)
    policy.access(root, os.R_OK | os.X_OK, "/")
    assert_denied(lambda: policy.access(root, os.W_OK, "/"))
    assert_denied(lambda: policy.open(root, O_WRONLY, 0, "/"))
    assert_denied(lambda: policy.open(root + "/new", os.O_CREAT | O_WRONLY, 0o644, "/"))
    assert_denied(lambda: policy.resolve_parent(root + "/new", "/", write=True))
    assert_hidden(lambda: policy.resolve_parent(tree["outside"], "/", write=False))
    assert_hidden(lambda: policy.open(tree["outside"] + "/secret", O_RDONLY, 0, "/"))
    assert policy.visible_entries(root) == {"grant"}
    assert policy.visible_entries("/") == {root.split("/")[1]}
    assert policy.visible_entries(tree["grant"]) is None


def test_readlink(policy, tree):
    assert policy.readlink("abs-link", tree["grant"]) == tree["secret"]
    with pytest.raises(OSError) as info:
        policy.readlink("file", tree["grant"])
    assert info.value.errno == errno.EINVAL


def test_access(policy, tree):
    policy.access("file", os.R_OK, tree["grant"])
    policy.access("w", os.R_OK | os.W_OK, tree["grant"])
    assert_denied(lambda: policy.access("file", os.W_OK, tree["grant"]))
    assert_hidden(lambda: policy.access("abs-link", os.F_OK, tree["grant"]))
    with pytest.raises(FileNotFoundError):
        policy.access("missing", os.F_OK, tree["grant"])


# --- races -------------------------------------------------------------------------------


def test_a_rename_race_never_reaches_outside(tree):
    """Swap a directory and a symlink to outside as fast as possible while opening.

    A string check followed by open() loses this race sometimes; openat2 never.
    """
    w = pathlib.Path(tree["w"])
    (w / "real").mkdir()
    (w / "real" / "secret").write_text("inside")
    (w / "evil").symlink_to(tree["outside"])
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            os.rename(w / "real", w / "tmp")
            os.rename(w / "evil", w / "real")
            os.rename(w / "real", w / "evil")
            os.rename(w / "tmp", w / "real")

    thread = threading.Thread(target=swapper)
    thread.start()
    seen = set()
    try:
        with Policy(read=[tree["w"]]) as p:
            for _ in range(3000):
                try:
                    seen.add(read_via(p, "real/secret", tree["w"]))
                except (PolicyDenied, FileNotFoundError):
                    pass
    finally:
        stop.set()
        thread.join()
    assert b"SECRET" not in seen


# --- devices, endpoints, limits, the log ----------------------------------------------------


def test_virtual_devices(policy):
    assert policy.is_virtual_device("/dev/null") == "null"
    assert policy.is_virtual_device("/dev/./zero") == "zero"
    assert policy.is_virtual_device("../dev/urandom", "/tmp") == "urandom"
    assert policy.is_virtual_device("random", "/dev") == "random"
    assert policy.is_virtual_device("/dev/sda") is None
    assert policy.is_virtual_device("/tmp/dev/null") is None


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", "127.0.0.1:8080"),
    ("[::1]:80", "[::1]:80"),
    ("[0:0::1]:80", "[::1]:80"),
    ("[::ffff:10.0.0.1]:443", "10.0.0.1:443"),
    ("unix:/run/app.sock", "unix:/run/app.sock"),
    ("unix:/run//x/../app.sock", "unix:/run/app.sock"),
    ("unix:@abstract", "unix:@abstract"),
])
def test_parse_endpoint(text, expected):
    assert str(Policy.parse_endpoint(text)) == expected


@pytest.mark.parametrize("text", ["localhost:80", "127.0.0.1", "127.0.0.1:0",
                                  "127.0.0.1:70000", "::1:80", "[127.0.0.1]:80",
                                  "unix:relative.sock", "unix:", ":80"])
def test_parse_endpoint_rejects(text):
    with pytest.raises(PolicyError, match="endpoint"):
        Policy.parse_endpoint(text)


def test_check_connect(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "app.sock"))
    with server, Policy(connect=["127.0.0.1:8080", "[::1]:80", f"unix:{tmp_path}/app.sock",
                                 "unix:@bus", "unix:/run/missing.sock"]) as p:
        assert p.check_connect(socket.AF_INET, ("127.0.0.1", 8080)) == ("127.0.0.1", 8080)
        p.check_connect(socket.AF_INET6, ("::1", 80, 0, 0))
        p.check_connect(socket.AF_INET6, ("::ffff:127.0.0.1", 8080, 0, 0))
        # a unix path is reached through the socket pinned when the policy was built
        pinned = p.check_connect(socket.AF_UNIX, f"{tmp_path}/app.sock")
        assert pinned == p.check_connect(socket.AF_UNIX, b"app.sock", str(tmp_path))
        assert pinned.startswith(b"/proc/self/fd/")
        assert os.stat(pinned).st_ino == os.stat(tmp_path / "app.sock").st_ino
        assert p.check_connect(socket.AF_UNIX, b"\0bus") == b"\0bus"
        with pytest.raises(FileNotFoundError, match="when the sandbox started"):
            p.check_connect(socket.AF_UNIX, "/run/missing.sock")
        assert "unix:/run/missing.sock (No such file" in p.describe()
        assert_denied(lambda: p.check_connect(socket.AF_INET, ("127.0.0.1", 8081)))
        assert_denied(lambda: p.check_connect(socket.AF_INET, ("127.0.0.2", 8080)))
        assert_denied(lambda: p.check_connect(socket.AF_INET6, ("::2", 80, 0, 0)))
        assert_denied(lambda: p.check_connect(socket.AF_UNIX, "/run/other.sock"))
        # a refused abstract name reads as one nobody listens on, so a client
        # (libxcb) falls back to the path socket
        assert_denied(lambda: p.check_connect(socket.AF_UNIX, "\0other"), errno.ECONNREFUSED)
        assert_denied(lambda: p.check_connect(socket.AF_NETLINK, (0, 0)), errno.EAFNOSUPPORT)
        assert p.connect_ports == (80, 8080)


def test_limits():
    with Policy(max_fds=8, max_file_size=100) as p:
        p.check_fd_count(8)
        assert_denied(lambda: p.check_fd_count(9), errno.EMFILE)
        p.check_file_size(100)
        assert_denied(lambda: p.check_file_size(101), errno.EFBIG)


def test_refused_operations_are_eperm_and_logged():
    with Policy() as p:
        error = p.refuse("ptrace", "1")
        assert isinstance(error, SyscallError) and error.errno == errno.EPERM
        assert error.errno == P.REFUSED_ERRNO
        assert p.denials[-1].syscall == "ptrace"
    for name in ("fork", "clone", "ptrace", "mount", "kill"):
        assert name in P.REFUSED_SYSCALLS


def test_denial_log_and_summary(policy, tree):
    assert policy.summary() == "sandbox: nothing was denied"
    for _ in range(3):
        with pytest.raises(PolicyDenied):
            policy.open("/etc/shadow", O_RDONLY, 0, "/", syscall="openat")
    with pytest.raises(PolicyDenied):
        policy.open("file", O_WRONLY, 0, tree["grant"], syscall="openat")
    assert [d.syscall for d in policy.denials] == ["openat"] * 4
    assert policy.denials[0] == P.Denial("openat", "/etc/shadow", errno.ENOENT,
                                         "hidden: outside allowed paths")
    summary = policy.summary()
    assert "4 request(s) denied" in summary
    assert "3 x openat(/etc/shadow) = -ENOENT (hidden: outside allowed paths)" in summary
    assert "1 x openat(" + tree["grant"] + "/file) = -EACCES (resolves into read-only" in summary


def test_denial_log_is_bounded(policy):
    for _ in range(P.MAX_RECORDED_DENIALS + 5):
        with pytest.raises(PolicyDenied):
            policy.open("/etc/shadow", O_RDONLY, 0, "/")
    assert len(policy.denials) == P.MAX_RECORDED_DENIALS
    assert policy.denials_dropped == 5
    assert "5 more not recorded" in policy.summary()


def test_policy_denied_is_a_syscall_error_with_a_clear_message(policy):
    with pytest.raises(SyscallError) as info:
        policy.open("/etc/shadow", O_RDONLY, 0, "/")
    assert str(info.value) == "ENOENT: /etc/shadow: outside allowed paths"
    assert info.value.reason == "hidden: outside allowed paths"     # what --trace shows


def test_describe(tree):
    with Policy(read=[tree["grant"]], write=[tree["w"]], connect=["127.0.0.1:80"]) as p:
        text = p.describe()
        assert f"read-only   {tree['grant']}" in text
        assert f"read-write  {tree['w']}" in text
        assert "127.0.0.1:80" in text and "/dev/null" in text
        assert p.read_paths == (tree["grant"],) and p.write_paths == (tree["w"],)


def test_here_grants_the_cwd_read_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Policy.here() as p:
        assert p.write_paths == (str(tmp_path),)
        os.close(p.open("made", os.O_CREAT | O_WRONLY, 0o644, str(tmp_path)))


def test_bad_grants_are_reported(tmp_path):
    with pytest.raises(PolicyError, match="no such directory"):
        Policy(read=[tmp_path / "missing"])
    (tmp_path / "f").write_text("")
    with pytest.raises(PolicyError, match="not a directory"):
        Policy(read=[tmp_path / "f"])
    with pytest.raises(PolicyError, match="give a list"):
        Policy(read=str(tmp_path))       # type: ignore[arg-type]


# --- pinned against the kernel headers -------------------------------------------------------


def test_open_how_layout():
    import ctypes
    assert ctypes.sizeof(openat2.open_how) == 24
    assert [openat2.open_how.flags.offset, openat2.open_how.mode.offset, openat2.open_how.resolve.offset] == [0, 8, 16]


def test_open_flags_match_the_host():
    for name in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC",
                 "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_DIRECT", "O_DIRECTORY",
                 "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_SYNC", "O_PATH", "O_TMPFILE"):
        assert getattr(openat2, name) == getattr(os, name), name


C_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/openat2.h>
int main(void) {
    printf("%zu %zu %zu %zu\n", sizeof(struct open_how), offsetof(struct open_how, flags),
           offsetof(struct open_how, mode), offsetof(struct open_how, resolve));
    printf("%d %d %d %d %d %d\n", RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS,
           RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_CACHED);
    return 0;
}
"""


def test_openat2_constants_match_linux_openat2_h(tmp_path):
    if not shutil.which("cc") or not os.path.exists("/usr/include/linux/openat2.h"):
        pytest.skip("needs a C compiler and <linux/openat2.h>")
    (tmp_path / "probe.c").write_text(C_PROBE)
    subprocess.run(["cc", "-o", str(tmp_path / "probe"), str(tmp_path / "probe.c")], check=True)
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0].split() == ["24", "0", "8", "16"]
    assert [int(v) for v in out[1].split()] == [
        openat2.RESOLVE_NO_XDEV, openat2.RESOLVE_NO_MAGICLINKS, openat2.RESOLVE_NO_SYMLINKS,
        openat2.RESOLVE_BENEATH, openat2.RESOLVE_IN_ROOT, openat2.RESOLVE_CACHED]


def test_sandbox_modules_import_only_layer_0_and_each_other():
    names = ("openat2", "grants", "links", "endpoints", "audit", "policy", "landlock", "seccomp",
             "ptys", "network_rules")
    allowed = {"minikvm.errors", "minikvm.linux_abi"} | {f"minikvm.sandbox.{n}" for n in names}
    package = pathlib.Path(P.__file__).parent
    for name in names:
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minikvm"):
                targets = {node.module} if node.module != "minikvm" else {
                    f"minikvm.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names if a.name.startswith("minikvm")}
            else:
                continue
            assert targets <= allowed, f"{name}.py imports {targets - allowed}"


# --- nested grants: rights follow the object (issue 10, class 1) -------------------


@pytest.fixture
def nested(tmp_path):
    """``w`` writable holding ``w/a/ro`` read-only, and ``r`` read-only holding ``r/w``."""
    (tmp_path / "w" / "a" / "ro").mkdir(parents=True)
    (tmp_path / "w" / "a" / "ro" / "secret").write_text("secret")
    (tmp_path / "r" / "w").mkdir(parents=True)
    (tmp_path / "r" / "secret").write_text("secret")
    os.symlink("a/ro", tmp_path / "w" / "l")
    os.symlink("..", tmp_path / "r" / "w" / "up")
    os.symlink("w", tmp_path / "r" / "to-w")
    with Policy(write=[tmp_path / "w", tmp_path / "r" / "w"],
                read=[tmp_path / "w" / "a" / "ro", tmp_path / "r"]) as policy:
        yield tmp_path, policy


def test_writes_follow_where_the_kernel_lands(nested):
    root, p = nested
    w, r = f"{root}/w", f"{root}/r"
    for path, flags in [(f"{w}/l/secret", os.O_WRONLY), (f"{w}/l/new", os.O_WRONLY | os.O_CREAT),
                        (f"{r}/w/up/secret", os.O_WRONLY), (f"{r}/w/up/new", os.O_CREAT | os.O_WRONLY),
                        (f"{w}/a/ro/secret", os.O_RDWR)]:
        assert_denied(lambda: p.open(path, flags, 0o644, "/"))
    assert not os.path.exists(f"{w}/a/ro/new") and not os.path.exists(f"{r}/new")
    # the same objects can be read, and writable places can be written by any spelling
    os.close(p.open(f"{w}/l/secret", os.O_RDONLY, 0, "/"))
    os.close(p.open(f"{r}/w/up/secret", os.O_RDONLY, 0, "/"))
    os.close(p.open(f"{r}/to-w/made", os.O_WRONLY | os.O_CREAT, 0o644, "/"))
    assert os.path.exists(f"{r}/w/made")
    assert (root / "w" / "a" / "ro" / "secret").read_text() == "secret"


def test_entries_and_metadata_follow_where_the_kernel_lands(nested):
    root, p = nested
    w = f"{root}/w"
    assert_denied(lambda: p.resolve_parent(f"{w}/l/secret", "/", write=True))
    assert_denied(lambda: p.open_to_change(f"{w}/l/secret", "/", True))
    fd = p.open(f"{w}/l/secret", os.O_RDONLY, 0, "/")
    try:
        assert_denied(lambda: p.check_may_change(fd, f"{w}/l/secret"))
    finally:
        os.close(fd)
    assert_denied(lambda: p.access(f"{w}/l/secret", os.W_OK, "/"))
    p.access(f"{w}/l/secret", os.R_OK, "/")
    # the directories on the way down to a nested grant cannot move
    assert_denied(lambda: p.resolve_parent(f"{w}/a", "/", write=True))
    with p.resolve_parent(f"{w}/l", "/", write=True):     # the symlink itself may
        pass


def test_a_directory_opened_read_only_is_not_a_write(tmp_path):
    """O_TMPFILE contains O_DIRECTORY's bit: a mask test took every directory
    open for a write (issue 11's first bug)."""
    with Policy(read=[tmp_path]) as p:
        os.close(p.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY, 0o755, "/"))
        assert_denied(lambda: p.open(str(tmp_path), os.O_TMPFILE | os.O_RDWR, 0o600, "/"))
