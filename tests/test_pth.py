"""adain_np.pth against files torch itself wrote, in both of torch's formats.

Expected values always come from torch (the reference), never from adain_np.pth.
Comparisons are bit-exact: loading a checkpoint must not change a single bit.
"""
import collections
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from adain_np.params import DECODER_SHAPES, ENCODER_SHAPES, VGG_SHAPES
from adain_np.files import BadFileError
from adain_np.param_files import load_params
from adain_np.pth import load_state_dict, save_state_dict
from torch_reference import make_decoder, make_vgg

FORMATS = ("zip", "legacy")


def torch_save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def bits(array):
    """The raw bytes of a C-ordered copy: equal bits means equal NaNs, -0.0 and all."""
    return np.ascontiguousarray(array).view(np.uint8).tobytes()


def assert_same_tensors(ours, reference):
    """ours: {key: ndarray} from adain_np; reference: {key: torch.Tensor}."""
    assert list(ours) == list(reference)
    for key, tensor in reference.items():
        expected = tensor.float() if tensor.dtype == torch.bfloat16 else tensor  # numpy lacks bf16
        expected = expected.contiguous().numpy()
        assert ours[key].dtype == expected.dtype, key
        assert ours[key].shape == expected.shape, key
        assert bits(ours[key]) == bits(expected), key


def one_line_error(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message
    assert os.fspath(path) in message
    return message


def tricky_state_dict():
    """Dtypes, special values, views with offsets and strides, and shared storages."""
    torch.manual_seed(0)
    base = torch.randn(5, 6)
    base[0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-40])  # 1e-40: subnormal
    shared = torch.arange(24, dtype=torch.float32)
    return collections.OrderedDict([
        ("base", base),
        ("transposed", base.t()),                    # stride (1, 6)
        ("rows_offset", base[2:]),                   # storage offset 12
        ("every_other_col", base[1:, ::2]),          # offset 6, stride (6, 2)
        ("shared_a", shared[:12].view(3, 4)),        # two tensors, one storage
        ("shared_b", shared[12:].view(2, 6)),
        ("expanded", torch.ones(3).expand(4, 3)),    # stride 0
        ("half", torch.randn(2, 3).half()),
        ("half_t", torch.randn(3, 2).half().t()),
        ("bfloat16", torch.randn(7).bfloat16()),
        ("double", torch.randn(3, dtype=torch.float64)),
        ("long", torch.tensor([-(2**40), 0, 2**62])),
        ("int", torch.tensor([-7, 3], dtype=torch.int32)),
        ("int8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("uint8", torch.tensor([0, 255], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(3.5)),
        ("empty", torch.zeros(0, 4)),
    ])


@pytest.mark.parametrize("fmt", FORMATS)
def test_tricky_state_dict_loads_bit_exact(tmp_path, fmt):
    reference = tricky_state_dict()
    path = torch_save(reference, tmp_path / "tricky.pth", fmt)
    loaded = load_state_dict(path)
    assert_same_tensors(loaded, reference)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in loaded.values())
    assert not np.shares_memory(loaded["shared_a"], loaded["shared_b"])


@pytest.fixture(scope="module")
def vgg_state_dict():
    # The full 53-module vgg as in vgg_normalised.pth, with random values (~80 MB).
    torch.manual_seed(1)
    state = make_vgg().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == VGG_SHAPES
    return state


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_vgg_loads_bit_exact_and_as_encoder_params(tmp_path, vgg_state_dict, fmt):
    path = torch_save(vgg_state_dict, tmp_path / "vgg_normalised.pth", fmt)
    assert_same_tensors(load_state_dict(path), vgg_state_dict)
    params = load_params(path, "vgg")
    assert list(params) == list(ENCODER_SHAPES)  # cut to vgg[:31], what the encoder uses
    for key, array in params.items():
        assert array.dtype == np.float32
        assert bits(array) == bits(vgg_state_dict[key].numpy()), key


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_decoder_state_dict_any_float_dtype(tmp_path, fmt, dtype):
    # A real Module.state_dict() also pickles its `_metadata` attribute: that must load too.
    torch.manual_seed(2)
    state = make_decoder().to(dtype).state_dict()
    path = torch_save(state, tmp_path / "decoder.pth", fmt)
    params = load_params(path, "decoder")
    assert list(params) == list(DECODER_SHAPES)
    for key, array in params.items():
        # float16 and bfloat16 widen exactly to float32, so bit equality still holds.
        assert bits(array) == bits(state[key].float().numpy()), key


