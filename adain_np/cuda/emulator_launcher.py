"""The emulator launcher: kernels/*.cu compiled for the CPU by emulator.RawKernel; arrays are NumPy."""
import numpy as np

from . import emulator
from .source import kernel_source


class EmulatorLauncher:
    """``kernel(cu_file, name)`` builds that one kernel (with only its own tile instantiation,
    so the 48 KiB static shared-memory check counts the launched kernel's tiles)."""

    name = "emulator"
    xp = np

    def __init__(self, options=(), sanitize=None):
        # sanitize=True: AddressSanitizer builds, each launch on exactly sized copies in a
        # subprocess, so an out-of-bounds access raises (slow; None follows ADAIN_NP_EMU_ASAN).
        self.options = tuple(options)
        self.sanitize = sanitize
        self._kernels = {}

    def kernel(self, cu_file, name):
        key = (cu_file, name)
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = emulator.RawKernel(kernel_source(cu_file, only=name), name,
                                        options=self.options, filename=f"kernels/{cu_file}",
                                        sanitize=self.sanitize)
            self._kernels[key] = kernel
        return kernel
