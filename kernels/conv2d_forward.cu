// conv2d_forward.cu: y = [ReLU](conv2d(ReflectionPad2d(1)(x), w) + b) for 3x3 kernels,
// Run one version: pytest tests/test_kernels.py -k 'conv_forward and 3' (emulator, GPU if any);
// time it per VGG shape against cuDNN: python tools/bench_gpu.py --only convs --version forward=3
// y = [ReLU](conv2d(x, w) + b) for 1x1 kernels; stride 1, fp32, fp32 accumulation.
//
// Layouts (row-major, C-contiguous, torch layouts):
//   x (N, Cin, H, W)   w (Cout, Cin, K, K), K in {1, 3}   b (Cout,)   y (N, Cout, H, W)
// The reflection padding is folded into the index arithmetic: no padded copy of x exists.
// relu != 0 fuses the ReLU (y = max(y, 0), NaN kept as torch does).
//
// Every version has the same signature:
//   (x, w, b, y, int N, int Cin, int H, int W, int Cout, int ksize, int relu)
//
// Versions (all checked against the NumPy reference in tests/test_kernels.py):
//   v1  naive: one thread per output element, loops over Cin*K*K.
//       block 256, grid ceil(N*Cout*H*W / 256).
//   v2  implicit GEMM Y(Cout, N*H*W) = W(Cout, Cin*K*K) x im2col(x)(Cin*K*K, N*H*W),
//       shared-memory tiles only: 16x16 output tile, K-slices of 16, one output per thread.
//       block 256, grid (ceil(N*H*W / 16), ceil(Cout / 16)).
//   v3  v2 plus register tiling: 64x64 output tile, 4x4 outputs per thread, K-slices of 16.
//       block 256, grid (ceil(N*H*W / 64), ceil(Cout / 64)).
//   v4  128x128 output tile, 8x8 outputs per thread, K-slices of 8.
//       block 256, grid (ceil(N*H*W / 128), ceil(Cout / 128)).
// v2-v4 share the GEMM core in conv_gemm_tile.cuh, which prefetches the next K-slice into
// registers while the current one is multiplied. Bias and ReLU are applied in the epilogue.
// __launch_bounds__(256, 4 / 3 / 2 blocks per SM for v2 / v3 / v4) caps the registers at
// 64 / 80 / 128; python -m adain_np.compile_check confirms that none of them spills.

#include "conv_gemm_tile.cuh"

// ---------------------------------------------------------------------------------------
// v1: naive

extern "C" __global__ void conv2d_forward_v1(const float* __restrict__ x,
                                             const float* __restrict__ w,
                                             const float* __restrict__ b,
                                             float* __restrict__ y,
                                             int N, int Cin, int H, int W, int Cout,
                                             int ksize, int relu)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    const int HW = H * W;
    if (idx >= N * Cout * HW) return;
    const int ow = idx % W;
    const int oh = (idx / W) % H;
    const int co = (idx / HW) % Cout;
    const int n = idx / (HW * Cout);
    const int pad = ksize / 2;

    float acc = 0.f;
    for (int ci = 0; ci < Cin; ++ci) {
        const float* plane = x + (size_t)(n * Cin + ci) * HW;
        const float* wk = w + (size_t)(co * Cin + ci) * ksize * ksize;
        for (int kh = 0; kh < ksize; ++kh) {
            const int ih = pad ? reflect_index(oh + kh - pad, H) : oh;
            for (int kw = 0; kw < ksize; ++kw) {
                const int iw = pad ? reflect_index(ow + kw - pad, W) : ow;
                acc = fmaf(plane[ih * W + iw], wk[kh * ksize + kw], acc);
            }
        }
    }
    float v = acc + b[co];
    if (relu && v < 0.f) v = 0.f;
    y[idx] = v;
}

// ---------------------------------------------------------------------------------------
// v2-v4: implicit GEMM

