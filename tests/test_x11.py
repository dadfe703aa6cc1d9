"""``run --x11=headless``: X clients on a private Xvfb, never the user's display.

Real /usr/bin X clients (x11-apps, x11-utils) run in the sandbox against
the nested server minikvm starts; the host side looks at that server with
its cookie to see the client's window.  Skips when Xvfb or the clients
are missing (apt-get install xvfb x11-apps x11-utils).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from minikvm.cli.x11 import parse_x11_size, xauthority_entry

NEEDED = ["Xvfb", "xclock", "xdpyinfo", "xwininfo"]
MISSING = [name for name in NEEDED if shutil.which(name) is None]
needs_x = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} missing "
                             "(apt-get install xvfb x11-apps x11-utils)")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def minikvm(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=HERE)
    return subprocess.run([sys.executable, "-m", "minikvm", "run", *args], env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def nested_dirs() -> set[str]:
    return set(glob.glob("/tmp/minikvm-x11-*"))


def nested_servers() -> list[str]:
    """The command lines of the host's processes that serve a nested
    display: each is started with ``-auth`` in a ``/tmp/minikvm-x11-*``
    directory (:func:`minikvm.cli.x11.server_command`)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                line = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue                    # not a pid, or gone meanwhile
        if "-auth /tmp/minikvm-x11-" in line:
            found.append(line)
    return found


def assert_nested_servers_gone(before: set[str]) -> None:
    """The keeper takes the server down and removes its directory, within
    a bounded wait: only the directories there *before* are left, and no
    server of a directory that went is still running."""
    for _ in range(50):
        if nested_dirs() == before:
            break
        time.sleep(0.1)
    assert nested_dirs() == before
    left = [line for line in nested_servers()
            if not any(f"-auth {directory}/" in line for directory in before)]
    assert not left, left


def test_sizes():
    assert parse_x11_size("800x600") == (800, 600)
    for bad in ["800", "x600", "0x10", "800x600x24", "99999x10", "-1x5", "axb"]:
        with pytest.raises(ValueError, match="--x11-size"):
            parse_x11_size(bad)


def test_the_cookie_record_is_the_xauth_format():
    record = xauthority_entry(7, bytes(range(16)))
    # family FamilyWild, empty address, display "7", scheme, 16 bytes of cookie
    assert record == (b"\xff\xff" + b"\0\0" + b"\0\x017"
                      + b"\0\x12MIT-MAGIC-COOKIE-1" + b"\0\x10" + bytes(range(16)))


def test_a_bad_size_is_a_clear_error():
    result = minikvm("--x11=headless", "--x11-size", "640by480", "--", "/usr/bin/true")
    assert result.returncode == 2
    assert "--x11-size: '640by480': not WIDTHxHEIGHT" in result.stderr


@needs_x
def test_a_client_sees_only_the_nested_display_and_it_is_gone_after():
    before = nested_dirs()
    result = minikvm("--x11=headless", "--x11-size", "640x480", "--", "/usr/bin/xdpyinfo")
    assert result.returncode == 0, result.stderr
    name = next(line for line in result.stdout.splitlines() if line.startswith("name of display"))
    display = name.split()[-1]
    assert display.startswith(":")
    assert "dimensions:    640x480 pixels" in result.stdout
    assert "MIT-SHM" not in result.stdout            # clients use the wire protocol
    assert not os.path.exists(f"/tmp/.X11-unix/X{display[1:]}")   # server gone
    assert nested_dirs() == before                   # cookie directory gone


