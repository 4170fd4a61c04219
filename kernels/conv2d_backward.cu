// conv2d_backward.cu: gradients of y = [ReLU](conv2d(ReflectionPad2d(1)(x), w) + b)
// Run one version: pytest tests/test_kernels.py -k 'conv_backward_weight and 4' (or _data);
// time it per VGG shape against cuDNN: python tools/bench_gpu.py --only convs --version bwd_weight=4
// (bwd_data=V for backward-data; the bias kernels are timed inside every bwd_weight row).
// (K = 3) or y = [ReLU](conv2d(x, w) + b) (K = 1), stride 1, fp32.
//
// Layouts (C-contiguous, torch layouts):
//   x, dx (N, Cin, H, W)   w, dw (Cout, Cin, K, K)   b, db (Cout,)   y, dy (N, Cout, H, W)
// dy is the gradient of y, the layer's (post-ReLU when relu != 0) output. With relu != 0 the
// kernels apply the ReLU mask on the fly: dz = (y <= 0) ? 0 : dy, as torch's threshold_backward.
// With relu == 0, y is not read (pass any valid pointer, e.g. dy).
//
// Backward-data: dx = fold(dxp), where dxp (N, Cin, H+K-1, W+K-1) is the gradient of the
// padded input, the transposed conv dxp[n,ci,p,q] = sum_{co,kh,kw} dz[n,co,p-kh,q-kw] w[co,ci,kh,kw],
// and fold adds each padded border pixel onto the pixel it mirrors (K = 3 only).
//   conv2d_backward_data_v1   naive: one thread per dx element, gathers the folded terms
//                             directly. (dy, y, w, dx, N, Cin, H, W, Cout, ksize, relu)
//                             block 256, grid ceil(N*Cin*H*W / 256).
//   conv2d_backward_data_v2   implicit GEMM dxp(Cin, N*Hp*Wp) = W^T(Cin, Cout*K*K) x col(dz),
//                             64x64 tile, 4x4 per thread, K-slices of 16; writes dxp.
//                             (dy, y, w, dxp, N, Cin, H, W, Cout, ksize, relu)
//                             block 256, grid (ceil(N*Hp*Wp / 64), ceil(Cin / 64)).
//   conv2d_backward_data_v3   the same with a 128x128 tile, 8x8 per thread, K-slices of 8.
//                             block 256, grid (ceil(N*Hp*Wp / 128), ceil(Cin / 128)).
//   conv2d_backward_data_v4   the same GEMM with an 8x128 tile, 2x8 per thread, K-slices of 8,
//                             for Cin <= 8 (conv1_1, Cin = 3), where 64-row tiles are 95% empty.
//                             block 64, grid (ceil(N*Hp*Wp / 128), ceil(Cin / 8)).
//   conv2d_backward_data_v5   v3 (128x128) with the B loader branch-free: dz loaded at a
//                             clamped address, padding and ReLU mask applied as one select.
//   conv2d_backward_data_v6   v2 (64x64) with the same branch-free B loader.
//   conv2d_backward_fold_reflect  dx from dxp for K = 3 (dxp, dx, NC, H, W);
//                             block 256, grid ceil(NC*H*W / 256). For K = 1, dxp is dx.
//
// Backward-weight: dw(Cout, Cin*K*K) = dz(Cout, N*H*W) x im2col(x)^T, a reduction over N*H*W.
//   conv2d_backward_weight_v1 naive: one thread per dw element, loops over N*H*W.
//                             (dy, y, x, dw, N, Cin, H, W, Cout, ksize, relu)
//                             block 256, grid ceil(Cout*Cin*K*K / 256).
//   conv2d_backward_weight_v2 implicit GEMM, 64x64 tile, 4x4 per thread, split-K: block z sums
//                             pixels [z*k_chunk, (z+1)*k_chunk) and writes its own partial
//                             dw into part[z]; sum_splits adds the partials (deterministic,
//                             no atomics). (dy, y, x, part, N, Cin, H, W, Cout, ksize, relu,
//                             k_chunk), k_chunk a multiple of 16.
//                             block 256, grid (ceil(Cin*K*K / 64), ceil(Cout / 64), splits).
//   conv2d_backward_weight_v3 the same with a 128x128 tile, 8x8 per thread, k_chunk a
//                             multiple of 8. grid (ceil(Cin*K*K / 128), ceil(Cout / 128), splits).
//   conv2d_backward_weight_v4 the same split-K GEMM on gemm_tile_kstep (conv_gemm_tile.cuh):
//                             each thread decodes its pixel once and steps it by BK (no
//                             division in the K loop), double-buffered shared memory, float4
//                             shared-memory reads. 128x128 tile, 8x8 per thread, BK 8,
//                             block 256, grid (ceil(Cin*K*K / 128), ceil(Cout / 128), splits).
//   conv2d_backward_weight_v5 v4's core, 64x128 tile (Cout <= 64), 8x8 per thread, block 128.
//   conv2d_backward_weight_v6 v4's core, 64x32 tile (Cin*K*K <= 32, conv1_1), 4x4, BK 16, block 128.
//   conv2d_backward_weight_v7 v4's core, 8x128 tile (Cout <= 8, the last decoder conv), 4x4,
//                             block 64. v4-v7 take the same arguments as v2/v3.
//   conv2d_backward_weight_v8 v4 with both loads of the ReLU mask made unconditionally and
//                             the mask a select (relu_select): no compare-branch-load chain.
//   conv2d_backward_weight_v9 v8 with the bias gradient fused: the blocks of column tile 0
//                             also write db partials part_db[z][co] (extra last argument,
//                             (splits, Cout)); sum_splits adds them. No bias kernel runs.
//   sum_splits                out[i] = sum_s part[s*count + i]  (part, out, splits, count).
// The tiled versions use the GEMM cores of conv_gemm_tile.cuh with __launch_bounds__ set per
// tile (64x64: 3 blocks/SM, 128x128: 2, ...), without spills (compile_check).
// Backward-bias: db[co] = sum over n, h, w of dz.
//   conv2d_backward_bias_v1   one thread per channel. (dy, y, db, N, Cout, HW, relu)
//   conv2d_backward_bias_v2   one block per channel, strided sums merged with warp shuffles.
//                             (dy, y, db, N, Cout, HW, relu), block 256, grid Cout.
//   conv2d_backward_bias_v3   block (co, n, c) sums pixels [c*chunk, (c+1)*chunk) of plane
//                             (n, co) into part[(n*chunks + c)*Cout + co]; sum_splits adds the
//                             N*chunks partials. Four independent loads per step, clamped
//                             addresses and the ReLU mask as a select: no branch before a load.
//                             (dy, y, part, N, Cout, HW, relu, chunk), block 256,
//                             grid (Cout, N, ceil(HW / chunk)).

