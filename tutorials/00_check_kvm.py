"""Step 00 — is KVM here, and can we use it?

Everything minikvm does starts with one file, ``/dev/kvm``.  This script
opens it, asks which version of the KVM API the kernel speaks, and checks
the few optional capabilities the later steps rely on.  When ``/dev/kvm``
is missing or not accessible it says why and what to do, and exits 1.

Run it:  python tutorials/00_check_kvm.py
"""

from __future__ import annotations

import sys

from minikvm import ioctl as k
from minikvm.errors import KvmUnavailable
from minikvm.kvm.system import Kvm

#: The capabilities minikvm needs, and why.  KVM_CHECK_EXTENSION answers 0
#: for "no", anything else for "yes" (some answers are counts or masks).
CAPABILITIES = [
    ("KVM_CAP_USER_MEMORY", k.KVM_CAP_USER_MEMORY,
     "guest RAM is memory we mmap ourselves"),
    ("KVM_CAP_SYNC_REGS", k.KVM_CAP_SYNC_REGS,
     "registers travel in kvm_run, not by extra ioctls"),
    ("KVM_CAP_IMMEDIATE_EXIT", k.KVM_CAP_IMMEDIATE_EXIT,
     "a signal can stop the next KVM_RUN"),
    ("KVM_CAP_SET_GUEST_DEBUG", k.KVM_CAP_SET_GUEST_DEBUG,
     "single-step a guest"),
]
#: The register classes KVM_CAP_SYNC_REGS can share through kvm_run.
SYNC_REG_CLASSES = [("regs", k.KVM_SYNC_X86_REGS), ("sregs", k.KVM_SYNC_X86_SREGS),
                    ("events", k.KVM_SYNC_X86_EVENTS)]


def main() -> int:
    # --- step: open-kvm ---
    try:
        kvm = Kvm()  # open("/dev/kvm") and KVM_GET_API_VERSION
    except KvmUnavailable as error:
        print(f"KVM is not usable here: {error}")
        return 1
    # --- end: open-kvm ---
    with kvm:
        # --- step: api-version ---
        print(f"/dev/kvm is open; KVM_GET_API_VERSION = {kvm.api_version()}, "
              f"the stable API (version {k.KVM_API_VERSION})")
        # --- end: api-version ---
        # --- step: capabilities ---
        missing = []
        for name, cap, why in CAPABILITIES:
            answer = kvm.check_extension(cap)
            print(f"  {name:<24} {'yes' if answer else 'NO'}: {why}")
            if not answer:
                missing.append(name)
        synced = kvm.check_extension(k.KVM_CAP_SYNC_REGS)
        classes = [name for name, bit in SYNC_REG_CLASSES if synced & bit]
        print(f"  sync regs can share: {', '.join(classes) or 'nothing'}")
        # --- end: capabilities ---
    if missing:
        print(f"this KVM lacks {', '.join(missing)}: use a newer kernel (5.x or later)")
        return 1
    print("KVM is ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
