"""Hand-made hostile torch checkpoints for the fuzz tests: pickles opcode by opcode, zips
and legacy streams byte by byte. Nothing here imports adain_np, so a bug in the reader
cannot hide a bug in the files that test it."""
import io
import struct
import zipfile
import zlib

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class Pickle:
    """A protocol-2 pickle written opcode by opcode: p = Pickle().global_(...).mark()..."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")

    def raw(self, data):
        self.out += data
        return self

    def int_(self, value):
        if 0 <= value < 256:
            return self.raw(b"K" + bytes([value]))
        if -2**31 <= value < 2**31:
            return self.raw(b"J" + struct.pack("<i", value))
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return self.raw(b"\x8a" + bytes([len(data)]) + data)

    def str_(self, text):
        data = text.encode("utf-8")
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def global_(self, module, name):
        return self.raw(f"c{module}\n{name}\n".encode())

    def mark(self):
        return self.raw(b"(")

    def tuple_(self):
        return self.raw(b"t")

    def empty_tuple(self):
        return self.raw(b")")

    def empty_dict(self):
        return self.raw(b"}")

    def empty_list(self):
        return self.raw(b"]")

    def append(self):
        return self.raw(b"a")

    def reduce(self):
        return self.raw(b"R")

    def build(self):
        return self.raw(b"b")

    def setitem(self):
        return self.raw(b"s")

    def setitems(self):
        return self.raw(b"u")

    def persid(self):
        return self.raw(b"Q")

    def put(self, index):
        return self.raw(b"r" + struct.pack("<I", index))

    def get(self, index):
        return self.raw(b"j" + struct.pack("<I", index))

    def dup(self):
        return self.raw(b"2")

    def pop(self):
        return self.raw(b"0")

    def none(self):
        return self.raw(b"N")

    def stop(self):
        return bytes(self.raw(b".").out)

    def int_tuple(self, values):
        self.mark()
        for v in values:
            self.int_(v)
        return self.tuple_()

    def storage(self, key, numel, storage_type="FloatStorage", view=None):
        """Push the persistent-id storage ('storage', type, key, 'cpu', numel[, view])."""
        self.mark().str_("storage").global_("torch", storage_type).str_(key).str_("cpu")
        self.int_(numel)
        if view is not None:
            self.mark().str_(view[0]).int_(view[1]).int_(view[2]).tuple_()
        return self.tuple_().persid()

    def tensor(self, key, numel, offset, size, stride, storage_type="FloatStorage",
               after_rebuild=b""):
        """Push _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
        self.global_("torch._utils", "_rebuild_tensor_v2").mark()
        self.storage(key, numel, storage_type)
        self.int_(offset).int_tuple(size).int_tuple(stride).raw(b"\x89")
        self.global_("collections", "OrderedDict").empty_tuple().reduce()
        self.tuple_().reduce()
        return self.raw(after_rebuild)


def state_dict_pickle(tensors, after_dict=b""):
    """data.pkl of an OrderedDict of tensors: tensors = [(name, key, numel, offset, size,
    stride, storage_type, after_rebuild)] (the last two optional)."""
    p = Pickle().global_("collections", "OrderedDict").empty_tuple().reduce().mark()
    for name, key, numel, offset, size, stride, *rest in tensors:
        storage_type = rest[0] if rest else "FloatStorage"
        after = rest[1] if len(rest) > 1 else b""
        p.str_(name).tensor(key, numel, offset, size, stride, storage_type, after)
    p.setitems().raw(after_dict)
    return p.stop()