#include "conv_gemm_tile.cuh"

__device__ __forceinline__ float relu_masked(const float* dy, const float* y, int i, int relu)
{
    return (relu && y[i] <= 0.f) ? 0.f : dy[i];
}

// The same value with both loads made unconditionally (y is always a valid pointer, dy
// itself when relu == 0) and the mask applied as a select: no branch ahead of the loads.
__device__ __forceinline__ float relu_select(const float* dy, const float* y, int i, int relu)
{
    const float d = dy[i];
    const float v = y[i];
    return (relu && v <= 0.f) ? 0.f : d;
}

// ---------------------------------------------------------------------------------------
// Backward-data

extern "C" __global__ void conv2d_backward_data_v1(const float* __restrict__ dy,
                                                   const float* __restrict__ y,
                                                   const float* __restrict__ w,
                                                   float* __restrict__ dx,
                                                   int N, int Cin, int H, int W, int Cout,
                                                   int ksize, int relu)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int HW = H * W;
    if (idx >= N * Cin * HW) return;
    const int iw = idx % W;
    const int ih = (idx / W) % H;
    const int ci = (idx / HW) % Cin;
    const int n = idx / (HW * Cin);
    const int pad = ksize / 2;

    // Padded rows (columns) that show input row ih (column iw): its own, plus the mirrored
    // border row when ih is the row that ReflectionPad2d(1) copies outward.
    int rows[3], cols[3];
    int nrows = 0, ncols = 0;
    rows[nrows++] = ih + pad;
    cols[ncols++] = iw + pad;
    if (pad) {
        if (ih == 1) rows[nrows++] = 0;
        if (ih == H - 2) rows[nrows++] = H + 1;
        if (iw == 1) cols[ncols++] = 0;
        if (iw == W - 2) cols[ncols++] = W + 1;
    }

    float acc = 0.f;
    for (int r = 0; r < nrows; ++r) {
        for (int c = 0; c < ncols; ++c) {
            for (int co = 0; co < Cout; ++co) {
                const int plane = (n * Cout + co) * HW;
                const float* wk = w + (size_t)(co * Cin + ci) * ksize * ksize;
                for (int kh = 0; kh < ksize; ++kh) {
                    const int oh = rows[r] - kh;
                    if (oh < 0 || oh >= H) continue;
                    for (int kw = 0; kw < ksize; ++kw) {
                        const int ow = cols[c] - kw;
                        if (ow < 0 || ow >= W) continue;
                        acc = fmaf(relu_masked(dy, y, plane + oh * W + ow, relu),
                                   wk[kh * ksize + kw], acc);
                    }
                }
            }
        }
    }
    dx[idx] = acc;
}

