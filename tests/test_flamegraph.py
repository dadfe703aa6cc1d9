"""``minikvm run --flamegraph``: real guests sampled, their flame graphs read back.

tests/programs/flame_hot.c is built -O0 (every function keeps its frame),
static and dynamic.  What must hold: the hot function that runs twice as
long gets more samples, under main; time the host spends in a system call
shows as a ``[syscall NAME]`` frame; time in libc is named from libc's
``.dynsym``; a guest whose RBP points nowhere is
still sampled, with no traceback; the three formats are what their readers
expect (XML with a ``<title>`` per frame, speedscope's document, folded
lines).  Bad option values are tests/test_cli_args.py's.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from minikvm.observe.folded import parse_folded
from tests.guest_runs import run_minikvm
from tests.programs.build import unavailable_reason

SOURCE = Path(__file__).parent / "programs" / "flame_hot.c"
RUN_TIMEOUT_SECONDS = 120
VARIANTS = {"static": ["-static"], "dynamic": []}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = unavailable_reason("glibc-static")
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("flame")
    binaries = {}
    for name, flags in VARIANTS.items():
        binary = directory / f"flame_hot-{name}"
        subprocess.run(["cc", "-O0", *flags, "-o", str(binary), str(SOURCE)], check=True,
                       timeout=120)
        binaries[name] = binary
    return binaries


def flame(binary: Path, output: Path, *arguments: str) -> subprocess.CompletedProcess:
    result = run_minikvm(["--flamegraph", output, "--", binary, *arguments], cwd=output.parent,
                         text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, \
        result.stderr
    assert result.returncode == 0, result.stderr
    assert "flame graph: " in result.stderr and f"written to {output}" in result.stderr
    return result


def samples_under(counts: dict[tuple[str, ...], int], *frames: str) -> int:
    """Samples whose stack has *frames* next to each other, in that order."""
    size = len(frames)
    return sum(count for stack, count in counts.items()
               if any(stack[i:i + size] == frames for i in range(len(stack) - size + 1)))


@pytest.mark.kvm
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_longer_function_gets_more_samples(built: dict[str, Path], variant: str,
                                               tmp_path: Path) -> None:
    output = tmp_path / "hot.folded"
    flame(built[variant], output, "hot", "40")
    counts = parse_folded(output.read_text())
    hot_a, hot_b = samples_under(counts, "main", "hot_a"), samples_under(counts, "main", "hot_b")
    assert hot_b > 0, output.read_text()
    assert hot_a > 1.3 * hot_b, output.read_text()        # 2x as long, with noise
    assert hot_a > 0.5 * sum(counts.values()), output.read_text()   # most of the run


@pytest.mark.kvm
def test_frames_in_libc_are_named_from_its_dynsym(built: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """The dynamic build spends its time in libc.so.6's rand → random →
    random_r, exported in .dynsym (the main program's table does not cover
    them).  Debian's libc has no frame pointers, so the walk from inside it
    goes from libc's frame straight to main: hot_libc, whose frame RBP
    still points at, is the one skipped."""
    output = tmp_path / "libc.folded"
    flame(built["dynamic"], output, "libc", "20")
    counts = parse_folded(output.read_text())
    in_libc = sum(samples_under(counts, "main", name) for name in ("rand", "random", "random_r"))
    unknown = samples_under(counts, "main", "[unknown]")
    assert in_libc > 0 and in_libc > unknown, output.read_text()


@pytest.mark.kvm
def test_time_in_a_system_call_is_named(built: dict[str, Path], tmp_path: Path) -> None:
    """main sleeps 300 ms: most samples land while the host waits in the
    guest's clock_nanosleep, and say so."""
    output = tmp_path / "sleep.folded"
    flame(built["static"], output, "sleep")
    counts = parse_folded(output.read_text())
    in_sleep = samples_under(counts, "[syscall clock_nanosleep]")
    assert in_sleep > 0.5 * sum(counts.values()), output.read_text()
    # The system call's frame is the innermost, above the guest's own.
    assert all(stack[-1] == "[syscall clock_nanosleep]" and len(stack) > 1
               for stack in counts if "[syscall clock_nanosleep]" in stack)


@pytest.mark.kvm
def test_a_wild_frame_pointer_is_sampled_without_a_traceback(built: dict[str, Path],
                                                              tmp_path: Path) -> None:
    output = tmp_path / "wild.folded"
    flame(built["static"], output, "wild-rbp")
    counts = parse_folded(output.read_text())
    # The walk stops at the unmapped frame: the function itself, nothing above it.
    assert counts[("wild_rbp",)] > 0.5 * sum(counts.values()), output.read_text()


@pytest.mark.kvm
def test_svg_has_a_title_per_frame(built: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "hot.svg"
    flame(built["static"], output, "hot", "10")
    root = ElementTree.parse(output).getroot()
    titles = [element.text or "" for element in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(title.startswith("hot_a ") for title in titles), titles
    assert any(title.startswith("main ") for title in titles), titles
    # The nesting: hot_a's box stands on main's, inside its width, and
    # holds most of the samples (it runs twice as long as hot_b).
    frames = {}
    for group in root.iter("{http://www.w3.org/2000/svg}g"):
        if group.get("class") == "frame":
            frames.setdefault(group.get("data-name"), []).append(group)
    (main,) = frames["main"]
    hot = [group for group in frames["hot_a"]
           if int(group.get("data-level")) == int(main.get("data-level")) + 1]
    assert len(hot) == 1, [group.attrib for group in frames["hot_a"]]
    left, width = float(main.get("data-x")), float(main.get("data-width"))
    assert left <= float(hot[0].get("data-x"))
    assert float(hot[0].get("data-x")) + float(hot[0].get("data-width")) <= left + width + 0.2
    share = float(re.search(r"([\d.]+)%\)$", hot[0].findtext("{http://www.w3.org/2000/svg}title"))[1])
    assert share > 50, hot[0].findtext("{http://www.w3.org/2000/svg}title")


@pytest.mark.kvm
def test_speedscope_document(built: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "hot.json"
    flame(built["static"], output, "hot", "10")
    document = json.loads(output.read_text())
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    names = [frame["name"] for frame in document["shared"]["frames"]]
    assert "hot_a" in names and "main" in names
    profile = document["profiles"][0]
    assert profile["type"] == "sampled"
    assert len(profile["samples"]) == len(profile["weights"]) > 0
    assert all(0 <= index < len(names) for sample in profile["samples"] for index in sample)


@pytest.mark.kvm
def test_the_sample_rate_sets_the_number_of_samples(built: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """300 ms asleep at 100 Hz is about 30 samples, not the default's 300."""
    output = tmp_path / "slow.folded"
    result = run_minikvm(["--flamegraph", output, "--sample-hz", "100", "--", built["static"],
                          "sleep"], cwd=tmp_path, text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    total = sum(parse_folded(output.read_text()).values())
    assert 10 <= total <= 80, total


@pytest.mark.kvm
def test_sample_hz_alone_is_a_usage_error(built: dict[str, Path], tmp_path: Path) -> None:
    result = run_minikvm(["--sample-hz", "100", "--", built["static"], "sleep"], cwd=tmp_path,
                         text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert result.returncode == 2
    assert "--sample-hz needs --flamegraph" in result.stderr
