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
A pickle can call any importable function, so the unpickler here resolves only an
allow-list of globals to local stand-ins (torch is never imported) and refuses the rest
before anything runs.
"""
import collections
import functools
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
from adain_np.params import (DECODER_SHAPES, ENCODER_SHAPES, VGG_SHAPES,
                             check_decoder_params, check_vgg_params)


class CheckpointError(ValueError):
    """A file that cannot be read as the checkpoint asked for; the message names the file."""


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype of one element. numpy has no bfloat16: its
# storages are read as raw uint16 and widened to float32 (exact) by _to_numpy_dtype.
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


# ---------------------------------------------------------------- stand-ins for torch globals

class _StorageType:
    """Stands for torch.FloatStorage & co; its name gives the element dtype."""

    def __init__(self, name):
        self.name = name


class _TorchDType:
    """Stands for a torch dtype object (torch.float32, ...) that a pickle may mention."""

    def __init__(self, name):
        self.name = name


class _StorageRef:
    """A storage named by a persistent id; its bytes are read after unpickling."""

    def __init__(self, key, dtype, numel, view):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.view = view  # (offset, numel) into the root storage, legacy files only; else None


class _TensorRef:
    """What _rebuild_tensor_v2 returned: a strided view of a storage, materialised later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _int_tuple(value, what):
    # torch.Size pickles as a plain tuple; anything else means a damaged or foreign pickle.
    if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise CheckpointError(f"bad tensor {what} {value!r}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"a tensor refers to {type(storage).__name__}, not a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError(f"bad tensor storage offset {storage_offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in length")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    # requires_grad, hooks and metadata only matter to autograd.
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # An nn.Parameter pickled directly: its data is all a state dict needs.
    return data


# (module, name) -> a factory for its stand-in. A pickle's BUILD opcode can set attributes
# on any object it gets, so each lookup hands out a fresh object: one file cannot change
# how the next one loads. (OrderedDict is a C type: its attributes cannot be set.)
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): lambda: functools.partial(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): lambda: functools.partial(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): lambda: functools.partial(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"):
        lambda: functools.partial(_rebuild_parameter),
    **{("torch", name): functools.partial(_StorageType, name) for name in STORAGE_DTYPES},
    **{("torch", name): functools.partial(_TorchDType, name) for name in _TORCH_DTYPE_NAMES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only _ALLOWED_GLOBALS; any other global is refused before it can run."""

    def __init__(self, file, storages):
        super().__init__(file, encoding="utf-8")  # Python 2 str -> str, as torch.load does
        self.storages = storages  # key -> first _StorageRef seen, filled in as we go

    def find_class(self, module, name):
        make = _ALLOWED_GLOBALS.get((module, name))
        if make is None:
            raise CheckpointError(f"refused to load global '{module}.{name}': a checkpoint"
                                  " should hold only tensors (the file may be malicious)")
        return make()

    def persistent_load(self, pid):
        return _storage_ref(pid, self.storages)


def _ascii(value):
    # Python 2 pickles may carry bytes where Python 3 expects str.
    return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_ref(pid, storages):
    """Turn ('storage', type, key, location, numel[, view_metadata]) into a _StorageRef."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and _ascii(pid[0]) == "storage"):
        raise CheckpointError(f"unknown persistent id {str(pid)[:80]!r}")
    storage_type, key, numel = pid[1], str(_ascii(pid[2])), pid[4]
    view = pid[5] if len(pid) == 6 else None
    dtype = None
    if isinstance(storage_type, _StorageType):
        dtype = STORAGE_DTYPES.get(storage_type.name)
    if dtype is None or not isinstance(numel, int) or numel < 0:
        raise CheckpointError(f"bad storage id {str(pid)[:80]!r}")
    if view is not None:  # torch < 1.0 wrote views of a root storage: (view_key, offset, numel)
        view = view[1:] if isinstance(view, tuple) and len(view) == 3 else None
        if view is None or not all(isinstance(v, int) and v >= 0 for v in view):
            raise CheckpointError(f"bad storage view {str(pid[5])[:80]!r}")
    known = storages.setdefault(key, _StorageRef(key, dtype, numel, None))
    if known.dtype != dtype:
        raise CheckpointError(f"storage '{key}' is used with two dtypes")
    return _StorageRef(key, known.dtype, numel, view)


# ---------------------------------------------------------------- turning refs into arrays

def _to_numpy_dtype(dtype, byteorder):
    """numpy dtype of the raw elements on disk ('<' or '>' byte order)."""
    raw = "uint16" if dtype == "bfloat16" else dtype
    return np.dtype(raw).newbyteorder(byteorder)


def _widen_bfloat16(raw):
    # bfloat16 is the top half of a float32: shifting its bits left by 16 is exact.
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _tensor_array(ref, root, name):
    """Copy the strided view `ref` out of its root storage `root` (1-D, native dtype)."""
    offset = ref.offset
    if ref.storage.view is not None:  # legacy storage view: a window into the root storage
        view_offset, view_numel = ref.storage.view
        if view_offset + view_numel > root.size:
            raise CheckpointError(f"storage view of tensor '{name}' runs past its storage")
        root = root[view_offset:view_offset + view_numel]
    if math.prod(ref.size) == 0:
        return np.empty(ref.size, dtype=root.dtype)
    needed = offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride)) + 1
    if needed > root.size:
        raise CheckpointError(f"tensor '{name}' needs {needed} elements of storage"
                              f" '{ref.storage.key}', which holds only {root.size}")
    strides = tuple(s * root.itemsize for s in ref.stride)
    view = np.lib.stride_tricks.as_strided(root[offset:], shape=ref.size, strides=strides)
    return np.array(view, order="C")  # own, writable, contiguous memory


