"""Weight files checked against the architecture (params.py) before their data is read.

The readers (pth.py for torch files, npz.py for .npz) show every tensor's name, shape
and dtype first; the checks here refuse a file that is not `vgg` or `decoder` weights
before a byte of tensor data is read, so a file can never make us read or allocate more
than the architecture holds.
"""
import math
import os

import numpy as np

from adain_np import npz, pth
from adain_np.files import BadFileError
from adain_np.params import (DECODER_SHAPES, ENCODER_SHAPES, VGG_SHAPES, check_decoder_params,
                             check_vgg_params)

KINDS = {"vgg": (check_vgg_params, VGG_SHAPES), "decoder": (check_decoder_params, DECODER_SHAPES)}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def max_bytes(kind):
    """The most tensor data a `kind` file may make us read: every tensor as float64, twice
    (slack for storages shared between tensors)."""
    return 2 * 8 * sum(math.prod(shape) for shape in KINDS[kind][1].values())


def guess_kind(specs):
    """'vgg' or 'decoder' from the first layer's weight shape, None if neither fits.
    `specs` maps keys to anything with a .shape (arrays, pth.TensorSpec)."""
    firsts = (("vgg", VGG_SHAPES, "0.weight"), ("decoder", DECODER_SHAPES, "1.weight"))
    for kind, shapes, first in firsts:
        if first in specs and tuple(np.shape(specs[first])) == shapes[first]:
            return kind
    return None


def check_specs(specs, kind):
    """Raise ValueError unless {key: .shape/.dtype} is `kind` weights of a float dtype."""
    check, _ = KINDS[kind]
    check(specs)
    for key, spec in specs.items():
        name = str(spec.dtype)
        if name not in FLOAT_DTYPES:
            raise ValueError(f"key '{key}' has dtype {name}, expected floats")


class _Spec:
    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


def read_weights(path, kind):
    """({key: float32 array} in torch order, kind) from a .npz (by its extension) or a
    torch checkpoint, checked against `kind` ('vgg', 'decoder', or 'auto': guessed from
    the first layer's shape) before any data is read. Raises BadFileError (one line)."""
    path = os.fspath(path)
    if kind not in KINDS and kind != "auto":
        raise ValueError(f"kind must be one of {sorted(KINDS)} or 'auto', not {kind!r}")
    chosen = {}
    limit = max_bytes(kind) if kind in KINDS else max(map(max_bytes, KINDS))

    def accept(specs):
        found = guess_kind(specs) if kind == "auto" else kind
        if found is None:
            raise ValueError("cannot tell whether this is vgg or decoder weights; pass --kind")
        check_specs(specs, found)
        chosen["kind"] = found

    if path.endswith(".npz"):

        def accept_record(name, shape, dtype):
            # Each record on its own (a known key of the right shape and a float dtype)
            # before its data is read; the whole set once all are in.
            kinds = KINDS if kind == "auto" else {kind: KINDS[kind]}
            allowed = [shapes[name] for _, shapes in kinds.values() if name in shapes]
            if not allowed:
                raise ValueError(f"unexpected key '{name}'")
            if tuple(shape) not in allowed:
                raise ValueError(f"key '{name}' has shape {tuple(shape)}, expected {allowed[0]}")
            if dtype.name not in FLOAT_DTYPES:
                raise ValueError(f"key '{name}' has dtype {dtype}, expected floats")

        raw = npz.read_npz(path, accept_record, max_bytes=limit)
        try:
            accept({name: _Spec(a.shape, a.dtype.name) for name, a in raw.items()})
        except ValueError as err:
            raise BadFileError(f"{path}: {err}") from None
    else:
        raw = pth.load_state_dict(path, accept, max_bytes=limit)
    shapes = KINDS[chosen["kind"]][1]
    return {key: raw[key].astype(np.float32) for key in shapes if key in raw}, chosen["kind"]


def load_checked(path, kind):
    """Every tensor of a .pth or .npz file as float32, in torch order, checked against `kind`."""
    return read_weights(path, kind)[0]


def load_params(path, kind):
    """The parameters the networks use: float32, checked; vgg cut to the encoder (vgg[:31])."""
    params = load_checked(path, kind)
    if kind == "vgg":
        params = {key: params[key] for key in ENCODER_SHAPES}
    return params