def test_training_checkpoint_pth_tar(tmp_path):
    # What pytorch-AdaIN's train.py does every 10k iterations.
    torch.manual_seed(3)
    state = make_decoder().state_dict()
    for key in state.keys():
        state[key] = state[key].to(torch.device("cpu"))
    path = tmp_path / "decoder_iter_10000.pth.tar"
    torch.save(state, path)
    assert_same_tensors(load_state_dict(path), state)


def test_big_endian_zip_is_byteswapped(tmp_path):
    # torch on a big-endian machine writes byteorder 'big'; no such machine here, so rewrite one.
    reference = {"w": torch.randn(4, 3), "n": torch.tensor([1, -2])}
    source = torch_save(reference, tmp_path / "little.pth", "zip")
    target = tmp_path / "big.pth"
    dtypes = {"little/data/0": ">f4", "little/data/1": ">i8"}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "little/byteorder":
                data = b"big"
            elif name in dtypes:
                little = np.frombuffer(data, dtype=dtypes[name].replace(">", "<"))
                data = little.astype(dtypes[name]).tobytes()
            dst.writestr(name, data)
    assert_same_tensors(load_state_dict(target), reference)


# ---------------------------------------------------------------- refusing malicious pickles

class RunsCommand:
    """Unpickling this runs a shell command (what an attacker would put in a .pth)."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def malicious_payloads(marker):
    return {"os.system": RunsCommand(os.system, f"touch {marker}"),
            "builtins.eval": RunsCommand(eval, f"open({str(marker)!r}, 'w').close()")}


@pytest.mark.parametrize("fmt", FORMATS + ("plain_pickle",))
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, fmt, payload):
    marker = tmp_path / "MARKER"
    evil = malicious_payloads(marker)[payload]
    path = tmp_path / "evil.pth"
    obj = {"0.weight": torch.zeros(2), "0.bias": evil}  # hidden among real tensors
    if fmt == "plain_pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:
        torch_save(obj, path, fmt)
    with pytest.raises(BadFileError) as excinfo:
        load_state_dict(path)
    message = one_line_error(excinfo, path)
    # Protocol 2 writes Python 2 names: builtins.eval is pickled as __builtin__.eval.
    refused = {"os.system": ("posix.system", "os.system"),
               "builtins.eval": ("builtins.eval", "__builtin__.eval")}
    assert "refused" in message and any(name in message for name in refused[payload]), message
    assert not marker.exists()


# ---------------------------------------------------------------- damaged and foreign files

def saved_bytes(fmt, tmp_path):
    reference = {"w": torch.arange(64, dtype=torch.float32), "b": torch.ones(3)}
    return torch_save(reference, tmp_path / f"good_{fmt}.pth", fmt).read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -4])
def test_truncated_file_is_a_clear_error(tmp_path, fmt, keep):
    data = saved_bytes(fmt, tmp_path)
    cut = len(data) + keep if keep < 0 else int(len(data) * keep)
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(BadFileError) as excinfo:
        load_state_dict(path)
    one_line_error(excinfo, path)


@pytest.mark.parametrize("content", [
    b"",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4,   # a JPEG's start
    np.random.default_rng(0).bytes(5000),
    b"\x80\x02K\x05.",                                               # a pickle, but not torch's
    b"not a checkpoint at all\n",
])
def test_foreign_files_are_a_clear_error(tmp_path, content):
    path = tmp_path / "foreign.pth"
    path.write_bytes(content)
    with pytest.raises(BadFileError) as excinfo:
        load_state_dict(path)
    one_line_error(excinfo, path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "weights.pth"
    with open(path, "wb") as f:
        np.savez(f, w=np.zeros(3))  # an .npz is a zip too
    with pytest.raises(BadFileError, match="data.pkl") as excinfo:
        load_state_dict(path)
    one_line_error(excinfo, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(BadFileError) as excinfo:
        load_state_dict(path)
    one_line_error(excinfo, path)


def rewrite_zip(source, target, edit):
    """Copy a zip, passing each record's bytes through edit(name, data)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, edit(name, src.read(name)))


