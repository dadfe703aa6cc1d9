"""Landlock restricts the minikvm process itself.

Restriction is irreversible, so every test that restricts runs its code in a
fresh ``python -c`` subprocess and checks what that process printed.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from minikvm.sandbox import landlock as L

REPO = pathlib.Path(__file__).resolve().parent.parent
ABI = L.abi_version()

needs_landlock = pytest.mark.skipif(
    ABI == 0, reason=f"Landlock is unusable here: {L.unavailable_reason()}")


def run_restricted(code: str) -> list[str]:
    """Run *code* in a new interpreter that can import minikvm; return its lines."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def dirs(tmp_path: pathlib.Path) -> dict[str, str]:
    for name in ("a", "b", "w"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    return {name: str(tmp_path / name) for name in ("a", "b", "w")}


def test_struct_layouts_match_the_uapi():
    assert ctypes.sizeof(L.landlock_ruleset_attr) == 24
    assert ctypes.sizeof(L.landlock_path_beneath_attr) == 12     # packed
    assert L.landlock_path_beneath_attr.parent_fd.offset == 8
    assert ctypes.sizeof(L.landlock_net_port_attr) == 16


def test_fs_rights_grow_with_the_abi():
    assert L.fs_access_for_abi(0) == 0
    assert L.fs_access_for_abi(1) == 0x1FFF
    assert L.fs_access_for_abi(2) & L.LANDLOCK_ACCESS_FS_REFER
    assert not L.fs_access_for_abi(2) & L.LANDLOCK_ACCESS_FS_TRUNCATE
    assert L.fs_access_for_abi(4) == L.fs_access_for_abi(3)
    assert L.fs_access_for_abi(7) & L.LANDLOCK_ACCESS_FS_IOCTL_DEV
    # nothing the sandbox never wants is granted by a write grant
    for right in (L.LANDLOCK_ACCESS_FS_EXECUTE, L.LANDLOCK_ACCESS_FS_MAKE_CHAR,
                  L.LANDLOCK_ACCESS_FS_MAKE_BLOCK, L.LANDLOCK_ACCESS_FS_IOCTL_DEV):
        assert not L.WRITE_ACCESS & right


C_PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/landlock.h>
int main(void) {
    printf("%zu %zu\n", sizeof(struct landlock_path_beneath_attr),
           offsetof(struct landlock_path_beneath_attr, parent_fd));
    printf("%llu %llu %llu\n", (unsigned long long)LANDLOCK_ACCESS_FS_EXECUTE,
           (unsigned long long)LANDLOCK_ACCESS_FS_MAKE_SYM,
           (unsigned long long)LANDLOCK_ACCESS_FS_REFER);
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
    printf("truncate %llu\n", (unsigned long long)LANDLOCK_ACCESS_FS_TRUNCATE);
#endif
    printf("version %u\n", LANDLOCK_CREATE_RULESET_VERSION);
    return 0;
}
"""


def test_constants_match_linux_landlock_h(tmp_path):
    if not shutil.which("cc") or not os.path.exists("/usr/include/linux/landlock.h"):
        pytest.skip("needs a C compiler and <linux/landlock.h>")
    (tmp_path / "probe.c").write_text(C_PROBE)
    subprocess.run(["cc", "-o", str(tmp_path / "probe"), str(tmp_path / "probe.c")], check=True)
    lines = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert lines[0] == "12 8"
    assert [int(v) for v in lines[1].split()] == [
        L.LANDLOCK_ACCESS_FS_EXECUTE, L.LANDLOCK_ACCESS_FS_MAKE_SYM, L.LANDLOCK_ACCESS_FS_REFER]
    for line in lines[2:]:
        name, value = line.split()
        expected = {"truncate": L.LANDLOCK_ACCESS_FS_TRUNCATE,
                    "version": L.LANDLOCK_CREATE_RULESET_VERSION}[name]
        assert int(value) == expected


def test_runtime_paths_cover_the_stdlib_and_minikvm_but_not_the_cwd():
    paths = L.runtime_read_paths()
    assert os.path.dirname(os.__file__) in paths
    assert os.path.dirname(os.path.dirname(L.__file__)) in paths   # minikvm/
    assert "" not in paths and "." not in paths


@needs_landlock
def test_read_grant_allows_a_and_denies_b(dirs):
    out = run_restricted(f"""
        from minikvm.sandbox import landlock
        status = landlock.restrict_self([{dirs['a']!r}])
        print(status)
        print(open({dirs['a']!r} + "/f").read())
        for path, mode in (({dirs['b']!r} + "/f", "r"), ({dirs['a']!r} + "/f", "w"),
                           ({dirs['a']!r} + "/new", "w")):
            try:
                open(path, mode)
                print("allowed", path, mode)
            except PermissionError as error:
                print("EACCES", error.errno)
        import json, decimal   # lazy imports still work after restriction
        print("imports ok")
    """)
    assert out[0].startswith(f"landlock ABI {ABI}: filesystem")
    assert out[1] == "a"
    assert out[2:5] == ["EACCES 13"] * 3
    assert out[5] == "imports ok"


@needs_landlock
def test_write_grant_allows_creating_and_removing(dirs):
    out = run_restricted(f"""
        import os
        from minikvm.sandbox import landlock
        landlock.restrict_self([], [{dirs['w']!r}])
        with open({dirs['w']!r} + "/new", "w") as f:
            f.write("made")
        os.mkdir({dirs['w']!r} + "/d")
        os.rename({dirs['w']!r} + "/new", {dirs['w']!r} + "/d/new")
        os.unlink({dirs['w']!r} + "/d/new")
        os.rmdir({dirs['w']!r} + "/d")
        print("ok")
    """)
    assert out == ["ok"]


@needs_landlock
def test_policy_still_works_beneath_landlock(dirs):
    out = run_restricted(f"""
        import os
        from minikvm.sandbox.policy import Policy, PolicyDenied
        from minikvm.sandbox import landlock
        policy = Policy(read=[{dirs['a']!r}])
        landlock.restrict_self(policy.read_paths, policy.write_paths)
        fd = policy.open("f", os.O_RDONLY, 0, {dirs['a']!r})
        print(os.read(fd, 10).decode())
        try:
            policy.open({dirs['b']!r} + "/f", os.O_RDONLY, 0, "/")
        except PolicyDenied as error:
            print(error.errno)
    """)
    assert out == ["a", "2"]      # outside the grant: hidden, ENOENT


@pytest.mark.skipif(ABI < 4, reason=f"TCP port rules need Landlock ABI 4 (this kernel: {ABI})")
def test_tcp_connect_only_to_allowed_ports():
    # Nothing listens on these ports: an allowed connect is *refused by the
    # peer* (ECONNREFUSED), a denied one never leaves the process (EACCES).
    out = run_restricted("""
        import socket
        from minikvm.sandbox import landlock
        landlock.restrict_self([], connect_ports=[9])
        for port in (9, 1):
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
            except OSError as error:
                print(port, error.errno)
            s.close()
    """)
    assert out == ["9 111", "1 13"]


@needs_landlock
def test_refuses_to_restrict_a_multithreaded_process():
    out = run_restricted("""
        import threading, time
        from minikvm.sandbox import landlock
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        try:
            landlock.restrict_self([])
        except landlock.LandlockError as error:
            print("refused:", error)
    """)
    assert out[0].startswith("refused:") and "2" in out[0]


@needs_landlock
def test_a_missing_grant_is_a_clear_error(tmp_path):
    out = run_restricted(f"""
        from minikvm.sandbox import landlock
        try:
            landlock.restrict_self([{str(tmp_path / 'missing')!r}])
        except landlock.LandlockError as error:
            print(error)
    """)
    assert "cannot grant" in out[0] and "missing" in out[0]


@needs_landlock
@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                    reason="/dev/kvm is not usable here")
@pytest.mark.parametrize("granted", [False, True])
def test_a_device_grant_reopens_dev_kvm_and_nothing_else(dirs, granted):
    out = run_restricted(f"""
        import os
        from minikvm.sandbox import landlock
        from minikvm.kvm.system import Kvm
        landlock.restrict_self([], devices={["/dev/kvm"] if granted else []!r})
        for path in ("/dev/kvm", "/dev/null", {dirs['a']!r} + "/f"):
            try:
                os.close(os.open(path, os.O_RDWR))
                print("allowed", path)
            except PermissionError as error:
                print("EACCES", path)
        if {granted!r}:
            with Kvm() as kvm:       # KVM_GET_API_VERSION on the new fd (IOCTL_DEV)
                print("api", kvm.api_version())
    """)
    if granted:
        assert out == ["allowed /dev/kvm", "EACCES /dev/null", f"EACCES {dirs['a']}/f",
                       "api 12"]
    else:
        assert out == ["EACCES /dev/kvm", "EACCES /dev/null", f"EACCES {dirs['a']}/f"]
