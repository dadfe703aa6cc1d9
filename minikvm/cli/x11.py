"""Layer 8 — ``run --x11``: a private nested X server for the program, never the user's.

X11 lets any client that reaches a server read every
window, log keystrokes and inject input, so a sandboxed GUI program must not
reach the user's display.  It gets a server of its own instead: Xvfb
(``--x11=headless``, for tests and CI) or Xephyr, one window on the user's
``$DISPLAY`` (``--x11``, the default when there is a ``$DISPLAY``), as
firejail's ``--x11=xephyr`` does.

What the guest is given, and nothing more:

* ``DISPLAY=:N``, a display number the server picked itself (``-displayfd``)
  so it never collides with one in use;
* a connect grant for that server's socket ``/tmp/.X11-unix/XN`` only (the
  policy pins that socket's inode, see :mod:`minikvm.sandbox.endpoints`);
  the abstract ``@/tmp/.X11-unix/XN`` libxcb tries first is refused with
  ``ECONNREFUSED``, so it falls back to the path;
* ``XAUTHORITY``: a fresh MIT-MAGIC-COOKIE-1 in a private directory (mode
  0700), the only cookie the server accepts, read-only to the guest.

The server runs with ``-nolisten tcp`` (no TCP; its abstract socket stays,
refused to the guest by the policy, reachable on the host only with the
cookie) and ``-extension MIT-SHM`` (clients use the wire protocol; shared
memory would need a SysV segment the guest cannot share with the host).

Lifetime.  The server is started by a *keeper*: a small Python process
(``python -m minikvm.cli.x11``) started before the sandbox's walls go up.
It starts the server, says the display number on its stdout, then waits
for its stdin to close; then it kills the server, waits for it, removes the
private directory and closes its stdout.  minikvm holds the keeper's stdin,
so however minikvm ends — the program's exit, a time limit, a crash, a
signal — the pipe closes and the server goes.  At a normal end minikvm also
waits for the keeper's stdout to close, so the server is gone when minikvm
returns.  The keeper is needed because the confined minikvm may no longer
signal processes outside its Landlock domain (ABI 6 scopes signals).

Confinement of the server: none beyond its own options.  It is started
before minikvm confines itself (Landlock and seccomp apply to minikvm's own
process), so it runs as the user, like the X server the user already runs;
it holds no grant of the guest's.  What it exposes to the guest is the X
protocol on one socket.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

#: ``--x11-size`` when none is given.
DEFAULT_SIZE = (1024, 768)

#: The largest width or height Xvfb and Xephyr take (the X protocol's 16 bits
#: are 32767, the servers' own framebuffers give up well before).
MAX_SIDE = 8192

#: Where an X server on Linux puts its path sockets.
X11_UNIX_DIR = "/tmp/.X11-unix"

#: The authorization scheme of the cookie (xauth(1), Xsecurity(7)).
COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"

#: ``FamilyWild`` in Xauth.h: the entry matches any host name, so the guest's
#: own ``uname`` host name need not be the host's.
FAMILY_WILD = 0xFFFF

#: ``XDG_CACHE_HOME`` of an ``--x11`` program: in the private ``/tmp``
#: (:mod:`minikvm.sandbox.private_tmp`), so fontconfig's cache is writable
#: there and goes with the sandbox.
X11_CACHE_HOME = "/tmp/.cache"

#: How long the keeper waits for the server to say its display number.
START_SECONDS = 20

#: How long the keeper waits for the server to end after SIGTERM (then SIGKILL).
STOP_SECONDS = 5


class X11Error(Exception):
    """A nested X server could not be set up; the message says what to do."""


def parse_x11_size(text: str) -> tuple[int, int]:
    """``--x11-size WxH``: two whole numbers of pixels, 1 to :data:`MAX_SIDE`."""
    match = re.fullmatch(r"(\d{1,6})x(\d{1,6})", text.strip())
    if not match:
        raise ValueError(f"--x11-size {text!r}: not WIDTHxHEIGHT in pixels (e.g. 800x600)")
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValueError(f"--x11-size {text!r}: width and height must be 1 to {MAX_SIDE}")
    return width, height


def xauthority_entry(display: int, cookie: bytes) -> bytes:
    """One Xauthority record (Xauth.h, ``XauWriteAuth``): family, then
    address, display number, scheme name and data, each a big-endian 16-bit
    length and its bytes.  The address is empty: FamilyWild matches any."""
    def counted(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data
    return (FAMILY_WILD.to_bytes(2, "big") + counted(b"") + counted(str(display).encode())
            + counted(COOKIE_NAME) + counted(cookie))


def server_command(mode: str, size: tuple[int, int], auth_file: str,
                   displayfd: int) -> list[str]:
    """The nested server's command line for *mode* (``headless``: Xvfb,
    ``xephyr``: Xephyr)."""
    width, height = size
    # Not "-nolisten local": with -displayfd the server finds a number in
    # use by failing to bind its abstract socket; without one it would
    # unlink the user's /tmp/.X11-unix/X0 and take :0 (seen with Xvfb 21.1).
    common = ["-displayfd", str(displayfd), "-auth", auth_file, "-nolisten", "tcp",
              "-extension", "MIT-SHM", "-noreset"]
    if mode == "headless":
        return ["Xvfb", *common, "-screen", "0", f"{width}x{height}x24"]
    return ["Xephyr", *common, "-screen", f"{width}x{height}", "-title", "minikvm sandbox"]


def choose_mode(asked: str, environ: dict[str, str]) -> str:
    """``auto`` is Xephyr when there is a ``$DISPLAY`` to show it on, else
    Xvfb; ``xephyr`` needs a ``$DISPLAY``."""
    if asked == "auto":
        return "xephyr" if environ.get("DISPLAY") else "headless"
    if asked == "xephyr" and not environ.get("DISPLAY"):
        raise X11Error("--x11=xephyr needs a $DISPLAY to show its window on "
                       "(use --x11=headless for a server with no window)")
    return asked


@dataclass
class NestedDisplay:
    """A running keeper and its server: what the guest is given."""

    display: int
    directory: str
    keeper: subprocess.Popen

    @property
    def socket_path(self) -> str:
        return f"{X11_UNIX_DIR}/X{self.display}"

    @property
    def auth_file(self) -> str:
        return os.path.join(self.directory, "Xauthority")

    def close(self) -> None:
        """Stop the server: close the keeper's stdin, wait for it to end."""
        if self.keeper.stdin is not None and not self.keeper.stdin.closed:
            self.keeper.stdin.close()
        if self.keeper.stdout is not None:
            self.keeper.stdout.read()        # EOF once the server is reaped
            self.keeper.stdout.close()
        try:
            self.keeper.wait(timeout=STOP_SECONDS * 2)
        except subprocess.TimeoutExpired:
            self.keeper.kill()
            self.keeper.wait()


