"""``minikvm doctor``: the report on this machine, and how it reasons.

* On this machine (``kvm`` marker) the command exits 0 and names what it
  found; where ``kvm_pvm`` is loaded it must say PVM, with the evidence:
  CS 0x23 (CPL 3) at the syscall-port exit and emulated CPL 0 code.
* Without a usable ``/dev/kvm`` it exits 1 and says why.
* The classification (hardware VMX/SVM or PVM) and the parsing of
  /proc/cpuinfo and /sys/module are pure and tested with made-up inputs.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minikvm.cli import doctor
from minikvm.cli.doctor import FAIL, Probe, classify, examine, format_report

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 120
PVM_HOST = os.path.isdir("/sys/module/kvm_pvm")


def probe(dpl: int, cpl0_ns: float, cpl3_ns: float = 0.7) -> Probe:
    return Probe(syscall_cs=0x23 if dpl == 3 else 0x08, syscall_dpl=dpl, syscall_returned=True,
                 cpl3_ns=cpl3_ns, cpl0_ns=cpl0_ns, round_trip_us=30.0, dirty_log_works=True)


# --- on this machine ---------------------------------------------------------------------

@pytest.mark.kvm
def test_doctor_command() -> None:
    result = subprocess.run([sys.executable, "-m", "minikvm", "doctor"], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                            text=True, timeout=TIMEOUT_SECONDS)
    out = result.stdout
    assert result.returncode == 0, f"doctor failed:\n{out}\n{result.stderr}"
    for topic in ("/dev/kvm: usable", "KVM_GET_API_VERSION: 12", "KVM_CAP_SYNC_REGS",
                  "KVM_CAP_USER_MEMORY", "KVM_CAP_SET_GUEST_DEBUG", "KVM_CAP_IMMEDIATE_EXIT",
                  "KVM_CAP_XSAVE, KVM_CAP_XCRS", "KVM_CAP_READONLY_MEM",
                  "KVM_CAP_NR_MEMSLOTS", "dirty log:", "CPU flags:", "KVM modules:",
                  "syscall:", "CPL 0 code:", "system call round trip:", "Landlock:",
                  "seccomp:", "This is ", "minikvm can run here."):
        assert topic in out, f"the report does not mention {topic!r}:\n{out}"
    assert "Traceback" not in result.stderr


@pytest.mark.kvm
@pytest.mark.skipif(not PVM_HOST, reason="kvm_pvm is not loaded: this host is not PVM")
def test_doctor_recognises_pvm() -> None:
    report = examine()
    text = format_report(report)
    assert report.can_run, text
    assert report.kind == "PVM (kvm_pvm)", text
    assert "stays at CPL 3 (CS = 0x23 at the syscall-port exit)" in text
    assert "CPL 0 code: emulated" in text
    assert "the guest got the host's return value" in text


@pytest.mark.kvm
def test_probe_failure_is_a_failure() -> None:
    """If the probe VM cannot boot, the doctor says so and minikvm cannot run."""
    def broken_probe(device: str) -> Probe:
        raise doctor.MinikvmError("KVM_RUN failed: EFAULT")

    report = examine(probe=broken_probe)
    assert not report.can_run
    assert [f.topic for f in report.failures] == ["probe VM"]
    assert "minikvm cannot run here: probe VM: failed" in format_report(report)


def test_missing_device(tmp_path: Path) -> None:
    out = io.StringIO()
    status = doctor.main(str(tmp_path / "no-kvm"), out=out)
    assert status == 1
    text = " ".join(out.getvalue().split())  # undo the wrapping
    assert "does not exist: this machine has no KVM" in text
    assert "minikvm cannot run here" in text


# --- reasoning -------------------------------------------------------------------------------

def test_pvm_from_the_probe() -> None:
    kind, meaning = classify(probe(dpl=3, cpl0_ns=1500.0), set(), {"kvm", "kvm_pvm"})
    assert kind == "PVM (kvm_pvm)"
    assert "sysretq" in meaning and "port 0xE0" in meaning


def test_pvm_like_without_the_module() -> None:
    kind, _ = classify(probe(dpl=3, cpl0_ns=1500.0), set(), {"kvm"})
    assert kind.startswith("PVM-like")


@pytest.mark.parametrize("flags, modules, expected", [
    ({"vmx"}, {"kvm", "kvm_intel"}, "hardware virtualization (Intel VMX)"),
    ({"svm"}, {"kvm", "kvm_amd"}, "hardware virtualization (AMD SVM)"),
    (set(), {"kvm"}, "hardware virtualization"),
    # kvm_pvm loaded next to kvm_intel: the probe says who serves /dev/kvm
    ({"vmx"}, {"kvm", "kvm_intel", "kvm_pvm"}, "hardware virtualization (Intel VMX)"),
])
def test_hardware_from_the_probe(flags: set[str], modules: set[str], expected: str) -> None:
    kind, meaning = classify(probe(dpl=0, cpl0_ns=1.0), flags, modules)
    assert kind == expected and "sysretq" in meaning


def test_without_a_probe() -> None:
    assert classify(None, set(), {"kvm_pvm"})[0].startswith("PVM")
    assert classify(None, {"vmx"}, {"kvm_intel"})[0].startswith("unknown")


@pytest.mark.parametrize("cpl0_ns, cpl3_ns, emulated", [
    (1500.0, 0.7, True),    # PVM: microseconds per iteration
    (1.2, 0.7, False),      # hardware
    (8.0, 0.3, False),      # hardware, with exit noise in the short CPL 0 run
    (150.0, 50.0, False),   # slow everywhere (a loaded host): not "emulated"
])
def test_emulation_threshold(cpl0_ns: float, cpl3_ns: float, emulated: bool) -> None:
    assert probe(dpl=0, cpl0_ns=cpl0_ns, cpl3_ns=cpl3_ns).cpl0_emulated == emulated


def test_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 vmx hypervisor\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert doctor.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "vmx", "hypervisor"}
    assert doctor.cpu_flags(str(tmp_path / "missing")) == set()


def test_loaded_modules(tmp_path: Path) -> None:
    for name in ("kvm", "kvm_pvm", "ext4"):
        (tmp_path / name).mkdir()
    assert doctor.loaded_modules(str(tmp_path)) == {"kvm", "kvm_pvm"}


def test_report_format() -> None:
    report = doctor.Report()
    report.add("KVM").append(doctor.Finding(FAIL, "/dev/kvm", "not usable", "no such file"))
    text = format_report(report)
    assert "  [FAIL] /dev/kvm: not usable\n         no such file" in text
    assert text.endswith("minikvm cannot run here: /dev/kvm: not usable")


def test_probe_program_disassembles(tmp_path: Path) -> None:
    """The probe guest's hand-made bytes are valid instructions throughout."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (GNU binutils) is not installed")
    path = tmp_path / "probe.bin"
    path.write_bytes(doctor.probe_program())
    listing = subprocess.run([objdump, "-D", "-b", "binary", "-m", "i386:x86-64", str(path)],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert "(bad)" not in listing
    syscalls = listing.count("\tsyscall")
    assert syscalls == 3 + 2 * len((1, doctor.CPL3_ITERATIONS) * doctor.REPEATS) + 1
