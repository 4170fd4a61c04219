"""The weights reader against files an attacker would write.

Every file here is crafted by tests/pth_craft.py (or written by torch and then damaged)
and loaded in a separate process under a memory limit (tests/fuzz_driver.py), so an
out-of-bounds read, a runaway allocation or a hang fails the test instead of the suite.
A refusal must be one line that names the file and comes from a check, not from a
MemoryError or RecursionError caught on the way out.
"""
import random
import struct
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

from fuzz_common import REPO, assert_cli_error, assert_refused, run_driver, run_limited
from pth_craft import (Pickle, dag_pickle, deep_list_pickle, deflate_bomb_zip, entry_variants,
                       legacy_pth, state_dict_pickle, zip_pth)
from adain_np.params import DECODER_SHAPES

# Storages hold small integers 1..251 as float32: any other value in a loaded tensor
# came from outside the file's storages.
MARKERS = [float(v) for v in range(1, 252)]


def marker_bytes(numel):
    return ((np.arange(numel) % 251) + 1).astype("<f4").tobytes()


def small_tensor(name="w", key="0", numel=4, offset=0, size=(4,), stride=(1,), after=b""):
    return (name, key, numel, offset, size, stride, "FloatStorage", after)


def decoder_tensors(bias_after=b"", bias_offset=0):
    """The whole decoder, one storage per tensor; 1.bias can get extra opcodes."""
    tensors, storages = [], {}
    for i, (name, shape) in enumerate(DECODER_SHAPES.items()):
        numel = int(np.prod(shape))
        strides = tuple(int(np.prod(shape[d + 1:])) for d in range(len(shape)))
        extra = numel if name == "1.bias" else 0
        after = bias_after if name == "1.bias" else b""
        offset = bias_offset if name == "1.bias" else 0
        tensors.append((name, str(i), numel + extra, offset, shape, strides, "FloatStorage", after))
        storages[str(i)] = marker_bytes(numel + extra)
    return tensors, storages


def build_state(**fields):
    """Opcodes that push a dict {field: value} and BUILD it onto the object below."""
    p = Pickle().empty_dict()
    for field, value in fields.items():
        p.str_(field)
        if isinstance(value, tuple):
            p.int_tuple(value)
        else:
            p.int_(value)
        p.setitem()
    return bytes(p.raw(b"b").out[2:])  # drop the PROTO header: these are mid-stream opcodes


def bare(pickle_bytes):
    """A Pickle's opcodes without PROTO and STOP, to splice into another pickle."""
    return pickle_bytes[2:-1]


OOB = build_state(offset=-(1 << 40), size=(1 << 20,), stride=(1,))


