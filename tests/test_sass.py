"""SASS lint of the tiled kernels (sm_90, nvcc + cuobjdump; see adain_np/cuda/sass_lint.py).

The floors and ceilings below are the values of today's kernels (nvcc 13.0, sm_90), rounded
towards failing by a little, so the test catches a change that makes a main loop worse:
    MIN_FFMA_SHARE  lowest FFMA share over the kernel's main loops (K=3 and K=1 paths);
                    measured today: fwd v2 0.15, v3 0.46, v4 0.63; bwd-data v2 0.37, v3 0.54,
                    v4 0.10, v5 0.62, v6 0.45; bwd-weight v2 0.25, v3 0.39, v4 0.68, v5 0.60, v6 0.43, v7 0.21
    MAX_CHAINS      compare -> branch -> global load chains per main loop. The forward
                    loaders have none. The backward loaders have the ReLU mask's chains
                    (relu_masked, 4 per K-slice and more where a thread loads more), counted
                    here so that none is added; new versions must have none (data v5/v6 and weight v8 have none).
    LDS.128         the stepping core (bwd-weight v4-v7) reads shared memory as float4.
Skipped only when nvcc is absent (CI has it); a missing cuobjdump is a failure.
"""
import functools

import pytest

from adain_np.cuda import sass_lint
from adain_np.cuda.versions import TILED_KERNELS

pytestmark = pytest.mark.skipif(sass_lint.find_tool("nvcc") is None,
                                reason="nvcc (CUDA toolkit) not found")

#                             MIN_FFMA_SHARE  MAX_CHAINS  LDS.128 required
LIMITS = {
    "conv2d_forward_v2":         (0.13, 1, False),
    "conv2d_forward_v3":         (0.44, 0, False),
    "conv2d_forward_v4":         (0.60, 0, False),
    "conv2d_backward_data_v2":   (0.35, 12, False),
    "conv2d_backward_data_v3":   (0.52, 12, False),
    "conv2d_backward_data_v4":   (0.08, 48, False),
    "conv2d_backward_data_v5":   (0.60, 0, False),   # v3, branch-free loader: 0.70 / 0.62
    "conv2d_backward_data_v6":   (0.43, 0, False),   # v2, branch-free loader: 0.53 / 0.45
    "conv2d_backward_weight_v2": (0.23, 4, False),
    "conv2d_backward_weight_v3": (0.37, 4, False),
    "conv2d_backward_weight_v4": (0.65, 5, True),
    "conv2d_backward_weight_v5": (0.57, 5, True),
    "conv2d_backward_weight_v6": (0.40, 9, True),
    "conv2d_backward_weight_v7": (0.19, 2, True),
    "conv2d_backward_weight_v8": (0.67, 0, True),   # v4 with the mask as a select: 0.77 / 0.69
    "conv2d_backward_weight_v9": (0.64, 0, True),   # v8 + fused db: 0.78 / 0.76 / 0.69 / 0.67
}
# v9 has a copy of each main loop for the blocks that also sum db (column tile 0).
MAIN_LOOPS = {"conv2d_backward_weight_v9": 4}


@functools.lru_cache(maxsize=None)
def reports():
    return sass_lint.tiled_reports("sm_90")


def test_every_tiled_kernel_has_limits():
    assert set(LIMITS) == set(TILED_KERNELS)


@pytest.mark.parametrize("kernel", sorted(LIMITS))
def test_main_loops(kernel):
    min_share, max_chains, needs_lds128 = LIMITS[kernel]
    loops = reports()[kernel]
    expected = MAIN_LOOPS.get(kernel, 2)
    assert len(loops) == expected, f"{kernel}: expected {expected} main loops (K=3, K=1), found {loops}"
    for loop in loops:
        where = f"{kernel} loop {loop.start:#x}-{loop.end:#x}"
        assert loop.ffma_share >= min_share, f"{where}: FFMA share {loop.ffma_share:.2f}"
        assert loop.chains <= max_chains, f"{where}: {loop.chains} compare-branch-load chains"
        if needs_lds128:
            assert loop.lds128 > 0, f"{where}: no LDS.128"


def test_bias_v3_loads_without_branches():
    # Every loop of conv2d_backward_bias_v3 is free of chains, and one issues the unrolled
    # loads (2 x 4 per thread: dy and y) back to back.
    sass = sass_lint.compile_sass("conv2d_backward.cu")["conv2d_backward_bias_v3"]
    bodies = [sass[a:b + 1] for a, b in sass_lint.loops(sass)]
    assert bodies and all(sass_lint.count_chains(body) == 0 for body in bodies)
    assert max(sum(i.op.startswith("LDG") for i in body) for body in bodies) >= 8


def test_chain_detector_sees_a_branchy_load():
    # A loop whose load waits on a branch decided by a compare, and one without the branch.
    branchy = sass_lint.parse_sass("""Function : k
        /*0000*/                   FSETP.GTU.AND P0, PT, R2, RZ, PT ;
        /*0010*/              @!P0 BRA 0x40 ;
        /*0020*/                   LDG.E R3, desc[UR4][R4.64] ;
        /*0030*/                   FFMA R6, R3, R3, R6 ;
        /*0040*/                   BRA 0x0 ;""")["k"]
    plain = [i for i in branchy if not i.op.startswith("BRA") or not i.pred]
    assert sass_lint.count_chains(branchy) == 1
    assert sass_lint.count_chains(plain) == 0
    assert sass_lint.loops(branchy) == [(0, 4)]