@needs_x
def test_xclock_makes_a_window_and_goes_at_the_time_limit():
    before = nested_dirs()
    env = dict(os.environ, PYTHONPATH=HERE)
    run = subprocess.Popen([sys.executable, "-m", "minikvm", "run", "--x11=headless",
                            "--timeout", "20", "--", "/usr/bin/xclock"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        found = ""
        for _ in range(300):                       # the window, from the host side
            new = nested_dirs() - before
            auth = [os.path.join(d, "Xauthority") for d in new]
            auth = [a for a in auth if os.path.exists(a)]
            if auth:
                for sock in os.listdir("/tmp/.X11-unix"):   # the cookie picks ours
                    tree = subprocess.run(["xwininfo", "-root", "-tree"],
                                          env=dict(os.environ, DISPLAY=":" + sock[1:],
                                                   XAUTHORITY=auth[0]),
                                          capture_output=True, text=True)
                    if '"xclock"' in tree.stdout:
                        found = tree.stdout
                if found:
                    break
            time.sleep(0.1)
        assert '"xclock"' in found
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert "time limit" in stderr, stderr
    assert nested_dirs() == before


@needs_x
def test_without_x11_the_users_display_is_unreachable():
    """A host-side Xvfb stands for the user's display: natively a client
    opens it, in the sandbox it does not (path nor abstract socket), and
    with --x11 the program's DISPLAY is the nested one whatever was asked."""
    with users_display("320x200") as display:
        assert subprocess.run(["xdpyinfo"], env=dict(os.environ, DISPLAY=display),
                              capture_output=True).returncode == 0    # natively it opens
        result = minikvm("--trace", "--env", f"DISPLAY={display}", "--", "/usr/bin/xdpyinfo")
        assert result.returncode == 1
        assert f'unable to open display "{display}"' in result.stderr
        assert "socket(1, 0x80001, 0) = -1 EACCES" in result.stderr   # no grant, no socket
        # inside --x11, asking for the user's display by name: the abstract
        # socket is refused as absent, the path socket is not allowed
        result = minikvm("--trace", "--x11=headless", "--", "/usr/bin/xdpyinfo",
                         "-display", display)
        assert result.returncode == 1
        connects = [line for line in result.stderr.splitlines() if line.startswith("connect(")]
        assert connects and all(" = -1 E" in line for line in connects), connects
        number = display[1:]
        tried = {"abstract": f"'unix:@/tmp/.X11-unix/X{number}'",
                 "path": f"'unix:/tmp/.X11-unix/X{number}'", "tcp": f":{6000 + int(number)}']"}
        refusals = {kind: [line.split(" = ")[1].split()[1] for line in connects if name in line]
                    for kind, name in tried.items()}
        assert refusals["abstract"] == ["ECONNREFUSED"], connects
        assert refusals["path"] and set(refusals["path"]) == {"EACCES"}, connects
        assert refusals["tcp"] and set(refusals["tcp"]) == {"EACCES"}, connects
        result = minikvm("--x11=headless", "--env", f"DISPLAY={display}", "--",
                         "/usr/bin/xdpyinfo")
        assert result.returncode == 0, result.stderr
        assert f"name of display:    {display}\n" not in result.stdout


def window_on_nested_display(before: set[str], name: str) -> dict[str, str] | None:
    """The environment (DISPLAY, XAUTHORITY) of the nested display that has
    a window called *name*, looked at from the host with its cookie; None
    if none has one yet."""
    for directory in nested_dirs() - before:
        auth = os.path.join(directory, "Xauthority")
        if not os.path.exists(auth):
            continue
        for sock in os.listdir("/tmp/.X11-unix"):    # the cookie picks ours
            env = dict(os.environ, DISPLAY=":" + sock[1:], XAUTHORITY=auth)
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env,
                                  capture_output=True, text=True)
            if f'"{name}"' in tree.stdout:
                return env
    return None


def start_client(*argv: str, mode: str = "headless", display: str | None = None,
                 options: tuple[str, ...] = (), cwd: str | None = None) -> subprocess.Popen:
    """``minikvm run --x11=MODE`` of *argv* in the background; *display* is
    the ``$DISPLAY`` it is started with (the user's, for Xephyr)."""
    env = dict(os.environ, PYTHONPATH=HERE)
    env.pop("DISPLAY", None)
    if display is not None:
        env["DISPLAY"] = display
    return subprocess.Popen([sys.executable, "-m", "minikvm", "run", f"--x11={mode}",
                             "--timeout", "20", *options, "--", *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd)


@contextlib.contextmanager
def users_display(size: str = "1280x1024") -> Iterator[str]:
    """A host-side Xvfb standing for the user's own display: its name (``:N``)."""
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp",
                               "-screen", "0", f"{size}x24"], pass_fds=(write_end,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as ready:
            yield ":" + ready.readline().strip()
    finally:
        server.terminate()
        server.wait()


def window_geometry(env: dict[str, str], name: str) -> tuple[int, int, int, int]:
    """x, y, width and height of the top-level window called *name*, from
    ``xwininfo -name`` (its "Absolute upper-left" lines)."""
    info = subprocess.run(["xwininfo", "-name", name], env=env, capture_output=True,
                          text=True, check=True).stdout
    field = {key.strip(): value.strip() for key, _, value in
             (line.partition(":") for line in info.splitlines()) if value}
    return (int(field["Absolute upper-left X"]), int(field["Absolute upper-left Y"]),
            int(field["Width"]), int(field["Height"]))


#: ``XWDFileHeader`` of X11/XWDFile.h: 25 CARD32 fields, 100 bytes
#: (``sz_XWDheader``), written big-endian by xwd whatever the machine's order.
XWD_HEADER = struct.Struct(">25I")
XWD_FIELDS = ("header_size file_version pixmap_format pixmap_depth pixmap_width "
              "pixmap_height xoffset byte_order bitmap_unit bitmap_bit_order bitmap_pad "
              "bits_per_pixel bytes_per_line visual_class red_mask green_mask blue_mask "
              "bits_per_rgb colormap_entries ncolors window_width window_height window_x "
              "window_y window_bdrwidth").split()
#: ``sz_XWDColor``: one colormap entry after the header and the window name.
XWD_COLOR_SIZE = 12
#: ``ZPixmap`` in X.h: pixels one after another, each ``bits_per_pixel`` wide.
ZPIXMAP = 2


def screenshot_rows(env: dict[str, str]) -> tuple[dict[str, int], list[bytes]]:
    """The root window of the display in *env*, by ``xwd -root -silent``:
    the XWD header's fields and the image's rows (each ``pixmap_width``
    pixels of ``bits_per_pixel // 8`` bytes, the line padding cut off)."""
    data = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True,
                          check=True, timeout=30).stdout
    header = dict(zip(XWD_FIELDS, XWD_HEADER.unpack_from(data)))
    assert header["file_version"] == 7 and header["pixmap_format"] == ZPIXMAP, header
    assert header["bits_per_pixel"] % 8 == 0, header
    start = header["header_size"] + header["ncolors"] * XWD_COLOR_SIZE
    width = header["pixmap_width"] * header["bits_per_pixel"] // 8
    line = header["bytes_per_line"]
    assert len(data) >= start + line * header["pixmap_height"], (len(data), header)
    rows = [data[start + y * line:start + y * line + width] for y in range(header["pixmap_height"])]
    return header, rows


def distinct_pixels(env: dict[str, str], box: tuple[int, int, int, int]) -> set[bytes]:
    """The different pixel values inside *box* (x, y, width, height) of the
    root window's screenshot."""
    header, rows = screenshot_rows(env)
    size = header["bits_per_pixel"] // 8
    x, y, width, height = box
    return {row[column * size:(column + 1) * size]
            for row in rows[y:y + height] for column in range(x, x + width)}


def wait_for_window(before: set[str], name: str) -> dict[str, str]:
    for _ in range(300):
        env = window_on_nested_display(before, name)
        if env is not None:
            return env
        time.sleep(0.1)
    raise AssertionError(f"no window {name!r} appeared on the nested display")


@needs_x
@pytest.mark.skipif(shutil.which("xeyes") is None, reason="xeyes missing (apt-get install "
                    "x11-apps)")
def test_xeyes_makes_a_window_and_a_sigterm_ends_it_and_its_server():
    before = nested_dirs()
    run = start_client("/usr/bin/xeyes")
    try:
        env = wait_for_window(before, "xeyes")
        tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True,
                              text=True).stdout
        assert '"xeyes"' in tree
        run.terminate()                       # SIGTERM goes on to xeyes, which ends
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == -15             # ended by it, as minikvm re-raises it
    assert_nested_servers_gone(before)


