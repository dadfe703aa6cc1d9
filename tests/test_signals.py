"""Signal handlers run, as on Linux: the frame, delivery, rt_sigreturn.

* :mod:`minikvm.process.sigframe` is pure: its structs have the kernel's sizes and
  offsets, frames survive a round trip through bytes, the stack
  arithmetic keeps the red zone and the ABI's alignment, and an FPU area
  the CPU would refuse is refused, as Linux does.
* ``tests/programs/signal_handlers.c`` runs each mode natively and under
  minikvm, with every C library: the output and the status must match.
  The modes cover raise/kill/sigqueue, SA_SIGINFO, masks, SA_RESETHAND,
  SA_NODEFER, pending signals, alarm + pause, sigsuspend, an interrupted
  nanosleep, sigaltstack, registers and the FPU across a handler, nested
  handlers, SIGPIPE, CPU faults (SIGSEGV with siglongjmp or a fix-up,
  SIGFPE, SIGILL, SIGTRAP), and hostile frames.
* A hostile ``rt_sigreturn`` (garbage, a frame outside memory, a kernel
  code segment, an FPU state of garbage or outside memory) ends the run
  with a SIGSEGV report and no traceback, as Linux kills; one that asks
  for IOPL 3 leaves the program unable to run ``cli`` or ``in``.
  A SIGSEGV handler with no stack to start on (a stack overflow without
  ``sigaltstack``) ends the run too, naming the fault.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess

import pytest

from minikvm.process import sigframe
from tests.guest_runs import minikvm_command, minikvm_environment, run_minikvm, run_native
from tests.programs.build import DEFAULT_BUILD_DIR, SOURCE_DIR, available_variants, build

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 120
SIGSEGV_STATUS = 128 + 11


# --- the frame's layout ---------------------------------------------------------------------

def test_struct_sizes_and_offsets_match_the_kernel_headers() -> None:
    """Sizes and offsets from arch/x86/include/uapi/asm/sigcontext.h and the
    generic ucontext: glibc's ucontext_t and siginfo_t read these bytes."""
    assert ctypes.sizeof(sigframe.sigcontext_64) == 256
    assert sigframe.sigcontext_64.ip.offset == 128
    assert sigframe.sigcontext_64.flags.offset == 136
    assert sigframe.sigcontext_64.cs.offset == 144
    assert sigframe.sigcontext_64.fpstate.offset == 184
    assert ctypes.sizeof(sigframe.stack_t) == 24
    assert sigframe.ucontext.uc_mcontext.offset == 40
    assert sigframe.ucontext.uc_sigmask.offset == 296
    assert ctypes.sizeof(sigframe.ucontext) == 304
    assert (sigframe.UC_OFFSET, sigframe.INFO_OFFSET, sigframe.FRAME_SIZE) == (8, 312, 440)


def test_a_frame_survives_a_round_trip_through_bytes() -> None:
    frame = sigframe.rt_sigframe(pretcode=0x401000)
    for index, (field, _) in enumerate(sigframe.REGISTERS):
        setattr(frame.uc.uc_mcontext, field, 0x1000 + index)
    frame.uc.uc_sigmask = 1 << 9
    frame.uc.uc_stack.ss_flags = 2
    info = sigframe.siginfo(11, 1, address=0xDEAD)
    ctypes.memmove(frame.info, info, len(info))
    back = sigframe.decode_frame(bytes(frame))
    assert back.pretcode == 0x401000
    assert [getattr(back.uc.uc_mcontext, f) for f, _ in sigframe.REGISTERS] == \
        [0x1000 + i for i in range(len(sigframe.REGISTERS))]
    assert (back.uc.uc_sigmask, back.uc.uc_stack.ss_flags) == (1 << 9, 2)
    assert struct.unpack_from("<iiiiQ", bytes(back.info)) == (11, 0, 1, 0, 0xDEAD)


