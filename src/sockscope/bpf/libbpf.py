"""A small typed binding of libbpf's C API (libbpf.so.1), through ctypes.

Only what sockscope uses. Functions that return pointers return NULL and set
errno on failure (libbpf >= 1.0); functions that return int return -errno.
Both become :class:`LibbpfError` here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    byref,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_void_p,
)

LIBBPF_SONAME = "libbpf.so.1"


class LibbpfError(OSError):
    """A libbpf call failed; ``errno`` holds the error number."""

    def __init__(self, call: str, err: int, detail: str = "") -> None:
        err = abs(err) or errno_mod.EINVAL
        msg = f"{call}: {os.strerror(err)} (errno {err})"
        if detail:
            msg += f"\n{detail}"
        super().__init__(err, msg)
        self.call = call
        self.detail = detail

    def __str__(self) -> str:
        return str(self.args[1])


class LibbpfMissing(RuntimeError):
    """libbpf.so.1 could not be loaded."""


_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_LIBBPF_DEBUG = 2
_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


class _Lib:
    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
        except OSError as exc:
            raise LibbpfMissing(f"cannot load {LIBBPF_SONAME} ({exc}); install the libbpf1 package") from exc
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._declare()
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._print_cb = _PRINT_FN(self._on_print)
        self.lib.libbpf_set_print(self._print_cb)

    def _declare(self) -> None:
        lib = self.lib
        sig: dict[str, tuple[object, list[object]]] = {
            "libbpf_version_string": (c_char_p, []),
            "libbpf_num_possible_cpus": (c_int, []),
            "libbpf_set_print": (c_void_p, [_PRINT_FN]),
            "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
            "bpf_object__load": (c_int, [c_void_p]),
            "bpf_object__close": (None, [c_void_p]),
            "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
            "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
            "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
            "bpf_program__name": (c_char_p, [c_void_p]),
            "bpf_program__section_name": (c_char_p, [c_void_p]),
            "bpf_program__set_autoload": (c_int, [c_void_p, c_bool]),
            "bpf_program__autoload": (c_bool, [c_void_p]),
            "bpf_program__attach": (c_void_p, [c_void_p]),
            "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
            "bpf_program__attach_perf_event": (c_void_p, [c_void_p, c_int]),
            "bpf_program__attach_iter": (c_void_p, [c_void_p, c_void_p]),
            "bpf_link__destroy": (c_int, [c_void_p]),
            "bpf_link__fd": (c_int, [c_void_p]),
            "bpf_iter_create": (c_int, [c_int]),
            "bpf_map__fd": (c_int, [c_void_p]),
            "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
            "bpf_map__max_entries": (c_uint32, [c_void_p]),
            "bpf_map__key_size": (c_uint32, [c_void_p]),
            "bpf_map__value_size": (c_uint32, [c_void_p]),
            "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)]),
            "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
            "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
            "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
            "ring_buffer__new": (c_void_p, [c_int, _SAMPLE_FN, c_void_p, c_void_p]),
            "ring_buffer__consume": (c_int, [c_void_p]),
            "ring_buffer__poll": (c_int, [c_void_p, c_int]),
            "ring_buffer__free": (None, [c_void_p]),
            "btf__load_vmlinux_btf": (c_void_p, []),
            "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, ctypes.c_uint32]),
            "btf__type_by_id": (c_void_p, [c_void_p, ctypes.c_uint32]),
            "btf__free": (None, [c_void_p]),
            "bpf_map_lookup_and_delete_batch": (
                c_int,
                [c_int, c_void_p, c_void_p, c_void_p, c_void_p, POINTER(c_uint32), c_void_p],
            ),
        }
        for name, (restype, argtypes) in sig.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        self.libc.vsnprintf.restype = c_int
        self.libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]

    def _on_print(self, level: int, fmt: bytes, args: int) -> int:
        if level >= _LIBBPF_DEBUG:
            return 0
        # One message can be a whole verifier log; va_list can be formatted only once.
        buf = ctypes.create_string_buffer(1 << 18)
        self.libc.vsnprintf(buf, len(buf), fmt, args)
        with self._log_lock:
            self._log.append(buf.value.decode("utf-8", "replace"))
            del self._log[:-400]  # keep the tail: verifier logs are long
        return 0

    def take_log(self) -> str:
        with self._log_lock:
            text = "".join(self._log)
            self._log.clear()
        return text


_lib: _Lib | None = None
_lib_lock = threading.Lock()


def lib() -> _Lib:
    """The loaded library (loaded on first use)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _Lib()
        return _lib