template <int KSIZE, bool SELECT_MASK>
struct ConvBackwardDataLoader {
    // A = w transposed to (Cin, Cout*KK), k ordered (co, kh, kw).
    // B = col(dz), (Cout*KK, N*Hp*Wp): B[(co,kh,kw), (n,p,q)] = dz[n, co, p-kh, q-kw], 0 outside.
    // Rows and columns past the end are clamped (their results are never written).
    static constexpr int KK = KSIZE * KSIZE;
    const float* dy;
    const float* y;
    const float* w;
    int Cin, H, W, Cout, Ncols, relu;

    struct ACtx { int ci; };
    struct BCtx { int img, p, q; };  // offset of dy[n], padded position

    __device__ __forceinline__ ACtx a_ctx(int m) const { return ACtx{min(m, Cin - 1)}; }
    __device__ __forceinline__ float a(const ACtx& c, int k) const
    {
        const int co = k / KK;
        const int r = k - co * KK;
        return w[(co * Cin + c.ci) * KK + r];
    }
    __device__ __forceinline__ BCtx b_ctx(int col) const
    {
        const int Hp = H + KSIZE - 1;
        const int Wp = W + KSIZE - 1;
        const int cc = min(col, Ncols - 1);
        const int n = cc / (Hp * Wp);
        const int rem = cc - n * Hp * Wp;
        const int p = rem / Wp;
        return BCtx{n * Cout * H * W, p, rem - p * Wp};
    }
    __device__ __forceinline__ float b(const BCtx& c, int k) const
    {
        const int co = k / KK;
        const int r = k - co * KK;
        const int kh = r / KSIZE;
        const int kw = r - kh * KSIZE;
        const int oh = c.p - kh;
        const int ow = c.q - kw;
        if (SELECT_MASK) {
            // Both loads at a clamped (always valid) address, then one select for the
            // padding and the ReLU mask: no branch ahead of the loads.
            const bool inside = oh >= 0 && oh < H && ow >= 0 && ow < W;
            const int i = c.img + (co * H + min(max(oh, 0), H - 1)) * W + min(max(ow, 0), W - 1);
            const float d = dy[i];
            const float v = y[i];
            const bool keep = inside & ((relu == 0) | !(v <= 0.f));  // NaN in y passes dy
            return keep ? d : 0.f;
        }
        if (oh < 0 || oh >= H || ow < 0 || ow >= W) return 0.f;
        return relu_masked(dy, y, c.img + (co * H + oh) * W + ow, relu);
    }
};

