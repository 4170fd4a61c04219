"""The CUDA kernels of kernels/*.cu behind the Backend interface (backend.py), on a GPU
through CuPy or on the CPU through the emulator.

    make_kernel_backend(device)   KernelBackend on "gpu" or "emulator"; backend.select_backend calls it

    source.py             kernels/ lookup, #include inlining, generated tile instantiations, compile logs
    versions.py           the version tables (tile shapes written once) and the pick rules
    kernel_backend.py     KernelBackend: the launch wrappers (checks, grids, scalar types)
    gpu.py                CupyLauncher, NVRTC, gpu_available: the only module that imports CuPy
    emulator_launcher.py  EmulatorLauncher; emulator.py and emulator_rt/ run CUDA C on the CPU
    compile_check.py      NVRTC registers/spills table (python -m adain_np.compile_check)
    sass_lint.py          nvcc + nvdisasm checks of the tiled kernels' machine code

Nothing here is imported by `import adain_np`; CuPy only by gpu.py, on first use.
"""


def make_kernel_backend(device):
    """KernelBackend on "gpu" (CuPy; raises when no GPU is usable) or "emulator" (the CPU).

    Raises RuntimeError (one line) when the device or the kernel sources are unusable.
    """
    from .kernel_backend import KernelBackend
    from .source import check_sources
    if device not in ("gpu", "emulator"):
        raise ValueError(f"device must be 'gpu' or 'emulator', got {device!r}")
    check_sources()
    if device == "gpu":
        from .gpu import CupyLauncher, gpu_available
        ok, reason = gpu_available()
        if not ok:
            raise RuntimeError(f"no usable GPU: {reason}")
        return KernelBackend(CupyLauncher())
    from .emulator_launcher import EmulatorLauncher
    return KernelBackend(EmulatorLauncher())
