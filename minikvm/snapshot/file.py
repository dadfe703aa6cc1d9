"""Layer 7 — snapshot files: a :class:`~minikvm.snapshot.snapshot.Snapshot` on disk.

:func:`save` writes a snapshot (CPU state, the frozen memory's data extents,
the host-side process state, the program's ELF and its sandbox policy) to
one file; :func:`load` reads it back into a new snapshot.  The format is
versioned and ends with a SHA-256 of everything before it; loading checks
size, magic, version and checksum *before* it creates anything, so a
truncated or corrupted file is refused whole — never a half-restored VM.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import hashlib
import json
import os
import stat as stat_module
import struct
from typing import Any, BinaryIO, Literal, Sequence

from minikvm import ioctl as k
from minikvm.errors import MinikvmError, SnapshotError
from minikvm.kvm.memory import GuestMemory
from minikvm.machine.mm import AddressSpace, Vma
from minikvm.machine.pages import PagePool
from minikvm.process.determinism import Determinism, SeededStream, VirtualClock
from minikvm.process.elf import load_elf
from minikvm.process.fdtable import DeviceFile, FdEntry, HostFile, OpenFile, Pipe, PipeEnd
from minikvm.process.threads import Thread, ThreadTable
from minikvm.sandbox.grants import Mount
from minikvm.sandbox.policy import Policy
from minikvm.snapshot.cpu_state import CpuState
from minikvm.snapshot.frozen import copy_range, data_extents, new_memfd, seal_frozen
from minikvm.snapshot.process_state import close_fd_entries
from minikvm.snapshot.snapshot import Snapshot


# ---------------------------------------------------------------------------
# Snapshot files
# ---------------------------------------------------------------------------
#
# A snapshot file, version 2 (all integers little-endian)::
#
#     offset  size  what
#     0       8     magic "MKVMSNAP"
#     8       4     format version (2)
#     12      4     flags (0)
#     16      8     H: length of the header
#     24      H     header: JSON, UTF-8 (what the sections are, the
#                   host-side state, the policy)
#     24+H    P     payload: the sections, back to back (their offsets
#                   and lengths, relative to the payload, are in the
#                   header; P is header["payload_length"])
#     24+H+P  32    SHA-256 of every byte before it
#
# The memory section holds the data extents of the frozen memfd, in the
# order of header["memory"]["extents"]; holes are not stored.  Loading
# checks the size, the magic, the version and the checksum before it
# creates anything, so a truncated or corrupted file is refused whole.

MAGIC = b"MKVMSNAP"
#: 2: the process state holds the thread table (a version-1 file has none,
#: and its forks could not be reset whole: it is refused), a pipe its number.
FORMAT_VERSION = 2
PREAMBLE = struct.Struct("<8sIIQ")
DIGEST_SIZE = hashlib.sha256().digest_size
READ_CHUNK = 1 << 20
MAX_HEADER = 64 << 20
#: The policy fields a file records, so ``snapshot run`` sandboxes the
#: program exactly as it was when the snapshot was taken.
STDIO_PREFIX = "<stdio "
#: The classes besides the builtin types that the process state may hold:
#: plain-data dataclasses, stored by name and fields.
PLAIN_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    ThreadTable, Thread, Determinism, SeededStream, VirtualClock)}


def _encode(value: Any, where: str) -> Any:
    """Plain data as JSON, tagging what JSON lacks (bytes, tuples, int keys)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"$set": [_encode(v, where) for v in sorted(value, key=repr)],
                "frozen": isinstance(value, frozenset)}
    if isinstance(value, dict):
        return {"$dict": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    if PLAIN_CLASSES.get(type(value).__name__) is type(value):
        return {"$object": type(value).__name__,
                "fields": {field.name: _encode(getattr(value, field.name), f"{where}.{field.name}")
                           for field in dataclasses.fields(value)}}
    raise SnapshotError(f"{where} holds a {type(value).__name__}: a snapshot file can only "
                        f"store plain data")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if "$tuple" in value:
        return tuple(_decode(v) for v in value["$tuple"])
    if "$set" in value:
        items = [_decode(v) for v in value["$set"]]
        return frozenset(items) if value.get("frozen") else set(items)
    if "$dict" in value:
        return {_decode(k): _decode(v) for k, v in value["$dict"]}
    if "$object" in value and value["$object"] in PLAIN_CLASSES:
        cls = PLAIN_CLASSES[value["$object"]]
        names = {field.name for field in dataclasses.fields(cls)}
        if set(value["fields"]) != names:
            raise SnapshotError(f"a stored {value['$object']} has the fields "
                                f"{sorted(value['fields'])}, expected {sorted(names)}")
        return cls(**{name: _decode(v) for name, v in value["fields"].items()})
    raise SnapshotError(f"unknown tagged value in the header: {sorted(value)}")


def _pool_state(pool: PagePool) -> dict[str, Any]:
    return {"start": pool.start, "end": pool.end, "used": pool.used,
            "free_runs": [list(run) for run in pool.free_runs]}


def _load_pool(state: dict[str, Any]) -> PagePool:
    pool = PagePool(state["start"], state["end"])
    pool.free_runs = [tuple(run) for run in state["free_runs"]]
    pool.used = state["used"]
    return pool


def _mm_state(mm: AddressSpace) -> dict[str, Any]:
    other = {}
    for name, value in vars(mm).items():
        if name in ("memory", "page_tables", "vmas", "_starts") or isinstance(value, PagePool):
            continue
        other[name] = _encode(value, f"the address space's {name!r}")
    return {"vmas": [[v.start, v.end, v.prot, v.phys, v.name] for v in mm.vmas],
            "pools": {name: _pool_state(value) for name, value in vars(mm).items()
                      if isinstance(value, PagePool)},
            "root": mm.page_tables.root, "other": other}


def _load_mm(memory: GuestMemory, state: dict[str, Any]) -> AddressSpace:
    """An AddressSpace with the file's record.  Made *before* the memory
    is filled: the constructor zeroes a page-table page, the file's pages
    then overwrite it."""
    mm = AddressSpace(memory)
    mm.vmas = [Vma(start, end, prot, phys, name) for start, end, prot, phys, name in state["vmas"]]
    mm._starts = [vma.start for vma in mm.vmas]
    for name, pool in state["pools"].items():
        setattr(mm, name, _load_pool(pool))
    for name, value in state["other"].items():
        setattr(mm, name, _decode(value))
    mm.page_tables.root = state["root"]
    return mm


def _fd_records(snapshot: Snapshot) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fd table as JSON: stdio by index, files by path and position,
    devices by name, pipes with their contents.  Anything else cannot
    outlive this process, and is refused."""
    records, pipes = [], []
    pipe_index: dict[int, int] = {}
    for fd, entry in sorted(snapshot.fds.items()):
        file = entry.file
        record: dict[str, Any] = {"fd": fd, "cloexec": entry.cloexec,
                                  "status_flags": file.status_flags, "path": file.path}
        if isinstance(file, HostFile) and file.path.startswith(STDIO_PREFIX):
            record["kind"] = "stdio"
            record["index"] = int(file.path[len(STDIO_PREFIX):].rstrip(">"))
        elif isinstance(file, HostFile):
            mode = os.fstat(file.host_fd).st_mode
            if not (stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode)):
                raise SnapshotError(f"fd {fd} ({file.path}) is not a file or a directory: a "
                                    f"snapshot file cannot carry it (close it before the "
                                    f"ready point)")
            record["kind"] = "file"
            record["directory"] = stat_module.S_ISDIR(mode)
            record["offset"] = os.lseek(file.host_fd, 0, os.SEEK_CUR)
            record["attributes"] = _encode({name: value for name, value in vars(file).items()
                                            if name not in ("host_fd", "path", "status_flags")},
                                           f"fd {fd}")
        elif isinstance(file, DeviceFile):
            record["kind"] = "device"
            record["name"] = file.name
        elif isinstance(file, PipeEnd):
            if id(file.pipe) not in pipe_index:
                pipe_index[id(file.pipe)] = len(pipes)
                pipes.append({"data": _encode(bytes(file.pipe.data), "a pipe"),
                              "readers": file.pipe.readers, "writers": file.pipe.writers,
                              "number": file.pipe.number})
            record["kind"] = "pipe"
            record["pipe"] = pipe_index[id(file.pipe)]
            record["writing"] = file.writing
        else:
            raise SnapshotError(f"fd {fd} is a {file.kind}: a snapshot file cannot carry it "
                                f"(close it before the ready point)")
        records.append(record)
    return records, pipes


def _reopen_fds(records: list[dict[str, Any]], pipes: list[dict[str, Any]], policy: Policy | None,
                stdio: Sequence[int]) -> dict[int, FdEntry]:
    """The fd table of a loaded snapshot: stdio attached to *stdio*, files
    reopened through the policy (so a file outside it is refused), pipes
    and devices rebuilt."""
    entries: dict[int, FdEntry] = {}
    shared_pipes = [Pipe(bytearray(_decode(p["data"])), p["readers"], p["writers"], p["number"])
                    for p in pipes]
    ends: dict[tuple[int, bool], PipeEnd] = {}
    try:
        for record in records:
            fd, kind = record["fd"], record["kind"]
            flags = record["status_flags"]
            if kind == "stdio":
                file: OpenFile = HostFile(os.dup(stdio[record["index"]]), record["path"], flags)
            elif kind == "file":
                if policy is None:
                    raise SnapshotError(f"fd {fd} ({record['path']}) needs a policy to reopen it")
                open_flags = flags & (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK)
                if record["directory"]:
                    open_flags |= os.O_DIRECTORY
                try:
                    host_fd = policy.open(record["path"], open_flags, 0, "/", syscall="snapshot")
                except (OSError, MinikvmError) as error:
                    raise SnapshotError(f"fd {fd}: cannot reopen {record['path']}: {error}") \
                        from None
                file = HostFile(host_fd, record["path"], flags)
                for name, value in _decode(record["attributes"]).items():
                    setattr(file, name, value)
                if not record["directory"]:
                    os.lseek(host_fd, record["offset"], os.SEEK_SET)
            elif kind == "device":
                file = DeviceFile(record["name"], record["path"], flags)
            elif kind == "pipe":
                key = (record["pipe"], record["writing"])
                if key not in ends:
                    end = PipeEnd(shared_pipes[record["pipe"]], record["writing"], 0)
                    end.status_flags = flags
                    ends[key] = end
                file = ends[key]
            else:
                raise SnapshotError(f"fd {fd}: unknown kind {kind!r} in the file")
            entries[fd] = FdEntry(file, record["cloexec"])
    except BaseException:
        close_fd_entries(entries)
        raise
    return entries


def _policy_record(policy: Policy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    # The system view is recorded as the mounts it is; a private /tmp (a
    # writable mount) is not: its directory is gone when its run ends.
    mounted = {mount.guest for mount in policy.mounts}
    return {"read": [g.path for g in policy.grants if not g.writable and g.path not in mounted],
            "write": [g.path for g in policy.grants if g.writable and g.path not in mounted],
            "mounts": [list(mount) for mount in policy.mounts if not mount.writable],
            "connect": [str(e) for e in policy.endpoints],
            "max_fds": policy.max_fds,
            "max_file_size": policy.max_file_size}


def _cpuid_bytes(cpuid: ctypes.Structure) -> bytes:
    entry_size = ctypes.sizeof(k.kvm_cpuid_entry2)
    header = ctypes.sizeof(cpuid) - entry_size * len(cpuid.entries)
    return bytes(cpuid)[:header + cpuid.nent * entry_size]


def _cpuid_from(data: bytes) -> ctypes.Structure:
    entry_size = ctypes.sizeof(k.kvm_cpuid_entry2)
    nent = struct.unpack_from("<I", data)[0]
    cpuid = k.kvm_cpuid2_with(nent)
    if len(data) != ctypes.sizeof(cpuid):
        raise SnapshotError(f"the cpuid section is {len(data)} bytes, expected "
                            f"{ctypes.sizeof(cpuid)} for {nent} entries of {entry_size}")
    ctypes.memmove(ctypes.addressof(cpuid), data, len(data))
    return cpuid


def save(snapshot: Snapshot, path: str | os.PathLike[str], *, elf: bytes | None = None) -> int:
    """Write *snapshot* to *path* (atomically: a temporary file renamed into
    place).  Returns the file's size.  *elf* is the program file's bytes
    (by default read again from the program's path).  Raises SnapshotError
    when the snapshot holds something a file cannot carry (a socket, a pipe
    to another process)."""
    target = os.fspath(path)
    partial = f"{target}.{os.getpid()}.partial"
    try:
        with open(partial, "w+b") as out:
            size = save_into(snapshot, out, elf=elf)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return size


def save_into(snapshot: Snapshot, out: BinaryIO, *, elf: bytes | None = None) -> int:
    """Write *snapshot* into *out*, a file open for reading and writing
    (``w+b``) and empty; return the file's size.  For a caller that opens
    the file before confining itself (``minikvm snapshot save``), so it
    does not need to create files afterwards; :func:`save` is the usual
    way.  *elf* as in :func:`save`."""
    if snapshot.memory is None:
        raise SnapshotError("this snapshot is closed")
    state = snapshot.process_state
    if elf is None:
        exe_path = state.get("exe_path", snapshot.image.name)
        try:
            with open(exe_path, "rb") as program:
                elf = program.read()
        except OSError as error:
            raise SnapshotError(f"cannot read the program {exe_path} to store it in the "
                                f"snapshot: {error.strerror}") from None
    fd_records, pipes = _fd_records(snapshot)
    extents = data_extents(snapshot.memory.fd, snapshot.memory.size)
    blobs = [("elf", elf), ("regs", snapshot.cpu.regs), ("sregs", snapshot.cpu.sregs),
             ("fpu", snapshot.cpu.fpu), ("xcrs", snapshot.cpu.xcrs or b""),
             ("events", snapshot.cpu.events), ("cpuid", _cpuid_bytes(snapshot.cpuid))]
    sections: dict[str, list[int]] = {}
    offset = sum(length for _, length in extents)
    sections["memory"] = [0, offset]
    for name, blob in blobs:
        sections[name] = [offset, len(blob)]
        offset += len(blob)
    header = {
        "format": "minikvm snapshot", "version": FORMAT_VERSION, "payload_length": offset,
        "sections": sections,
        "memory": {"size": snapshot.memory.size, "base": snapshot.memory.base,
                   "extents": [list(e) for e in extents]},
        "cpu": {"xsave": snapshot.cpu.xsave, "has_xcrs": snapshot.cpu.xcrs is not None,
                "msrs": {str(index): value for index, value in snapshot.cpu.msrs.items()}},
        "mm": _mm_state(snapshot.mm),
        "process": _encode({name: value for name, value in state.items()}, "the process"),
        "fds": fd_records, "pipes": pipes, "max_fds": snapshot.max_fds,
        "policy": _policy_record(snapshot.policy),
        "image": {"name": snapshot.image.name, "bias": snapshot.image.load_bias},
        "wait": list(snapshot.wait) if snapshot.wait else None,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    out.write(PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes)))
    out.write(header_bytes)
    out.flush()
    position = out.tell()
    for start, length in extents:
        copy_range(snapshot.memory.fd, out.fileno(), start, length, position)
        position += length
    out.seek(position)
    for _, blob in blobs:
        out.write(blob)
    out.flush()
    out.seek(0)
    digest = hashlib.sha256()
    while chunk := out.read(READ_CHUNK):
        digest.update(chunk)
    out.write(digest.digest())
    out.flush()
    return out.tell()


def read_header(path: str | os.PathLike[str], file: BinaryIO | None = None) -> dict[str, Any]:
    """Check the file whole (size, magic, version, checksum) and return its
    header.  *file*: the file already open (binary), *path* then only names
    it.  Raises SnapshotError saying what is wrong."""
    name = os.fspath(path)
    try:
        if file is not None:
            file.seek(0)
            return _check_file(file, name)
        with open(name, "rb") as opened:
            return _check_file(opened, name)
    except OSError as error:
        raise SnapshotError(f"{name}: {error.strerror}") from None


def _check_file(file: Any, name: str) -> dict[str, Any]:
    size = os.fstat(file.fileno()).st_size
    if size < PREAMBLE.size + DIGEST_SIZE:
        raise SnapshotError(f"{name}: {size} bytes is too short to be a snapshot file")
    magic, version, _, header_length = PREAMBLE.unpack(file.read(PREAMBLE.size))
    if magic != MAGIC:
        raise SnapshotError(f"{name}: not a minikvm snapshot (it starts with {magic!r}, not "
                            f"{MAGIC!r})")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"{name}: snapshot format version {version}; this minikvm reads "
                            f"version {FORMAT_VERSION}")
    if header_length > min(MAX_HEADER, size - PREAMBLE.size - DIGEST_SIZE):
        raise SnapshotError(f"{name}: truncated or corrupted (a header of {header_length} "
                            f"bytes does not fit in {size} bytes)")
    header_bytes = file.read(header_length)
    digest = hashlib.sha256()
    file.seek(0)
    remaining = size - DIGEST_SIZE
    while remaining:
        chunk = file.read(min(READ_CHUNK, remaining))
        digest.update(chunk)
        remaining -= len(chunk)
    stored = file.read(DIGEST_SIZE)
    try:
        header = json.loads(header_bytes)
        expected = PREAMBLE.size + header_length + header["payload_length"] + DIGEST_SIZE
    except (ValueError, KeyError, TypeError):
        header, expected = None, None
    if expected is not None and size < expected:
        raise SnapshotError(f"{name}: truncated: {size} bytes, the header says {expected}")
    if digest.digest() != stored:
        raise SnapshotError(f"{name}: checksum mismatch: the file is corrupted or truncated "
                            f"(SHA-256 of its contents differs from the one stored at its end)")
    if header is None or expected != size:
        raise SnapshotError(f"{name}: the header is inconsistent with the file's size")
    payload_length = header["payload_length"]
    for section, (offset, length) in header["sections"].items():
        if offset < 0 or length < 0 or offset + length > payload_length:
            raise SnapshotError(f"{name}: section {section} lies outside the payload")
    return header


def load(path: str | os.PathLike[str], *, policy: Policy | Literal["saved"] | None = "saved",
         stdio: Sequence[int] = (0, 1, 2), file: BinaryIO | None = None,
         header: dict[str, Any] | None = None) -> Snapshot:
    """Read a snapshot file back.  The file is checked whole first; nothing
    is created for a file that does not pass.  *policy* is the sandbox
    policy to run it under: by default the one recorded in the file (a
    :class:`~minikvm.sandbox.policy.Policy` rebuilt from its grants).  Open files
    are reopened through that policy; the program's stdin, stdout and stderr
    become *stdio*.

    A caller that confines itself first (``minikvm snapshot run``) opens
    the file, checks it with :func:`read_header` and builds the policy with
    :func:`saved_policy` *before* confining, then passes *file* and *header*
    here: the stored program is parsed, and the memory and files restored,
    inside the walls."""
    name = os.fspath(path)
    if file is None:
        try:
            opened = open(name, "rb")
        except OSError as error:
            raise SnapshotError(f"{name}: {error.strerror}") from None
        with opened:
            return load(name, policy=policy, stdio=stdio, file=opened, header=header)
    if header is None:
        header = read_header(name, file)
    if policy == "saved":
        policy = saved_policy(header)
    file.seek(0)
    payload_start = PREAMBLE.size + PREAMBLE.unpack(file.read(PREAMBLE.size))[3]

    def section(section_name: str) -> bytes:
        offset, length = header["sections"][section_name]
        return os.pread(file.fileno(), length, payload_start + offset) if length else b""

    try:
        image = load_elf(section("elf"), bias=header["image"]["bias"],
                         name=header["image"]["name"])
    except MinikvmError as error:
        raise SnapshotError(f"{name}: the stored program cannot be loaded: {error}") from None
    cpu_header = header["cpu"]
    cpu = CpuState(section("regs"), section("sregs"), section("fpu"), cpu_header["xsave"],
                   section("xcrs") if cpu_header["has_xcrs"] else None,
                   {int(index): value for index, value in cpu_header["msrs"].items()},
                   section("events"))
    cpuid = _cpuid_from(section("cpuid"))
    layout = header["memory"]
    fd = new_memfd(layout["size"], "minikvm-snapshot")
    memory = GuestMemory(layout["size"], layout["base"], fd=fd, shared=True)
    memory.owns_fd = True
    try:
        mm = _load_mm(memory, header["mm"])
        position = payload_start + header["sections"]["memory"][0]
        for start, length in layout["extents"]:
            copy_range(file.fileno(), fd, position, length, start)
            position += length
        seal_frozen(fd)
        process_state = _decode(header["process"])
        fds = _reopen_fds(header["fds"], header["pipes"], policy, stdio)
    except BaseException:
        memory.close()
        raise
    wait = tuple(header["wait"]) if header["wait"] else None
    return Snapshot(memory=memory, mm=mm, cpu=cpu, cpuid=cpuid, process_state=process_state,
                    fds=fds, max_fds=header["max_fds"], image=image, policy=policy,
                    wait=wait)  # type: ignore[arg-type]


def saved_policy(header: dict[str, Any]) -> Policy | None:
    """The :class:`~minikvm.sandbox.policy.Policy` a file's *header* records (its
    grant directories opened now), or None when it records none."""
    record = header.get("policy")
    if record is None:
        return None
    return Policy(read=record["read"], write=record["write"], connect=record["connect"],
                  max_fds=record["max_fds"], max_file_size=record["max_file_size"],
                  mounts=[Mount(*mount) for mount in record.get("mounts", [])])
