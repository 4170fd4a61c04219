"""Load many candidate weight files in one process and report each outcome as a JSON line.

    python tests/fuzz_driver.py MANIFEST.json

The manifest is a list of {"path", "kind"} ("vgg", "decoder", "auto", or "state_dict" for
pth.load_state_dict with no architecture) and optional "allowed" (float32 values the
file's storages hold). The fuzz tests run this under a memory limit (RLIMIT_AS); each
file also gets a time limit. Outcomes: ok, refused (a BadFileError), escaped (any other
exception: a bug), timeout.
"""
import json
import signal
import sys
import time

import numpy as np

from adain_np import pth
from adain_np.files import BadFileError
from adain_np.param_files import read_weights

SECONDS_PER_FILE = 5


class Timeout(BaseException):  # a BaseException: the reader's except clauses do not catch it
    pass


def _alarm(signum, frame):
    raise Timeout


def load(case):
    if case["kind"] == "state_dict":
        return pth.load_state_dict(case["path"])
    return read_weights(case["path"], case["kind"])[0]


def outcome(case):
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_FILE)
    try:
        arrays = load(case)
        result = {"outcome": "ok", "keys": sorted(arrays)}
        if "allowed" in case:
            allowed = np.asarray(case["allowed"], dtype=np.float32)
            result["only_own_bytes"] = bool(all(
                np.isin(a.astype(np.float32), allowed).all() for a in arrays.values()))
    except BadFileError as err:
        result = {"outcome": "refused", "message": str(err)}
    except Timeout:
        result = {"outcome": "timeout"}
    except Exception as err:  # noqa: BLE001 - exactly what the fuzz tests look for
        result = {"outcome": "escaped", "message": f"{type(err).__name__}: {err}"[:300]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    result["seconds"] = round(time.monotonic() - start, 3)
    result["path"] = case["path"]
    return result


def main():
    signal.signal(signal.SIGALRM, _alarm)
    with open(sys.argv[1]) as file:
        cases = json.load(file)
    for case in cases:
        print(json.dumps(outcome(case)), flush=True)


if __name__ == "__main__":
    main()
