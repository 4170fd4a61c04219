"""Compile every kernel in kernels/*.cu with NVRTC and print registers and spills per kernel.

    python -m adain_np.compile_check [--arch sm_75 sm_90] [--file conv2d_forward.cu ...]

(also python -m adain_np.cuda.compile_check.) No GPU is needed: NVRTC (through the
low-level cupy.cuda.nvrtc, see gpu.py) compiles to a
cubin, and ptxas's verbose report (--ptxas-options=-v) gives each kernel's registers, spill
stores/loads, stack frame and shared memory. Exit status 1 when a kernel fails to compile
or a kernel in MUST_NOT_SPILL spills; 2 (one line) when NVRTC is missing.
"""
import argparse
import re
import sys
from dataclasses import dataclass

from ..cli import UserError, run_cli
from .source import CU_FILES, KernelCompileError, KernelSourceError, kernel_source
from .versions import TILED_KERNELS

ARCHS = ("sm_75", "sm_90")
OPTIONS = ("-std=c++17", "--ptxas-options=-v")

# Kernels whose speed rests on keeping the register tile in registers: a spill is a bug.
# Every tiled version (from versions.py) and the two register-heavy reductions.
MUST_NOT_SPILL = frozenset(TILED_KERNELS) | {"instance_mean_std_v2", "conv2d_backward_bias_v2",
                                             "conv2d_backward_bias_v3"}


@dataclass
class KernelReport:
    cu_file: str
    arch: str
    kernel: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    smem_bytes: int


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log, cu_file):
    """KernelReports from ptxas -v output (entry functions only, not device functions)."""
    reports = []
    kernel = arch = None
    frame = (0, 0, 0)
    for line in log.replace("\x00", "").splitlines():
        m = _ENTRY.search(line)
        if m:
            kernel, arch = m.groups()
            frame = (0, 0, 0)
            continue
        if kernel is None:
            continue
        m = _FRAME.search(line)
        if m:
            frame = tuple(int(v) for v in m.groups())
            continue
        m = _USED.search(line)
        if m:
            smem = _SMEM.search(line)
            reports.append(KernelReport(cu_file, arch, kernel, int(m.group(1)), frame[1], frame[2],
                                        frame[0], int(smem.group(1)) if smem else 0))
            kernel = None
    return reports


def compile_file(cu_file, arch, source=None):
    """Compile one kernels/ file for one arch; KernelReports, or KernelCompileError."""
    from .gpu import nvrtc_compile
    source = kernel_source(cu_file) if source is None else source
    _, log = nvrtc_compile(source, f"kernels/{cu_file}", (f"-arch={arch}",) + OPTIONS)
    reports = parse_ptxas_log(log, cu_file)
    if not reports:
        raise KernelCompileError(f"kernels/{cu_file}: no kernels found in the ptxas report")
    return reports


def spilling(reports):
    """The reports of MUST_NOT_SPILL kernels that spill."""
    return [r for r in reports
            if r.kernel in MUST_NOT_SPILL and (r.spill_stores or r.spill_loads)]


def format_table(reports):
    lines = [f"{'file':20s} {'kernel':30s} {'arch':6s} {'regs':>4s} {'spill st/ld':>11s} "
             f"{'stack':>5s} {'smem':>6s}"]
    for r in reports:
        lines.append(f"{r.cu_file:20s} {r.kernel:30s} {r.arch:6s} {r.registers:4d} "
                     f"{r.spill_stores:5d}/{r.spill_loads:<5d} {r.stack_bytes:5d} {r.smem_bytes:6d}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m adain_np.compile_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=list(ARCHS), help="e.g. sm_75 sm_90")
    parser.add_argument("--file", nargs="+", default=list(CU_FILES), choices=CU_FILES,
                        metavar="CU_FILE", help="kernels/ files to compile (default: all)")
    args = parser.parse_args(argv)
    for arch in args.arch:
        if not re.fullmatch(r"sm_\d{2,3}a?", arch):
            raise UserError(f"--arch {arch!r}: expected a name like sm_90")
    try:
        from .gpu import load_nvrtc
        load_nvrtc()
    except RuntimeError as err:
        raise UserError(str(err)) from None
    try:
        from .source import check_sources
        check_sources()
    except KernelSourceError as err:
        raise UserError(str(err)) from None

    reports, failures = [], []
    for cu_file in args.file:
        for arch in args.arch:
            try:
                reports += compile_file(cu_file, arch)
            except KernelCompileError as err:
                failures.append(f"{arch}: {str(err).splitlines()[0]}")
    reports.sort(key=lambda r: (r.cu_file, r.kernel, r.arch))
    print(format_table(reports))
    for r in spilling(reports):
        failures.append(f"{r.arch}: {r.kernel} spills ({r.spill_stores} bytes stored, "
                        f"{r.spill_loads} loaded) but is marked must-not-spill")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