@needs_x
@pytest.mark.skipif(shutil.which("xev") is None or shutil.which("xdotool") is None,
                    reason="xev or xdotool missing (apt-get install x11-utils xdotool)")
def test_keys_typed_on_the_nested_display_reach_the_sandboxed_client():
    # xdotool types through the XTEST extension, as a user's keyboard would:
    # real key events (synthetic NO), delivered to the window under the pointer.
    before = nested_dirs()
    run = start_client("/usr/bin/xev", "-event", "keyboard")
    try:
        env = wait_for_window(before, "Event Tester")
        window = subprocess.run(["xdotool", "search", "--name", "Event Tester"], env=env,
                                capture_output=True, text=True, check=True).stdout.split()[0]
        subprocess.run(["xdotool", "mousemove", "--window", window, "20", "20", "type", "hi"],
                       env=env, check=True, timeout=30)
        time.sleep(1)
        run.terminate()
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert "KeyPress event" in out and "synthetic NO" in out, out
    keys = [line.split("keysym ")[1].split(")")[0] for line in out.splitlines()
            if "KeyPress" not in line and "keysym" in line]
    assert "0x68, h" in keys and "0x69, i" in keys, out


@needs_x
@pytest.mark.skipif(shutil.which("Xephyr") is None or shutil.which("xeyes") is None,
                    reason="Xephyr or xeyes missing (apt-get install xserver-xephyr x11-apps)")
