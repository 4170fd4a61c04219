"""Pick the array module (NumPy or CuPy) from the data, so one op serves both.

CuPy is never imported here: a CuPy array can only exist if adain_np.gpu imported it.
"""
import numpy as np


def get_array_module(*arrays):
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            from . import gpu
            return gpu.cupy
    return np
