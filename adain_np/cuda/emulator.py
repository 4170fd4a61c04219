"""Run CUDA C kernels, unchanged, on the CPU: a stand-in for ``cupy.RawKernel``.

``RawKernel(code, name, options=())`` is called like CuPy's:
``kernel(grid, block, args, shared_mem=0)``, with NumPy arrays where the
kernel takes pointers and NumPy scalars (``np.int32(n)``, ``np.float32(eps)``)
where it takes values. The source is compiled with g++ (``-O2 -std=c++17``)
into a shared library, cached under ``$ADAIN_NP_EMU_CACHE`` (default
``~/.cache/adain_np/emulator``) by a hash of source, name, options and runtime.

Execution model
  * Each CUDA thread is a fiber with its own 64 KiB stack and a hand-written
    x86-64 context switch (emulator_rt/runtime.cpp). Blocks run one after
    another; inside a block the scheduler runs each thread until it waits at
    ``__syncthreads``, at a warp collective (``__shfl*_sync``, ``__syncwarp``,
    ``__ballot_sync``...) or exits, then switches to the next thread.
  * Warps are 32 consecutive linear thread ids. A collective completes when
    every lane of its mask reached the same call (same file and line) with the
    same mask. Threads that returned count as arrived at ``__syncthreads``.
  * A block where no thread can continue (a barrier some threads never reach,
    a shuffle whose mask names exited lanes or lanes at another call) raises
    EmulatorDeadlockError naming the block and where each thread waits.
  * ``__shared__`` arrays and the ``extern __shared__`` buffer are filled with
    0xFF bytes (NaN as float, -1 as int) before each block, and uninitialised
    locals with g++'s pattern, so a read before write or a missing barrier
    shows up in the results.
  * Arguments are checked against the parameter types the compiler sees:
    count, NumPy array (C-contiguous, element dtype, alignment) for pointers,
    byte size and kind for values. A Python int counts as int64 and a Python
    float as float64, as CuPy passes them, so ``n`` for an ``int`` parameter
    is a TypeError (use ``np.int32(n)``).
  * Dynamic shared memory above 48 KiB minus the static shared size needs
    ``kernel.max_dynamic_shared_size_bytes`` raised first, as on the GPU; a
    literal ``__launch_bounds__(N)`` caps the block size at N threads.
  * A device ``assert`` or ``__trap()`` raises EmulatorLaunchError.
  * ``sanitize=True`` (or ``ADAIN_NP_EMU_ASAN=1``) builds with
    AddressSanitizer and runs the launch in a subprocess
    (emulator_rt/asan_main.cpp) on exactly sized copies of the arrays; an
    out-of-bounds access raises EmulatorMemoryError with the report's start.

Not emulated
  * No concurrency: blocks never overlap and threads switch only at
    barriers, collectives and exit. The memory model and ``__threadfence``
    ordering are invisible; atomics are plain read-modify-writes. A thread
    that spins waiting for another one hangs. Races that the ORDER decides
    (a read and a write of one address in the same barrier interval, blocks
    reading each other's writes) are found by ``kernel.check_race(grid,
    block, args)`` (or ``ADAIN_NP_EMU_RACE=1`` for every launch): the launch
    runs with threads resumed in index order, reversed and in seeded random
    permutations, and blocks in index, reversed and random order, and any
    bitwise difference raises EmulatorRaceError naming the kernel and launch.
    A race no tried order exposes stays hidden.
  * Warp-synchronous code that relies on lockstep execution without
    ``__syncwarp`` or a shuffle behaves like fully independent threads.
  * Floating point is IEEE with no fused multiply-add (``-ffp-contract=off``),
    and fast intrinsics (``__expf``, ``__fdividef``, ``rsqrtf``) are the exact
    host functions; nvcc fuses and approximates, so expect ~1e-6 relative
    differences per operation (allow ~1e-4 on reductions and chains).
  * A shuffle reading a lane outside the mask returns poison (0xFF bytes);
    ``__activemask()`` returns the warp's lanes that have not exited.
  * Only ``-D``, ``-U`` and ``-I`` options are passed to g++; others (``-arch``,
    ``--use_fast_math``, ``-std``) are ignored. No ``__half``, textures,
    inline PTX, cooperative groups, ``__constant__`` upload or ``printf``
    ordering guarantees. A kernel can't be named like a C library function
    (``div``, ``abs``): the host headers are in scope.
  * In-process launches don't catch out-of-bounds accesses: a wild write can
    corrupt or crash Python, and so does a thread overflowing its 64 KiB
    stack (a guard page faults). Use ``sanitize=True`` to find such bugs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUNTIME_DIR = Path(__file__).with_name("emulator_rt")
_RUNTIME_FILES = ("cuda_emu.h", "runtime.cpp", "asan_main.cpp", "include/math_constants.h")
_FORMAT_VERSION = "1"  # bump when the Python-side build recipe changes
_SHARED_LIMIT = 232448  # 227 KiB per block on sm_90
_DEFAULT_DYNAMIC_LIMIT = 48 * 1024
_COMMON_FLAGS = ["-std=c++17", "-fno-strict-aliasing", "-ffp-contract=off",
                 "-ftrivial-auto-var-init=pattern", "-Wno-unknown-pragmas",
                 "-I", str(RUNTIME_DIR), "-I", str(RUNTIME_DIR / "include")]
_MODE_FLAGS = {
    "plain": ["-O2", "-fPIC", "-fvisibility=hidden"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address",
             "-fsanitize-sections=emu_shared"],
}
_ERROR_DEADLOCK = 2
# (name, mode, seed) of the schedules check_race compares; mode as emu_set_schedule:
# 0 thread/block index order, 1 both reversed, 2 seeded random permutations.
SCHEDULES = (("index order", 0, 0), ("reversed", 1, 0), ("random, seed 1", 2, 1),
             ("random, seed 2", 2, 2), ("random, seed 3", 2, 3))
# Every in-process launch goes through check_race when this is true (the race tests set
# it; ADAIN_NP_EMU_RACE=1 sets it for a whole run).
RACE_CHECK = os.environ.get("ADAIN_NP_EMU_RACE", "") not in ("", "0")
_LAUNCH_LOCK = threading.Lock()  # the runtime keeps per-library global state
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([A-Za-z_][\w\s:<>*]*?)\s*"
    r"(?:__align__\s*\(\s*\d+\s*\)\s*)?\b([A-Za-z_]\w*)\s*\[\s*\]\s*;")


class EmulatorError(RuntimeError):
    """Base class of the emulator's errors."""


