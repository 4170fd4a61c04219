"""The library's one error for unusable input files, and opening files without blocking.

Every reader (torch checkpoints, .npz weights, training checkpoints, logs) raises
BadFileError with a one-line message that names the file; the command lines turn it
into exit code 2.
"""
import os
import stat


class BadFileError(ValueError):
    """A file that cannot be used as asked: missing, damaged, hostile or of the wrong kind."""


def one_line(text, limit=200):
    """Whitespace collapsed and cut: safe to put an exception's text into an error line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def open_regular(path):
    """A binary file object for `path`, refusing anything but a regular file.

    Opened with O_NONBLOCK first, so a FIFO or a device can never block us; fstat on the
    open descriptor, so what we check is what we read.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BadFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadFileError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise BadFileError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise BadFileError(f"{path}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise BadFileError(f"{path}: not a regular file (a pipe, socket or device)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path):
    """Raise BadFileError unless `path` is a regular file (stat only, never opens it)."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadFileError(f"{path}: no such file") from None
    except OSError as err:
        raise BadFileError(f"{path}: cannot read ({err.strerror or err})") from None
    if stat.S_ISDIR(mode):
        raise BadFileError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise BadFileError(f"{path}: not a regular file (a pipe, socket or device)")
