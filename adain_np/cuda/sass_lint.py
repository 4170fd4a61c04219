"""Machine-code (SASS) checks of the tiled kernels: nvcc compiles the same text NVRTC gets,
cuobjdump prints the SASS, and each main loop (a backward branch whose body holds the
kernel's multiply-adds) is measured for

    ffma_share   FFMA instructions / all instructions of the loop body
    chains       compare -> conditional branch -> global load sequences (a load that waits
                 on a branch decided by a compare: what a data-dependent `?:` compiles to)
    lds128       128-bit shared-memory loads (LDS.128) in the loop

    python -m adain_np.cuda.sass_lint [--arch sm_90]    table of every tiled kernel's loops

Needs nvcc (CUDA toolkit) and cuobjdump (the nvidia-cuda-cuobjdump wheel or the toolkit).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass

from .source import kernel_source
from .versions import TILED_KERNELS

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)\s*([^;]*);")
_FUNCTION = re.compile(r"Function : (\w+)")
_SETP = re.compile(r"^[A-Z]*SETP")
CHAIN_WINDOW = 8  # instructions between compare and branch, and between branch and load


@dataclass
class Instr:
    addr: int
    pred: str     # "" or e.g. "P0", "!P0"
    op: str       # e.g. "FFMA", "LDS.128", "BRA"
    operands: str


@dataclass
class LoopReport:
    kernel: str
    start: int
    end: int
    instructions: int
    ffma: int
    chains: int
    lds128: int

    @property
    def ffma_share(self):
        return self.ffma / self.instructions if self.instructions else 0.0


def find_tool(name):
    """Path of a CUDA tool: on PATH, else from the nvidia-* wheels in this environment."""
    found = shutil.which(name)
    if found:
        return found
    purelib = sysconfig.get_paths()["purelib"]
    for path in sorted(glob.glob(os.path.join(purelib, "nvidia", "*", "bin", name))):
        if os.access(path, os.X_OK):
            return path
    return None


def compile_sass(cu_file, arch="sm_90"):
    """{kernel name: [Instr]} for every kernel of kernels/<cu_file>."""
    nvcc, cuobjdump = find_tool("nvcc"), find_tool("cuobjdump")
    if nvcc is None or cuobjdump is None:
        raise RuntimeError(f"needs nvcc and cuobjdump (found nvcc={nvcc}, cuobjdump={cuobjdump})")
    with tempfile.TemporaryDirectory(prefix="adain_np_sass_") as tmp:
        src, cubin = os.path.join(tmp, cu_file), os.path.join(tmp, "k.cubin")
        with open(src, "w", encoding="utf-8") as f:
            f.write(kernel_source(cu_file))
        subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-std=c++17", "-o", cubin, src],
                       check=True, capture_output=True, text=True)
        sass = subprocess.run([cuobjdump, "-sass", cubin], check=True, capture_output=True,
                              text=True).stdout
    return parse_sass(sass)


def parse_sass(text):
    kernels, current = {}, None
    for line in text.splitlines():
        m = _FUNCTION.search(line)
        if m:
            current = kernels.setdefault(m.group(1), [])
            continue
        m = _LINE.search(line)
        if m and current is not None:
            pred = (m.group(2) or "").strip().lstrip("@")
            current.append(Instr(int(m.group(1), 16), pred, m.group(3), m.group(4).strip()))
    return kernels


def _branch_target(instr):
    m = re.search(r"0x([0-9a-f]+)", instr.operands)
    return int(m.group(1), 16) if m else None


def loops(instrs):
    """(start index, end index) of each backward branch's body, innermost first."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    found = []
    for i, ins in enumerate(instrs):
        if ins.op.startswith("BRA"):
            target = _branch_target(ins)
            if target is not None and target <= ins.addr and target in index:
                found.append((index[target], i))
    return sorted(found, key=lambda se: se[1] - se[0])


def count_chains(body):
    """compare -> predicated branch -> global load, each step within CHAIN_WINDOW instructions."""
    chains = 0
    for i, ins in enumerate(body):
        if not (ins.op.startswith("BRA") and ins.pred):
            continue
        predicate = ins.pred.lstrip("!")
        set_by_compare = any(_SETP.match(prev.op) and re.match(rf"{predicate}\b", prev.operands)
                             for prev in body[max(0, i - CHAIN_WINDOW):i])
        loads_after = any(nxt.op.startswith("LDG") for nxt in body[i + 1:i + 1 + CHAIN_WINDOW])
        chains += set_by_compare and loads_after
    return chains


def main_loops(kernel, instrs):
    """LoopReports of the loops that hold at least half of the busiest loop's FFMAs."""
    reports = []
    for start, end in loops(instrs):
        body = [ins for ins in instrs[start:end + 1] if ins.op != "NOP"]
        reports.append(LoopReport(kernel, instrs[start].addr, instrs[end].addr, len(body),
                                  sum(ins.op.startswith("FFMA") for ins in body),
                                  count_chains(body),
                                  sum(ins.op == "LDS.128" for ins in body)))
    most = max((r.ffma for r in reports), default=0)
    main = [r for r in reports if most and r.ffma * 2 >= most]
    # A loop that contains another main loop is its outer loop: keep the innermost.
    return [r for r in main if not any(o is not r and r.start <= o.start and o.end <= r.end
                                       for o in main)]


def tiled_reports(arch="sm_90"):
    """{kernel: [LoopReport]} for every tiled kernel of versions.TILED_KERNELS."""
    out = {}
    for cu_file in sorted({f for f, _ in TILED_KERNELS.values()}):
        sass = compile_sass(cu_file, arch)
        for name, (file, _) in TILED_KERNELS.items():
            if file == cu_file:
                out[name] = main_loops(name, sass[name])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m adain_np.cuda.sass_lint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args(argv)
    print(f"{'kernel':28s} {'loop':>13s} {'instr':>5s} {'FFMA':>5s} {'share':>5s} "
          f"{'chains':>6s} {'LDS.128':>7s}")
    for name, reports in tiled_reports(args.arch).items():
        for r in reports:
            print(f"{name:28s} {r.start:#06x}-{r.end:#06x} {r.instructions:5d} {r.ffma:5d} "
                  f"{r.ffma_share:5.2f} {r.chains:6d} {r.lds128:7d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
