"""The numbered versions of each kernel, their tiles, and the rules that pick one by shape.

The tile tables below are the one place a tile shape is written: the launch grids
(kernel_backend.py), the kernels' template instantiations (source.tile_instantiations
appends one macro call per tiled version to the .cu text) and compile_check's
must-not-spill list are all derived from them.
"""
import math
from typing import NamedTuple


class Tile(NamedTuple):
    """One tiled kernel version: a BM x BN output tile summed over K-slices of BK, TM x TN
    outputs per thread, __launch_bounds__(threads, min_blocks), instantiated by `macro`."""
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    min_blocks: int  # blocks per SM that __launch_bounds__ asks the register allocator for
    macro: str       # the .cu macro that defines the kernel from these numbers

    @property
    def threads(self):
        return (self.bm // self.tm) * (self.bn // self.tn)


_FWD = "CONV2D_FORWARD_TILED"
_DATA = "CONV2D_BACKWARD_DATA_TILED"
_DATA_SELECT = "CONV2D_BACKWARD_DATA_TILED_SELECT"  # the same, padding + ReLU mask as a select
_WGT = "CONV2D_BACKWARD_WEIGHT_TILED"     # gemm_tile core (pixel divided per load)
_KSTEP = "CONV2D_BACKWARD_WEIGHT_KSTEP"   # gemm_tile_kstep core (pixel stepped, 2-stage smem)
_KSTEP_SELECT = "CONV2D_BACKWARD_WEIGHT_KSTEP_SELECT"  # the same, ReLU mask as a select
KSTEP_BIAS = "CONV2D_BACKWARD_WEIGHT_KSTEP_BIAS"  # the same, db partials fused (extra argument)

# {version: Tile, or None for the naive version 1}
CONV_FORWARD_TILES = {1: None, 2: Tile(16, 16, 16, 1, 1, 4, _FWD), 3: Tile(64, 64, 16, 4, 4, 3, _FWD),
                      4: Tile(128, 128, 8, 8, 8, 2, _FWD)}
# v4: an 8-row tile for Cin <= 8 (conv1_1's backward-data). v5, v6: v3, v2 with the
# branch-free loader (not picked by the rules: unmeasured).
CONV_BACKWARD_DATA_TILES = {1: None, 2: Tile(64, 64, 16, 4, 4, 3, _DATA),
                            3: Tile(128, 128, 8, 8, 8, 2, _DATA), 4: Tile(8, 128, 8, 2, 8, 8, _DATA),
                            5: Tile(128, 128, 8, 8, 8, 2, _DATA_SELECT),
                            6: Tile(64, 64, 16, 4, 4, 3, _DATA_SELECT)}
# v4-v7 use the stepping core: v4 128x128; v5 64x128 for Cout <= 64; v6 64x32 for
# Cin*k*k <= 32 (conv1_1); v7 8x128 for Cout <= 8 (the last decoder conv); v8 v4 with the
# ReLU mask as a select; v9 v8 with db fused (v8, v9 not picked by the rules: unmeasured).
CONV_BACKWARD_WEIGHT_TILES = {1: None, 2: Tile(64, 64, 16, 4, 4, 3, _WGT),
                              3: Tile(128, 128, 8, 8, 8, 2, _WGT),
                              4: Tile(128, 128, 8, 8, 8, 2, _KSTEP),
                              5: Tile(64, 128, 8, 8, 8, 3, _KSTEP),
                              6: Tile(64, 32, 16, 4, 4, 4, _KSTEP),
                              7: Tile(8, 128, 8, 4, 4, 8, _KSTEP),
                              8: Tile(128, 128, 8, 8, 8, 2, _KSTEP_SELECT),
                              9: Tile(128, 128, 8, 8, 8, 2, KSTEP_BIAS)}
CONV_BACKWARD_BIAS_VERSIONS = (1, 2, 3)  # 3: (Cout x N x chunks) grid, not the default yet
INSTANCE_STATS_VERSIONS = (1, 2)

# {kernel name: (cu_file, Tile)} for every tiled version.
TILED_KERNELS = {
    **{f"conv2d_forward_v{v}": ("conv2d_forward.cu", t) for v, t in CONV_FORWARD_TILES.items() if t},
    **{f"conv2d_backward_data_v{v}": ("conv2d_backward.cu", t)
       for v, t in CONV_BACKWARD_DATA_TILES.items() if t},
    **{f"conv2d_backward_weight_v{v}": ("conv2d_backward.cu", t)
       for v, t in CONV_BACKWARD_WEIGHT_TILES.items() if t},
}


def pick_gemm_version(M, cols, small, medium, large, min_blocks=256):
    """The tiled version for an (M x cols) output: the smallest tile that M fills, and the
    128x128 tile only when it still gives min_blocks blocks (about two per SM on an H100).

    An untimed guess: tools/gpu_check.sh times every version on the VGG shapes.
    """
    if small is not None and M <= 16:
        return small
    if M > 64 and math.ceil(M / 128) * math.ceil(cols / 128) >= min_blocks:
        return large
    return medium


# The shape rules below follow the H200 measurements in kernels/PERF.md ("Round 2"):
# the winner per VGG shape at batch 8, 256^2, generalised by the dimension that decided it.
def pick_forward_version(Cout, pixels):
    if Cout <= 8:   # the decoder's last conv (64 -> 3): a tile would be mostly empty
        return 1
    return pick_gemm_version(Cout, pixels, small=2, medium=3, large=4, min_blocks=128)


def pick_backward_data_version(Cin, padded_pixels):
    if Cin <= 8:    # conv1_1's input (3 channels): the 8-row tile
        return 4
    return pick_gemm_version(Cin, padded_pixels, None, 2, 3)


def pick_backward_weight_version(Cout, cols):
    if Cout <= 8:   # 8-row tile
        return 7
    if cols < 64:   # Cin*k*k = 27 for conv1_1: the narrow-column tile
        return 6
    return 4        # pixel index stepped, not divided; double-buffered shared memory


def split_k(tiles, pixels, bk, target_blocks=512, min_chunk=1024):
    """(splits, k_chunk): enough blocks to fill a GPU, each summing at least min_chunk pixels.

    k_chunk is a multiple of bk; the last split may be shorter.
    """
    splits = max(1, min(math.ceil(target_blocks / tiles), pixels // min_chunk))
    k_chunk = math.ceil(math.ceil(pixels / splits) / bk) * bk
    return math.ceil(pixels / k_chunk), k_chunk


# Wave-aware choices (not used by the rules yet: unmeasured). A launch of B blocks on a GPU
# with `slots` = SM count x resident blocks per SM runs in ceil(B / slots) waves; the last,
# partial wave costs as much as a full one. On a GPU the inputs come from CuPy
# (device attributes: MultiProcessorCount; occupancy: blocks per SM of the compiled kernel).
def waves(blocks, sm_count, blocks_per_sm):
    return math.ceil(blocks / (sm_count * blocks_per_sm))


def wave_efficiency(blocks, sm_count, blocks_per_sm):
    """Share of the block slots that do work over the launch (1.0: whole waves only)."""
    return blocks / (waves(blocks, sm_count, blocks_per_sm) * sm_count * blocks_per_sm)


def split_k_by_waves(tiles, pixels, bk, sm_count, blocks_per_sm, min_chunk=1024,
                     tolerance=0.02):
    """(splits, k_chunk) minimising waves x k_chunk (a block's time is its pixel count),
    the fewest splits within `tolerance` of the best (each split adds a partial to sum).

    Same contract as split_k: k_chunk a multiple of bk, every pixel in exactly one split.
    """
    best = None
    candidates = []
    for s in range(1, max(1, pixels // min_chunk) + 1):
        k_chunk = math.ceil(math.ceil(pixels / s) / bk) * bk
        splits = math.ceil(pixels / k_chunk)
        cost = waves(tiles * splits, sm_count, blocks_per_sm) * k_chunk
        candidates.append((cost, splits, k_chunk))
        best = cost if best is None else min(best, cost)
    cost, splits, k_chunk = min((c for c in candidates if c[0] <= best * (1 + tolerance)),
                                key=lambda c: c[1])
    return splits, k_chunk


def pick_tile_by_waves(M, cols, tiles, sm_count):
    """The tile with the lowest modelled time for an (M x cols) output.

    tiles: {version: (bm, bn, blocks_per_sm, speed)}; speed is a block's multiply-adds per
    unit time relative to the others (1.0 when unknown). Time = waves x bm*bn / speed: the
    part of a tile past M or cols is computed and thrown away, and a partial wave is paid
    in full. Ties go to the smallest version number.
    """
    def cost(item):
        version, (bm, bn, blocks_per_sm, speed) = item
        blocks = math.ceil(M / bm) * math.ceil(cols / bn)
        return waves(blocks, sm_count, blocks_per_sm) * bm * bn / speed, version
    return min(tiles.items(), key=cost)[0]
