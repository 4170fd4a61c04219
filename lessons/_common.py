"""What every lesson shares: its two flags, the output folder, figures, and the closing checks.

Not a lesson itself (the leading underscore says so). Each lesson does

    from _common import Lesson
    lesson = Lesson(__doc__)          # parses --quick and --out
    ...
    lesson.check("max |mine - torch|", error, tolerance)
    return lesson.finish()            # prints the summary line, 0 if every check passed

and ends with ``if __name__ == "__main__": sys.exit(run(main))``.
"""
import argparse
import os
import sys
import time

# Lessons run as `python lessons/NN_name.py`, so only lessons/ is on sys.path. With the
# package installed (`make demo` / `pip install -e .`) adain_np imports anyway; from a bare
# clone it is found one folder up.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import adain_np  # noqa: F401
except ImportError:
    sys.path.insert(0, REPO_ROOT)

import matplotlib

matplotlib.use("Agg")  # files only, no window: lessons also run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from adain_np.cli import UserError, atomic_path, run_cli  # noqa: E402

DEFAULT_OUT = os.path.join(REPO_ROOT, "lessons", "output")
# The torch transcription of pytorch-AdaIN used by the optional torch checks is test code
# (torch is not a library dependency): it lives in tests/torch_reference.py.
sys.path.append(os.path.join(REPO_ROOT, "tests"))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the project's one-line error (exit code 2)."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


class Lesson:
    """The flags, the output folder and the list of checks of one lesson run."""

    def __init__(self, doc, argv=None, extra_args=None):
        title = (doc or "").strip().splitlines()[0] if doc else ""
        parser = _Parser(description=title)
        parser.add_argument("--quick", action="store_true",
                            help="smaller sizes: finish in a few seconds (the tests use this)")
        parser.add_argument("--out", default=DEFAULT_OUT,
                            help="folder for the figures (default: lessons/output/)")
        parser.add_argument("--exercises", action="store_true",
                            help="grade your answers in lessons/exercises/ with this lesson's checks, "
                                 "instead of running the lesson")
        parser.add_argument("--solutions", action="store_true",
                            help="with --exercises: grade lessons/solutions/ instead")
        if extra_args is not None:
            extra_args(parser)
        self.args = parser.parse_args(argv)
        if self.args.exercises:
            raise SystemExit(_grade_exercises(self.args.solutions))
        self.quick = self.args.quick
        self.out = _make_output_dir(self.args.out)
        self.checks = []
        self.start = time.perf_counter()

    # ---------------------------------------------------------------- output

    def save_figure(self, fig, filename):
        """Save a matplotlib figure under the output folder, whole or not at all."""
        path = os.path.join(self.out, filename)
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=os.path.splitext(filename)[1][1:], dpi=100)
        except OSError as err:
            raise UserError(f"cannot write {path}: {err.strerror or err}") from None
        finally:
            plt.close(fig)
        print(f"wrote {path}")
        return path

    # ---------------------------------------------------------------- checks

    def check(self, what, value, tolerance):
        """Record and print one check: `value` (an error) must be below `tolerance`."""
        ok = bool(np.isfinite(value) and value < tolerance)
        self.checks.append(ok)
        print(f"check: {what} = {value:.1e} (tolerance {tolerance:.0e}) {'ok' if ok else 'FAILED'}")
        return ok

    def finish(self):
        """The closing line. Returns the exit code: 0 when every check passed, 1 otherwise."""
        passed = sum(self.checks)
        seconds = time.perf_counter() - self.start
        if self.checks and passed == len(self.checks):
            print(f"result: all {passed} checks passed ({seconds:.1f} s)")
            return 0
        print(f"result: {len(self.checks) - passed} of {len(self.checks)} checks FAILED ({seconds:.1f} s)")
        return 1


def _grade_exercises(solutions):
    """`--exercises`: the grader (lessons/check.py) on this lesson's exercise file; its exit code."""
    import check
    lesson_file = os.path.basename(getattr(sys.modules["__main__"], "__file__", "") or "")
    number = lesson_file[:2]
    if number not in check.EXERCISES:
        raise UserError(f"{lesson_file or 'this lesson'} has no exercises")
    failed = check.grade(number, check.exercise_folder(solutions))
    total = len(check.EXERCISES[number])
    print(f"exercises: {total - failed} of {total} pass")
    return 1 if failed else 0


def _make_output_dir(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--out {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {path}: {err.strerror or err}") from None
    return path


def import_torch():
    """torch if it is installed (the reference for the checks), else None with a note."""
    try:
        import torch
    except ImportError:
        print("torch is not installed: the torch comparison is skipped, "
              "the NumPy / finite-difference check stands in for it")
        return None
    return torch


def heading(text):
    """A section title in the printed output, so the run reads like the file."""
    print(f"\n== {text}")


def max_abs(a, b):
    """max |a - b| over all elements, in float64."""
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def rel_error(a, b):
    """max |a - b| / max |b|: an error on the scale of the values compared."""
    b = np.asarray(b, dtype=np.float64)
    return max_abs(a, b) / max(float(np.max(np.abs(b))), 1e-300)


def run(main):
    """Run main() with the project's command-line error handling (one line, exit code 2)."""
    return run_cli(lambda argv: main())
