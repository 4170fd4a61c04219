"""Read and write torch checkpoint files (.pth) with only the standard library and NumPy.

Two on-disk formats exist, and the published pytorch-AdaIN weights predate the newer one:

* zip (torch >= 1.6): ``<name>/data.pkl`` is a pickle whose tensors refer to storages by
  persistent id ``('storage', storage_type, key, location, numel)``; the raw bytes of
  each storage are the record ``<name>/data/<key>``; ``<name>/byteorder`` says the endianness.
* legacy pickle stream: pickles of the magic number, the protocol version and a sys-info
  dict, then the object (persistent ids ``('storage', storage_type, root_key, location,
  numel, view_metadata)``), then the list of storage keys, then each storage as an 8-byte
  element count followed by its bytes.

Tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.
A pickle is a program, and this file is read as an attacker wrote it:

* the pickle runs on a restricted interpreter: an allow-list of opcodes and of globals,
  which resolve to local functions returning plain immutable records (torch is never
  imported); BUILD (``__setstate__``) is refused on everything but a state dict, whose
  state is ignored; dict keys must be strings, checked before they are hashed;
* nothing from the file is formatted into a message, only type names and our own numbers;
* offsets, sizes, strides and storage extents are checked, with exact integer
  arithmetic, where they are used, and the tensor list is shown to the caller's
  ``accept`` (the architecture check) before any storage byte is read;
* every read is bounded: zip entries must be stored or deflate, unencrypted and of the
  size their storage declares, and at most ``max_bytes`` of tensor data are read.
"""
import io
import math
import os
import pickle
import re
import struct
import tarfile
import zipfile

import numpy as np

from adain_np.cli import atomic_path
from adain_np.files import BadFileError, one_line, open_regular
from adain_np.npz import READ_ERRORS, check_entry, open_zip, read_entry_bytes, read_into

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

MAX_PICKLE_BYTES = 16 << 20    # data.pkl of a state dict is a few KB; this bounds the pickle
MAX_NDIM = 16
MAX_INDEX = 1 << 48            # larger offsets, sizes, strides or numels are refused
DEFAULT_MAX_BYTES = 1 << 30    # tensor data load_state_dict reads without a tighter limit

# torch storage class name -> numpy dtype of one element. numpy has no bfloat16: its
# storages are read as raw uint16 and widened to float32 (exact) by _widen_bfloat16.
STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "UntypedStorage": "uint8",
}
# numpy dtype -> the storage class torch.load expects for it (the reverse of the above).
_SAVE_STORAGE_TYPES = {"float32": "FloatStorage", "float16": "HalfStorage",
                       "float64": "DoubleStorage", "int64": "LongStorage",
                       "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
                       "uint8": "ByteStorage", "bool": "BoolStorage"}
_TORCH_DTYPE_NAMES = ("float32", "float", "float16", "half", "float64", "double", "bfloat16",
                      "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool")


# ---------------------------------------------------------------- what a pickle can get
# Every object below has __slots__ and no __setstate__: the restricted BUILD refuses them,
# so nothing can change a record after the function that made it checked it.

class _Record:
    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError("read-only record")

    def _init(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)


class _Callable(_Record):
    """A global the pickle may call (REDUCE): one of our functions, never torch's."""
    __slots__ = ("function",)

    def __init__(self, function):
        self._init(function=function)


class _StorageType(_Record):
    """Stands for torch.FloatStorage & co; its name gives the element dtype."""
    __slots__ = ("name",)

    def __init__(self, name):
        self._init(name=name)


class _TorchDType(_Record):
    """Stands for a torch dtype object (torch.float32, ...) that a pickle may mention."""
    __slots__ = ("name",)

    def __init__(self, name):
        self._init(name=name)


class _StorageRef(_Record):
    """A storage named by a persistent id; its bytes are read after unpickling."""
    __slots__ = ("key", "dtype", "numel", "view")

    def __init__(self, key, dtype, numel, view):
        # view: (offset, numel) into the root storage (torch < 1.0 legacy files), else None
        self._init(key=key, dtype=dtype, numel=numel, view=view)


class _TensorRef(_Record):
    """What _rebuild_tensor_v2 returned: a checked strided view of a storage."""
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self._init(storage=storage, offset=offset, size=size, stride=stride)

    @property
    def shape(self):  # lets params.check_params look at the shape before any data is read
        return self.size