template <int KSIZE>
struct ConvForwardLoader {
    // A = w viewed as (Cout, Cin*KK). B = im2col of the reflect-padded x, (Cin*KK, N*H*W),
    // rows ordered (ci, kh, kw) like w's trailing dimensions, columns (n, oh, ow).
    // Rows and columns past the end are clamped to the last one: they load valid data into
    // accumulators that are never written out, which saves a flag per load.
    static constexpr int KK = KSIZE * KSIZE;
    static constexpr int PAD = KSIZE / 2;
    const float* x;
    const float* w;
    int Cin, H, W, Cout, Ncols;

    struct ACtx { int row; };            // offset of w[co]
    struct BCtx { int img, oh, ow; };    // offset of x[n], output position

    __device__ __forceinline__ ACtx a_ctx(int m) const
    {
        return ACtx{min(m, Cout - 1) * Cin * KK};
    }
    __device__ __forceinline__ float a(const ACtx& c, int k) const { return w[c.row + k]; }
    __device__ __forceinline__ BCtx b_ctx(int col) const
    {
        const int HW = H * W;
        const int cc = min(col, Ncols - 1);
        const int n = cc / HW;
        const int q = cc - n * HW;
        const int oh = q / W;
        return BCtx{n * Cin * HW, oh, q - oh * W};
    }
    __device__ __forceinline__ float b(const BCtx& c, int k) const
    {
        const int ci = k / KK;
        const int r = k - ci * KK;
        const int kh = r / KSIZE;
        const int kw = r - kh * KSIZE;
        const int ih = PAD ? reflect_index(c.oh + kh - PAD, H) : c.oh;
        const int iw = PAD ? reflect_index(c.ow + kw - PAD, W) : c.ow;
        return x[c.img + (ci * H + ih) * W + iw];
    }
};

template <int BM, int BN, int BK, int TM, int TN, int KSIZE>
__device__ __forceinline__ void conv2d_forward_tile(float* As, float* Bs,
                                                    const float* x, const float* w,
                                                    const float* b, float* y,
                                                    int N, int Cin, int H, int W, int Cout,
                                                    int relu)
{
    constexpr int TX = BN / TN;
    constexpr int TY = BM / TM;
    const int HW = H * W;
    const int Ncols = N * HW;
    const ConvForwardLoader<KSIZE> ld{x, w, Cin, H, W, Cout, Ncols};
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;

    float acc[TM][TN];
    gemm_tile<BM, BN, BK, TM, TN, false>(ld, As, Bs, m0, n0, 0, Cin * KSIZE * KSIZE, acc);

    const int tx = threadIdx.x % TX;
    const int ty = threadIdx.x / TX;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int col = n0 + tx + j * TX;
        if (col >= Ncols) continue;
        const int n = col / HW;
        const int q = col - n * HW;
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int co = m0 + ty + i * TY;
            if (co >= Cout) continue;
            float v = acc[i][j] + b[co];
            if (relu && v < 0.f) v = 0.f;
            y[(size_t)(n * Cout + co) * HW + q] = v;
        }
    }
}

#define CONV2D_FORWARD_TILED(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS)                   \
    extern "C" __global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)  \
    NAME(const float* __restrict__ x,                                                \
         const float* __restrict__ w,                                                \
         const float* __restrict__ b,                                                \
         float* __restrict__ y,                                                      \
         int N, int Cin, int H, int W, int Cout,                                     \
         int ksize, int relu)                                                        \
    {                                                                                \
        __shared__ float As[BK * (BM + GEMM_PAD)];                                   \
        __shared__ float Bs[BK * (BN + GEMM_PAD)];                                   \
        if (ksize == 3)                                                              \
            conv2d_forward_tile<BM, BN, BK, TM, TN, 3>(As, Bs, x, w, b, y,           \
                                                       N, Cin, H, W, Cout, relu);    \
        else                                                                         \
            conv2d_forward_tile<BM, BN, BK, TM, TN, 1>(As, Bs, x, w, b, y,           \
                                                       N, Cin, H, W, Cout, relu);    \
    }

// CONV2D_FORWARD_TILED(name, BM, BN, BK, TM, TN, MIN_BLOCKS) is instantiated per version from
// adain_np/cuda/versions.py (CONV_FORWARD_TILES) by source.kernel_source.
