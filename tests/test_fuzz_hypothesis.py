"""Structure-aware fuzzing of the torch reader with hypothesis.

Files are built from random tensors (storage sizes, offsets, sizes and strides drawn
from small values and from the edges: negative, 2**31, 2**63, 2**64), random storage
dtypes, storages shorter or longer than declared, and BUILD opcodes on the rebuilt
tensors, in both formats. A file is either refused with one line, or every value it
yields is exactly the storage element its offset and strides point at, computed here
in plain Python. CI runs a fixed set of examples (tests/conftest.py); more with
`pytest tests/test_fuzz_hypothesis.py --hypothesis-profile=long`.
"""
import itertools
import signal
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import event, given, settings, strategies as st

from pth_craft import Pickle, legacy_pth, state_dict_pickle, zip_pth
from adain_np.files import BadFileError
from adain_np.pth import load_state_dict

EDGES = [-1, -(1 << 31), 1 << 31, (1 << 48) - 1, 1 << 48, 1 << 63, 1 << 64]
DTYPES = {"FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8",
          "BFloat16Storage": "bfloat16", "LongStorage": "<i8", "ByteStorage": "u1"}
MAX_BYTES = 1 << 20  # the test process must not allocate much: a tighter budget than default
FOLDER = Path(tempfile.mkdtemp(prefix="adain_np_hypothesis_"))

# Mostly small values, so that many files are valid and their values get checked; one
# draw in twelve is an edge.
small = [st.integers(0, 6)] * 8 + [st.integers(0, 40)] * 3
number = st.one_of(*small, st.sampled_from(EDGES))
tensor = st.fixed_dictionaries({
    "numel": st.one_of(*[st.integers(0, 40)] * 11, st.sampled_from(EDGES)),
    "offset": number,
    "dims": st.lists(st.tuples(number, number), max_size=3),
    "storage_type": st.sampled_from(sorted(DTYPES)),
    "slack": st.sampled_from([0, 0, 0, -1, 1]),      # storage bytes vs the declared numel
    "build": st.one_of(st.none(), st.none(), st.none(), st.dictionaries(
        st.sampled_from(["offset", "size", "stride", "storage", "__setstate__"]),
        st.integers(-(1 << 40), 1 << 40), max_size=2)),
})


def marker(index):
    return index % 251 + 1  # exact in every storage dtype, bfloat16 and float16 included


def storage_bytes(storage_type, count):
    values = np.array([marker(i) for i in range(max(count, 0))], dtype=np.float32)
    if DTYPES[storage_type] == "bfloat16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    return values.astype(DTYPES[storage_type]).tobytes()


def build_opcodes(state):
    p = Pickle().empty_dict()
    for name, value in state.items():
        p.str_(name).int_(value).setitem()
    return bytes(p.raw(b"b").out[2:])


def make_file(tensors, fmt, n):
    entries, storages = [], []
    for i, t in enumerate(tensors):
        size = tuple(d[0] for d in t["dims"])
        stride = tuple(d[1] for d in t["dims"])
        after = build_opcodes(t["build"]) if t["build"] is not None else b""
        entries.append((f"t{i}", str(i), t["numel"], t["offset"], size, stride,
                        t["storage_type"], after))
        count = t["numel"] + t["slack"] if 0 <= t["numel"] <= 64 else 8
        storages.append((str(i), t["numel"], storage_bytes(t["storage_type"], count)))
    pickle_bytes = state_dict_pickle(entries)
    if fmt == "zip":
        data = zip_pth(pickle_bytes, {key: raw for key, _, raw in storages})
    else:
        data = legacy_pth(pickle_bytes, [(k, n if 0 <= n < 1 << 63 else 0, raw)
                                         for k, n, raw in storages])
    path = FOLDER / f"case{n % 4}.pth"
    path.write_bytes(data)
    return path


def expected_values(t):
    """The tensor a correct reader yields, element by element, in plain Python."""
    size = [d[0] for d in t["dims"]]
    stride = [d[1] for d in t["dims"]]
    if 0 in size:  # empty, whatever the other sizes (which may be huge: never enumerate them)
        return np.empty(size)
    values = [marker(t["offset"] + sum(i * s for i, s in zip(index, stride)))
              for index in itertools.product(*[range(n) for n in size])]
    return np.array(values, dtype=np.float64).reshape(size)


class Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise Timeout


@settings(max_examples=max(400, settings().max_examples))  # ~5 ms each; more with 'long'
@given(st.lists(tensor, min_size=1, max_size=2), st.sampled_from(["zip", "legacy"]),
       st.integers(0, 3))
def test_random_tensor_files_are_refused_or_read_exactly(tensors, fmt, n):
    path = make_file(tensors, fmt, n)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        arrays = load_state_dict(path, max_bytes=MAX_BYTES)
    except BadFileError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(str(path))
        assert "MemoryError" not in message and "RecursionError" not in message
        event("refused: " + message.split(": ", 1)[1][:25])
        return
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    event("read")
    assert all(t["build"] is None for t in tensors)  # BUILD on a tensor is always refused
    assert list(arrays) == [f"t{i}" for i in range(len(tensors))]
    for i, t in enumerate(tensors):
        expected = expected_values(t)
        assert arrays[f"t{i}"].shape == expected.shape
        assert np.array_equal(arrays[f"t{i}"].astype(np.float64), expected)