class _StateDict(dict):
    """collections.OrderedDict as the pickle sees it: a plain dict (keys keep their order)."""
    __slots__ = ()


def _index(value, what):
    if type(value) is not int or not 0 <= value < MAX_INDEX:
        raise BadFileError(f"bad tensor {what} (a {type(value).__name__}"
                           f"{'' if type(value) is not int else ' out of range'})")
    return value


def _index_tuple(value, what):
    # torch.Size pickles as a plain tuple; anything else means a damaged or foreign pickle.
    if type(value) is not tuple or len(value) > MAX_NDIM:
        raise BadFileError(f"bad tensor {what} (a {type(value).__name__})")
    return tuple(_index(v, what) for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride):
    if type(storage) is not _StorageRef:
        raise BadFileError(f"a tensor refers to a {type(storage).__name__}, not a storage")
    offset = _index(storage_offset, "storage offset")
    size, stride = _index_tuple(size, "size"), _index_tuple(stride, "stride")
    if len(size) != len(stride):
        raise BadFileError(f"tensor size and stride differ in length ({len(size)}, {len(stride)})")
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    # requires_grad, hooks and metadata only matter to autograd.
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # An nn.Parameter pickled directly: its data is all a state dict needs.
    if type(data) is not _TensorRef:
        raise BadFileError(f"a parameter holds a {type(data).__name__}, not a tensor")
    return data


def _state_dict():
    return _StateDict()


