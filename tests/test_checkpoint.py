"""Training checkpoints: exact round trip, architecture checks, atomic writes."""
import errno
import json
import os

import numpy as np
import pytest

from adain_np import checkpoint
from adain_np.checkpoint import (CheckpointError, TrainingState, load_checkpoint, save_checkpoint,
                                 save_decoder_npz)
from adain_np.params import DECODER_SHAPES, init_decoder_params


def make_state(seed=0, iteration=7):
    rng = np.random.default_rng(seed)
    decoder = init_decoder_params(seed)
    m = {k: rng.standard_normal(s).astype(np.float32) for k, s in DECODER_SHAPES.items()}
    v = {k: rng.random(s, dtype=np.float32) for k, s in DECODER_SHAPES.items()}
    meta = {"seed": seed, "content_loader": {"batches_consumed": iteration, "seed": 0},
            "settings": {"lr": 1e-4}}
    return TrainingState(decoder, m, v, adam_step=iteration, iteration=iteration, meta=meta)


def test_round_trip_is_exact(tmp_path):
    state = make_state()
    path = tmp_path / "ck.npz"
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert (loaded.iteration, loaded.adam_step) == (7, 7)
    assert loaded.meta["content_loader"] == {"batches_consumed": 7, "seed": 0}
    assert loaded.meta["settings"] == {"lr": 1e-4}
    for group in ("decoder", "adam_m", "adam_v"):
        saved, back = getattr(state, group), getattr(loaded, group)
        assert list(back) == list(DECODER_SHAPES)
        for key in DECODER_SHAPES:
            assert back[key].dtype == np.float32
            np.testing.assert_array_equal(back[key], saved[key])
    # Plain npz that numpy reads without pickle.
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["meta"]))["iteration"] == 7


def rewrite(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    change(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize("change, expected", [
    (lambda a: a.__setitem__("decoder/1.weight", np.zeros((128, 512, 3, 3), np.float32)),
     "key '1.weight' has shape (128, 512, 3, 3), expected (256, 512, 3, 3)"),
    (lambda a: a.pop("adam_v/28.bias"), "adam_v: decoder weights: missing key '28.bias'"),
    (lambda a: a.__setitem__("adam_m/99.weight", np.zeros(3, np.float32)),
     "unexpected key '99.weight'"),
    (lambda a: a.__setitem__("decoder/1.bias", np.zeros(256, np.float64)),
     "decoder/1.bias has dtype float64"),
    (lambda a: a.__setitem__("meta", np.array("{not json")), "'meta' is not JSON"),
    (lambda a: a.__setitem__("meta", np.array(json.dumps({"format": "x"}))),
     "not an adain_np training checkpoint"),
])
def test_mismatched_checkpoint_is_refused_naming_the_problem(tmp_path, change, expected):
    path = tmp_path / "ck.npz"
    save_checkpoint(make_state(), path)
    rewrite(path, change)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_not_a_checkpoint(tmp_path):
    decoder_only = tmp_path / "decoder.npz"
    save_decoder_npz(init_decoder_params(0), decoder_only)
    with pytest.raises(CheckpointError, match="looks like decoder weights"):
        load_checkpoint(decoder_only)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.npz")


def test_full_disk_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(make_state(seed=0, iteration=3), path)
    before = path.read_bytes()

    def full_disk(file, arrays):
        file.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "_write_arrays", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(make_state(seed=1, iteration=9), path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind
    assert load_checkpoint(path).iteration == 3
