"""Every kernels/*.cu file compiles with NVRTC for sm_75 and sm_90 (no GPU needed), the
register-tiled kernels do not spill, and a compile error names the file and line."""
import functools
import os
import re

import pytest

from adain_np.cuda import compile_check
from adain_np.cuda.source import CU_FILES, KERNELS_DIR, KernelCompileError, kernel_source

try:
    from adain_np.cuda.gpu import load_nvrtc
    load_nvrtc()
    NVRTC_MISSING = None
except RuntimeError as err:
    NVRTC_MISSING = str(err)

pytestmark = pytest.mark.skipif(NVRTC_MISSING is not None, reason=f"no NVRTC: {NVRTC_MISSING}")

# The kernels KernelBackend launches, per file: a rename or a lost kernel fails here.
EXPECTED_KERNELS = {
    "conv2d_forward.cu": {f"conv2d_forward_v{v}" for v in (1, 2, 3, 4)},
    "conv2d_backward.cu": {f"conv2d_backward_data_v{v}" for v in range(1, 7)}
                          | {f"conv2d_backward_weight_v{v}" for v in range(1, 10)}
                          | {"conv2d_backward_fold_reflect", "sum_splits",
                             "conv2d_backward_bias_v1", "conv2d_backward_bias_v2",
                             "conv2d_backward_bias_v3"},
    "instance_stats.cu": {"instance_mean_std_v1", "instance_mean_std_v2",
                          "instance_mean_std_backward"},
    "adain.cu": {"adain_forward"},
    "pool_upsample.cu": {"maxpool2d_forward", "maxpool2d_backward", "upsample_nearest2d_forward",
                         "upsample_nearest2d_backward"},
    "adam.cu": {"adam_step"},
}


@functools.lru_cache(maxsize=None)
def compiled(cu_file, arch):
    return compile_check.compile_file(cu_file, arch)


def test_every_file_is_listed():
    assert set(EXPECTED_KERNELS) == set(CU_FILES)


@pytest.mark.parametrize("arch", compile_check.ARCHS)
@pytest.mark.parametrize("cu_file", CU_FILES)
def test_compiles(cu_file, arch):
    reports = compiled(cu_file, arch)
    assert {r.kernel for r in reports} == EXPECTED_KERNELS[cu_file]
    assert all(r.arch == arch and r.registers > 0 for r in reports)


@pytest.mark.parametrize("arch", compile_check.ARCHS)
def test_must_not_spill_kernels_do_not_spill(arch):
    reports = [r for f in CU_FILES for r in compiled(f, arch)]
    names = {r.kernel for r in reports}
    assert compile_check.MUST_NOT_SPILL <= names, "a must-not-spill kernel is missing"
    bad = compile_check.spilling(reports)
    assert not bad, "\n" + compile_check.format_table(bad)


# Round-2 tiled kernels (register tiles): a spill is a bug here too. Checked here as well
# as through compile_check.MUST_NOT_SPILL, in case that list lags behind the kernels.
ROUND2_MUST_NOT_SPILL = {"conv2d_backward_data_v4", "conv2d_backward_weight_v4",
                         "conv2d_backward_weight_v5", "conv2d_backward_weight_v6",
                         "conv2d_backward_weight_v7"}


@pytest.mark.parametrize("arch", compile_check.ARCHS)
def test_round2_kernels_do_not_spill(arch):
    reports = {r.kernel: r for r in compiled("conv2d_backward.cu", arch)}
    assert ROUND2_MUST_NOT_SPILL <= set(reports)
    bad = [reports[k] for k in sorted(ROUND2_MUST_NOT_SPILL)
           if reports[k].spill_stores or reports[k].spill_loads or reports[k].stack_bytes]
    assert not bad, "\n" + compile_check.format_table(bad)


def _line_of(cu_file, text):
    with open(os.path.join(KERNELS_DIR, cu_file), encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} not in {cu_file}")


def test_compile_error_names_file_and_line():
    source = kernel_source("adain.cu").replace("const float v = c[idx];",
                                               "const float v = c[idx] + no_such_name;")
    with pytest.raises(KernelCompileError) as info:
        compile_check.compile_file("adain.cu", "sm_90", source=source)
    line = _line_of("adain.cu", "const float v = c[idx];")
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"kernels/adain.cu:{line}: "), first
    assert "no_such_name" in first


def test_compile_error_in_an_included_file_names_that_file():
    original = "return i < 0 ? -i"
    source = kernel_source("conv2d_forward.cu").replace(original, "return i < 0 ? -undefined_i")
    with pytest.raises(KernelCompileError) as info:
        compile_check.compile_file("conv2d_forward.cu", "sm_90", source=source)
    line = _line_of("conv_gemm_tile.cuh", original)
    assert str(info.value).startswith(f"kernels/conv_gemm_tile.cuh:{line}: ")


def test_includes_are_inlined_with_line_markers():
    # The .cuh text is inlined between markers that restore the includer's file and line.
    source = kernel_source("conv2d_forward.cu")
    assert '#include "' not in source
    include_line = _line_of("conv2d_forward.cu", '#include "conv_gemm_tile.cuh"')
    assert re.findall(r'#line (\d+) "kernels/conv2d_forward.cu"', source) == [
        "1", str(include_line + 1)]
    assert '#line 1 "kernels/conv_gemm_tile.cuh"' in source


def test_cli_prints_the_table(capsys):
    code = compile_check.main(["--arch", "sm_90", "--file", "adam.cu"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"adam\.cu\s+adam_step\s+sm_90\s+\d+\s+0/0", out), out


def test_cli_rejects_a_bad_arch(capsys):
    from adain_np.cli import run_cli
    assert run_cli(compile_check.main, ["--arch", "ampere"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_spills_are_detected_in_a_ptxas_report():
    # The format ptxas -v prints (the real reports above have no spills to show this).
    log = ("ptxas info    : Compiling entry function 'conv2d_forward_v4' for 'sm_90'\n"
           "ptxas info    : Function properties for conv2d_forward_v4\n"
           "ptxas         .     64 bytes stack frame, 124 bytes spill stores, 120 bytes spill loads\n"
           "ptxas info    : Used 128 registers, used 1 barriers, 8448 bytes smem\n"
           "ptxas info    : Compiling entry function 'conv2d_forward_v1' for 'sm_90'\n"
           "ptxas info    : Function properties for conv2d_forward_v1\n"
           "ptxas         .     0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
           "ptxas info    : Used 32 registers, used 0 barriers\x00")
    reports = compile_check.parse_ptxas_log(log, "conv2d_forward.cu")
    assert [(r.kernel, r.registers, r.spill_stores, r.spill_loads, r.stack_bytes, r.smem_bytes)
            for r in reports] == [("conv2d_forward_v4", 128, 124, 120, 64, 8448),
                                  ("conv2d_forward_v1", 32, 8, 8, 0, 0)]
    assert [r.kernel for r in compile_check.spilling(reports)] == ["conv2d_forward_v4"]
