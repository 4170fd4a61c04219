"""What every command line shares: one-line errors with exit code 2, the argument parser,
the common flags and defaults, and atomic writes.

A command's ``main`` raises ``UserError`` for anything the user can fix (a missing
file, a bad flag value). ``run_cli`` prints it as one line on stderr and exits 2;
no traceback reaches the user. Library modules raise their own errors; the commands
turn the ones a user can fix into ``UserError``.
"""
import argparse
import contextlib
import os
import sys
import tempfile

# Where `python -m adain_np.weights download` puts the published weights.
DEFAULT_VGG = os.path.join("models", "vgg_normalised.pth")
DEFAULT_DECODER = os.path.join("models", "decoder.pth")
DOWNLOAD_COMMAND = "python -m adain_np.weights download"

# --device: auto picks the CUDA kernels on a usable GPU, else NumPy (backend.select_backend).
DEVICE_CHOICES = ("auto", "cpu", "gpu", "emulator")


class UserError(Exception):
    """Bad input: shown to the user as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is our one-line UserError (exit 2, no usage dump)."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def add_device_flag(parser, help_text):
    """The --device flag every command that runs the network takes."""
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help=help_text)


# --conv: which 3x3 conv path the NumPy backend takes (winograd.conv_path); the same as ADAIN_CONV.
CONV_CHOICES = ("auto", "im2col", "winograd", "f2", "f4")


def add_conv_flag(parser):
    """The --conv flag of the commands that run the NumPy backend (stylize, train, bench)."""
    parser.add_argument("--conv", choices=CONV_CHOICES, default=None,
                        help="3x3 conv path on the CPU: auto (per-layer rule), im2col, winograd (= f4), "
                             "f2 or f4 (default: $ADAIN_CONV, else auto)")


def apply_conv_flag(args):
    """Make --conv (or a checked ADAIN_CONV) the NumPy backend's default, for this process and its children."""
    if getattr(args, "conv", None):
        os.environ["ADAIN_CONV"] = args.conv
    mode = os.environ.get("ADAIN_CONV") or "auto"
    if mode not in CONV_CHOICES:
        raise UserError(f"ADAIN_CONV={mode!r} is not one of {', '.join(CONV_CHOICES)}")
    threads = os.environ.get("ADAIN_CONV_THREADS") or "0"
    if not threads.isdigit() or int(threads) > 64:
        raise UserError(f"ADAIN_CONV_THREADS={threads!r}: give a whole number of threads, 0 to 64")


def run_cli(main, argv=None):
    """Call main(argv); turn UserError (and Ctrl-C) into a one-line message and an exit code."""
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else code


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash, a full disk or Ctrl-C leaves the previous file (if any) intact and no
    half-written file under the final name.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file 0600; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