def crafted_cases():
    """(name, file bytes, suffix, kind, expected words in the refusal or None for 'ok')."""
    w = [small_tensor()]
    storages = {"0": marker_bytes(4)}
    cases = []

    def zip_case(name, tensors, why, kind="state_dict", stores=None, after_dict=b""):
        cases.append((name, zip_pth(state_dict_pickle(tensors, after_dict), stores or storages),
                      ".pth", kind, why))

    def legacy_case(name, tensors, why, kind="state_dict", stores=None):
        stores = stores or [("0", 4, marker_bytes(4))]
        cases.append((name, legacy_pth(state_dict_pickle(tensors), stores), ".pth", kind, why))

    # 1. BUILD on the rebuilt tensor (the out-of-bounds read), small and full-decoder
    zip_case("build_on_tensor", [small_tensor(after=OOB)], "sets the state of a _TensorRef")
    legacy_case("legacy_build_on_tensor", [small_tensor(after=OOB)], "sets the state")
    tensors, dec_storages = decoder_tensors(bias_after=OOB)
    zip_case("heap_leak_decoder", tensors, "sets the state", "decoder", dec_storages)
    tensors, dec_storages = decoder_tensors(bias_after=build_state(offset=1))
    zip_case("in_range_build_decoder", tensors, "sets the state", "decoder", dec_storages)
    tensors, dec_storages = decoder_tensors(bias_offset=37)
    zip_case("legit_offset_decoder", tensors, None, "decoder", dec_storages)
    # BUILD / __setstate__ on every object the unpickler can hand out
    handed_out = {
        "OrderedDict": Pickle().global_("collections", "OrderedDict"),
        "rebuild_v2": Pickle().global_("torch._utils", "_rebuild_tensor_v2"),
        "rebuild": Pickle().global_("torch._utils", "_rebuild_tensor"),
        "rebuild_parameter": Pickle().global_("torch._utils", "_rebuild_parameter"),
        "storage_type": Pickle().global_("torch", "FloatStorage"),
        "dtype": Pickle().global_("torch", "float32"),
        "storage": Pickle().storage("0", 4),
        "tensor": Pickle().tensor("0", 4, 0, (4,), (1,)),
        "list": Pickle().empty_list(), "dict": Pickle().empty_dict(),
        "tuple": Pickle().empty_tuple(), "int": Pickle().int_(3), "str": Pickle().str_("s"),
    }
    for target, push in handed_out.items():
        for form, state in (("dict", build_state(__setstate__=1, offset=-5)),
                            ("slots", bytes(Pickle().none().empty_dict().str_("offset").int_(-5)
                                            .setitem().raw(b"\x86b").out[2:]))):
            after = bytes(push.out[2:]) + state + b"0"  # push, BUILD, POP
            zip_case(f"build_{form}_on_{target}", [small_tensor()], "not allowed",
                     after_dict=after)
    # BUILD on the state dict itself is what torch writes (_metadata): ignored
    zip_case("build_on_state_dict", w, None, after_dict=build_state(keys=1, __class__=2))
    # 2. memo DAGs: a 60-level tuple DAG as a dict key, a list DAG as a value or anywhere
    #    the loader might format or hash it
    dag = bare(dag_pickle(60).stop())
    cases.append(("dag_tuple_key", zip_pth(bytes(Pickle().global_("collections", "OrderedDict")
                  .empty_tuple().reduce().raw(dag).str_("v").setitem().stop()), storages),
                  ".pth", "state_dict", "dict key is a tuple"))
    list_dag = bare(dag_pickle(60, "list").stop())
    cases.append(("dag_list_value", zip_pth(bytes(Pickle().empty_dict().str_("w").raw(list_dag)
                  .setitem().stop()), storages), ".pth", "state_dict", "is a list"))
    cases.append(("dag_size", zip_pth(bytes(Pickle().empty_dict().str_("w")
                  .global_("torch._utils", "_rebuild_tensor_v2").mark().storage("0", 4).int_(0)
                  .raw(dag).int_tuple((1,)).tuple_().reduce().setitem().stop()), storages),
                  ".pth", "state_dict", "bad tensor size"))
    cases.append(("dag_storage_key", zip_pth(bytes(Pickle().empty_dict().str_("w")
                  .mark().str_("storage").global_("torch", "FloatStorage").raw(dag).str_("cpu")
                  .int_(4).tuple_().persid().setitem().stop()), storages),
                  ".pth", "state_dict", "storage key is a tuple"))
    cases.append(("dag_whole", zip_pth(dag_pickle(60, "list").stop(), storages), ".pth",
                  "state_dict", "holds a list"))
    magic = Pickle().int_(0x1950a86a20f9469cfc6c).stop()
    cases.append(("legacy_dag_version", magic + dag_pickle(60, "list").stop(), ".pth",
                  "state_dict", "protocol version (list)"))
    # 3. memory bombs: stride 0, huge sizes and products, deflate bombs
    zip_case("stride0_bomb", [small_tensor(size=(1 << 29,), stride=(0,))], "more than")
    zip_case("stride0_bomb_decoder", [small_tensor(name="1.bias", size=(1 << 29,), stride=(0,))],
             "decoder weights: missing key", "decoder")
    tensors, dec_storages = decoder_tensors()
    tensors = [(t[0], t[1], t[2], 0, (1 << 29,), (0,), t[6], b"") if t[0] == "1.bias" else t
               for t in tensors]
    zip_case("stride0_bomb_full_decoder", tensors, "key '1.bias' has shape (536870912,)",
             "decoder", dec_storages)
    legacy_case("legacy_stride0_bomb", [small_tensor(size=(1 << 29,), stride=(0,))], "more than")
    zip_case("product_overflow", [small_tensor(size=(1 << 47, 1 << 47, 1 << 47),
                                               stride=(0, 0, 0))], "more than")
    zip_case("size_2_64", [small_tensor(size=(1 << 64,))], "bad tensor size")
    zip_case("negative_size", [small_tensor(size=(-1,))], "bad tensor size")
    zip_case("negative_stride", [small_tensor(stride=(-1,))], "bad tensor stride")
    zip_case("negative_offset", [small_tensor(offset=-1)], "bad tensor storage offset")
    zip_case("huge_offset", [small_tensor(offset=(1 << 63))], "bad tensor storage offset")
    zip_case("stride_past_storage", [small_tensor(stride=(1 << 30,))], "needs")
    zip_case("negative_numel", [small_tensor(numel=-4)], "bad tensor storage size")
    zip_case("numel_lies_big", [small_tensor(numel=1 << 40)], "holds")
    zip_case("ndim_100", [small_tensor(size=(1,) * 100, stride=(1,) * 100)], "bad tensor size")
    legacy_case("legacy_numel_header_lies", [small_tensor()], "another size",
                stores=[("0", 1 << 60, marker_bytes(4))])
    bomb = state_dict_pickle([small_tensor(numel=16, size=(16,))])
    cases.append(("deflate_bomb", deflate_bomb_zip("archive", bomb, "0", 50 << 20, 50 << 20),
                  ".pth", "state_dict", "declares"))
    cases.append(("deflate_bomb_lying_cd", deflate_bomb_zip("archive", bomb, "0", 64, 50 << 20),
                  ".pth", "state_dict", "ANY"))
    bomb_dec = state_dict_pickle([small_tensor(name="1.bias", numel=256, size=(256,))])
    cases.append(("deflate_bomb_decoder", deflate_bomb_zip("archive", bomb_dec, "0", 200 << 20,
                  200 << 20), ".pth", "decoder", "ANY"))
    # 4. what used to be tracebacks
    good = zip_pth(state_dict_pickle(w), storages)
    for name, data in entry_variants(good):
        cases.append((f"zip_{name}", data, ".pth", "state_dict", "ANY"))
    garbage_deflate = bytearray(zip_pth(state_dict_pickle(w), storages, zipfile.ZIP_DEFLATED))
    at = garbage_deflate.find(b"data/0") + len(b"data/0")
    garbage_deflate[at:at + 8] = b"\xff" * 8
    cases.append(("zlib_error", bytes(garbage_deflate), ".pth", "state_dict", "ANY"))
    cases.append(("lzma_entry", zip_pth(state_dict_pickle(w), storages, zipfile.ZIP_LZMA),
                  ".pth", "state_dict", "compression method 14"))
    cases.append(("bzip2_entry", zip_pth(state_dict_pickle(w), storages, zipfile.ZIP_BZIP2),
                  ".pth", "state_dict", "compression method 12"))
    cases.append(("deep_list", zip_pth(deep_list_pickle(100_000), storages), ".pth",
                  "state_dict", "holds a list"))
    cases.append(("legacy_deep_list", magic + deep_list_pickle(100_000), ".pth", "state_dict",
                  "protocol version (list)"))
    cases.append(("binbytes8_huge", zip_pth(bytes(Pickle().raw(b"\x8e" + struct.pack("<Q", 1 << 62))
                  .stop()), storages), ".pth", "state_dict", "ANY"))
    cases.append(("legacy_binbytes8_huge", magic + bytes(Pickle().raw(b"\x8e" + struct.pack(
                  "<Q", 1 << 62)).stop()), ".pth", "state_dict", "ANY"))
    for op in (b"\x81", b"\x92", b"\x93", b"\x82", b"o", b"i", b"\x8f", b"\x90", b"\x91",
               b"\x96", b"\x97", b"\x98"):  # NEWOBJ, NEWOBJ_EX, STACK_GLOBAL(ok), EXT1, OBJ...
        cases.append((f"opcode_{op.hex()}", zip_pth(bytes(Pickle().raw(op).stop()), storages),
                      ".pth", "state_dict", "ANY"))
    import io
    npy = io.BytesIO()
    np.save(npy, np.zeros(256, np.float32))
    cases.append(("npy_as_npz", npy.getvalue(), ".npz", "decoder", "not an .npz"))
    objects = io.BytesIO()
    np.savez(objects, **{"1.bias": np.array([object()] * 256, dtype=object)})
    cases.append(("npz_object_array", objects.getvalue(), ".npz", "decoder", "never pickled"))
    cases.append(("npz_garbage", b"PK\x03\x04" + b"\x00" * 100, ".npz", "decoder", "ANY"))
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, "<f4"))
        header["shape"] = (1 << 40,)
        raw = io.BytesIO()
        np.lib.format.write_array_header_1_0(raw, header)
        archive.writestr("1.bias.npy", raw.getvalue() + b"\0" * 1000)
    cases.append(("npz_huge_shape", big.getvalue(), ".npz", "decoder", "has shape"))
    return cases


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    cases = []
    for name, data, suffix, kind, why in crafted_cases():
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        case = {"path": str(path), "kind": kind, "why": why}
        if why is None:
            case["allowed"] = MARKERS
        cases.append(case)
    outcomes = run_driver([{k: v for k, v in c.items() if k != "why"} for c in cases], folder)
    return [(c, outcomes[c["path"]]) for c in cases]


