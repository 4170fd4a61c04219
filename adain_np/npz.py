"""The one .npz reader and the one atomic .npz writer of the library.

An .npz is a zip of .npy records. np.load would read a whole record before anyone
could check it, and its errors are tracebacks or pickle hints; this reader goes entry by
entry: the zip entry (compression, flags, size) and the .npy header (dtype, shape) are
checked, and shown to the caller's `accept`, before a single data byte is read.
The zip-entry checks are shared with the torch zip reader (adain_np.pth).
"""
import ast
import lzma
import math
import struct
import zipfile
import zlib

import numpy as np

from adain_np.cli import atomic_path
from adain_np.files import BadFileError, one_line, open_regular

ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
MAX_HEADER_BYTES = 10_000   # an .npy header of ours is < 200 bytes; numpy's own limit
CHUNK = 1 << 20             # decompress and copy at most this many bytes at a time
MAX_ENTRIES = 10_000

# What zip, zlib and the .npy header parser raise on damaged input; all become one line.
READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, ValueError,
               TypeError, KeyError, IndexError, AttributeError, struct.error, OverflowError,
               NotImplementedError, RuntimeError, SyntaxError, MemoryError, RecursionError,
               UnicodeError)


def open_zip(file):
    """zipfile.ZipFile over an open file, refusing duplicate names and absurd entry counts."""
    archive = zipfile.ZipFile(file)
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BadFileError(f"zip archive with {len(infos)} entries")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise BadFileError("zip archive with two entries of the same name")
    return archive


def check_entry(info, max_bytes):
    """Refuse an entry that is encrypted, compressed other than stored/deflate, or too big."""
    name = one_line(info.filename, 80)
    if info.flag_bits & 0x1:
        raise BadFileError(f"zip entry '{name}' is encrypted")
    if info.compress_type not in ALLOWED_METHODS:
        raise BadFileError(f"zip entry '{name}' uses compression method {info.compress_type}"
                           " (only stored and deflate are read)")
    if info.file_size > max_bytes:
        raise BadFileError(f"zip entry '{name}' declares {info.file_size} bytes,"
                           f" more than the {max_bytes} it may hold")


def read_into(stream, array, what):
    """Fill the 1-D array from stream in bounded chunks; a short read is an error."""
    view = memoryview(array).cast("B")
    done = 0
    while done < len(view):
        chunk = stream.read(min(CHUNK, len(view) - done))
        if not chunk:
            raise BadFileError(f"{what} holds {done} bytes, expected {len(view)}"
                               " (truncated file?)")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    return array


def read_entry_bytes(archive, info, max_bytes):
    """The whole (small) entry as bytes, checked first and read with a bound."""
    check_entry(info, max_bytes)
    with archive.open(info) as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes or len(data) != info.file_size:
        raise BadFileError(f"zip entry '{one_line(info.filename, 80)}' is not the size it declares")
    return data


def _npy_header(stream):
    """(shape, fortran_order, dtype) from the start of an .npy stream, read with bounds."""
    magic = stream.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise BadFileError("not an .npy record")
    major = magic[6]
    if major == 1:
        (length,) = struct.unpack("<H", stream.read(2))
    elif major in (2, 3):
        (length,) = struct.unpack("<I", stream.read(4))
    else:
        raise BadFileError(f".npy format version {major} is not supported")
    if length > MAX_HEADER_BYTES:
        raise BadFileError(f".npy header of {length} bytes")
    raw = stream.read(length)
    if len(raw) < length:
        raise BadFileError("truncated .npy header")
    header = raw.decode("utf-8" if major == 3 else "latin1")
    # A dict literal of str keys and plain values; literal_eval never runs code.
    value = ast.literal_eval(header)
    if not (isinstance(value, dict) and set(value) == {"descr", "fortran_order", "shape"}):
        raise BadFileError("bad .npy header")
    shape, fortran, descr = value["shape"], value["fortran_order"], value["descr"]
    if not (isinstance(shape, tuple) and len(shape) <= 32
            and all(type(n) is int and 0 <= n < 2**48 for n in shape)):
        raise BadFileError("bad .npy shape")
    if not isinstance(fortran, bool) or not isinstance(descr, str) or len(descr) > 16:
        raise BadFileError("bad .npy header")
    dtype = np.dtype(descr)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biufcU":
        raise BadFileError(f".npy record of dtype {one_line(descr, 20)} (only plain numbers"
                           " and text are read; never pickled objects)")
    return shape, fortran, dtype


def _read_record(archive, info, accept, budget):
    name = info.filename[:-len(".npy")]
    check_entry(info, budget)
    with archive.open(info) as stream:
        shape, fortran, dtype = _npy_header(stream)
        try:
            accept(name, shape, dtype)  # raises ValueError before any data is read
        except BadFileError:
            raise
        except ValueError as err:
            raise BadFileError(one_line(err)) from None
        nbytes = math.prod(shape) * dtype.itemsize
        header_bytes = stream.tell()
        if nbytes > budget or header_bytes + nbytes != info.file_size:
            raise BadFileError(f"record '{one_line(name, 80)}' is {info.file_size} bytes,"
                               f" its header says {header_bytes + nbytes}")
        flat = np.empty(math.prod(shape), dtype=dtype)
        read_into(stream, flat, f"record '{one_line(name, 80)}'")
        if stream.read(1):
            raise BadFileError(f"record '{one_line(name, 80)}' is longer than it declares")
    if not dtype.isnative:
        flat = flat.astype(dtype.newbyteorder("="))
    return flat.reshape(shape, order="F" if fortran else "C"), nbytes


def read_npz(path, accept=lambda name, shape, dtype: None, max_bytes=1 << 30):
    """{name: array} from an .npz, checking everything before reading the data.

    accept(name, shape, dtype) sees each record's header first and raises ValueError to
    refuse it. At most `max_bytes` of array data are read in all. Raises BadFileError
    (one line, naming the file) for anything unusable.
    """
    try:
        with open_regular(path) as file:
            if not zipfile.is_zipfile(file):
                raise BadFileError("not an .npz file (not a zip archive; a single .npy?)")
            file.seek(0)
            arrays, budget = {}, max_bytes
            with open_zip(file) as archive:
                for info in archive.infolist():
                    if not info.filename.endswith(".npy"):
                        raise BadFileError(f"unexpected entry '{one_line(info.filename, 80)}'")
                    array, nbytes = _read_record(archive, info, accept, budget)
                    arrays[info.filename[:-len(".npy")]] = array
                    budget -= nbytes
            return arrays
    except BadFileError as err:
        if str(err).startswith(f"{path}: "):
            raise
        raise BadFileError(f"{path}: {err}") from None
    except OSError as err:
        raise BadFileError(f"{path}: cannot read ({one_line(err.strerror or err)})") from None
    except READ_ERRORS as err:
        raise BadFileError(f"{path}: not a valid .npz file"
                           f" ({type(err).__name__}: {one_line(err)})") from None


def _write_arrays(file, arrays):
    np.savez(file, **arrays)


def write_npz(arrays, path, write=None):
    """{name: array} -> .npz at `path`, atomically (the old file survives any failure).

    `write(file, arrays)` does the writing (np.savez by default; tests swap it).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as file:
            (write or _write_arrays)(file, arrays)