def zip_pth(pickle_bytes, storages, compress=zipfile.ZIP_STORED, prefix="archive",
            byteorder=b"little"):
    """A torch zip checkpoint: prefix/data.pkl, prefix/data/<key>, prefix/byteorder."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as archive:
        archive.writestr(f"{prefix}/data.pkl", pickle_bytes)
        if byteorder is not None:
            archive.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in storages.items():
            archive.writestr(f"{prefix}/data/{key}", data)
        archive.writestr(f"{prefix}/version", b"3\n")
    return out.getvalue()


def legacy_pth(obj_pickle, storages, keys=None, sys_info=None):
    """A legacy stream: magic, protocol, sys info, obj_pickle, key list, raw storages.
    storages = [(key, numel, data)]."""
    magic = Pickle().int_(LEGACY_MAGIC).stop()
    version = Pickle().int_(1001).stop()
    info = sys_info or (Pickle().empty_dict().mark().str_("protocol_version").int_(1001)
                        .str_("little_endian").raw(b"\x88").setitems().stop())
    key_list = Pickle().empty_list()
    for key in (keys if keys is not None else [k for k, _, _ in storages]):
        key_list.str_(key).append()
    out = bytearray(magic + version + info + obj_pickle + key_list.stop())
    for _, numel, data in storages:
        out += struct.pack("<q", numel) + data
    return bytes(out)


# ---------------------------------------------------------------- raw zip surgery

def local_headers(data):
    """Offsets of every local file header (PK\\x03\\x04) in a zip's bytes."""
    found, start = [], 0
    while (i := data.find(b"PK\x03\x04", start)) >= 0:
        found.append(i)
        start = i + 4
    return found


def central_headers(data):
    found, start = [], 0
    while (i := data.find(b"PK\x01\x02", start)) >= 0:
        found.append(i)
        start = i + 4
    return found


def set_u16(data, offset, value):
    data = bytearray(data)
    data[offset:offset + 2] = struct.pack("<H", value)
    return bytes(data)


def set_u32(data, offset, value):
    data = bytearray(data)
    data[offset:offset + 4] = struct.pack("<I", value)
    return bytes(data)


def entry_variants(data):
    """(name, bytes) of a zip with each flag and method a zip entry can declare, on both
    its local and central header: encryption, data descriptor, the compression methods
    zipfile knows or does not, wrong CRC, wrong sizes, mismatched names."""
    variants = []
    for which, headers, flag_at, method_at, crc_at, size_at in (
            ("local", local_headers(data), 6, 8, 14, 22),
            ("central", central_headers(data), 8, 10, 16, 24)):
        for n, h in enumerate(headers):
            flags = struct.unpack_from("<H", data, h + flag_at)[0]
            for bit in range(16):
                variants.append((f"{which}{n}_flag{bit}", set_u16(data, h + flag_at, flags ^ (1 << bit))))
            for method in (1, 6, 9, 12, 14, 19, 93, 95, 97, 98, 99, 0xFFFF):
                variants.append((f"{which}{n}_method{method}", set_u16(data, h + method_at, method)))
            variants.append((f"{which}{n}_crc", set_u32(data, h + crc_at, 0xDEADBEEF)))
            for size in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF):
                variants.append((f"{which}{n}_size{size}", set_u32(data, h + size_at, size)))
                variants.append((f"{which}{n}_csize{size}", set_u32(data, h + size_at - 4, size)))
            variants.append((f"{which}{n}_name", set_u16(data, h + (26 if which == "local" else 28), 1)))
    return variants


def deflate_bomb_zip(prefix, pickle_bytes, key, declared_size, inflated_size):
    """A zip whose storage record inflates to inflated_size zero bytes while the central
    directory declares declared_size (zipfile trusts the central directory)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{prefix}/data.pkl", pickle_bytes)
        archive.writestr(f"{prefix}/data/{key}", b"\0" * inflated_size)
    data = out.getvalue()
    if declared_size != inflated_size:
        for h in central_headers(data):
            name_len = struct.unpack_from("<H", data, h + 28)[0]
            if data[h + 46:h + 46 + name_len].endswith(f"data/{key}".encode()):
                data = set_u32(data, h + 24, declared_size)
    return data


def deep_list_pickle(depth):
    """[[[...]]] nested `depth` deep, as a whole data.pkl."""
    p = Pickle()
    for _ in range(depth):
        p.empty_list()
    for _ in range(depth - 1):
        p.append()
    return p.stop()


def dag_pickle(levels, kind="tuple"):
    """A value whose tree has 2**levels leaves but only `levels` distinct nodes (memo)."""
    p = Pickle().str_("x").put(0).pop()
    for i in range(levels):
        if kind == "tuple":
            p.get(i).get(i).raw(b"\x86").put(i + 1).pop()  # TUPLE2
        else:
            p.mark().get(i).get(i).raw(b"l").put(i + 1).pop()  # LIST
    return p.get(levels)


def zlib_raw(data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()