class EmulatorCompileError(EmulatorError):
    """g++ rejected the kernel source."""


class EmulatorLaunchError(EmulatorError):
    """The launch failed: bad configuration, device assert or trap."""


class EmulatorDeadlockError(EmulatorLaunchError):
    """Threads of a block wait at barriers or collectives that can never complete."""


class EmulatorRaceError(EmulatorLaunchError):
    """Two schedules of the same launch gave results that differ bitwise (check_race)."""


class EmulatorMemoryError(EmulatorLaunchError):
    """AddressSanitizer reported an invalid memory access."""


@dataclass(frozen=True)
class _Param:
    name: str
    type_text: str
    is_pointer: bool
    size: int  # element size for pointers (0 for void), value size otherwise
    kind: str  # f(loat) i(nt) u(nsigned) b(ool) o(ther)
    is_const: bool = False  # pointee is const
    align: int = 1  # pointee alignment


def cache_dir() -> Path:
    return Path(os.environ.get("ADAIN_NP_EMU_CACHE") or Path.home() / ".cache/adain_np/emulator")


@functools.lru_cache(maxsize=None)
def _toolchain_key() -> str:
    """Compiler version and runtime sources: anything that changes a build."""
    digest = hashlib.sha256(_FORMAT_VERSION.encode())
    version = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True)
    digest.update(version.stdout.encode())
    digest.update(repr((_COMMON_FLAGS, _MODE_FLAGS)).encode())
    for name in _RUNTIME_FILES:
        digest.update((RUNTIME_DIR / name).read_bytes())
    return digest.hexdigest()[:20]