template <int BM, int BN, int BK, int TM, int TN, int KSIZE, bool SELECT_MASK>
__device__ __forceinline__ void conv2d_backward_data_tile(float* As, float* Bs,
                                                          const float* dy, const float* y,
                                                          const float* w, float* dxp,
                                                          int N, int Cin, int H, int W,
                                                          int Cout, int relu)
{
    constexpr int TX = BN / TN;
    constexpr int TY = BM / TM;
    const int HWp = (H + KSIZE - 1) * (W + KSIZE - 1);
    const int Ncols = N * HWp;
    const ConvBackwardDataLoader<KSIZE, SELECT_MASK> ld{dy, y, w, Cin, H, W, Cout, Ncols, relu};
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;

    float acc[TM][TN];
    gemm_tile<BM, BN, BK, TM, TN, false, ConvBackwardDataLoader<KSIZE, SELECT_MASK>, SELECT_MASK>(
        ld, As, Bs, m0, n0, 0, Cout * KSIZE * KSIZE, acc);

    const int tx = threadIdx.x % TX;
    const int ty = threadIdx.x / TX;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int col = n0 + tx + j * TX;
        if (col >= Ncols) continue;
        const int n = col / HWp;
        const int q = col - n * HWp;
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int ci = m0 + ty + i * TY;
            if (ci < Cin) dxp[(size_t)(n * Cin + ci) * HWp + q] = acc[i][j];
        }
    }
}

#define CONV2D_BACKWARD_DATA_TILED_IMPL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, SELECT)   \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)      \
    NAME(const float* __restrict__ dy,                                                   \
         const float* __restrict__ y,                                                    \
         const float* __restrict__ w,                                                    \
         float* __restrict__ dxp,                                                        \
         int N, int Cin, int H, int W, int Cout,                                         \
         int ksize, int relu)                                                            \
    {                                                                                    \
        __shared__ __align__(16) float As[BK * (BM + GEMM_PAD)];                                       \
        __shared__ __align__(16) float Bs[BK * (BN + GEMM_PAD)];                                       \
        if (ksize == 3)                                                                  \
            conv2d_backward_data_tile<BM, BN, BK, TM, TN, 3, SELECT>(As, Bs, dy, y, w,   \
                                                     dxp, N, Cin, H, W, Cout, relu);     \
        else                                                                             \
            conv2d_backward_data_tile<BM, BN, BK, TM, TN, 1, SELECT>(As, Bs, dy, y, w,   \
                                                     dxp, N, Cin, H, W, Cout, relu);     \
    }
#define CONV2D_BACKWARD_DATA_TILED(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS) \
    CONV2D_BACKWARD_DATA_TILED_IMPL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, false)
// v5, v6: v3, v2 with the padding and ReLU mask as one select after unconditional loads.
#define CONV2D_BACKWARD_DATA_TILED_SELECT(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS) \
    CONV2D_BACKWARD_DATA_TILED_IMPL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, true)

// CONV2D_BACKWARD_DATA_TILED(name, BM, BN, BK, TM, TN, MIN_BLOCKS) is instantiated per version from
// adain_np/cuda/versions.py by source.kernel_source (one tile table for grids and kernels).

extern "C" __global__ void conv2d_backward_fold_reflect(const float* __restrict__ dxp,
                                                        float* __restrict__ dx,
                                                        int NC, int H, int W)
{
    // dxp (NC, H+2, W+2) -> dx (NC, H, W): padded row 0 mirrors row 1, padded row H+1
    // mirrors row H-2 (columns likewise), so those rows add onto rows 1 and H-2.
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= NC * H * W) return;
    const int j = idx % W;
    const int i = (idx / W) % H;
    const int nc = idx / (H * W);
    const int Wp = W + 2;
    const float* plane = dxp + (size_t)nc * (H + 2) * Wp;

    int rows[3], cols[3];
    int nrows = 0, ncols = 0;
    rows[nrows++] = i + 1;
    if (i == 1) rows[nrows++] = 0;
    if (i == H - 2) rows[nrows++] = H + 1;
    cols[ncols++] = j + 1;
    if (j == 1) cols[ncols++] = 0;
    if (j == W - 2) cols[ncols++] = W + 1;

    float acc = 0.f;
    for (int r = 0; r < nrows; ++r)
        for (int c = 0; c < ncols; ++c) acc += plane[rows[r] * Wp + cols[c]];
    dx[idx] = acc;
}

// ---------------------------------------------------------------------------------------
// Backward-weight