def test_refuses_other_torch_globals(tmp_path):
    # torch.load(weights_only=False) would call any torch function; we allow only the rebuilders.
    # Edit a real file's pickle (not pickle a torch function here: other tests may patch those).
    source = torch_save({"w": torch.zeros(2)}, tmp_path / "src.pth", "zip")
    target = tmp_path / "evil.pth"

    def edit(name, data):
        if name.endswith("data.pkl"):
            assert data.count(b"ccollections\nOrderedDict\n") == 1
            return data.replace(b"ccollections\nOrderedDict\n", b"ctorch\nload\n")
        return data

    rewrite_zip(source, target, edit)
    with pytest.raises(BadFileError, match="refused to load global 'torch.load'"):
        load_state_dict(target)


def test_storage_shorter_than_declared(tmp_path):
    source = torch_save({"w": torch.arange(12.0).view(3, 4)}, tmp_path / "src.pth", "zip")
    target = tmp_path / "short.pth"
    rewrite_zip(source, target, lambda name, data: data[:16] if name.endswith("data/0") else data)
    with pytest.raises(BadFileError, match="holds 16 bytes, expected 48") as excinfo:
        load_state_dict(target)
    one_line_error(excinfo, target)


def test_tensor_larger_than_its_storage(tmp_path):
    # Storage id and record agree on 2 elements, but the tensor claims 3x4 of them.
    source = torch_save({"w": torch.arange(12.0).view(3, 4)}, tmp_path / "src.pth", "zip")
    target = tmp_path / "overrun.pth"

    def edit(name, data):
        if name.endswith("data.pkl"):
            assert data.count(b"K\x0c") == 1  # BININT1 12: the storage's numel
            return data.replace(b"K\x0c", b"K\x02")
        return data[:8] if name.endswith("data/0") else data

    rewrite_zip(source, target, edit)
    with pytest.raises(BadFileError, match="'w' needs 12 elements") as excinfo:
        load_state_dict(target)
    one_line_error(excinfo, target)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(BadFileError, match="not a state dict"):
        load_state_dict(path)
    torch.save({"w": torch.zeros(2), "epoch": 5}, path)
    with pytest.raises(BadFileError, match="'epoch'"):
        load_state_dict(path)


# ---------------------------------------------------------------- architecture checks

def decoder_state(seed=4):
    torch.manual_seed(seed)
    return make_decoder().state_dict()


def test_wrong_shape_names_key_expected_and_found(tmp_path):
    state = decoder_state()
    state["8.weight"] = torch.zeros(256, 256, 1, 1)
    path = torch_save(state, tmp_path / "decoder.pth", "zip")
    with pytest.raises(BadFileError) as excinfo:
        load_params(path, "decoder")
    message = one_line_error(excinfo, path)
    for part in ("'8.weight'", "expected (256, 256, 3, 3)", "shape (256, 256, 1, 1)"):
        assert part in message, message


def test_missing_and_extra_keys(tmp_path):
    state = decoder_state()
    del state["28.bias"]
    path = torch_save(state, tmp_path / "decoder.pth", "legacy")
    with pytest.raises(BadFileError, match="missing key '28.bias'"):
        load_params(path, "decoder")
    state = decoder_state()
    state["99.weight"] = torch.zeros(1)
    torch_save(state, path, "zip")
    with pytest.raises(BadFileError, match="unexpected key '99.weight'"):
        load_params(path, "decoder")


