"""What every command line shares: one-line errors with exit code 2, and atomic writes.

A command's ``main`` raises ``UserError`` for anything the user can fix (a missing
file, a bad flag value). ``run_cli`` prints it as one line on stderr and exits 2;
no traceback reaches the user.
"""
import contextlib
import os
import sys
import tempfile


class UserError(Exception):
    """Bad input: shown to the user as one line, exit code 2."""


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
