"""Training checkpoints: everything ``python -m adain_np.train --resume`` needs, in one .npz.

A checkpoint holds the decoder, Adam's moments and step count, the iteration, and the
data loaders' states. The data order and crops are a pure function of the seed and the
number of batches consumed (see dataset.BatchLoader), so (seed, batches consumed) *is*
the random state of the run: nothing else in training draws random numbers.

Layout (np.savez, read back with allow_pickle=False):
    decoder/<key>, adam_m/<key>, adam_v/<key>   float32 arrays, keys of params.DECODER_SHAPES
    meta                                        0-d str array: JSON (iteration, adam_step,
                                                loader states, run settings)
Files are written through cli.atomic_path: a failed write leaves the previous file intact.
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

from adain_np import npz
from adain_np.files import BadFileError
from adain_np.params import DECODER_SHAPES, check_decoder_params

FORMAT = "adain_np training checkpoint"
VERSION = 1
GROUPS = ("decoder", "adam_m", "adam_v")


MAX_META_CHARS = 1 << 20  # the JSON is a few hundred characters


class CheckpointError(BadFileError):
    """A file that is not a usable training checkpoint; the message names the file."""


@dataclass
class TrainingState:
    """Host (NumPy) copies of what a resumed run starts from."""
    decoder: dict                 # {key: (shape of DECODER_SHAPES[key]) float32}
    adam_m: dict                  # same keys and shapes
    adam_v: dict
    adam_step: int                # Adam's step count (torch's state['step'])
    iteration: int                # iterations completed
    meta: dict = field(default_factory=dict)  # loader states, seed, settings (JSON-able)


def _write_arrays(file, arrays):
    """The one place bytes are written; a test replaces it to simulate a full disk."""
    np.savez(file, **arrays)


def write_npz(arrays, path):
    """{name: array} -> .npz at `path`, atomically (the old file survives any failure)."""
    npz.write_npz(arrays, path, write=lambda file, arrays: _write_arrays(file, arrays))


def save_decoder_npz(decoder, path):
    """The decoder alone, keyed as pytorch-AdaIN's state dict ('1.weight', ...)."""
    write_npz({key: np.asarray(decoder[key], dtype=np.float32) for key in DECODER_SHAPES}, path)


def save_checkpoint(state, path):
    arrays = {}
    for group in GROUPS:
        tensors = getattr(state, group)
        for key in DECODER_SHAPES:
            arrays[f"{group}/{key}"] = np.asarray(tensors[key], dtype=np.float32)
    meta = dict(state.meta, format=FORMAT, version=VERSION,
                iteration=int(state.iteration), adam_step=int(state.adam_step))
    arrays["meta"] = np.array(json.dumps(meta))
    write_npz(arrays, path)


def _accept_record(name, shape, dtype):
    """Refuse a record by its header alone, before its data is read."""
    if name == "meta":
        if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * MAX_META_CHARS:
            raise ValueError("damaged checkpoint: 'meta' is not a short text")
        return
    if name in DECODER_SHAPES:
        raise ValueError("not a training checkpoint: no 'meta' entry"
                         " (it looks like decoder weights, not a training checkpoint)")
    group, _, key = name.partition("/")
    if group not in GROUPS:
        raise ValueError(f"unexpected entry '{name}'")
    if key not in DECODER_SHAPES:
        raise ValueError(f"does not match the decoder architecture ({group}:"
                         f" unexpected key '{key}')")
    if tuple(shape) != DECODER_SHAPES[key]:
        raise ValueError(f"does not match the decoder architecture ({group}: key '{key}' has"
                         f" shape {tuple(shape)}, expected {DECODER_SHAPES[key]})")
    if dtype != np.float32:
        raise ValueError(f"{group}/{key} has dtype {dtype}, expected float32")


def _read_npz(path):
    try:
        return npz.read_npz(path, _accept_record, max_bytes=_MAX_BYTES)
    except BadFileError as err:
        detail = str(err)[len(f"{path}: "):] if str(err).startswith(f"{path}: ") else str(err)
        if "checkpoint" not in detail and "architecture" not in detail and "dtype" not in detail:
            detail = f"not a training checkpoint: {detail}"
        raise CheckpointError(f"{path}: {detail}") from None