def version() -> str:
    raw = lib().lib.libbpf_version_string()
    return raw.decode() if raw else "unknown"


def num_possible_cpus() -> int:
    n = int(lib().lib.libbpf_num_possible_cpus())
    if n <= 0:
        raise LibbpfError("libbpf_num_possible_cpus", n)
    return n


def take_log() -> str:
    """libbpf's messages since the last call (verifier output among them)."""
    return lib().take_log()


def read_iter(fd: int) -> bytes:
    """Read an iterator's fd (Link.open_iter) to its end, and close it; what it printed."""
    out = []
    try:
        while chunk := os.read(fd, 65536):
            out.append(chunk)
    finally:
        os.close(fd)
    return b"".join(out)


def _check_ptr(call: str, ptr: int | None) -> int:
    if not ptr:
        raise LibbpfError(call, ctypes.get_errno(), take_log())
    return ptr


def _check_int(call: str, rc: int) -> int:
    if rc < 0:
        raise LibbpfError(call, rc, take_log())
    return rc


class Map:
    """A map of an opened object: settable before load, usable after."""

    def __init__(self, ptr: int, name: str) -> None:
        self._ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return int(lib().lib.bpf_map__fd(self._ptr))

    @property
    def key_size(self) -> int:
        return int(lib().lib.bpf_map__key_size(self._ptr))

    @property
    def value_size(self) -> int:
        return int(lib().lib.bpf_map__value_size(self._ptr))

    @property
    def max_entries(self) -> int:
        return int(lib().lib.bpf_map__max_entries(self._ptr))

    def set_max_entries(self, n: int) -> None:
        _check_int(f"bpf_map__set_max_entries({self.name})", lib().lib.bpf_map__set_max_entries(self._ptr, n))

    def write_initial_value(self, data: bytes) -> None:
        """Set a global-data map (.rodata) before load; sizes must match exactly."""
        size = c_size_t(0)
        ptr = _check_ptr(
            f"bpf_map__initial_value({self.name})",
            lib().lib.bpf_map__initial_value(self._ptr, byref(size)),
        )
        if size.value != len(data):
            raise ValueError(f"{self.name}: initial value is {size.value} bytes, got {len(data)}")
        ctypes.memmove(ptr, data, len(data))

    def update(self, key: ctypes._CData, value: ctypes._CData, flags: int = 0) -> None:
        rc = lib().lib.bpf_map_update_elem(self.fd, byref(key), byref(value), flags)
        if rc < 0:
            raise LibbpfError(f"bpf_map_update_elem({self.name})", rc)

    def delete(self, key: ctypes._CData) -> bool:
        """False when the key was not there."""
        return int(lib().lib.bpf_map_delete_elem(self.fd, ctypes.byref(key))) == 0

    def lookup_into(self, key: ctypes._CData, value: ctypes._CData) -> bool:
        """Fill value from the map; False when the key is absent."""
        rc = lib().lib.bpf_map_lookup_elem(self.fd, byref(key), byref(value))
        if rc == -errno_mod.ENOENT:
            return False
        if rc < 0:
            raise LibbpfError(f"bpf_map_lookup_elem({self.name})", rc)
        return True

    def drain(self, value_len: int, chunk: int = 4096) -> tuple[bytes, bytes, int]:
        """Read and delete every entry (batched): (keys, values, count), each entry's key and value
        one after another; value_len is the full per-entry value length as the syscall returns it
        (times the CPU count for per-CPU maps). Only for a map no program writes to any more."""
        key_size = self.key_size
        keys = ctypes.create_string_buffer(key_size * chunk)
        values = ctypes.create_string_buffer(value_len * chunk)
        token_size = max(key_size, 8)
        in_batch = ctypes.create_string_buffer(token_size)
        out_batch = ctypes.create_string_buffer(token_size)
        all_k: list[bytes] = []
        all_v: list[bytes] = []
        total = 0
        first = True
        fn = lib().lib.bpf_map_lookup_and_delete_batch
        while True:
            count = c_uint32(chunk)
            rc = fn(self.fd, None if first else in_batch, out_batch, keys, values, byref(count), None)
            err = -rc if rc < 0 else 0
            if err and err != errno_mod.ENOENT:
                raise LibbpfError(f"bpf_map_lookup_and_delete_batch({self.name})", rc)
            n = count.value
            all_k.append(keys.raw[: n * key_size])
            all_v.append(values.raw[: n * value_len])
            total += n
            if err == errno_mod.ENOENT:
                return b"".join(all_k), b"".join(all_v), total
            ctypes.memmove(in_batch, out_batch, token_size)
            first = False