def test_vgg_file_is_not_a_decoder(tmp_path, vgg_state_dict):
    path = torch_save(vgg_state_dict, tmp_path / "vgg.pth", "zip")
    with pytest.raises(BadFileError, match="decoder weights"):
        load_params(path, "decoder")
    decoder_path = torch_save(decoder_state(), tmp_path / "decoder.pth", "zip")
    with pytest.raises(BadFileError, match="vgg weights"):
        load_params(decoder_path, "vgg")


def test_integer_weights_are_refused(tmp_path):
    state = {k: v.to(torch.int32) for k, v in decoder_state().items()}
    path = torch_save(state, tmp_path / "decoder.pth", "zip")
    with pytest.raises(BadFileError, match="int32"):
        load_params(path, "decoder")


def test_npz_weights(tmp_path):
    state = decoder_state()
    path = tmp_path / "decoder.npz"
    np.savez(path, **{k: v.half().numpy() for k, v in reversed(state.items())})
    params = load_params(path, "decoder")
    assert list(params) == list(DECODER_SHAPES)  # back in torch order
    for key, array in params.items():
        assert bits(array) == bits(state[key].half().float().numpy()), key


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([RunsCommand(os.system, "true")], dtype=object))
    with pytest.raises(BadFileError) as excinfo:
        load_params(path, "decoder")
    one_line_error(excinfo, path)


# ---------------------------------------------------------------- writing

def test_save_round_trips_through_torch_load(tmp_path):
    rng = np.random.default_rng(5)
    params = {
        "f32": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "f32_transposed": rng.standard_normal((3, 5)).astype(np.float32).T,  # non-contiguous
        "f32_big_endian": np.arange(6, dtype=">f4"),
        "special": np.array([np.nan, np.inf, -0.0, 1e-40], dtype=np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "f64": rng.standard_normal(2),
        "i64": np.array([-(2**62), 2**40, 7]),
        "i32": np.array([-5, 5], dtype=np.int32),
        "u8": np.array([0, 200], dtype=np.uint8),
        "bool": np.array([True, False]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = tmp_path / "ours.pth"
    save_state_dict(params, path)
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert list(loaded) == list(params)
        for key, array in params.items():
            expected = np.asarray(array)
            expected = expected.astype(expected.dtype.newbyteorder("="))
            assert loaded[key].numpy().dtype == expected.dtype, key
            assert tuple(loaded[key].shape) == expected.shape, key
            assert bits(loaded[key].numpy()) == bits(expected), key
    assert_same_tensors(load_state_dict(path), torch.load(path, weights_only=True))


def test_saved_decoder_loads_into_torch_decoder(tmp_path):
    state = decoder_state(6)
    path = tmp_path / "decoder.pth"
    save_state_dict({k: v.numpy() for k, v in state.items()}, path)
    decoder = make_decoder()
    decoder.load_state_dict(torch.load(path, weights_only=True))  # strict: every key, every shape
    for key, tensor in decoder.state_dict().items():
        assert torch.equal(tensor, state[key]), key


def local_headers(path):
    """(name, data offset) of each record, read from the zip's local file headers."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
            yield info.filename, start + 30 + name_len + extra_len


def test_saved_records_are_64_byte_aligned_like_torch(tmp_path):
    path = tmp_path / "decoder_iter_5.pth.tar"
    save_state_dict({"a": np.ones(3, np.float32), "b": np.ones(17, np.float16)}, path)
    records = dict(local_headers(path))
    names = ("data.pkl", "byteorder", "data/0", "data/1", "version")
    assert set(records) >= {f"decoder_iter_5/{name}" for name in names}
    assert all(offset % 64 == 0 for offset in records.values()), records


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "decoder.pth"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="complex"):
        save_state_dict({"w": np.zeros(2, np.complex64)}, path)
    with pytest.raises(ValueError, match="key 5"):
        save_state_dict({"a": np.zeros(2, np.float32), 5: np.zeros(2)}, path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["decoder.pth"]  # no temporary file left behind