@pytest.mark.parametrize("rsp", [0x7FFF_F000, 0x7FFF_EFF8, 0x7FFF_EFE3])
@pytest.mark.parametrize("fpu_size", [0, 512, 836])
def test_the_frame_skips_the_red_zone_and_aligns_like_a_call(rsp: int, fpu_size: int) -> None:
    top = sigframe.signal_stack_top(rsp, False, (0, 0))
    assert top == rsp - sigframe.RED_ZONE
    frame, fpstate = sigframe.place_frame(top, fpu_size)
    assert (frame + 8) % 16 == 0
    assert frame + sigframe.FRAME_SIZE <= (fpstate or top)
    if fpu_size:
        assert fpstate % 64 == 0 and fpstate + fpu_size <= top


def test_sa_onstack_moves_to_the_alternate_stack_unless_already_on_it() -> None:
    alternate = (0x10000, 0x4000)
    assert sigframe.signal_stack_top(0x7FFF_0000, True, alternate) == 0x14000
    assert sigframe.signal_stack_top(0x7FFF_0000, False, alternate) == 0x7FFF_0000 - 128
    assert sigframe.signal_stack_top(0x12000, True, alternate) == 0x12000 - 128
    assert sigframe.signal_stack_top(0x7FFF_0000, True, (0, 0)) == 0x7FFF_0000 - 128


def test_an_xsave_area_in_a_frame_is_marked_and_found_again() -> None:
    state = bytes(range(256)) * 16
    area = sigframe.fpstate_for_frame(state, 836, 0b111)
    assert len(area) == sigframe.fpstate_size(836) == 840
    assert struct.unpack_from("<I", area, 836)[0] == sigframe.FP_XSTATE_MAGIC2
    assert sigframe.xstate_in_frame(area[:512], 836) == (836, 0b111)
    assert sigframe.xstate_in_frame(area[:512], 600) is None, "larger than the CPU's"
    assert sigframe.xstate_in_frame(area[:512], None) is None, "XSAVE is off"
    legacy = sigframe.fpstate_for_frame(state, None, 0b11)
    assert len(legacy) == 512 and legacy[464:] == bytes(48)


def test_an_fpu_area_the_cpu_would_refuse_is_refused() -> None:
    """Reserved MXCSR bits, a compacted-form XCOMP_BV or reserved header
    bytes make FXRSTOR/XRSTOR fault on Linux (SIGSEGV): refused before KVM
    sees them.  XSTATE_BV is limited to the saved and allowed components."""
    with pytest.raises(sigframe.BadFpuState, match="MXCSR"):
        sigframe.xsave_from_frame(b"\xff" * 1024, 4096, 0xFFFF, 0b111, 0b111)
    area = bytearray(b"\xff" * 1024)
    struct.pack_into("<I", area, sigframe.FXSAVE_MXCSR_OFFSET, 0x1F80)
    with pytest.raises(sigframe.BadFpuState, match="XCOMP_BV"):
        sigframe.xsave_from_frame(bytes(area), 4096, 0xFFFF, 0b111, 0b111)
    area[sigframe.XSAVE_HEADER_OFFSET + 8:sigframe.XSAVE_HEADER_OFFSET + 64] = bytes(56)
    state = sigframe.xsave_from_frame(bytes(area), 4096, 0xFFFF, 0b101, 0b111)
    assert len(state) == 4096
    assert struct.unpack_from("<QQ", state, sigframe.XSAVE_HEADER_OFFSET) == (0b101, 0)
    assert state[160:176] == b"\xff" * 16, "XMM0 as the frame had it"
    assert state[sigframe.SW_RESERVED_OFFSET:512] == bytes(48)
    legacy_only = sigframe.xsave_from_frame(bytes(area[:512]), 4096, 0xFFFF, 0b11, 0b111)
    assert struct.unpack_from("<Q", legacy_only, sigframe.XSAVE_HEADER_OFFSET)[0] == 0b11


# --- real programs, against Linux -------------------------------------------------------------

#: Modes of signal_handlers.c: each prints what it saw; all exit 0 except these.
MODES = ["raise", "siginfo", "mask", "resethand", "nodefer", "pending", "alarm", "sigsuspend",
         "nanosleep", "altstack", "registers", "nested", "sigpipe", "segv", "fpe", "ill", "trap",
         "privilege", "overflow-altstack", "fpu-edit"]