def test_crafted_files_are_refused_by_a_check(crafted):
    assert len(crafted) > 150
    for case, item in crafted:
        assert item["outcome"] not in ("escaped", "timeout"), item
        assert item["seconds"] < 5, item
        if case["why"] is None:
            assert item["outcome"] == "ok", item
            assert item["only_own_bytes"], item  # values only from the file's storages
        elif case["why"] == "ANY":
            if item["outcome"] != "ok":
                assert_refused(item)
        else:
            assert_refused(item, case["why"])


def test_heap_leak_construction_is_refused_and_legit_views_read_only_own_bytes(crafted):
    by_name = {c["path"].rsplit("/", 1)[1]: item for c, item in crafted}
    assert_refused(by_name["heap_leak_decoder.pth"], "sets the state")
    legit = by_name["legit_offset_decoder.pth"]
    assert legit["outcome"] == "ok" and legit["only_own_bytes"], legit
    assert by_name["build_on_state_dict.pth"]["outcome"] == "ok"


# ---------------------------------------------------------------- damaged real files

def real_small_files(tmp_path):
    """Two small checkpoints torch wrote: a view sharing a storage, float16, a 0-d tensor."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"a": base, "view": base[1:, ::2], "half": torch.ones(3, dtype=torch.float16),
             "scalar": torch.tensor(2.5)}
    paths = {}
    for fmt in ("zip", "legacy"):
        path = tmp_path / f"real_{fmt}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=(fmt == "zip"))
        paths[fmt] = path.read_bytes()
    return paths


def test_truncation_at_every_offset_and_random_mutations(tmp_path):
    rng = random.Random(1234)
    cases = []
    for fmt, data in real_small_files(tmp_path).items():
        for cut in range(len(data)):
            path = tmp_path / f"{fmt}_cut{cut}.pth"
            path.write_bytes(data[:cut])
            cases.append({"path": str(path), "kind": "state_dict"})
        for n in range(1500):
            mutated = bytearray(data)
            for _ in range(rng.choice((1, 1, 2, 4, 16))):
                at = rng.randrange(len(mutated))
                mutated[at] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
            path = tmp_path / f"{fmt}_mut{n}.pth"
            path.write_bytes(bytes(mutated))
            cases.append({"path": str(path), "kind": "state_dict"})
    outcomes = run_driver(cases, tmp_path)
    counts = {"ok": 0, "refused": 0}
    for case in cases:
        item = outcomes[case["path"]]
        assert item["outcome"] in ("ok", "refused"), item
        assert item["seconds"] < 5, item
        if item["outcome"] == "refused":
            assert_refused(item)
        counts[item["outcome"]] += 1
    cuts = sum("_cut" in c["path"] for c in cases)
    assert counts["refused"] >= cuts  # every truncated file is refused
    assert counts["ok"] > 0           # and some mutations are harmless (data bytes)


# ---------------------------------------------------------------- the command lines

def cli_cases(tmp_path):
    by_name = {name: (data, suffix) for name, data, suffix, _, _ in crafted_cases()
               if name in ("heap_leak_decoder", "stride0_bomb_decoder", "deflate_bomb_decoder",
                           "deep_list", "zip_local1_flag0", "npy_as_npz", "dag_tuple_key",
                           "lzma_entry")}
    for name, (data, suffix) in by_name.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        yield name, path


def test_cli_refuses_hostile_weights_in_one_line_under_a_memory_limit(tmp_path):
    cases = list(cli_cases(tmp_path))
    assert len(cases) == 8
    for name, path in cases:
        target = tmp_path / "out.npz"
        target.write_bytes(b"previous")
        start = time.monotonic()
        result = run_limited([sys.executable, "-m", "adain_np.weights", "convert", str(path),
                              str(target), "--kind", "decoder"], timeout=60)
        assert time.monotonic() - start < 30, name
        line = assert_cli_error(result)
        assert str(path) in line, line
        assert target.read_bytes() == b"previous", name
    # and stylize, which loads the same reader
    name, path = cases[0]
    content = REPO / "adain_np" / "data"
    images = sorted(p for p in content.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    result = run_limited([sys.executable, "-m", "adain_np.stylize", "--content", str(images[0]),
                          "--style", str(images[-1]), "--decoder", str(path), "--vgg",
                          str(path), "--output", str(tmp_path / "out")], timeout=120)
    assert str(path) in assert_cli_error(result)


def test_cli_does_not_block_on_a_fifo(tmp_path):
    fifo = tmp_path / "weights.pth"
    import os
    os.mkfifo(fifo)
    result = run_limited([sys.executable, "-m", "adain_np.weights", "convert", str(fifo),
                          str(tmp_path / "out.npz")], timeout=30)
    assert "not a regular file" in assert_cli_error(result)