def start_nested_display(mode: str, size: tuple[int, int]) -> NestedDisplay:
    """Start a keeper (and through it the server); X11Error if it failed."""
    program = "Xvfb" if mode == "headless" else "Xephyr"
    if shutil.which(program) is None:
        package = "xvfb" if mode == "headless" else "xserver-xephyr"
        raise X11Error(f"--x11={mode} needs {program} (apt-get install {package})")
    keeper = subprocess.Popen(
        [sys.executable, "-m", "minikvm.cli.x11", mode, f"{size[0]}x{size[1]}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert keeper.stdout is not None
    line = keeper.stdout.readline().decode(errors="replace").split()
    if len(line) != 2 or not line[0].isdigit():
        keeper.wait()
        raise X11Error(f"the nested X server ({program}) did not start: "
                       f"{' '.join(line) or 'no display number'} (its messages are above)")
    return NestedDisplay(int(line[0]), line[1], keeper)


# --- the keeper ------------------------------------------------------------------


def keep(mode: str, size: tuple[int, int]) -> int:
    """The keeper's body (see the module docstring)."""
    directory = tempfile.mkdtemp(prefix="minikvm-x11-")     # mode 0700
    auth_file = os.path.join(directory, "Xauthority")
    read_end, write_end = os.pipe()
    server = None
    try:
        # A server loads every cookie of its -auth file at start, whatever
        # display number the record names; a client picks the record of its
        # display.  The number is known only once the server runs, so the
        # server's file is written first, the guest's once the number is known.
        # The server's messages (it reports each display number it finds in
        # use) go to a log, shown only when it fails to start.
        log = open(os.path.join(directory, "server.log"), "wb")
        cookie = secrets.token_bytes(16)
        _write_private(os.path.join(directory, "server-auth"), xauthority_entry(0, cookie))
        server = subprocess.Popen(server_command(mode, size, os.path.join(directory, "server-auth"),
                                                 write_end),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=log, pass_fds=(write_end,), start_new_session=True)
        os.close(write_end)
        write_end = -1
        number = _read_display(read_end)
        if number is None:
            server.wait()
            with open(os.path.join(directory, "server.log"), "rb") as messages:
                sys.stderr.write(messages.read()[-2000:].decode(errors="replace"))
            print("failed", flush=True)
            return 1
        _write_private(auth_file, xauthority_entry(number, cookie))
        print(number, directory, flush=True)
        sys.stdin.buffer.read()             # until minikvm closes it, or dies
        return 0
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        if server is not None:
            _stop(server)
        shutil.rmtree(directory, ignore_errors=True)


def _read_display(fd: int) -> int | None:
    """The display number the server writes to ``-displayfd`` when ready."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 16)
        if not chunk:
            return None
        data += chunk
    text = data.strip()
    return int(text) if text.isdigit() else None


def _write_private(path: str, data: bytes) -> None:
    """Write *data* to a new file only its owner may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(keep(sys.argv[1], parse_x11_size(sys.argv[2])))