def test_xephyr_shows_the_nested_display_as_one_window_on_the_users():
    """``--x11`` with a ``$DISPLAY``: Xephyr, one window on the user's
    display; the client's window is on the nested server inside it, and
    drawn (its pixels in the root window's screenshot are not uniform)."""
    before = nested_dirs()
    with users_display() as display:
        # xeyes +shape: a rectangular window, so the box it covers on the
        # root is its own drawing only (a shaped one lets the root show through)
        run = start_client("/usr/bin/xeyes", "+shape", mode="auto", display=display)
        try:
            env = wait_for_window(before, "xeyes")
            assert env["DISPLAY"] != display
            outer = subprocess.run(["xwininfo", "-root", "-tree"],
                                   env=dict(os.environ, DISPLAY=display),
                                   capture_output=True, text=True, check=True).stdout
            assert '"minikvm sandbox": ("Xephyr" "Xephyr")' in outer, outer
            assert '"xeyes"' not in outer                 # the client is not on the user's
            box = window_geometry(env, "xeyes")
            colours: set[bytes] = set()
            for _ in range(100):                          # until xeyes has drawn its eyes
                colours = distinct_pixels(env, box)
                if len(colours) > 1:
                    break
                time.sleep(0.1)
            assert len(colours) > 1, f"the xeyes window at {box} is one colour: {colours}"
            run.terminate()
            run.communicate(timeout=60)
        finally:
            run.kill()
    assert run.returncode == -15
    assert_nested_servers_gone(before)


@needs_x
@pytest.mark.skipif(shutil.which("xterm") is None or shutil.which("xdotool") is None,
                    reason="xterm or xdotool missing (apt-get install xterm xdotool)")
def test_keys_typed_into_a_sandboxed_xterm_reach_its_sandboxed_shell(tmp_path):
    """xterm makes a pty (/dev/ptmx, a pair from minikvm's pty broker),
    forks, and its child runs sh on the slave as its controlling terminal;
    the keys xdotool types on the nested display reach that shell, whose
    ``echo`` makes a file in the grant (--here)."""
    before = nested_dirs()
    # The shell says when it runs on the pty (keys typed before xterm has
    # set the pty up are not for the shell), then reads what is typed.
    run = start_client("/usr/bin/xterm", "-T", "sandboxed-xterm", "-e", "/bin/sh", "-c",
                       "echo > shell-runs; exec /bin/sh -i", options=("--here",),
                       cwd=str(tmp_path))
    try:
        env = wait_for_window(before, "sandboxed-xterm")
        for _ in range(150):
            if (tmp_path / "shell-runs").exists():
                break
            time.sleep(0.1)
        assert (tmp_path / "shell-runs").exists(), "the shell did not start in the xterm"
        window = subprocess.run(["xdotool", "search", "--name", "sandboxed-xterm"], env=env,
                                capture_output=True, text=True, check=True).stdout.split()[0]
        typed = tmp_path / "typed-in-xterm"
        subprocess.run(["xdotool", "mousemove", "--window", window, "20", "20", "type",
                        "echo $$ typed > typed-in-xterm\n"], env=env, check=True, timeout=30)
        for _ in range(100):
            if typed.exists() and typed.read_text():
                break
            time.sleep(0.1)
        assert typed.read_text().endswith(" typed\n"), typed.read_text()
        subprocess.run(["xdotool", "type", "exit\n"], env=env, check=True, timeout=30)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, stderr
    assert nested_dirs() == before


TK_SCRIPT = """\
wm title . sandboxed-tk
wm geometry . 200x100+0+0
button .b -text press -command {exit 7}
pack .b -fill both -expand 1
"""


@needs_x
@pytest.mark.skipif(shutil.which("wish") is None or shutil.which("xdotool") is None,
                    reason="wish or xdotool missing (apt-get install tk xdotool)")
def test_a_tk_program_draws_its_button_and_a_click_reaches_it(tmp_path):
    """wish (Tcl/Tk: a notifier thread woken through a pipe, fontconfig)
    makes its window; a click on its button, from xdotool on the nested
    display, runs the button's ``exit 7``."""
    (tmp_path / "press.tcl").write_text(TK_SCRIPT)
    before = nested_dirs()
    run = start_client("/usr/bin/wish", "press.tcl", options=("--here",), cwd=str(tmp_path))
    try:
        env = wait_for_window(before, "sandboxed-tk")
        # not check=True: the click ends the program, and with it the
        # server xdotool is still connected to ("X connection broken")
        subprocess.run(["xdotool", "mousemove", "100", "50", "click", "1"], env=env,
                       capture_output=True, timeout=30)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 7, stderr
    assert "Fontconfig error" not in stderr        # its cache is in the private /tmp
    assert nested_dirs() == before