#: Modes that die with SIGSEGV on Linux, and how minikvm's report begins.
SIGSEGV_MODES = {
    "kernel-cs": "SIGSEGV: rt_sigreturn: the frame asks for segments cs=0x8",
    "bad-frame": "SIGSEGV: rt_sigreturn: ",
    "wild-frame": "SIGSEGV: rt_sigreturn: no readable signal frame",
    "overflow": "SIGSEGV: page fault writing ",
    "garbage-fpu": "SIGSEGV: rt_sigreturn: the frame's FPU state cannot be loaded: MXCSR",
    "wild-fpu": "SIGSEGV: rt_sigreturn: no readable FPU state at 0x10",
}


def compiled(variant: str) -> str:
    return str(build(SOURCE_DIR / "signal_handlers.c", DEFAULT_BUILD_DIR, variant))


def minikvm_run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_minikvm(["--timeout", GUEST_TIMEOUT_SECONDS, *arguments], text=True,
                       timeout=SUBPROCESS_TIMEOUT_SECONDS)


def native_run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_native(list(arguments), text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
@pytest.mark.parametrize("mode", MODES)
def test_handlers_run_as_on_linux(variant: str, mode: str) -> None:
    program = compiled(variant)
    native = native_run(program, mode)
    guest = minikvm_run(program, mode)
    assert native.returncode == 0, native.stdout + native.stderr
    assert guest.returncode == 0, guest.stderr
    assert guest.stdout == native.stdout
    assert guest.stdout.strip(), "the mode printed what it saw"
    assert guest.stderr == ""


@pytest.mark.kvm
@pytest.mark.parametrize("variant", available_variants())
@pytest.mark.parametrize("mode", list(SIGSEGV_MODES))
def test_a_frame_that_cannot_be_used_ends_with_sigsegv(variant: str, mode: str) -> None:
    """A hostile rt_sigreturn, or a handler with no stack to start on: the
    host stays calm (no traceback) and reports SIGSEGV, as Linux kills."""
    program = compiled(variant)
    native = native_run(program, mode)
    guest = minikvm_run(program, mode)
    assert native.returncode == -11, native.stdout + native.stderr
    assert guest.returncode == SIGSEGV_STATUS, guest.stderr
    assert guest.stdout == native.stdout
    assert "Traceback" not in guest.stderr and "internal error" not in guest.stderr
    report = guest.stderr.strip().splitlines()[-1]
    assert report.startswith(SIGSEGV_MODES[mode]), report


@pytest.mark.kvm
def test_the_trace_shows_the_handled_signal_and_the_run_goes_on() -> None:
    """--trace takes the dispatcher's slower path: handlers run there too."""
    program = compiled(available_variants()[0])
    guest = minikvm_run("--trace", program, "nested")
    assert guest.returncode == 0, guest.stderr
    assert guest.stdout == "outer begins\ninner\nouter ends\nback in main\n"
    assert "rt_sigreturn" in guest.stderr


def test_a_pipeline_cut_short_ends_silently_as_natively(tmp_path) -> None:
    """``yes | head -n1``: the writer dies of SIGPIPE when head exits.  A
    shell prints nothing for that, and neither may minikvm (the crash report
    is for crashes); the status is still 128 + SIGPIPE (issue 11, item 6)."""
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.skip("no /bin/busybox (Debian's busybox-static)")
    env = minikvm_environment()
    for command in ([busybox, "yes"], minikvm_command(["--timeout", GUEST_TIMEOUT_SECONDS, "--",
                                                        busybox, "yes"])):
        writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, cwd=tmp_path)
        first = writer.stdout.readline()
        writer.stdout.close()                      # head -n1 exits: no reader left
        status = writer.wait(timeout=60)
        errors = writer.stderr.read()
        assert (first, status, errors) == (b"y\n", -13 if command[0] == busybox else 141, b""), \
            (command, first, status, errors)