extern "C" __global__ void conv2d_backward_weight_v1(const float* __restrict__ dy,
                                                     const float* __restrict__ y,
                                                     const float* __restrict__ x,
                                                     float* __restrict__ dw,
                                                     int N, int Cin, int H, int W, int Cout,
                                                     int ksize, int relu)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int KK = ksize * ksize;
    if (idx >= Cout * Cin * KK) return;
    const int kw = idx % ksize;
    const int kh = (idx / ksize) % ksize;
    const int ci = (idx / KK) % Cin;
    const int co = idx / (KK * Cin);
    const int pad = ksize / 2;
    const int HW = H * W;

    float acc = 0.f;
    for (int n = 0; n < N; ++n) {
        const int dplane = (n * Cout + co) * HW;
        const float* xplane = x + (size_t)(n * Cin + ci) * HW;
        for (int oh = 0; oh < H; ++oh) {
            const int ih = pad ? reflect_index(oh + kh - pad, H) : oh;
            for (int ow = 0; ow < W; ++ow) {
                const int iw = pad ? reflect_index(ow + kw - pad, W) : ow;
                acc = fmaf(relu_masked(dy, y, dplane + oh * W + ow, relu), xplane[ih * W + iw],
                           acc);
            }
        }
    }
    dw[idx] = acc;
}

template <int KSIZE>
struct ConvBackwardWeightLoader {
    // A = dz viewed as (Cout, N*H*W), k = pixel (n, oh, ow).
    // B = im2col(x)^T, (N*H*W, Cin*KK): B[pixel, (ci,kh,kw)] = x_padded[n, ci, oh+kh, ow+kw].
    // Rows and columns past the end are clamped (their results are never written).
    static constexpr int KK = KSIZE * KSIZE;
    static constexpr int PAD = KSIZE / 2;
    const float* dy;
    const float* y;
    const float* x;
    int Cin, H, W, Cout, relu;

    struct ACtx { int co; };
    struct BCtx { int ci, kh, kw; };

    __device__ __forceinline__ ACtx a_ctx(int m) const { return ACtx{min(m, Cout - 1)}; }
    __device__ __forceinline__ float a(const ACtx& c, int k) const
    {
        const int HW = H * W;
        const int n = k / HW;
        const int q = k - n * HW;
        return relu_masked(dy, y, (n * Cout + c.co) * HW + q, relu);
    }
    __device__ __forceinline__ BCtx b_ctx(int col) const
    {
        const int cc = min(col, Cin * KK - 1);
        const int ci = cc / KK;
        const int r = cc - ci * KK;
        const int kh = r / KSIZE;
        return BCtx{ci, kh, r - kh * KSIZE};
    }
    __device__ __forceinline__ float b(const BCtx& c, int k) const
    {
        const int HW = H * W;
        const int n = k / HW;
        const int q = k - n * HW;
        const int oh = q / W;
        const int ow = q - oh * W;
        const int ih = PAD ? reflect_index(oh + c.kh - PAD, H) : oh;
        const int iw = PAD ? reflect_index(ow + c.kw - PAD, W) : ow;
        return x[(n * Cin + c.ci) * HW + ih * W + iw];
    }
};

template <int BM, int BN, int BK, int TM, int TN, int KSIZE>
__device__ __forceinline__ void conv2d_backward_weight_tile(float* As, float* Bs,
                                                            const float* dy, const float* y,
                                                            const float* x, float* part,
                                                            int N, int Cin, int H, int W,
                                                            int Cout, int relu, int k_chunk)
{
    constexpr int TX = BN / TN;
    constexpr int TY = BM / TM;
    const int Ncols = Cin * KSIZE * KSIZE;
    const int Kdim = N * H * W;
    const ConvBackwardWeightLoader<KSIZE> ld{dy, y, x, Cin, H, W, Cout, relu};
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(Kdim, k_begin + k_chunk);

    float acc[TM][TN];
    gemm_tile<BM, BN, BK, TM, TN, true>(ld, As, Bs, m0, n0, k_begin, k_end, acc);

    float* out = part + (size_t)blockIdx.z * Cout * Ncols;
    const int tx = threadIdx.x % TX;
    const int ty = threadIdx.x / TX;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int co = m0 + ty + i * TY;
        if (co >= Cout) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int col = n0 + tx + j * TX;
            if (col < Ncols) out[(size_t)co * Ncols + col] = acc[i][j];
        }
    }
}