# (module, name) -> what the pickle gets for that global.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _Callable(_state_dict),
    ("torch._utils", "_rebuild_tensor"): _Callable(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Callable(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Callable(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Callable(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    **{("torch", name): _TorchDType(name) for name in _TORCH_DTYPE_NAMES},
}


# ---------------------------------------------------------------- the restricted interpreter

def _opcodes(names):
    return {getattr(pickle, name)[0] for name in names}


# Opcodes that only build numbers, strings, tuples, lists, dicts, memo entries and
# globals. Absent on purpose: INST, OBJ, NEWOBJ(_EX) (call a class), EXT1/2/4 (copyreg
# registry), sets and frozensets (hash their items), out-of-band buffers.
_PLAIN_OPCODES = _opcodes((
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "EMPTY_TUPLE", "TUPLE",
    "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_DICT",
    "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "GLOBAL", "STACK_GLOBAL", "PERSID", "BINPERSID"))


class _Dispatch(dict):
    def __missing__(self, opcode):
        raise BadFileError(f"pickle opcode 0x{opcode:02x} is not allowed in a checkpoint")


def _set_items(target, items):
    if type(target) not in (dict, _StateDict):
        raise BadFileError(f"pickle sets items on a {type(target).__name__}")
    for i in range(0, len(items) - 1, 2):
        if type(items[i]) is not str:  # checked before hashing: a tuple DAG hashes forever
            raise BadFileError(f"a dict key is a {type(items[i]).__name__}, not a string")
        target[items[i]] = items[i + 1]


def _load_setitem(self):
    value, key = self.stack.pop(), self.stack.pop()
    _set_items(self.stack[-1], [key, value])


def _load_setitems(self):
    items = self.pop_mark()
    _set_items(self.stack[-1], items)


def _load_dict(self):
    items = self.pop_mark()
    target = {}
    _set_items(target, items)
    self.append(target)


def _load_reduce(self):
    args = self.stack.pop()
    func = self.stack[-1]
    if type(func) is not _Callable or type(args) is not tuple:
        raise BadFileError(f"pickle calls a {type(func).__name__}, which is not allowed")
    self.stack[-1] = func.function(*args)


def _load_build(self):
    state = self.stack.pop()
    target = self.stack[-1]
    # torch pickles a state dict's _metadata attribute as BUILD on the OrderedDict; it
    # only matters to load_state_dict hooks, so it is dropped. Anything else is refused.
    if type(target) is not _StateDict:
        raise BadFileError(f"pickle sets the state of a {type(target).__name__},"
                           " which is not allowed")
    if state is not None and type(state) is not dict:
        raise BadFileError(f"a state dict's state is a {type(state).__name__}")


_DISPATCH = _Dispatch({op: pickle._Unpickler.dispatch[op] for op in _PLAIN_OPCODES})
_DISPATCH.update({pickle.SETITEM[0]: _load_setitem, pickle.SETITEMS[0]: _load_setitems,
                  pickle.DICT[0]: _load_dict, pickle.REDUCE[0]: _load_reduce,
                  pickle.BUILD[0]: _load_build})


class _RestrictedUnpickler(pickle._Unpickler):  # the Python one: its opcodes can be replaced
    """Resolves only _ALLOWED_GLOBALS and runs only _DISPATCH's opcodes."""
    dispatch = _DISPATCH

    def __init__(self, file, storages):
        super().__init__(file, encoding="utf-8")  # Python 2 str -> str, as torch.load does
        self.storages = storages  # key -> (dtype, numel) of each storage seen so far

    def find_class(self, module, name):
        if type(module) is not str or type(name) is not str:
            raise BadFileError("a global named by a non-string")
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise BadFileError(f"refused to load global '{one_line(module, 60)}."
                               f"{one_line(name, 60)}': a checkpoint should hold only tensors"
                               " (the file may be malicious)")
        return found

    def persistent_load(self, pid):
        return _storage_ref(pid, self.storages)


def _ascii(value):
    # Python 2 pickles may carry bytes where Python 3 expects str.
    if type(value) is bytes and len(value) <= 256:
        return value.decode("ascii")
    return value


def _storage_ref(pid, storages):
    """Turn ('storage', type, key, location, numel[, view_metadata]) into a _StorageRef."""
    if type(pid) is not tuple or len(pid) not in (5, 6) or _ascii(pid[0]) != "storage":
        raise BadFileError(f"unknown persistent id (a {type(pid).__name__})")
    storage_type, key = pid[1], _ascii(pid[2])
    if type(storage_type) is not _StorageType:
        raise BadFileError(f"storage type is a {type(storage_type).__name__}")
    if type(key) is not str or len(key) > 256:
        raise BadFileError(f"storage key is a {type(key).__name__}")
    dtype, numel = STORAGE_DTYPES[storage_type.name], _index(pid[4], "storage size")
    view = pid[5] if len(pid) == 6 else None
    if view is not None:  # torch < 1.0 wrote views of a root storage: (view_key, offset, numel)
        if type(view) is not tuple or len(view) != 3:
            raise BadFileError(f"bad storage view (a {type(view).__name__})")
        view = (_index(view[1], "storage view offset"), _index(view[2], "storage view size"))
        if view[0] + view[1] > numel:
            raise BadFileError("a storage view runs past its storage")
    known = storages.setdefault(key, (dtype, numel))
    if known != (dtype, numel):
        raise BadFileError(f"storage '{key}' is declared twice, differently")
    return _StorageRef(key, dtype, numel, view)


# ---------------------------------------------------------------- checks before any data

class TensorSpec:
    """What a file says about one tensor before its data is read."""
    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype  # tuple of ints; numpy dtype name or 'bfloat16'


def _itemsize(dtype):
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _extent(ref):
    """Elements of the (view of the) storage the tensor touches: offset + last index + 1."""
    if 0 in ref.size:
        return 0
    return ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1


def _tensor_refs(obj):
    """{name: _TensorRef} of a state dict, refusing anything else; type names only."""
    if type(obj) not in (dict, _StateDict):
        raise BadFileError(f"holds a {type(obj).__name__}, not a state dict")
    for name, value in obj.items():
        if type(value) is not _TensorRef:
            raise BadFileError(f"entry '{one_line(name, 80)}' is a {type(value).__name__},"
                               " not a tensor (not a plain state dict)")
    return obj


def _needed_elements(refs, accept, max_bytes):
    """Check every tensor against its storage, the caller and the byte budget; return
    {storage key: root elements to read}."""
    try:
        accept({name: TensorSpec(ref.size, ref.storage.dtype) for name, ref in refs.items()})
    except BadFileError:
        raise
    except ValueError as err:  # the caller's refusal: its message is ours to show
        raise BadFileError(one_line(err)) from None
    needed, tensor_bytes = {}, 0
    for name, ref in refs.items():
        storage = ref.storage
        view_offset, view_numel = storage.view or (0, storage.numel)
        extent = _extent(ref)
        if extent > view_numel:
            raise BadFileError(f"tensor '{one_line(name, 80)}' needs {extent} elements of"
                               f" storage '{storage.key}', which holds only {view_numel}")
        end = view_offset + extent if extent else 0
        needed[storage.key] = max(needed.get(storage.key, 0), end)
        tensor_bytes += math.prod(ref.size) * _itemsize(storage.dtype)
    storage_bytes = sum(needed[key] * _itemsize(refs_dtype)
                        for key, refs_dtype in _storage_dtypes(refs).items())
    if max(tensor_bytes, storage_bytes) > max_bytes:
        raise BadFileError(f"holds {max(tensor_bytes, storage_bytes)} bytes of tensors,"
                           f" more than the {max_bytes} allowed")
    return needed


def _storage_dtypes(refs):
    return {ref.storage.key: ref.storage.dtype for ref in refs.values()}


# ---------------------------------------------------------------- turning refs into arrays

def _disk_dtype(dtype, byteorder):
    """numpy dtype of the raw elements on disk ('<' or '>' byte order)."""
    return np.dtype("uint16" if dtype == "bfloat16" else dtype).newbyteorder(byteorder)


def _widen_bfloat16(raw):
    # bfloat16 is the top half of a float32: shifting its bits left by 16 is exact.
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _read_root(stream, count, dtype, byteorder, what):
    """The first `count` elements of a storage from `stream`, in native byte order."""
    disk = _disk_dtype(dtype, byteorder)
    root = read_into(stream, np.empty(count, dtype=disk), what)
    return root if disk.isnative else root.astype(disk.newbyteorder("="))


def _tensor_array(ref, root):
    """Copy the strided view `ref` out of its root storage `root` (1-D, native dtype)."""
    view_offset = ref.storage.view[0] if ref.storage.view else 0
    extent = _extent(ref)
    # Checked again here, where it matters: the view must lie inside what was read.
    if extent and view_offset + extent > root.size:
        raise BadFileError(f"a tensor runs past storage '{ref.storage.key}'")
    if extent == 0:
        array = np.empty(ref.size, dtype=root.dtype)
    else:
        start = view_offset + ref.offset
        strides = tuple(s * root.itemsize for s in ref.stride)
        view = np.lib.stride_tricks.as_strided(root[start:], shape=ref.size, strides=strides,
                                               writeable=False)
        array = np.array(view, order="C")  # own, writable, contiguous memory
    return _widen_bfloat16(array) if ref.storage.dtype == "bfloat16" else array


def _arrays(refs, roots):
    return {name: _tensor_array(ref, roots[ref.storage.key]) for name, ref in refs.items()}


# ---------------------------------------------------------------- the two file formats

def _load_zip(file, accept, max_bytes):
    with open_zip(file) as archive:
        names = archive.namelist()
        pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pickles) != 1:
            raise BadFileError("zip archive without exactly one '<name>/data.pkl' record"
                               " (not a torch checkpoint)")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "<"
        if f"{prefix}byteorder" in names:
            raw = read_entry_bytes(archive, archive.getinfo(f"{prefix}byteorder"), 16)
            byteorder = {b"little": "<", b"big": ">"}.get(raw)
            if byteorder is None:
                raise BadFileError("unknown byteorder record")
        data = read_entry_bytes(archive, archive.getinfo(pickles[0]), MAX_PICKLE_BYTES)
        storages = {}
        refs = _tensor_refs(_RestrictedUnpickler(io.BytesIO(data), storages).load())
        needed = _needed_elements(refs, accept, max_bytes)
        roots = {}
        for key, count in needed.items():
            dtype, numel = storages[key]
            record = f"{prefix}data/{key}"
            if record not in names:
                raise BadFileError(f"storage record '{record}' is missing")
            info = archive.getinfo(record)
            declared = numel * _itemsize(dtype)
            check_entry(info, declared)
            if info.file_size != declared:
                raise BadFileError(f"storage '{key}' holds {info.file_size} bytes,"
                                   f" expected {declared} (truncated file?)")
            with archive.open(info) as stream:
                roots[key] = _read_root(stream, count, dtype, byteorder, f"storage '{key}'")
        return _arrays(refs, roots)


class _BoundedFile:
    """A file whose reads never ask for more than is left of it (no huge buffers)."""

    def __init__(self, file):
        self.file = file
        self.size = file.seek(0, 2)
        file.seek(0)

    def _left(self):
        return self.size - self.file.tell()

    def read(self, n=-1):
        left = self._left()
        return self.file.read(left if n is None or n < 0 else min(n, left))

    def readline(self, n=-1):
        left = self._left()
        return self.file.readline(left if n is None or n < 0 else min(n, left))

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _load_legacy(file, accept, max_bytes):
    """Read the legacy stream from an open binary file positioned at its start."""
    file = _BoundedFile(file)
    magic = _RestrictedUnpickler(file, {}).load()
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise BadFileError("not a torch checkpoint (bad magic number)")
    version = _RestrictedUnpickler(file, {}).load()
    if type(version) is not int or version != LEGACY_PROTOCOL:
        raise BadFileError("unsupported legacy protocol version"
                           f" ({version if type(version) is int and abs(version) < 1e9 else type(version).__name__})")
    sys_info = _RestrictedUnpickler(file, {}).load()
    little = sys_info.get("little_endian", True) if type(sys_info) is dict else True
    byteorder = "<" if little is not False else ">"
    storages = {}
    refs = _tensor_refs(_RestrictedUnpickler(file, storages).load())
    keys = _RestrictedUnpickler(file, {}).load()
    if type(keys) is not list or len(keys) > len(storages):
        raise BadFileError("bad storage key list")
    keys = [_ascii(key) for key in keys]
    if not all(type(key) is str and key in storages for key in keys) \
            or len(set(keys)) != len(keys):
        raise BadFileError("the storage key list does not match the storages used")
    needed = _needed_elements(refs, accept, max_bytes)
    if not set(needed) <= set(keys):
        raise BadFileError("a storage used by a tensor is missing")
    roots = {}
    for key in keys:  # the raw storages follow in the order of `keys`
        dtype, numel = storages[key]
        header = file.read(8)
        if len(header) < 8:
            raise BadFileError(f"storage '{key}' is missing (truncated file?)")
        if int.from_bytes(header, "little" if byteorder == "<" else "big") != numel:
            raise BadFileError(f"storage '{key}' has another size than declared")
        nbytes = numel * _itemsize(dtype)
        if nbytes > file._left():
            raise BadFileError(f"storage '{key}' holds {file._left()} bytes, expected"
                               f" {nbytes} (truncated file?)")
        start = file.file.tell()
        count = needed.get(key, 0)
        roots[key] = _read_root(file, count, dtype, byteorder, f"storage '{key}'")
        file.file.seek(start + nbytes)  # skip what no tensor uses
    return _arrays(refs, roots)


def _read_any(file, accept, max_bytes):
    """Pick the format from the first bytes, then load it."""
    head = file.read(4)
    file.seek(0)
    if zipfile.is_zipfile(file):
        file.seek(0)
        return _load_zip(file, accept, max_bytes)
    if head.startswith(b"PK\x03\x04"):
        raise BadFileError("damaged zip checkpoint (truncated file?)")
    if head[:1] == b"\x80":  # a pickle's PROTO opcode: maybe the legacy stream
        file.seek(0)
        return _load_legacy(file, accept, max_bytes)
    file.seek(0)
    if tarfile.is_tarfile(file):
        raise BadFileError("torch's pre-0.1.10 tar checkpoint format is not supported")
    raise BadFileError("not a torch checkpoint (neither a zip archive nor a legacy"
                       " torch pickle stream)")


def load_state_dict(path, accept=None, max_bytes=DEFAULT_MAX_BYTES):
    """{key: array} from a .pth / .pth.tar file in either torch format, never importing torch.

    accept({name: TensorSpec}) sees every tensor's shape and dtype before any data is
    read, and raises ValueError to refuse the file (the architecture check). At most
    `max_bytes` of tensor data are read. Arrays keep the saved dtype (float16 stays
    float16), except bfloat16, which numpy lacks, is widened to float32.
    Raises BadFileError (one line, naming the file) for anything else.
    """
    path = os.fspath(path)
    try:
        with open_regular(path) as file:
            return _read_any(file, accept or (lambda specs: None), max_bytes)
    except BadFileError as err:
        message = str(err)
        raise BadFileError(message if message.startswith(f"{path}: ")
                           else f"{path}: {message}") from None
    except OSError as err:
        raise BadFileError(f"{path}: cannot read ({one_line(err.strerror or err)})") from None
    except (pickle.UnpicklingError,) + READ_ERRORS as err:
        raise BadFileError(f"{path}: damaged or not a torch checkpoint"
                           f" ({type(err).__name__}: {one_line(err)})") from None


# ---------------------------------------------------------------- writing the zip format

class _Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class _Call:
    """Pickled as func(*args) (REDUCE)."""

    def __init__(self, func, args):
        self.func, self.args = func, args


class _PersistentId:
    def __init__(self, pid):
        self.pid = pid


def _emit(out, obj):
    """Append protocol-2 opcodes for obj to the bytearray out.

    Written by hand because pickle.Pickler would import torch to resolve
    torch._utils._rebuild_tensor_v2; the opcodes match what torch.save emits.
    """
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out += b"K" + bytes([obj])
        elif 0 <= obj < 65536:
            out += b"M" + struct.pack("<H", obj)
        elif -2**31 <= obj < 2**31:
            out += b"J" + struct.pack("<i", obj)
        else:
            data = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            out += b"\x8a" + bytes([len(data)]) + data
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        out += b"X" + struct.pack("<I", len(data)) + data
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(out, item)
        out += b"t"
    elif isinstance(obj, _Global):
        out += f"c{obj.module}\n{obj.name}\n".encode("ascii")
    elif isinstance(obj, _Call):
        _emit(out, obj.func)
        _emit(out, obj.args)
        out += b"R"
    elif isinstance(obj, _PersistentId):
        _emit(out, obj.pid)
        out += b"Q"
    else:
        raise TypeError(f"cannot pickle {type(obj).__name__}")


def _contiguous_strides(shape):
    # torch's rule: a size-0 dimension counts as 1 when computing the strides outside it.
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _state_dict_pickle(arrays):
    """data.pkl for {name: array}: an OrderedDict of tensors, storage i for the i-th array."""
    ordered_dict = _Global("collections", "OrderedDict")
    rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
    out = bytearray(b"\x80\x02")
    _emit(out, _Call(ordered_dict, ()))
    out += b"("
    for index, (name, array) in enumerate(arrays.items()):
        storage_type = _Global("torch", _SAVE_STORAGE_TYPES[array.dtype.name])
        storage = _PersistentId(("storage", storage_type, str(index), "cpu", array.size))
        args = (storage, 0, array.shape, _contiguous_strides(array.shape), False,
                _Call(ordered_dict, ()))
        _emit(out, name)
        _emit(out, _Call(rebuild, args))
    out += b"u."  # SETITEMS, STOP
    return bytes(out)


def _archive_name(path):
    # torch names the top folder after the file; any name loads, so keep it tidy.
    stem = os.path.basename(os.fspath(path)).split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "archive"


def _write_aligned(archive, name, data, alignment=64):
    """Store `data` uncompressed with its bytes starting at a multiple of `alignment`.

    torch pads the local header's extra field (id 'FB') the same way so storages can be
    memory-mapped; torch.load does not require it, but it costs nothing.
    """
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_STORED
    header_end = archive.fp.tell() + 30 + len(name.encode("utf-8")) + 4
    padding = -header_end % alignment
    info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
    archive.writestr(info, data)


def save_state_dict(params, path):
    """Write {name: array} as a torch zip checkpoint that torch.load(weights_only=True) reads.

    Every array gets its own contiguous little-endian storage. The file is written
    atomically: an existing file at `path` survives any failure.
    """
    arrays = {}
    for name, value in params.items():
        array = np.asarray(value)
        if not isinstance(name, str):
            raise ValueError(f"cannot save key {name!r}: state dict keys are strings")
        if array.dtype.name not in _SAVE_STORAGE_TYPES:
            raise ValueError(f"cannot save '{name}': dtype {array.dtype} has no torch storage")
        # np.asarray, not ascontiguousarray: the latter turns 0-d arrays into 1-d.
        arrays[name] = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
    prefix = _archive_name(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            _write_aligned(archive, f"{prefix}/data.pkl", _state_dict_pickle(arrays))
            # No '.format_version' record on purpose: it would let torch compute storage
            # offsets assuming miniz's layout (data descriptors), which zipfile's differs from.
            _write_aligned(archive, f"{prefix}/.storage_alignment", b"64")
            _write_aligned(archive, f"{prefix}/byteorder", b"little")
            for index, array in enumerate(arrays.values()):
                _write_aligned(archive, f"{prefix}/data/{index}", array.tobytes())
            _write_aligned(archive, f"{prefix}/version", b"3\n")
