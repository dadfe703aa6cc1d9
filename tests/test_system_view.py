"""The read-only system view, on by default (:mod:`minikvm.sandbox.system_view`).

* Ordinary programs give native answers with no grant at all:
  ``TZ=Europe/Paris date -d @0``, ``date`` (through ``/etc/localtime``),
  ``id -un`` (``/etc/passwd``, ``nsswitch.conf``), each the host's dynamic
  ``/usr/bin`` program, run natively and under minikvm.
* The view never shows a secret: the filter is tested directly, the lists
  are checked against it, and a temporary fake root that holds secrets —
  some reached through symlinks from harmless names — is shown to a real
  guest (``--system-root``), which finds only what is harmless.  A hostile
  program (``tests/hostile/system_view.c``) looks for the host's secrets
  and tries to change the view.
* ``--no-system`` turns it off, ``system = false`` in a policy file too,
  and ``--print-policy`` lists every entry.

Nothing here is timed; subprocess timeouts only stop a guest that hangs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minikvm.sandbox.system_view import (NEVER_SHOWN, SYSTEM_DIRECTORIES,
                                         SYSTEM_ETC_DIRECTORIES, SYSTEM_ETC_FILES,
                                         never_shown, refused_reason, system_mounts)
from tests.guest_runs import minikvm_command, minikvm_environment, run_minikvm, run_native
from tests.programs.build import DEFAULT_BUILD_DIR, build

HOSTILE = Path(__file__).resolve().parent / "hostile"
BUSYBOX = shutil.which("busybox")
RUN_TIMEOUT_SECONDS = 90        # a subprocess limit, never an assertion


def host_program(name: str) -> str:
    path = f"/usr/bin/{name}"
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed")
    return path


# --- the filter and the lists ------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/sudoers.d/90-cloud", "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssh", "/etc/ssl/private/server.key", "/root", "/root/.ssh/id_ed25519", "/home",
    "/home/someone/.netrc", "/var", "/var/lib/secret", "/run", "/run/user/1000", "/tmp",
    "/tmp/x", "/etc/resolv.conf",
    # directories that hold one of those would show it whole
    "/", "/etc", "/etc/ssl",
])
def test_the_filter_refuses_secrets_and_what_holds_them(path: str) -> None:
    assert refused_reason(path) is not None, path


def test_the_filter_refuses_the_users_home_wherever_it_is(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/srv/people/alice")
    assert "/srv/people/alice" in never_shown()
    assert refused_reason("/srv/people/alice/.bashrc") is not None
    assert refused_reason("/srv/people") is not None


@pytest.mark.parametrize("path", ["/usr", "/lib64", "/etc/passwd", "/etc/ssl/certs",
                                  "/etc/localtime", "/etc/sshd-like-name"])
def test_the_filter_lets_harmless_paths_through(path: str) -> None:
    assert refused_reason(path) is None, refused_reason(path)


def test_no_entry_of_the_lists_is_refused() -> None:
    """The lists and the filter agree: the filter is a second check, not the list."""
    for path in (*SYSTEM_DIRECTORIES, *SYSTEM_ETC_DIRECTORIES, *SYSTEM_ETC_FILES):
        assert refused_reason(path) is None, (path, refused_reason(path))


def make_fake_root(root: Path) -> None:
    """A root with harmless files, secrets, and harmless names leading to secrets."""
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "ssl" / "certs").mkdir(parents=True)
    (root / "etc" / "ssl" / "private").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "share" / "zoneinfo").mkdir(parents=True)
    (root / "home" / "alice").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "etc" / "passwd").write_text("fake:x:1234:1234::/nowhere:/bin/sh\n")
    (root / "usr" / "share" / "zoneinfo" / "UTC").write_text("TZif-fake\n")
    (root / "etc" / "ssl" / "certs" / "ca.pem").write_text("public\n")
    for secret in ("etc/shadow", "etc/gshadow", "etc/sudoers", "etc/ssh/ssh_host_rsa_key",
                   "etc/ssl/private/key.pem", "home/alice/secret", "var/secret"):
        (root / secret).write_text("SECRET\n")
    # Harmless names of the list, leading to secrets:
    (root / "etc" / "hosts").symlink_to("shadow")
    (root / "etc" / "group").symlink_to("../home/alice/secret")
    (root / "etc" / "services").symlink_to("/etc/shadow")       # outside the fake root
    (root / "etc" / "ld.so.conf.d").symlink_to("ssl/private")
    # and one to a harmless place inside it, which is shown:
    (root / "etc" / "localtime").symlink_to("../usr/share/zoneinfo/UTC")


def test_a_fake_root_shows_only_its_harmless_entries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_fake_root(root)
    shown = {mount.guest: mount.host for mount in system_mounts(str(root))}
    assert set(shown) == {"/usr", "/etc/passwd", "/etc/localtime", "/etc/ssl/certs"}
    assert shown["/etc/passwd"] == str(root / "etc" / "passwd")


# --- native answers under the default view -----------------------------------------------


@pytest.mark.kvm
@pytest.mark.parametrize("arguments, env", [
    (["date", "-d", "@0"], {"TZ": "Europe/Paris"}),
    (["date", "-d", "@1700000000", "+%F %T %Z"], {"TZ": "America/New_York"}),
    (["date", "-d", "@0"], {}),                       # /etc/localtime
    (["id", "-un"], {}),
    (["id", "-gn"], {}),
])
def test_programs_give_native_answers_under_the_default_view(arguments, env,
                                                             tmp_path: Path) -> None:
    program = host_program(arguments[0])
    native = run_native([program, *arguments[1:]], cwd=tmp_path, env=env,
                        timeout=RUN_TIMEOUT_SECONDS)
    options = ["--clearenv"] + [f"--env={name}={value}" for name, value in env.items()]
    guest = run_minikvm([*options, "--", program, *arguments[1:]], cwd=tmp_path,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert native.returncode == 0 and native.stdout, native.stderr
    assert (guest.stdout, guest.stderr, guest.returncode) == \
        (native.stdout, native.stderr, native.returncode)


@pytest.mark.kvm
def test_no_system_turns_the_view_off(tmp_path: Path) -> None:
    program = host_program("id")
    guest = run_minikvm(["--no-system", "--", program, "-un"], cwd=tmp_path, text=True,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert guest.returncode == 126
    assert "outside the sandbox's view" in guest.stderr


@pytest.mark.kvm
@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
def test_a_guest_sees_the_fake_roots_harmless_files_and_no_secret(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_fake_root(root)
    def guest(*arguments: object) -> str:
        done = run_minikvm(["--system-root", root, "--", BUSYBOX, *arguments], cwd=tmp_path,
                           text=True, timeout=RUN_TIMEOUT_SECONDS)
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = guest("cat", "/etc/passwd", "/etc/localtime", "/etc/ssl/certs/ca.pem")
    assert shown == (root / "etc" / "passwd").read_text() + "TZif-fake\npublic\n"
    assert guest("ls", "/etc").split() == ["localtime", "passwd", "ssl"]
    # test and echo are the shell's own: no fork
    missing = ("/etc/shadow /etc/hosts /etc/group /etc/services /etc/ssh "
               "/etc/ssl/private/key.pem /home/alice/secret /var/secret /etc/ld.so.conf.d")
    found = guest("sh", "-c", f"for f in {missing}; do test -e $f && echo \"visible $f\"; "
                              "test -e /etc/passwd && echo present; done; echo done")
    assert found == "present\n" * len(missing.split()) + "done\n"
    for name in missing.split():
        assert "SECRET" not in guest("sh", "-c", f"read line < {name}; echo $line")


@pytest.mark.kvm
@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_the_host_secrets_are_not_in_the_view(variant: str, tmp_path: Path) -> None:
    attacker = build(HOSTILE / "system_view.c", DEFAULT_BUILD_DIR, variant)
    home = os.path.expanduser("~")
    guest = run_minikvm(["--", attacker, home], cwd=tmp_path, text=True,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert guest.returncode == 0, guest.stderr
    assert "Traceback" not in guest.stderr
    lines = dict(line.rsplit(": ", 1) for line in guest.stdout.splitlines()
                 if ": " in line)
    reads = [name for name in lines if name.startswith(("open ", "stat "))]
    assert len(reads) == 2 * 20 + 1
    for name in reads:
        assert lines[name] == str(errno.ENOENT), name
    for name in ("write /etc/passwd", "create /etc/new", "create /usr/bin/new",
                 "unlink /etc/passwd", "rename /etc/hosts", "mkdir /usr/share/new",
                 "chmod /etc/group", "symlink /etc/shadow2"):
        assert lines[name] in (str(errno.EACCES), str(errno.EROFS)), name
    assert "listed" not in guest.stdout


# --- --print-policy and policy files ------------------------------------------------------


def print_policy(*arguments: object, cwd: Path) -> str:
    done = subprocess.run(minikvm_command(["--print-policy", *arguments, "--", "true"]),
                          cwd=cwd, env=minikvm_environment(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_print_policy_lists_the_whole_view(tmp_path: Path) -> None:
    text = print_policy(cwd=tmp_path)
    assert "system = true" in text
    shown = {line.split()[2] for line in text.splitlines()
             if line.startswith("#   read-only")}
    assert shown == {mount.guest for mount in system_mounts()}
    assert "/etc/passwd" in shown and "/usr" in shown
    assert not any(refused_reason(path) for path in shown)
    assert "#   read-write  /tmp  (private" in text


def test_a_policy_file_can_turn_the_view_off(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("system = false\n")
    text = print_policy("--policy", policy, cwd=tmp_path)
    assert "system = false" in text
    assert "#   read-only" not in text
    assert print_policy("--no-system", cwd=tmp_path) == text
    # what --print-policy writes reads back to the same
    again = tmp_path / "again.toml"
    again.write_text(text)
    assert print_policy("--policy", again, cwd=tmp_path) == text


def test_every_never_shown_entry_is_absolute() -> None:
    assert all(path.startswith("/") for path in NEVER_SHOWN)


# --- the grant machinery the view needs: files and mounts -----------------------------------


def test_a_file_grant_shows_one_file_read_only(tmp_path: Path) -> None:
    """A read-only mount of one file (``/etc/passwd`` in the view): readable,
    stat-able, listed in the directory above; not writable, not a directory,
    and its siblings do not exist."""
    from minikvm.errors import SyscallError
    from minikvm.sandbox.grants import Mount
    from minikvm.sandbox.policy import Policy
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("fake\n")
    (etc / "shadow").write_text("SECRET\n")
    guest = "/etc/passwd"
    with Policy(mounts=[Mount(guest, str(etc / "passwd"), False, str(etc))]) as policy:
        fd = policy.open(guest, os.O_RDONLY, 0, "/")
        try:
            assert os.read(fd, 100) == b"fake\n"
        finally:
            os.close(fd)
        assert policy.stat(guest, "/").st_size == 5
        assert policy.visible_entries("/etc") == {"passwd"}
        assert policy.stat("/etc", "/").st_ino == etc.stat().st_ino
        for flags, wanted in ((os.O_WRONLY, errno.EACCES), (os.O_RDWR | os.O_TRUNC, errno.EACCES),
                              (os.O_RDONLY | os.O_DIRECTORY, errno.ENOTDIR)):
            with pytest.raises((OSError, SyscallError)) as raised:
                os.close(policy.open(guest, flags, 0, "/"))
            assert raised.value.errno == wanted, flags
        for path in ("/etc/shadow", "/etc/passwd/x"):
            with pytest.raises((OSError, SyscallError)) as raised:
                policy.stat(path, "/")
            assert raised.value.errno == errno.ENOENT, path
        with pytest.raises((OSError, SyscallError)) as raised:
            policy.resolve_parent("/etc/passwd", "/", write=True)
        assert raised.value.errno == errno.EACCES
        assert policy.read_paths == (str(etc / "passwd"),)


def test_a_mount_shows_a_host_directory_at_another_path(tmp_path: Path) -> None:
    """The private /tmp's machinery: a host directory shown at /tmp,
    writable, its host path what Landlock is given."""
    from minikvm.sandbox.grants import Mount
    from minikvm.sandbox.policy import Policy
    host = tmp_path / "private"
    host.mkdir()
    with Policy(mounts=[Mount("/tmp", str(host), True, "/")]) as policy:
        fd = policy.open("/tmp/made", os.O_WRONLY | os.O_CREAT, 0o600, "/")
        os.close(fd)
        assert (host / "made").exists()
        assert policy.write_paths == (str(host),)
        assert policy.visible_entries("/") == {"tmp"}
        assert policy.stat("/", "/").st_ino == os.stat("/").st_ino
        assert "/tmp (host " in policy.describe()
