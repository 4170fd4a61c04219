"""The adain_np.cuda package around the kernels: where the kernel sources come from, the one
tile table they are instantiated from, and the launch wrapper's guards. No GPU needed."""
import re
import subprocess
import sys

import numpy as np
import pytest

from adain_np.cli import run_cli
from adain_np.cuda import compile_check, source
from adain_np.cuda.kernel_backend import MAX_ELEMENTS, KernelBackend
from adain_np.cuda.emulator_launcher import EmulatorLauncher
from adain_np.cuda.versions import TILED_KERNELS


def test_every_tiled_kernel_is_instantiated_from_the_table_once():
    for name, (cu_file, tile) in TILED_KERNELS.items():
        text = source.kernel_source(cu_file)
        calls = re.findall(rf"^\w+\({name},\s*([\d,\s]+)\)$", text, flags=re.M)
        assert calls == [f"{tile.bm}, {tile.bn}, {tile.bk}, {tile.tm}, {tile.tn}, {tile.min_blocks}"]
        with open(f"{source.KERNELS_DIR}/{cu_file}", encoding="utf-8") as f:
            assert f"({name}," not in f.read(), f"{name}: tile written in the .cu file as well"
    # The emulator's text holds the launched kernel's instantiation only.
    only = source.kernel_source("conv2d_backward.cu", only="conv2d_backward_weight_v5")
    assert re.findall(r"^\w+\((conv2d\w+),", only, flags=re.M) == ["conv2d_backward_weight_v5"]
    assert compile_check.MUST_NOT_SPILL >= set(TILED_KERNELS)


def test_a_missing_kernel_file_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from adain_np import stylize
    monkeypatch.setattr(source, "KERNELS_DIR", str(tmp_path))
    content = tmp_path / "c.png"
    from PIL import Image
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(content)
    code = run_cli(stylize.main, ["--device", "emulator", "--random_weights", "--content",
                                  str(content), "--style", str(content), "--output",
                                  str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "conv2d_forward.cu" in err, err
    assert run_cli(compile_check.main, ["--arch", "sm_90"]) == 2 or pytest.skip("no NVRTC")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err, err


class RecordingLauncher:
    name, xp = "recording", np

    def __init__(self):
        self.calls = []

    def kernel(self, cu_file, name):
        return lambda grid, block, args, shared_mem=0: self.calls.append((name, grid, block))


def test_launch_wrapper_keeps_thread_indices_and_sizes_in_int_range():
    launcher = RecordingLauncher()
    backend = KernelBackend(launcher)
    n = np.int32(1)
    backend._launch("adam.cu", "adam_step", (2**31 // 256,), (256,), (n,))  # last index 2^31 - 1
    assert launcher.calls == [("adam_step", (2**31 // 256,), (256,))]
    with pytest.raises(ValueError, match="32-bit thread index"):
        backend._launch("adam.cu", "adam_step", (2**31 // 256 + 1,), (256,), (n,))
    with pytest.raises(ValueError, match="32-bit"):
        backend._empty((MAX_ELEMENTS + 1,))  # refused before any allocation
    # The largest allowed tensor, rounded up to whole blocks of any size, stays below 2^31.
    assert -(-MAX_ELEMENTS // 1024) * 1024 <= 2**31


def test_launch_wrapper_refuses_a_misaligned_array():
    backend = KernelBackend(RecordingLauncher())
    buf = np.zeros(4 * 17, np.float32)
    offset = (-buf.ctypes.data % 16) // 4 + 1  # one float past a 16-byte boundary
    param = buf[offset:offset + 16]
    assert param.flags.c_contiguous and param.ctypes.data % 16 == 4
    grad, m, v = (np.zeros(16, np.float32) for _ in range(3))
    with pytest.raises(ValueError, match="16-byte aligned"):
        backend.adam_step(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 1)


def test_kernel_backend_and_array_module_do_not_import_cupy():
    code = ("import sys, numpy as np; from adain_np import xp; from adain_np.cuda import kernel_backend;"
            " from adain_np.cuda import make_kernel_backend; make_kernel_backend('emulator');"
            " assert xp.get_array_module(np.zeros(1)) is np;"
            " assert 'cupy' not in sys.modules; assert 'adain_np.cuda.gpu' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_emulator_launcher_builds_one_backward_kernel_with_per_kernel_tiles():
    # Before per-kernel builds, v4-v7's tiles summed over the file passed the 48 KiB limit.
    kernel = EmulatorLauncher().kernel("conv2d_backward.cu", "conv2d_backward_weight_v4")
    kernel.compile()
    assert kernel.max_dynamic_shared_size_bytes == 48 * 1024 - kernel._static_shared
    assert 0 < kernel._static_shared < 20 * 1024


def test_both_backends_provide_the_backend_protocol():
    # Compared by signature, not isinstance: runtime Protocol checks only see names.
    import inspect
    from adain_np.backend import Backend, NumpyBackend
    from adain_np.cuda.kernel_backend import KernelBackend
    methods = [name for name, value in vars(Backend).items()
               if callable(value) and not name.startswith("_")]
    assert len(methods) == 12
    for cls in (NumpyBackend, KernelBackend):
        for name in methods:
            want = list(inspect.signature(getattr(Backend, name)).parameters)
            have = inspect.signature(getattr(cls, name)).parameters
            # The kernel backend may add keyword options (a kernel version), with defaults.
            assert list(have)[:len(want)] == want, f"{cls.__name__}.{name}{list(have)} vs {want}"
            extra = list(have.values())[len(want):]
            assert all(p.default is not inspect.Parameter.empty for p in extra), (cls, name)
        for attribute in ("name", "xp"):
            assert attribute in Backend.__annotations__