class RingBuffer:
    """A BPF ring buffer read without blocking: consume() returns the records waiting."""

    def __init__(self, map_: Map) -> None:
        self._records: list[bytes] = []
        self._cb = _SAMPLE_FN(self._on_sample)  # kept referenced: libbpf holds the pointer
        self._ptr: int | None = _check_ptr(
            f"ring_buffer__new({map_.name})", lib().lib.ring_buffer__new(map_.fd, self._cb, None, None)
        )

    def _on_sample(self, ctx: int | None, data: int, size: int) -> int:
        self._records.append(ctypes.string_at(data, size))
        return 0

    def consume(self) -> list[bytes]:
        if self._ptr:
            rc = lib().lib.ring_buffer__consume(self._ptr)
            if rc < 0:
                raise LibbpfError("ring_buffer__consume", rc)
        out, self._records = self._records, []
        return out

    def poll(self, timeout_ms: int) -> list[bytes]:
        """The records waiting, after waiting up to timeout_ms for one (epoll; the GIL is released
        while it waits). One thread only: libbpf's ring buffer is not for concurrent consumers."""
        if self._ptr:
            rc = lib().lib.ring_buffer__poll(self._ptr, timeout_ms)
            if rc < 0 and rc != -errno_mod.EINTR:
                raise LibbpfError("ring_buffer__poll", rc)
        out, self._records = self._records, []
        return out

    def close(self) -> None:
        if self._ptr:
            lib().lib.ring_buffer__free(self._ptr)
            self._ptr = None


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("type", ctypes.c_uint32)]


_BTF_KIND_PTR, _BTF_KIND_TYPEDEF, _BTF_KIND_FUNC_PROTO = 2, 8, 13


def tracepoint_args(name: str) -> int | None:
    """How many arguments the kernel's BTF gives tracepoint `name` (its btf_trace_NAME typedef,
    a pointer to a function whose first argument is the tracepoint's data): for a tracepoint
    whose arguments changed between kernels. None when the kernel has no such tracepoint."""
    btf = lib().lib.btf__load_vmlinux_btf()
    if not btf:
        return None
    try:
        tid: int = lib().lib.btf__find_by_name_kind(btf, f"btf_trace_{name}".encode(), _BTF_KIND_TYPEDEF)
        for want in (_BTF_KIND_TYPEDEF, _BTF_KIND_PTR, _BTF_KIND_FUNC_PROTO):
            if tid <= 0:
                return None
            t = _BtfType.from_address(lib().lib.btf__type_by_id(btf, tid))
            if (t.info >> 24) & 0x1F != want:
                return None
            if want == _BTF_KIND_FUNC_PROTO:
                return int(t.info & 0xFFFF) - 1  # less the data pointer every btf_trace_ typedef starts with
            tid = int(t.type)
        return None
    finally:
        lib().lib.btf__free(btf)