def _state_dict_arrays(obj, read_root):
    """{key: array} for a dict of tensors; read_root(storage_ref) -> the 1-D root storage."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise CheckpointError(f"entry {name!r} is a {type(value).__name__}, not a tensor"
                                  " (not a plain state dict)")
        array = _tensor_array(value, read_root(value.storage), name)
        arrays[name] = _widen_bfloat16(array) if value.storage.dtype == "bfloat16" else array
    return arrays


def _root_from_bytes(data, ref, byteorder):
    """The 1-D native-order array of a storage's bytes, checked against its declared numel."""
    dtype = _to_numpy_dtype(ref.dtype, byteorder)
    if len(data) < ref.numel * dtype.itemsize:
        raise CheckpointError(f"storage '{ref.key}' holds {len(data)} bytes,"
                              f" expected {ref.numel * dtype.itemsize} (truncated file?)")
    root = np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)
    return root if dtype.isnative else root.astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------- the two file formats

def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if not pickles:
            raise CheckpointError("zip archive without a '<name>/data.pkl' record"
                                  " (not a torch checkpoint)")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "<"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = {b"little": "<", b"big": ">"}.get(archive.read(f"{prefix}byteorder"))
            if byteorder is None:
                raise CheckpointError("unknown byteorder record")
        storages = {}
        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        roots = {}

        def read_root(ref):
            if ref.key not in roots:
                record = f"{prefix}data/{ref.key}"
                try:
                    data = archive.read(record)
                except KeyError:
                    raise CheckpointError(f"storage record '{record}' is missing") from None
                roots[ref.key] = _root_from_bytes(data, storages[ref.key], byteorder)
            return roots[ref.key]

        return _state_dict_arrays(obj, read_root)