def _compile(cmd: list[str], output: Path, what: str) -> Path:
    """Runs g++ into a temporary name, then renames: safe across processes."""
    if output.exists():
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{output.name}.tmp{os.getpid()}-{threading.get_ident()}")
    proc = subprocess.run(["g++", *cmd, "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise EmulatorCompileError(f"g++ failed to compile {what}:\n{_first_errors(proc.stderr)}")
    os.replace(tmp, output)
    return output


def _first_errors(stderr: str, max_errors: int = 5) -> str:
    """The first error lines, each with the source excerpt g++ prints after it."""
    lines = stderr.splitlines()
    picked, errors = [], 0
    for i, line in enumerate(lines):
        if "error:" in line:
            picked += lines[i:i + 3]
            errors += 1
            if errors == max_errors:
                break
    return "\n".join(picked or lines[:20])


def _runtime_objects(mode: str) -> list[Path]:
    sources = ["runtime.cpp"] + (["asan_main.cpp"] if mode == "asan" else [])
    flags = _COMMON_FLAGS + _MODE_FLAGS[mode]
    return [_compile([*flags, "-c", str(RUNTIME_DIR / src)],
                     cache_dir() / f"{Path(src).stem}-{_toolchain_key()}-{mode}.o",
                     f"the emulator runtime {src}")
            for src in sources]


def _rewrite_extern_shared(code: str) -> str:
    """``extern __shared__ T name[];`` -> a pointer to the launch's dynamic buffer."""
    def pointer(m: re.Match) -> str:
        elem = " ".join(m.group(1).split())
        newlines = "\n" * m.group(0).count("\n")  # keep line numbers
        return f"{elem}* const {m.group(2)} = reinterpret_cast<{elem}*>(::emu::dyn_smem);{newlines}"
    return _EXTERN_SHARED.sub(pointer, code)


def _parse_declaration(code: str, name: str) -> tuple[list[tuple[str, str]], int | None]:
    """(type text, name) of each parameter and the __launch_bounds__ thread limit."""
    code = re.sub(r"//[^\n]*|/\*.*?\*/", " ", code, flags=re.S)
    m = re.search(r"__global__([^;{}]*?)\b" + re.escape(name) + r"\s*\(([^)]*)\)", code)
    if not m:
        return [], None
    bounds = re.search(r"__launch_bounds__\s*\(\s*(\d+)", m.group(1))
    params = []
    for text in filter(None, (p.strip() for p in m.group(2).split(","))):
        ident = re.search(r"([A-Za-z_]\w*)\s*(\[\s*\])?$", text)
        params.append((text[:ident.start()].strip() if ident else text,
                       ident.group(1) if ident else "?"))
    if params == [("", "void")]:
        params = []
    return params, int(bounds.group(1)) if bounds else None


def _parse_signature(signature: str, declared: list[tuple[str, str]]) -> list[_Param]:
    """Decodes the compiler's "P4fc:16;S4i;" description (see cuda_emu.h)."""
    items = [s for s in signature.strip().split(";") if s]
    if len(declared) != len(items):  # e.g. a macro-generated declaration
        declared = [("?", f"arg{i}") for i in range(len(items))]
    params = []
    for (type_text, pname), item in zip(declared, items):
        m = re.fullmatch(r"([PS])(\d+)([fiubo])(c?)(?::(\d+))?", item)
        params.append(_Param(pname, type_text, m.group(1) == "P", int(m.group(2)), m.group(3),
                             m.group(4) == "c", int(m.group(5) or 1)))
    return params


def _dim3(value, what: str) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in dims):
        raise ValueError(f"{what} must be a positive int or a tuple of 1 to 3 positive ints, got {value!r}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


def _numpy_name(kind: str, size: int) -> str:
    return "np.bool_" if kind == "b" else f"np.{np.dtype(f'{kind}{size}').name}"


class RawKernel:
    """CPU stand-in for ``cupy.RawKernel`` (see the module docstring)."""

    def __init__(self, code: str, name: str, options=(), *, filename: str | None = None,
                 sanitize: bool | None = None):
        self.code, self.name, self.options = code, name, tuple(options)
        self._given_filename = filename
        self.filename = filename or f"<source of {name}>"  # what compiler messages name
        if sanitize is None:
            sanitize = os.environ.get("ADAIN_NP_EMU_ASAN", "") not in ("", "0")
        self.sanitize = bool(sanitize)
        self._declared, self._max_threads = _parse_declaration(code, name)
        self._dynamic_limit: int | None = None
        self._built: dict[str, Path] = {}
        self._params: list[_Param] | None = None
        self._static_shared: int | None = None
        self._lib = None

    # ---- building -----------------------------------------------------------
    def _source(self) -> str:
        line_name = self.filename.replace("\\", "\\\\").replace('"', '\\"')
        return (f'#include "cuda_emu.h"\n#line 1 "{line_name}"\n{_rewrite_extern_shared(self.code)}\n'
                f'#line 1 "<emulator launcher>"\nEMU_DEFINE_LAUNCHER({self.name})\n')

    def _build(self, mode: str) -> Path:
        if mode in self._built:
            return self._built[mode]
        source = self._source()
        user_flags = [o for o in self.options if o[:2] in ("-D", "-U", "-I")]
        if self._given_filename and Path(self._given_filename).parent.is_dir():
            user_flags.append(f"-I{Path(self._given_filename).parent.resolve()}")  # its #includes
        key = hashlib.sha256("\0".join([_toolchain_key(), mode, self.name, source, *user_flags])
                             .encode()).hexdigest()[:32]
        out_dir = cache_dir()
        src_path = out_dir / f"{key}.cpp"
        out_dir.mkdir(parents=True, exist_ok=True)
        if not src_path.exists():
            tmp = src_path.with_name(f"{src_path.name}.tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(source)
            os.replace(tmp, src_path)
        objects = [str(p) for p in _runtime_objects(mode)]
        link = ["-shared"] if mode == "plain" else []
        self._built[mode] = _compile(
            [*_COMMON_FLAGS, *_MODE_FLAGS[mode], *user_flags, *link, str(src_path), *objects],
            out_dir / f"{key}.{'so' if mode == 'plain' else 'asan'}",
            f"kernel '{self.name}' ({self.filename})")
        return self._built[mode]

    def compile(self) -> None:
        """Builds now (otherwise the first call builds) and reads the parameter types."""
        if self._params is not None:
            return
        if self.sanitize:
            exe = self._build("asan")
            out = subprocess.run([str(exe), "--signature"], capture_output=True, text=True,
                                 env=_asan_env(), check=True).stdout
            signature, static_shared = out.split("\n")[0], None  # ASan pads the shared section
        else:
            lib = self._library()
            signature = lib.emu_signature().decode()
            static_shared = lib.emu_static_shared_bytes()
        self._params = _parse_signature(signature, self._declared)
        self._static_shared = static_shared

    def _library(self):
        if self._lib is None:
            lib = ctypes.CDLL(str(self._build("plain")))
            lib.emu_signature.restype = ctypes.c_char_p
            lib.emu_last_error.restype = ctypes.c_char_p
            lib.emu_static_shared_bytes.restype = ctypes.c_ulonglong
            lib.emu_launch.restype = ctypes.c_int
            lib.emu_set_schedule.restype = None
            lib.emu_set_schedule.argtypes = [ctypes.c_uint, ctypes.c_ulonglong]
            lib.emu_launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                       ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p)]
            self._lib = lib
        return self._lib

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """As on the GPU: 48 KiB minus the static shared size unless raised."""
        if self._dynamic_limit is not None:
            return self._dynamic_limit
        self.compile()
        return _DEFAULT_DYNAMIC_LIMIT - (self._static_shared or 0)

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        self._dynamic_limit = int(value)

    # ---- launching ----------------------------------------------------------
    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        self.compile()
        grid3, block3 = _dim3(grid, "grid"), _dim3(block, "block")
        self._check_config(grid3, block3, shared_mem)
        values = self._check_args(args)
        if self.sanitize:
            self._launch_asan(grid3, block3, int(shared_mem), values)
        elif RACE_CHECK:
            self._launch_under_schedules(grid3, block3, int(shared_mem), values, SCHEDULES)
        else:
            self._launch_here(grid3, block3, int(shared_mem), values)

    def check_race(self, grid, block, args, shared_mem: int = 0, schedules=SCHEDULES) -> None:
        """Run the launch once per schedule, each from the arrays as they are now, and compare
        every array argument bitwise. A difference raises EmulatorRaceError naming the kernel,
        the launch and the first differing element; otherwise the arrays hold the results.

        This finds what the thread order decides: a read and a write of the same address
        in one barrier interval (seen in one direction by the plain order only), a block
        reading what another block writes, two writes of different values. It does not see
        the memory model or warp-synchronous code (threads still switch only at barriers,
        collectives and exit), and a race that no tried order exposes stays hidden.
        """
        self.compile()
        grid3, block3 = _dim3(grid, "grid"), _dim3(block, "block")
        self._check_config(grid3, block3, shared_mem)
        values = self._check_args(args)
        self._launch_under_schedules(grid3, block3, int(shared_mem), values, schedules)

    def _launch_under_schedules(self, grid3, block3, shared_mem: int, values: list, schedules) -> None:
        arrays = [i for i, v in enumerate(values) if isinstance(v, np.ndarray)]
        initial = [values[i].copy() for i in arrays]
        first = None
        for name, mode, seed in schedules:
            for i, start in zip(arrays, initial):
                np.copyto(values[i], start)
            self._launch_here(grid3, block3, shared_mem, values, (mode, seed))
            outputs = [values[i].copy() for i in arrays]
            if first is None:
                first = (name, outputs)
                continue
            for i, a, b in zip(arrays, first[1], outputs):
                differs = a.view(np.uint8).reshape(-1, a.itemsize) != b.view(np.uint8).reshape(-1, b.itemsize)
                where = np.flatnonzero(differs.any(axis=1))
                if where.size:
                    p, k = self._params[i], int(where[0])
                    raise EmulatorRaceError(
                        f"kernel '{self.name}' grid {grid3} block {block3}: race: argument {i} "
                        f"({p.type_text} {p.name}) differs between the schedules '{first[0]}' and "
                        f"'{name}' at {where.size} of {a.size} elements, first at flat index {k} "
                        f"({a.reshape(-1)[k].item()!r} vs {b.reshape(-1)[k].item()!r})")
        for i, result in zip(arrays, first[1]):
            np.copyto(values[i], result)

    def _check_config(self, grid3, block3, shared_mem) -> None:
        threads = block3[0] * block3[1] * block3[2]
        limit = min(1024, self._max_threads or 1024)
        if threads > limit or block3[0] > 1024 or block3[1] > 1024 or block3[2] > 64:
            raise EmulatorLaunchError(
                f"kernel '{self.name}': block {block3} is too large ({threads} threads; "
                f"limit {limit}, x,y <= 1024, z <= 64)")
        if grid3[0] >= 2**31 or grid3[1] > 65535 or grid3[2] > 65535:
            raise EmulatorLaunchError(f"kernel '{self.name}': grid {grid3} exceeds the limits")
        if not isinstance(shared_mem, (int, np.integer)) or shared_mem < 0:
            raise ValueError(f"shared_mem must be a non-negative int, got {shared_mem!r}")
        if shared_mem > self.max_dynamic_shared_size_bytes or \
                shared_mem + (self._static_shared or 0) > _SHARED_LIMIT:
            raise EmulatorLaunchError(
                f"kernel '{self.name}': shared_mem={shared_mem} exceeds the limit of "
                f"{self.max_dynamic_shared_size_bytes} bytes; raise "
                f"kernel.max_dynamic_shared_size_bytes first, as on the GPU")

    def _check_args(self, args) -> list:
        """Validates args like a careful CuPy; returns arrays and scalar bytes."""
        params = self._params
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"kernel '{self.name}': args must be a tuple, got {type(args).__name__}")
        if len(args) != len(params):
            wanted = ", ".join(f"{p.type_text} {p.name}" for p in params)
            raise TypeError(f"kernel '{self.name}' takes {len(params)} arguments ({wanted}), "
                            f"got {len(args)}")
        values = []
        for i, (p, arg) in enumerate(zip(params, args)):
            where = f"kernel '{self.name}' argument {i} ({p.type_text} {p.name})"
            values.append(self._check_pointer(where, p, arg) if p.is_pointer
                          else self._check_scalar(where, p, arg))
        return values

    @staticmethod
    def _check_pointer(where: str, p: _Param, arg) -> np.ndarray:
        if not isinstance(arg, np.ndarray):
            raise TypeError(f"{where}: expected a NumPy array, got {type(arg).__name__}")
        if not arg.flags.c_contiguous:
            raise ValueError(f"{where}: the array must be C-contiguous")
        if not p.is_const and not arg.flags.writeable:
            raise ValueError(f"{where}: the array is read-only but the pointer is not const")
        kinds_match = arg.dtype.kind == p.kind or {arg.dtype.kind, p.kind} <= {"i", "u"}
        if p.kind in "fiub" and (not kinds_match or arg.dtype.itemsize != p.size):
            raise TypeError(f"{where}: array dtype {arg.dtype} does not match the element type "
                            f"(expected {_numpy_name(p.kind, p.size)})")
        if arg.ctypes.data % p.align:
            raise ValueError(f"{where}: the array data is not {p.align}-byte aligned")
        return arg

    @staticmethod
    def _check_scalar(where: str, p: _Param, arg) -> bytes:
        if p.kind == "o":
            raise TypeError(f"{where}: struct parameters are not supported by the emulator")
        # CuPy's conversion of Python scalars.
        python_types = {bool: np.bool_, int: np.int64, float: np.float64}
        value = python_types[type(arg)](arg) if type(arg) in python_types else arg
        if not isinstance(value, np.generic):
            raise TypeError(f"{where}: expected a NumPy scalar, got {type(arg).__name__}")
        kind = value.dtype.kind
        if value.dtype.itemsize != p.size or not (kind == p.kind or {kind, p.kind} <= {"i", "u"}):
            hint = (f" (CuPy passes a Python {type(arg).__name__} as {value.dtype})"
                    if type(arg) in python_types else "")
            raise TypeError(f"{where}: got {type(arg).__name__}{hint}; the parameter takes "
                            f"{p.size} bytes: pass {_numpy_name(p.kind, p.size)}(...)")
        return value.tobytes()

    def _raise_launch_error(self, code: int, message: str) -> None:
        cls = EmulatorDeadlockError if code == _ERROR_DEADLOCK else EmulatorLaunchError
        raise cls(message or f"kernel '{self.name}' failed with code {code}")

    def _launch_here(self, grid3, block3, shared_mem: int, values: list, schedule=(0, 0)) -> None:
        lib = self._library()
        storage = [ctypes.c_void_p(v.ctypes.data) if isinstance(v, np.ndarray)
                   else ctypes.create_string_buffer(v, 16) for v in values]
        arg_ptrs = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(s) for s in storage])
        with _LAUNCH_LOCK:
            lib.emu_set_schedule(*schedule)
            try:
                rc = lib.emu_launch((ctypes.c_uint * 3)(*grid3), (ctypes.c_uint * 3)(*block3),
                                    shared_mem, arg_ptrs)
                message = lib.emu_last_error().decode(errors="replace") if rc else ""
            finally:
                lib.emu_set_schedule(0, 0)
        if rc:
            self._raise_launch_error(rc, message)

    def _launch_asan(self, grid3, block3, shared_mem: int, values: list) -> None:
        exe = self._build("asan")
        buffers: list[np.ndarray] = []  # distinct arrays; an array passed twice shares one buffer
        writeback: list[bool] = []
        arg_lines, arg_buffers = [], []
        for p, v in zip(self._params, values):
            if not isinstance(v, np.ndarray):
                arg_lines.append(f"S {len(v)} {v.hex()}")
                arg_buffers.append(None)
                continue
            same = [j for j, b in enumerate(buffers)
                    if b.ctypes.data == v.ctypes.data and b.nbytes == v.nbytes]
            if not same and any(np.may_share_memory(b, v) for b in buffers):
                raise ValueError(f"kernel '{self.name}': partially overlapping arrays are not "
                                 "supported in sanitize mode")
            if not same:
                buffers.append(v)
                writeback.append(False)
            j = same[0] if same else len(buffers) - 1
            writeback[j] |= not p.is_const
            arg_lines.append(f"P {j}")
            arg_buffers.append(j)
        with tempfile.TemporaryDirectory(prefix="adain_np_emu_") as tmp:
            d = Path(tmp)
            for j, b in enumerate(buffers):
                (d / f"b{j}.bin").write_bytes(b.tobytes())
            lines = [f"grid {grid3[0]} {grid3[1]} {grid3[2]}", f"block {block3[0]} {block3[1]} {block3[2]}",
                     f"shared {shared_mem}", f"buffers {len(buffers)}",
                     *[f"{b.nbytes} {int(w)}" for b, w in zip(buffers, writeback)],
                     f"args {len(arg_lines)}", *arg_lines]
            (d / "request.txt").write_text("\n".join(lines) + "\n")
            proc = subprocess.run([str(exe), "--run", str(d)], capture_output=True, text=True,
                                  env=_asan_env())
            sys.stdout.write(proc.stdout)  # the kernel's printf output
            if (d / "error.txt").exists():
                code, _, message = (d / "error.txt").read_text().partition("\n")
                self._raise_launch_error(int(code), message)
            if "ERROR: AddressSanitizer" in proc.stderr:
                raise EmulatorMemoryError(self._asan_summary(proc.stderr, d, arg_buffers))
            if proc.returncode != 0:
                raise EmulatorLaunchError(f"kernel '{self.name}': sanitizer run failed "
                                          f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            for j, b in enumerate(buffers):
                if writeback[j]:
                    data = np.fromfile(d / f"b{j}.bin", dtype=np.uint8)
                    ctypes.memmove(b.ctypes.data, data.ctypes.data, b.nbytes)

    def _asan_summary(self, stderr: str, d: Path, arg_buffers: list) -> str:
        """The report's first lines, plus which argument's buffer was overrun."""
        lines = stderr.splitlines()
        start = next(i for i, line in enumerate(lines) if "ERROR: AddressSanitizer" in line)
        picked, in_access_stack = [lines[start]], True
        for line in lines[start + 1:start + 60]:
            if re.search(r"is located|^\s*$", line):
                in_access_stack = False  # later stacks: where the memory came from
            if re.match(r"\s*(READ|WRITE) of|.*is located|SUMMARY:", line) or (
                    in_access_stack and re.match(r"\s*#\d+ ", line)
                    and "emulator_rt" not in line and "<emulator launcher>" not in line):
                picked.append(line)
        owner = ""
        region = re.search(r"region \[(0x[0-9a-f]+),", stderr)
        if region and (d / "buffers.txt").exists():
            for entry in (d / "buffers.txt").read_text().splitlines():
                j, addr, _ = entry.split()
                if int(addr, 16) == int(region.group(1), 16):
                    names = [p.name for p, b in zip(self._params, arg_buffers) if b == int(j)]
                    owner = f" (the buffer of argument {', '.join(names)})"
        if "use-after-poison" in lines[start]:
            owner += " (past the shared_mem bytes of dynamic shared memory?)"
        return (f"kernel '{self.name}': AddressSanitizer found an invalid memory access{owner}:\n"
                + "\n".join(picked))


def _asan_env() -> dict:
    options = "detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1"
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = options + (":" + env["ASAN_OPTIONS"] if env.get("ASAN_OPTIONS") else "")
    return env