_MAX_BYTES = 3 * 4 * sum(int(np.prod(s)) for s in DECODER_SHAPES.values()) + 4 * MAX_META_CHARS


def _read_meta(path, arrays):
    if "meta" not in arrays:
        hint = (" (it looks like decoder weights, not a training checkpoint)"
                if set(arrays) == set(DECODER_SHAPES) else "")
        raise CheckpointError(f"{path}: not a training checkpoint: no 'meta' entry{hint}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise CheckpointError(f"{path}: damaged checkpoint: 'meta' is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an adain_np training checkpoint")
    if type(meta.get("version")) is not int or meta["version"] != VERSION:
        version = meta.get("version")
        shown = version if type(version) is int and abs(version) < 10**9 else type(version).__name__
        raise CheckpointError(f"{path}: checkpoint version {shown},"
                              f" this program reads version {VERSION}")
    for name in ("iteration", "adam_step"):
        if type(meta.get(name)) is not int or not 0 <= meta[name] < 2**53:
            raise CheckpointError(f"{path}: damaged checkpoint: bad '{name}'")
    problem = _resume_meta_problem(meta)
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint: {problem}")
    return meta


LOADERS = ("content_loader", "style_loader")
_COUNT = (0, 2**63)  # seeds, batch sizes and image counts are non-negative int64s
MAX_SETTING_CHARS = 4096


def _resume_meta_problem(meta):
    """What is wrong with the parts of `meta` a resumed run trusts, or None.

    Types are checked before anything is compared or printed; positions cannot run
    ahead of the iteration count (a huge one would make the sampler skip forever).
    """
    if "seed" in meta and not _is_count(meta["seed"]):
        return "bad 'seed'"
    for name in LOADERS:
        if name not in meta:
            continue
        loader = meta[name]
        if type(loader) is not dict:
            return f"'{name}' is not a mapping"
        consumed = loader.get("batches_consumed")
        if type(consumed) is not int or not 0 <= consumed <= meta["iteration"]:
            return f"bad '{name}' batches_consumed (must be 0..{meta['iteration']})"
        for key in ("seed", "batch_size", "num_images"):
            if key in loader and not _is_count(loader[key]):
                return f"bad '{name}' {key}"
    settings = meta.get("settings", {})
    if type(settings) is not dict:
        return "'settings' is not a mapping"
    for name, value in settings.items():
        if value is not None and type(value) not in (bool, int, float, str) \
                or type(value) is str and len(value) > MAX_SETTING_CHARS:
            return f"setting '{name[:40]}' is a {type(value).__name__}, not a plain value"
    return None


def _is_count(value):
    return type(value) is int and _COUNT[0] <= value < _COUNT[1]


def _read_group(path, arrays, group):
    """The tensors `group/<key>`, checked against the decoder's architecture."""
    prefix = f"{group}/"
    tensors = {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}
    try:
        check_decoder_params(tensors)
    except ValueError as err:
        raise CheckpointError(f"{path}: does not match the decoder architecture"
                              f" ({group}: {err})") from None
    for key, a in tensors.items():
        if a.dtype != np.float32:
            raise CheckpointError(f"{path}: {group}/{key} has dtype {a.dtype}, expected float32")
    return tensors


def load_checkpoint(path):
    """TrainingState from `path`; CheckpointError (one line) if it is missing, damaged or
    made for another architecture (the message names the key and both shapes)."""
    path = os.fspath(path)
    arrays = _read_npz(path)
    meta = _read_meta(path, arrays)
    groups = {group: _read_group(path, arrays, group) for group in GROUPS}
    unknown = sorted(n for n in arrays if n != "meta" and n.split("/")[0] not in GROUPS)
    if unknown:
        raise CheckpointError(f"{path}: unexpected entry '{unknown[0]}'")
    return TrainingState(groups["decoder"], groups["adam_m"], groups["adam_v"],
                         meta["adam_step"], meta["iteration"], meta)