class Program:
    def __init__(self, ptr: int) -> None:
        self._ptr = ptr
        self.name = (lib().lib.bpf_program__name(ptr) or b"").decode()
        self.section = (lib().lib.bpf_program__section_name(ptr) or b"").decode()

    def set_autoload(self, on: bool) -> None:
        _check_int(f"bpf_program__set_autoload({self.name})", lib().lib.bpf_program__set_autoload(self._ptr, on))

    @property
    def autoload(self) -> bool:
        return bool(lib().lib.bpf_program__autoload(self._ptr))

    def attach(self) -> Link:
        return Link(_check_ptr(f"attach {self.section}", lib().lib.bpf_program__attach(self._ptr)), self.name)

    def attach_cgroup(self, cgroup_fd: int) -> Link:
        ptr = lib().lib.bpf_program__attach_cgroup(self._ptr, cgroup_fd)
        return Link(_check_ptr(f"attach {self.section}", ptr), self.name)

    def attach_iter(self) -> Link:
        """Attach an iterator (iter/tcp, iter/task...); Link.run_iter() runs it."""
        ptr = lib().lib.bpf_program__attach_iter(self._ptr, None)
        return Link(_check_ptr(f"attach {self.section}", ptr), self.name)

    def attach_perf_event(self, perf_fd: int) -> Link:
        """Attach to an open perf event; the link owns the fd from then on (closed with it)."""
        ptr = lib().lib.bpf_program__attach_perf_event(self._ptr, perf_fd)
        return Link(_check_ptr(f"attach {self.section} to perf event {perf_fd}", ptr), self.name)


class Link:
    def __init__(self, ptr: int, program: str = "") -> None:
        self._ptr: int | None = ptr
        self.program = program  # the attached program's name

    def open_iter(self) -> int:
        """A new run of an iterator link: an fd to read to the end (the walk happens as it is
        read). Namespaced iterators (iter/tcp) walk the namespace of the thread that opens it."""
        if not self._ptr:
            raise ValueError("BPF link is destroyed")
        return _check_int("bpf_iter_create", lib().lib.bpf_iter_create(lib().lib.bpf_link__fd(self._ptr)))

    def destroy(self) -> None:
        if self._ptr:
            lib().lib.bpf_link__destroy(self._ptr)
            self._ptr = None


class Object:
    """An opened (then loaded) BPF object file."""

    def __init__(self, path: str) -> None:
        take_log()
        self._ptr: int | None = _check_ptr(
            f"bpf_object__open_file({path})", lib().lib.bpf_object__open_file(path.encode(), None)
        )

    @property
    def ptr(self) -> int:
        if not self._ptr:
            raise ValueError("BPF object is closed")
        return self._ptr

    def programs(self) -> list[Program]:
        progs: list[Program] = []
        cur = lib().lib.bpf_object__next_program(self.ptr, None)
        while cur:
            progs.append(Program(cur))
            cur = lib().lib.bpf_object__next_program(self.ptr, cur)
        return progs

    def map(self, name: str) -> Map:
        ptr = lib().lib.bpf_object__find_map_by_name(self.ptr, name.encode())
        return Map(_check_ptr(f"find map {name}", ptr), name)

    def load(self) -> None:
        take_log()
        _check_int("bpf_object__load", lib().lib.bpf_object__load(self.ptr))

    def close(self) -> None:
        if self._ptr:
            lib().lib.bpf_object__close(self._ptr)
            self._ptr = None


__all__ = [
    "LibbpfError",
    "LibbpfMissing",
    "Link",
    "Map",
    "Object",
    "Program",
    "num_possible_cpus",
    "take_log",
    "version",
]
