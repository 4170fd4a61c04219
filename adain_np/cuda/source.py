"""Kernel sources: where kernels/ is, #include inlining, the generated tile instantiations,
and the parsing of compiler logs (NVRTC and the emulator's g++) into 'file:line: message'.

kernels/ sits at the top of the repository. A wheel carries it as adain_np/cuda/kernels
(setup.py's build step copies the folder into the package); a source tree or an editable install
reads the top-level folder.
"""
import os
import re
from pathlib import Path

from .versions import TILED_KERNELS

CU_FILES = ("conv2d_forward.cu", "conv2d_backward.cu", "instance_stats.cu", "adain.cu",
            "pool_upsample.cu", "adam.cu")
_PACKAGED = Path(__file__).with_name("kernels")
_SOURCE_TREE = Path(__file__).resolve().parents[2] / "kernels"
KERNELS_DIR = str(_PACKAGED if _PACKAGED.is_dir() else _SOURCE_TREE)
GENERATED_NAME = "<tile instantiations from adain_np/cuda/versions.py>"

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


class KernelCompileError(RuntimeError):
    """A kernel source failed to compile; the message names the .cu file and line."""


class KernelSourceError(RuntimeError):
    """A kernel source file is missing or unreadable (a broken install); one-line message."""


def check_sources():
    """Raise KernelSourceError unless every kernels/*.cu file is present."""
    missing = [f for f in CU_FILES if not os.path.isfile(os.path.join(KERNELS_DIR, f))]
    if missing:
        raise KernelSourceError(f"kernel source {', '.join(missing)} not found in {KERNELS_DIR} "
                                "(reinstall adain_np)")


def kernel_source(cu_file, only=None):
    """The source of kernels/<cu_file> with its local #include "..." files inlined and the
    tiled versions instantiated from versions.py at the end.

    only=None instantiates every tiled kernel of the file; only="kernel_name" just that one
    (none if it is not a tiled kernel): the emulator builds one kernel at a time and counts
    the shared memory of what it builds. Inlining (instead of -I) keeps NVRTC and g++ on one
    self-contained text; #line markers make compiler messages name the original file and line.
    """
    path = os.path.join(KERNELS_DIR, cu_file)
    if not os.path.isfile(path):
        raise KernelSourceError(f"kernel source kernels/{cu_file} not found in {KERNELS_DIR} "
                                "(reinstall adain_np)")
    return _expand(path, seen=()) + tile_instantiations(cu_file, only)


def tile_instantiations(cu_file, only=None):
    """One `MACRO(name, BM, BN, BK, TM, TN, MIN_BLOCKS)` line per tiled kernel of cu_file."""
    lines = [f"{tile.macro}({name}, {tile.bm}, {tile.bn}, {tile.bk}, {tile.tm}, {tile.tn}, "
             f"{tile.min_blocks})"
             for name, (file, tile) in TILED_KERNELS.items()
             if file == cu_file and only in (None, name)]
    if not lines:
        return ""
    return f'#line 1 "{GENERATED_NAME}"\n' + "\n".join(lines) + "\n"


def _expand(path, seen):
    if path in seen:
        raise KernelCompileError(f"{path}: #include cycle")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise KernelSourceError(f"{_display_path(path)}: {err.strerror}") from None
    out = [f'#line 1 "{_display_path(path)}"']
    for number, line in enumerate(lines, start=1):
        match = _INCLUDE.match(line)
        if match:
            included = os.path.join(os.path.dirname(path), match.group(1))
            if not os.path.exists(included):
                raise KernelCompileError(
                    f"{_display_path(path)}:{number}: included file {match.group(1)!r} not found")
            out.append(_expand(included, seen + (path,)))
            out.append(f'#line {number + 1} "{_display_path(path)}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _display_path(path):
    # kernels/<file>: short, and the same wherever the package lives.
    return os.path.join("kernels", os.path.relpath(path, KERNELS_DIR))


_LOG_ERROR = re.compile(r'^(?P<file>[^\s(:]+\.cuh?)\((?P<line>\d+)\): (?:catastrophic )?error: (?P<msg>.*)$'
                        r'|^(?P<file2>[^\s:]+\.cuh?):(?P<line2>\d+):(?:\d+:)? error: (?P<msg2>.*)$',
                        re.MULTILINE)


def first_compile_error(log):
    """'kernels/x.cu:LINE: message' for the first error in an NVRTC or g++ log, else None."""
    match = _LOG_ERROR.search(log or "")
    if not match:
        return None
    if match.group("file"):
        return f"{match.group('file')}:{match.group('line')}: {match.group('msg').strip()}"
    return f"{match.group('file2')}:{match.group('line2')}: {match.group('msg2').strip()}"