#define CONV2D_BACKWARD_WEIGHT_TILED(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS)           \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)  \
    NAME(const float* __restrict__ dy,                                               \
         const float* __restrict__ y,                                                \
         const float* __restrict__ x,                                                \
         float* __restrict__ part,                                                   \
         int N, int Cin, int H, int W, int Cout,                                     \
         int ksize, int relu, int k_chunk)                                           \
    {                                                                                \
        __shared__ __align__(16) float As[BK * (BM + GEMM_PAD)];                                   \
        __shared__ __align__(16) float Bs[BK * (BN + GEMM_PAD)];                                   \
        if (ksize == 3)                                                              \
            conv2d_backward_weight_tile<BM, BN, BK, TM, TN, 3>(                      \
                As, Bs, dy, y, x, part, N, Cin, H, W, Cout, relu, k_chunk);          \
        else                                                                         \
            conv2d_backward_weight_tile<BM, BN, BK, TM, TN, 1>(                      \
                As, Bs, dy, y, x, part, N, Cin, H, W, Cout, relu, k_chunk);          \
    }

// CONV2D_BACKWARD_WEIGHT_TILED(name, BM, BN, BK, TM, TN, MIN_BLOCKS) is instantiated per version from
// adain_np/cuda/versions.py by source.kernel_source (one tile table for grids and kernels).

// v4-v7: the stepping-position core (gemm_tile_kstep). A thread's pixel is decoded once,
// then advanced by BK per slice; all of its loads in a slice share that pixel.
template <int KSIZE, int BK, bool SELECT_MASK>
struct ConvBackwardWeightStepLoader {
    // Same matrices as ConvBackwardWeightLoader: A = dz (Cout, N*H*W), B = im2col(x)^T.
    static constexpr int KK = KSIZE * KSIZE;
    static constexpr int PAD = KSIZE / 2;
    const float* dy;
    const float* y;
    const float* x;
    int Cin, H, W, Cout, relu;

    struct Pos { int dz_img, x_img, oh, ow; };  // offsets of dz[n], x[n]; output pixel
    struct ARow { int co_off; };                // co * H * W
    struct BCol { int ci_off, kh, kw; };        // ci * H * W and the tap

    __device__ __forceinline__ Pos pos(int k) const
    {
        const int HW = H * W;
        const int n = k / HW;
        const int q = k - n * HW;
        const int oh = q / W;
        return Pos{n * Cout * HW, n * Cin * HW, oh, q - oh * W};
    }
    __device__ __forceinline__ void step(Pos& p) const
    {
        // While-loops: W or H may be smaller than BK (tiny images); one pass otherwise.
        p.ow += BK;
        while (p.ow >= W) {
            p.ow -= W;
            if (++p.oh == H) {
                p.oh = 0;
                p.dz_img += Cout * H * W;
                p.x_img += Cin * H * W;
            }
        }
    }
    __device__ __forceinline__ ARow a_row(int m) const { return ARow{min(m, Cout - 1) * H * W}; }
    __device__ __forceinline__ float a(const ARow& r, const Pos& p) const
    {
        const int i = p.dz_img + r.co_off + p.oh * W + p.ow;
        return SELECT_MASK ? relu_select(dy, y, i, relu) : relu_masked(dy, y, i, relu);
    }
    __device__ __forceinline__ BCol b_col(int col) const
    {
        const int cc = min(col, Cin * KK - 1);
        const int ci = cc / KK;
        const int r = cc - ci * KK;
        const int kh = r / KSIZE;
        return BCol{ci * H * W, kh, r - kh * KSIZE};
    }
    __device__ __forceinline__ float b(const BCol& c, const Pos& p) const
    {
        const int ih = PAD ? reflect_index(p.oh + c.kh - PAD, H) : p.oh;
        const int iw = PAD ? reflect_index(p.ow + c.kw - PAD, W) : p.ow;
        return x[p.x_img + c.ci_off + ih * W + iw];
    }
};

