"""The seccomp filter: its structure, its answers, and the real thing.

The filter is checked three ways: by reading its disassembly, by running it
in a tiny classic-BPF interpreter on made-up ``seccomp_data``, and by
installing it in a subprocess (installation is irreversible) and making
real system calls.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import struct
import subprocess
import sys
import textwrap

import pytest

from minikvm.sandbox import seccomp as S

REPO = pathlib.Path(__file__).resolve().parent.parent
UNISTD = pathlib.Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
KVM_RUN = 0xAE80
AF_NETLINK = 16


def run_bpf(program: list[S.Insn], nr: int, arch: int = S.AUDIT_ARCH_X86_64,
            args: tuple[int, ...] = (0,) * 6) -> int:
    """Interpret the filter on one ``struct seccomp_data``; return the action."""
    data = struct.pack("<IIQ6Q", nr, arch, 0x401000, *(list(args) + [0] * 6)[:6])
    accumulator, pc = 0, 0
    while True:
        insn = program[pc]
        if insn.code == S.BPF_LD | S.BPF_W | S.BPF_ABS:
            (accumulator,) = struct.unpack_from("<I", data, insn.k)
            pc += 1
        elif insn.code == S.BPF_RET | S.BPF_K:
            return insn.k
        elif insn.code & 0x07 == S.BPF_JMP:
            op = insn.code & 0xF0
            taken = {S.BPF_JEQ: accumulator == insn.k, S.BPF_JGE: accumulator >= insn.k,
                     S.BPF_JGT: accumulator > insn.k,
                     S.BPF_JSET: bool(accumulator & insn.k)}[op]
            pc += 1 + (insn.jt if taken else insn.jf)
        else:
            raise AssertionError(f"unexpected instruction {insn} at {pc}")


PROGRAM = S.build_filter()
EPERM = S.SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = S.SECCOMP_RET_ERRNO | errno.ENOSYS
NR = S.SYSCALL_NUMBERS


def test_denied_calls_get_eperm():
    for name in S.DENIED_SYSCALLS:
        assert run_bpf(PROGRAM, NR[name]) == EPERM, name


@pytest.mark.parametrize("nr", [0, 1, 2, 9, 10, 11, 60, 231, 257, 318, 437, 444])
def test_ordinary_calls_are_allowed(nr):
    # read, write, open, mmap, mprotect, munmap, exit, exit_group, openat,
    # getrandom, openat2, landlock_create_ruleset
    assert run_bpf(PROGRAM, nr) == S.SECCOMP_RET_ALLOW


def test_other_architectures_and_x32_are_killed():
    assert run_bpf(PROGRAM, 11, arch=0x40000003) == S.SECCOMP_RET_KILL_PROCESS  # i386 munmap
    assert run_bpf(PROGRAM, S.X32_SYSCALL_BIT | 59) == S.SECCOMP_RET_KILL_PROCESS
    assert run_bpf(PROGRAM, S.X32_SYSCALL_BIT | 0) == S.SECCOMP_RET_KILL_PROCESS


def test_clone_allows_threads_only():
    thread = 0x3D0F00   # what glibc's pthread_create passes
    assert thread & S.CLONE_THREAD
    assert run_bpf(PROGRAM, NR["clone"], args=(thread,)) == S.SECCOMP_RET_ALLOW
    assert run_bpf(PROGRAM, NR["clone"], args=(0x11,)) == EPERM                 # fork-like
    assert run_bpf(PROGRAM, NR["clone"], args=(thread | S.CLONE_NEWNET,)) == EPERM
    assert run_bpf(PROGRAM, NR["clone3"]) == ENOSYS


def test_socket_families():
    for family in (1, 2, 10):
        assert run_bpf(PROGRAM, NR["socket"], args=(family, 1, 0)) == S.SECCOMP_RET_ALLOW
    assert run_bpf(PROGRAM, NR["socket"], args=(AF_NETLINK, 3, 0)) == EPERM
    assert run_bpf(PROGRAM, NR["socketpair"], args=(AF_NETLINK, 3, 0)) == EPERM


def test_terminal_injection_ioctls_are_denied_and_kvm_ioctls_are_not():
    assert run_bpf(PROGRAM, NR["ioctl"], args=(0, S.TIOCSTI)) == EPERM
    assert run_bpf(PROGRAM, NR["ioctl"], args=(0, S.TIOCLINUX)) == EPERM
    assert run_bpf(PROGRAM, NR["ioctl"], args=(0, S.TIOCCONS)) == EPERM
    # only the low 32 bits are the request (an unsigned int to the kernel)
    assert run_bpf(PROGRAM, NR["ioctl"], args=(0, S.TIOCSTI | 1 << 32)) == EPERM
    assert run_bpf(PROGRAM, NR["ioctl"], args=(0, 0x5401)) == S.SECCOMP_RET_ALLOW  # TCGETS
    assert run_bpf(PROGRAM, NR["ioctl"], args=(5, KVM_RUN)) == S.SECCOMP_RET_ALLOW


def test_structure_via_the_disassembly():
    lines = S.disassemble(PROGRAM).splitlines()
    extra_families = len(S.ALLOWED_SOCKET_FAMILIES)
    # 4 (arch, x32) + one per denied call + 5 dispatches + 3 clone + 4 ioctl
    # + 1 load and one per family + 4 returns
    assert len(PROGRAM) == 4 + len(S.DENIED_SYSCALLS) + 5 + 3 + 4 + 1 + extra_families + 4
    assert len(lines) == len(PROGRAM)
    assert lines[0].endswith("A = seccomp_data.arch")
    assert "AUDIT_ARCH_X86_64" in lines[1]
    assert lines[2].endswith("A = seccomp_data.nr")
    assert "X32_SYSCALL_BIT" in lines[3]
    assert [line.split("; ")[1] for line in lines[-4:]] == [
        "ALLOW", "ERRNO(EPERM)", "ERRNO(ENOSYS)", "KILL_PROCESS"]
    text = "\n".join(lines)
    for name in S.DENIED_SYSCALLS:
        assert re.search(rf"; {name}$", text, re.M), name
    # every jump lands inside the program, and only forward
    for pc, insn in enumerate(PROGRAM):
        if insn.code & 0x07 == S.BPF_JMP:
            assert pc + 1 + max(insn.jt, insn.jf) < len(PROGRAM)


def test_disassembly_line_format():
    program = [S.load_field(S.SECCOMP_DATA_NR),
               S.bpf_jump(S.BPF_JMP | S.BPF_JEQ | S.BPF_K, 59, 0, 1),
               S.ret_errno(errno.EPERM),
               S.ret(S.SECCOMP_RET_ALLOW)]
    assert S.disassemble(program).splitlines() == [
        "   0: ld   [0]                             ; A = seccomp_data.nr",
        "   1: jeq  #0x3b        jt 2   jf 3        ; execve",
        "   2: ret  #0x50001                        ; ERRNO(EPERM)",
        "   3: ret  #0x7fff0000                     ; ALLOW",
    ]


def test_bad_requests_are_reported():
    with pytest.raises(S.SeccompError, match="not in SYSCALL_NUMBERS"):
        S.build_filter(["no_such_call"])
    with pytest.raises(S.SeccompError, match="checked by argument"):
        S.build_filter(["clone"])
    with pytest.raises(S.SeccompError, match="do not fit in a byte"):
        S.bpf_jump(S.BPF_JMP | S.BPF_JEQ | S.BPF_K, 0, 256, 0)


def test_syscall_numbers_match_unistd_64_h():
    if not UNISTD.exists():
        pytest.skip(f"{UNISTD} is not installed")
    table = dict(re.findall(r"#define __NR_(\w+)\s+(\d+)", UNISTD.read_text()))
    for name, number in S.SYSCALL_NUMBERS.items():
        assert int(table[name]) == number, name


def test_struct_layouts():
    import ctypes
    assert ctypes.sizeof(S.sock_filter) == 8
    assert ctypes.sizeof(S.sock_fprog) == 16
    assert S.sock_fprog.filter.offset == 8
    assert S.seccomp_data_arg(5) == 56


@pytest.mark.skipif(not S.available(), reason="this kernel cannot install seccomp filters")
def test_installed_filter_refuses_execve_and_fork_but_not_ordinary_calls():
    code = textwrap.dedent("""
        import os, socket, threading
        from minikvm.sandbox import seccomp
        status = seccomp.install()
        print(status)
        def attempt(name, call):
            try:
                call()
                print(name, "ok")
            except OSError as error:
                print(name, error.errno)
        attempt("execv", lambda: os.execv("/bin/true", ["/bin/true"]))
        attempt("fork", os.fork)
        attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
        attempt("inet", lambda: socket.socket(socket.AF_INET).close())
        attempt("file", lambda: open(os.devnull).close())
        box = []
        thread = threading.Thread(target=box.append, args=(1,))
        attempt("thread", lambda: (thread.start(), thread.join()))
        print("thread ran", box)
        print("Seccomp", open("/proc/self/status").read().split("Seccomp:")[1].split()[0])
    """)
    result = subprocess.run([sys.executable, "-c", code],
                            env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith(f"seccomp: {len(PROGRAM)}-instruction filter installed")
    assert out[1:] == ["execv 1", "fork 1", "netlink 1", "inet ok", "file ok",
                       "thread ok", "thread ran [1]", "Seccomp 2"]


# --- what other parts of minikvm need from the filter ------------------------------------

#: The vCPU state ioctls that signal frames, thread switches, snapshots and
#: resets use (KVM_GET/SET_FPU, XSAVE, XCRS, MSRS, REGS, SREGS ...).
VCPU_STATE_IOCTLS = ("KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS",
                     "KVM_SET_SREGS", "KVM_GET_FPU", "KVM_SET_FPU", "KVM_GET_XSAVE",
                     "KVM_SET_XSAVE", "KVM_GET_XCRS", "KVM_SET_XCRS", "KVM_GET_MSRS",
                     "KVM_SET_MSRS", "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS",
                     "KVM_GET_DIRTY_LOG", "KVM_SET_USER_MEMORY_REGION")


def kvm_ioctls() -> dict[str, int]:
    """Every ioctl request number minikvm.ioctl defines (type byte KVMIO)."""
    from minikvm import ioctl
    return {name: value for name, value in vars(ioctl).items()
            if name.startswith("KVM_") and isinstance(value, int)
            and (value >> 8) & 0xFF == ioctl.KVMIO}


def test_every_kvm_ioctl_is_allowed_by_both_variants():
    requests = kvm_ioctls()
    assert set(VCPU_STATE_IOCTLS) <= set(requests)
    for program in (PROGRAM, S.build_filter(allow_fork=True)):
        for name, request in requests.items():
            assert run_bpf(program, NR["ioctl"], args=(5, request)) == S.SECCOMP_RET_ALLOW, name


@pytest.mark.parametrize("nr", [13, 14, 38, 131, 222, 223, 226, 282, 289])
def test_signal_and_timer_calls_are_allowed(nr):
    # rt_sigaction, rt_sigprocmask, setitimer, sigaltstack, timer_create,
    # timer_settime, timer_delete, signalfd, signalfd4: the time limit and
    # signal delivery use them on the host
    for program in (PROGRAM, S.build_filter(allow_fork=True)):
        assert run_bpf(program, nr) == S.SECCOMP_RET_ALLOW


def test_the_supervisor_variant_allows_fork_and_nothing_else_more():
    supervisor = S.build_filter(allow_fork=True)
    fork = 0x01200011    # glibc fork(): CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
    assert run_bpf(PROGRAM, NR["clone"], args=(fork,)) == EPERM
    assert run_bpf(supervisor, NR["clone"], args=(fork,)) == S.SECCOMP_RET_ALLOW
    assert run_bpf(supervisor, NR["clone"], args=(0x3D0F00,)) == S.SECCOMP_RET_ALLOW
    assert run_bpf(supervisor, NR["clone"], args=(fork | S.CLONE_NEWPID,)) == EPERM
    assert run_bpf(supervisor, NR["clone3"]) == ENOSYS
    for name in S.DENIED_SYSCALLS:
        assert run_bpf(supervisor, NR[name]) == EPERM, name
    assert len(supervisor) == len(PROGRAM)


@pytest.mark.skipif(not S.available(), reason="this kernel cannot install seccomp filters")
def test_a_worker_stacks_the_strict_filter_on_the_supervisors():
    code = textwrap.dedent("""
        import os
        from minikvm.sandbox import seccomp
        def fork_status():
            try:
                pid = os.fork()
            except OSError as error:
                return error.errno
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            return "ok"
        def filters():
            status = open("/proc/self/status").read()
            return status.split("Seccomp_filters:")[1].split()[0]
        print(seccomp.install(allow_fork=True))
        print("supervisor fork", fork_status(), "filters", filters())
        try:
            os.execv("/bin/true", ["/bin/true"])
        except OSError as error:
            print("supervisor execv", error.errno)
        pid = os.fork()
        if pid == 0:
            seccomp.install()
            print("worker fork", fork_status(), "filters", filters(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    result = subprocess.run([sys.executable, "-c", code],
                            env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("seccomp: ") and "fork-like" not in out[0]
    assert out[1:] == ["supervisor fork ok filters 1", "supervisor execv 1",
                       "worker fork 1 filters 2"]
