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
import zipfile
from dataclasses import dataclass, field

import numpy as np

from adain_np.cli import atomic_path
from adain_np.params import DECODER_SHAPES, check_decoder_params

FORMAT = "adain_np training checkpoint"
VERSION = 1
GROUPS = ("decoder", "adam_m", "adam_v")


class CheckpointError(ValueError):
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
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as file:
            _write_arrays(file, arrays)


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


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    except (ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise CheckpointError(f"{path}: not a training checkpoint (.npz) ({err})") from None


def _read_meta(path, arrays):
    if "meta" not in arrays:
        hint = (" (it looks like decoder weights, not a training checkpoint)"
                if set(arrays) == set(DECODER_SHAPES) else "")
        raise CheckpointError(f"{path}: not a training checkpoint: no 'meta' entry{hint}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        raise CheckpointError(f"{path}: damaged checkpoint: 'meta' is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an adain_np training checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r},"
                              f" this program reads version {VERSION}")
    for name in ("iteration", "adam_step"):
        if not isinstance(meta.get(name), int) or meta[name] < 0:
            raise CheckpointError(f"{path}: damaged checkpoint: bad '{name}' {meta.get(name)!r}")
    return meta


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
