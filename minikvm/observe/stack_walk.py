"""Layer 7 — walking a guest's user stack through its frame pointers.

Code built with ``-fno-omit-frame-pointer`` starts each function with
``push rbp; mov rbp, rsp``, so ``[rbp]`` holds the caller's RBP and
``[rbp + 8]`` the return address into the caller (System V x86-64 psABI,
section 3.4.1, "Stack Frame").  The chain is guest data: a program may
hold any value in RBP, so the walk stops — never raises — on an address
that cannot be read, a frame that does not move up the stack, a frame
that jumps absurdly far, or after *max_depth* frames.
"""

from __future__ import annotations

from collections.abc import Callable

#: Frames past this many are dropped: a bound on work per sample.
MAX_DEPTH = 128

#: A caller's frame further above its callee than this is taken as garbage
#: (a user stack is 8 MiB by default; a larger gap is not a real frame).
MAX_FRAME_GAP = 8 << 20

#: Reads an 8-byte little-endian word of guest memory, or None if unmapped.
ReadWord = Callable[[int], "int | None"]


def walk_frames(rip: int, rbp: int, read_word: ReadWord,
                max_depth: int = MAX_DEPTH) -> list[int]:
    """The return addresses of a stack, innermost first, starting with *rip*.

    *read_word* must return None, not raise, for memory the guest has not
    mapped; anything it does raise is the caller's bug, not the guest's.
    """
    pcs = [rip]
    frame = rbp
    while len(pcs) < max_depth:
        if frame == 0 or frame % 8 or frame >= 1 << 47:
            break
        caller_frame = read_word(frame)
        return_address = read_word(frame + 8)
        if caller_frame is None or return_address is None or return_address == 0:
            break
        pcs.append(return_address)
        if caller_frame <= frame or caller_frame - frame > MAX_FRAME_GAP:
            break
        frame = caller_frame
    return pcs