def _load_legacy(file):
    """Read the legacy stream from an open binary file positioned at its start."""
    if _RestrictedUnpickler(file, {}).load() != LEGACY_MAGIC:
        raise CheckpointError("not a torch checkpoint (bad magic number)")
    version = _RestrictedUnpickler(file, {}).load()
    if version != LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported legacy protocol version {version!r}")
    sys_info = _RestrictedUnpickler(file, {}).load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    byteorder = "<" if little else ">"
    storages = {}
    obj = _RestrictedUnpickler(file, storages).load()
    keys = _RestrictedUnpickler(file, {}).load()
    if not isinstance(keys, list):
        raise CheckpointError("bad storage key list")
    roots = {}
    for key in keys:  # the raw storages follow in the order of `keys`
        key = str(_ascii(key))
        if key not in storages:
            raise CheckpointError(f"storage '{key}' is listed but never used")
        ref = storages[key]
        header = file.read(8)
        if len(header) < 8:
            raise CheckpointError(f"storage '{key}' is missing (truncated file?)")
        numel = int.from_bytes(header, "little" if little else "big")
        nbytes = numel * _to_numpy_dtype(ref.dtype, byteorder).itemsize
        data = file.read(nbytes)
        if len(data) < nbytes:
            raise CheckpointError(f"storage '{key}' holds {len(data)} bytes, expected {nbytes}"
                                  " (truncated file?)")
        roots[key] = _root_from_bytes(data, _StorageRef(key, ref.dtype, numel, None), byteorder)

    def read_root(ref):
        if ref.key not in roots:
            raise CheckpointError(f"storage '{ref.key}' is missing")
        return roots[ref.key]

    return _state_dict_arrays(obj, read_root)


def _read_any(path):
    """Pick the format from the first bytes, then load it."""
    with open(path, "rb") as file:
        head = file.read(4)
        if zipfile.is_zipfile(file):
            return _load_zip(path)
        if head.startswith(b"PK\x03\x04"):
            raise CheckpointError("damaged zip checkpoint (truncated file?)")
        if head[:1] == b"\x80":  # a pickle's PROTO opcode: maybe the legacy stream
            file.seek(0)
            return _load_legacy(file)
        file.seek(0)
        if tarfile.is_tarfile(file):
            raise CheckpointError("torch's pre-0.1.10 tar checkpoint format is not supported")
    raise CheckpointError("not a torch checkpoint (neither a zip archive nor a legacy"
                          " torch pickle stream)")


def load_state_dict(path):
    """{key: array} from a .pth / .pth.tar file in either torch format, never importing torch.

    Arrays keep the saved dtype (float16 stays float16), except bfloat16, which numpy
    lacks, is widened to float32. Raises CheckpointError (one line, naming the file).
    """
    path = os.fspath(path)
    try:
        return _read_any(path)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
            KeyError, IndexError, AttributeError, struct.error, OverflowError) as err:
        detail = " ".join(str(err).split())[:200]  # one line, and not a wall of text
        raise CheckpointError(f"{path}: damaged or not a torch checkpoint"
                              f" ({type(err).__name__}: {detail})") from None


# ---------------------------------------------------------------- weights for the networks

KINDS = {"vgg": (check_vgg_params, VGG_SHAPES), "decoder": (check_decoder_params, DECODER_SHAPES)}


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    except (ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise CheckpointError(f"{path}: not a valid .npz file ({err})") from None


def read_weights(path):
    """{key: array} from a .npz (by its extension) or a torch checkpoint, dtypes as saved."""
    path = os.fspath(path)
    return _load_npz(path) if path.endswith(".npz") else load_state_dict(path)


def check_weights(raw, kind, path):
    """The tensors of `raw` as float32, in torch order, after checking them against `kind`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    check, shapes = KINDS[kind]
    try:
        check(raw)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    for key, array in raw.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise CheckpointError(f"{path}: key '{key}' has dtype {array.dtype}, expected floats")
    return {key: raw[key].astype(np.float32) for key in shapes if key in raw}


def load_checked(path, kind):
    """Every tensor of a .pth or .npz file as float32, in torch order, checked against `kind`."""
    return check_weights(read_weights(path), kind, os.fspath(path))


def load_params(path, kind):
    """The parameters the networks use: float32, checked; vgg cut to the encoder (vgg[:31])."""
    params = load_checked(path, kind)
    if kind == "vgg":
        params = {key: params[key] for key in ENCODER_SHAPES}
    return params


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
            raise CheckpointError(f"cannot save key {name!r}: state dict keys are strings")
        if array.dtype.name not in _SAVE_STORAGE_TYPES:
            raise CheckpointError(f"cannot save '{name}': dtype {array.dtype} has no torch storage")
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