template <int BM, int BN, int BK, int TM, int TN, int KSIZE, bool SELECT_MASK, bool BIAS = false>
__device__ __forceinline__ void conv2d_backward_weight_kstep(float* As, float* Bs,
                                                             const float* dy, const float* y,
                                                             const float* x, float* part,
                                                             int N, int Cin, int H, int W,
                                                             int Cout, int relu, int k_chunk,
                                                             float* Rs = nullptr,
                                                             float* part_db = nullptr)
{
    constexpr int TX = BN / TN;
    const int Ncols = Cin * KSIZE * KSIZE;
    const int Kdim = N * H * W;
    const ConvBackwardWeightStepLoader<KSIZE, BK, SELECT_MASK> ld{dy, y, x, Cin, H, W, Cout, relu};
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(Kdim, k_begin + k_chunk);

    float acc[TM][TN];
    if (BIAS && blockIdx.x == 0)  // the first column tile also sums its dz rows: db partials
        gemm_tile_kstep<BM, BN, BK, TM, TN, ConvBackwardWeightStepLoader<KSIZE, BK, SELECT_MASK>, true>(
            ld, As, Bs, m0, n0, k_begin, k_end, acc, Rs, part_db + (size_t)blockIdx.z * Cout, Cout);
    else
        gemm_tile_kstep<BM, BN, BK, TM, TN>(ld, As, Bs, m0, n0, k_begin, k_end, acc);

    float* out = part + (size_t)blockIdx.z * Cout * Ncols;
    const int tx = threadIdx.x % TX;
    const int ty = threadIdx.x / TX;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int co = m0 + kstep_row<BM, TM>(ty, i);
        if (co >= Cout) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int col = n0 + kstep_row<BN, TN>(tx, j);
            if (col < Ncols) out[(size_t)co * Ncols + col] = acc[i][j];
        }
    }
}

#define CONV2D_BACKWARD_WEIGHT_KSTEP_IMPL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, SELECT) \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)  \
    NAME(const float* __restrict__ dy,                                               \
         const float* __restrict__ y,                                                \
         const float* __restrict__ x,                                                \
         float* __restrict__ part,                                                   \
         int N, int Cin, int H, int W, int Cout,                                     \
         int ksize, int relu, int k_chunk)                                           \
    {                                                                                \
        __shared__ __align__(16) float As[gemm_kstep_a_floats<BM, BK>()];            \
        __shared__ __align__(16) float Bs[gemm_kstep_b_floats<BN, BK>()];            \
        if (ksize == 3)                                                              \
            conv2d_backward_weight_kstep<BM, BN, BK, TM, TN, 3, SELECT>(             \
                As, Bs, dy, y, x, part, N, Cin, H, W, Cout, relu, k_chunk);          \
        else                                                                         \
            conv2d_backward_weight_kstep<BM, BN, BK, TM, TN, 1, SELECT>(             \
                As, Bs, dy, y, x, part, N, Cin, H, W, Cout, relu, k_chunk);          \
    }
#define CONV2D_BACKWARD_WEIGHT_KSTEP(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS) \
    CONV2D_BACKWARD_WEIGHT_KSTEP_IMPL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, false)
// v8: v4 with the ReLU mask as a select (relu_select) instead of a branch before the load.
#define CONV2D_BACKWARD_WEIGHT_KSTEP_SELECT(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS) \
    CONV2D_BACKWARD_WEIGHT_KSTEP_IMPL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, true)

// v9: v8 that also writes the bias gradient's per-split partials part_db[z][co] (blocks of
// the first column tile sum the dz rows they load anyway); sum_splits adds them.
#define CONV2D_BACKWARD_WEIGHT_KSTEP_BIAS(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS)      \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)  \
    NAME(const float* __restrict__ dy,                                               \
         const float* __restrict__ y,                                                \
         const float* __restrict__ x,                                                \
         float* __restrict__ part,                                                   \
         int N, int Cin, int H, int W, int Cout,                                     \
         int ksize, int relu, int k_chunk,                                           \
         float* __restrict__ part_db)                                                \
    {                                                                                \
        __shared__ __align__(16) float As[gemm_kstep_a_floats<BM, BK>()];            \
        __shared__ __align__(16) float Bs[gemm_kstep_b_floats<BN, BK>()];            \
        __shared__ float Rs[BK * BM];  /* running db sums of column tile 0 */        \
        if (ksize == 3)                                                              \
            conv2d_backward_weight_kstep<BM, BN, BK, TM, TN, 3, true, true>(         \
                As, Bs, dy, y, x, part, N, Cin, H, W, Cout, relu, k_chunk, Rs, part_db); \
        else                                                                         \
            conv2d_backward_weight_kstep<BM, BN, BK, TM, TN, 1, true, true>(         \
                As, Bs, dy, y, x, part, N, Cin, H, W, Cout, relu, k_chunk, Rs, part_db); \
    }

