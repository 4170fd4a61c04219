"""Pick the array module (NumPy or CuPy) from the data, so one op serves both.

CuPy is never imported here: a CuPy array can only exist once something imported cupy.
"""
import sys

import numpy as np


def get_array_module(*arrays):
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            return sys.modules["cupy"]
    return np
