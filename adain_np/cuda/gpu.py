"""The CuPy launcher and NVRTC; the only module of adain_np that imports cupy.

    gpu_available() -> (bool, reason)   is there a usable CUDA GPU (CuPy, driver, device, NVRTC)?
    CupyLauncher()                      kernels/*.cu compiled by CuPy for the current GPU
    nvrtc_compile(source, filename, options) -> (binary, log)   NVRTC without a GPU

A launcher gives ``kernel(cu_file, name) -> callable(grid, block, args, shared_mem=0)``
and ``xp``, the array module (see kernel_backend.py). ``gpu.cupy`` is the cupy module,
imported on first use so that importing this module stays cheap without a GPU.
"""
import ctypes
import glob
import importlib
import os
import sys

from .source import KernelCompileError, first_compile_error, kernel_source


def __getattr__(name):
    if name == "cupy":
        return importlib.import_module("cupy")
    raise AttributeError(name)


def _preload_pip_nvrtc():
    """Load libnvrtc from the nvidia-cuda-nvrtc wheel if the loader cannot find it by itself.

    CuPy locates the wheel's library through cuda-pathfinder; this is the fallback for a
    setup where that fails (the library sits in site-packages/nvidia/cu13/lib).
    """
    for base in sys.path:
        for lib in sorted(glob.glob(os.path.join(base, "nvidia", "cu*", "lib", "libnvrtc.so*"))):
            if "alt" in os.path.basename(lib):
                continue
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
                return lib
            except OSError:
                continue
    return None


def load_nvrtc():
    """cupy.cuda.nvrtc, checked to work; RuntimeError with the reason if it does not."""
    try:
        from cupy.cuda import nvrtc
    except Exception as err:  # ImportError, or CuPy failing to load its CUDA libraries
        raise RuntimeError(f"CuPy is not importable ({type(err).__name__}: {err}); "
                           "install cupy-cuda13x") from err
    try:
        nvrtc.getVersion()
    except Exception as first:
        if _preload_pip_nvrtc() is None:
            raise RuntimeError(f"NVRTC library not found ({first}); "
                               "install nvidia-cuda-nvrtc==13.0.*") from first
        try:
            nvrtc.getVersion()
        except Exception as err:
            raise RuntimeError(f"NVRTC library not usable ({err})") from err
    return nvrtc


def nvrtc_compile(source, filename, options, binary="cubin"):
    """Compile CUDA C++ with NVRTC (no GPU needed). Returns (cubin or ptx bytes, log text).

    Raises KernelCompileError naming the file and line of the first error.
    """
    nvrtc = load_nvrtc()
    prog = nvrtc.createProgram(source, filename, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(options))
        except nvrtc.NVRTCError as err:
            log = nvrtc.getProgramLog(prog)
            where = first_compile_error(log) or f"{filename}: {err}"
            raise KernelCompileError(f"{where}\n{log}") from None
        log = nvrtc.getProgramLog(prog)
        code = nvrtc.getCUBIN(prog) if binary == "cubin" else nvrtc.getPTX(prog)
        return code, log
    finally:
        nvrtc.destroyProgram(prog)


def gpu_available():
    """(True, device description) or (False, the reason there is no usable GPU)."""
    try:
        cupy = importlib.import_module("cupy")
    except Exception as err:
        return False, f"CuPy is not installed ({type(err).__name__}: {err})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return False, f"no usable CUDA driver ({type(err).__name__}: {err})"
    if count == 0:
        return False, "no CUDA device"
    try:
        load_nvrtc()
    except RuntimeError as err:
        return False, str(err)
    try:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return True, f"{name} (sm_{props['major']}{props['minor']})"
    except Exception as err:
        return False, f"CUDA device not usable ({type(err).__name__}: {err})"


class CupyLauncher:
    """Compiles each kernels/*.cu once with cupy.RawModule (for the current GPU's arch)."""

    name = "gpu"

    def __init__(self, options=("-std=c++17",)):
        self.xp = importlib.import_module("cupy")
        self.options = tuple(options)
        self._modules = {}
        self._functions = {}

    def kernel(self, cu_file, name):
        key = (cu_file, name)
        function = self._functions.get(key)
        if function is None:
            function = self._module(cu_file).get_function(name)
            self._functions[key] = function
        return function

    def _module(self, cu_file):
        module = self._modules.get(cu_file)
        if module is None:
            load_nvrtc()
            cupy = self.xp
            module = cupy.RawModule(code=kernel_source(cu_file), options=self.options)
            try:
                module.compile()
            except cupy.cuda.compiler.CompileException as err:
                log = str(err)
                where = first_compile_error(log) or f"kernels/{cu_file}: compile error"
                raise KernelCompileError(f"{where}\n{log}") from None
            self._modules[cu_file] = module
        return module