// CONV2D_BACKWARD_WEIGHT_KSTEP(name, BM, BN, BK, TM, TN, MIN_BLOCKS) is instantiated per version from
// adain_np/cuda/versions.py by source.kernel_source (one tile table for grids and kernels).

extern "C" __global__ void sum_splits(const float* __restrict__ part, float* __restrict__ out,
                                      int splits, int count)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= count) return;
    float acc = 0.f;
    for (int s = 0; s < splits; ++s) acc += part[(size_t)s * count + idx];
    out[idx] = acc;
}

// ---------------------------------------------------------------------------------------
// Backward-bias

extern "C" __global__ void conv2d_backward_bias_v1(const float* __restrict__ dy,
                                                   const float* __restrict__ y,
                                                   float* __restrict__ db,
                                                   int N, int Cout, int HW, int relu)
{
    const int co = blockIdx.x * blockDim.x + threadIdx.x;
    if (co >= Cout) return;
    float acc = 0.f;
    for (int n = 0; n < N; ++n) {
        const int plane = (n * Cout + co) * HW;
        for (int q = 0; q < HW; ++q) acc += relu_masked(dy, y, plane + q, relu);
    }
    db[co] = acc;
}

extern "C" __global__ void conv2d_backward_bias_v2(const float* __restrict__ dy,
                                                   const float* __restrict__ y,
                                                   float* __restrict__ db,
                                                   int N, int Cout, int HW, int relu)
{
    __shared__ float warp_sums[32];
    const int co = blockIdx.x;
    float acc = 0.f;
    for (int n = 0; n < N; ++n) {
        const int plane = (n * Cout + co) * HW;
        for (int q = threadIdx.x; q < HW; q += blockDim.x)
            acc += relu_masked(dy, y, plane + q, relu);
    }
    for (int offset = 16; offset > 0; offset >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        const int nwarps = (blockDim.x + 31) / 32;
        acc = lane < nwarps ? warp_sums[lane] : 0.f;
        for (int offset = 16; offset > 0; offset >>= 1)
            acc += __shfl_xor_sync(0xffffffffu, acc, offset);
        if (lane == 0) db[co] = acc;
    }
}

extern "C" __global__ void conv2d_backward_bias_v3(const float* __restrict__ dy,
                                                   const float* __restrict__ y,
                                                   float* __restrict__ part,
                                                   int N, int Cout, int HW, int relu, int chunk)
{
    constexpr int UNROLL = 4;
    __shared__ float warp_sums[32];
    const int co = blockIdx.x;
    const int n = blockIdx.y;
    const int begin = blockIdx.z * chunk;
    const int end = min(begin + chunk, HW);
    const size_t plane = (size_t)(n * Cout + co) * HW;
    const float* d = dy + plane;
    const float* m = y + plane;  // y == dy when relu == 0: the same addresses, cache hits
    float acc = 0.f;
    for (int q0 = begin + (int)threadIdx.x; q0 < end; q0 += UNROLL * (int)blockDim.x) {
        float g[UNROLL], v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int q = min(q0 + u * (int)blockDim.x, end - 1);  // always a valid address
            g[u] = d[q];
            v[u] = m[q];
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const bool live = q0 + u * (int)blockDim.x < end;
            const bool masked = relu && v[u] <= 0.f;  // NaN in y passes dy, as threshold_backward
            acc += (live && !masked) ? g[u] : 0.f;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        const int nwarps = (blockDim.x + 31) / 32;
        acc = lane < nwarps ? warp_sums[lane] : 0.f;
        for (int offset = 16; offset > 0; offset >>= 1)
            acc += __shfl_xor_sync(0xffffffffu, acc, offset);
        if (lane == 0) part[((size_t)n * gridDim.z + blockIdx.z) * Cout + co] = acc;
    }
}
