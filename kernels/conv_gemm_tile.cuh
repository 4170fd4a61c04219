// conv_gemm_tile.cuh: the tiled GEMM core shared by the tiled conv kernels
// (conv2d_forward.cu v2-v4, conv2d_backward.cu v2-v3). Included textually by
// adain_np.kernel_backend.kernel_source, so NVRTC and the CPU emulator both see one file.
//
// gemm_tile computes into acc one BM x BN tile of C = A * B (A: M x Kdim, B: Kdim x Ncols),
// summing k over [k_begin, k_end). A and B are never materialised (implicit GEMM):
// a Loader maps an element to global memory and returns 0 outside the matrices.
//
// Loader interface (all __device__, const):
//   ACtx a_ctx(int m)            per-row state of A, computed once per thread
//   float a(const ACtx&, int k)  A[m][k]
//   BCtx b_ctx(int col)          per-column state of B, computed once per thread
//   float b(const BCtx&, int k)  B[k][col]
//
// Launch: blockDim.x == (BM/TM) * (BN/TN). Thread t computes the TM x TN outputs at
// rows ty + i*(BM/TM), columns tx + j*(BN/TN), where tx = t % (BN/TN), ty = t / (BN/TN).
// The strided ownership keeps shared-memory reads free of bank conflicts and makes the
// output writes of a warp contiguous along columns.
//
// Per K-slice of BK: the slice is stored from registers to shared memory, and the next
// slice is fetched from global memory into registers while this one is multiplied.
// Shared memory: As[BK][BM + PAD] and Bs[BK][BN + PAD]; the pad spreads the transposing
// stores over all banks.

#define GEMM_PAD 4

__device__ __forceinline__ int reflect_index(int i, int n)
{
    // ReflectionPad2d(1) source index: -1 -> 1, n -> n-2 (n >= 2).
    return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}

template <int BM, int BN, int BK, int TM, int TN, bool B_ALONG_K, class Loader>
__device__ __forceinline__ void gemm_tile(const Loader& ld, float* As, float* Bs,
                                          int m0, int n0, int k_begin, int k_end,
                                          float (&acc)[TM][TN])
{
    constexpr int TX = BN / TN;
    constexpr int TY = BM / TM;
    constexpr int THREADS = TX * TY;
    constexpr int A_LOADS = BM * BK / THREADS;
    constexpr int B_LOADS = BK * BN / THREADS;
    constexpr int AS = BM + GEMM_PAD;  // row stride of As
    constexpr int BS = BN + GEMM_PAD;  // row stride of Bs
    static_assert(A_LOADS * THREADS == BM * BK, "A tile must split evenly over the threads");
    static_assert(B_LOADS * THREADS == BK * BN, "B tile must split evenly over the threads");

    const int tid = threadIdx.x;
    const int tx = tid % TX;
    const int ty = tid / TX;

    // Which tile elements this thread fetches. A is read along k (weights and dY rows are
    // contiguous in k); B along its columns, or along k when B_ALONG_K.
    int a_k[A_LOADS], a_m[A_LOADS], b_k[B_LOADS], b_n[B_LOADS];
    typename Loader::ACtx actx[A_LOADS];
    typename Loader::BCtx bctx[B_LOADS];
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
        const int e = tid + i * THREADS;
        a_k[i] = e % BK;
        a_m[i] = e / BK;
        actx[i] = ld.a_ctx(m0 + a_m[i]);
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
        const int e = tid + i * THREADS;
        if (B_ALONG_K) {
            b_k[i] = e % BK;
            b_n[i] = e / BK;
        } else {
            b_n[i] = e % BN;
            b_k[i] = e / BN;
        }
        bctx[i] = ld.b_ctx(n0 + b_n[i]);
    }

#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    float a_next[A_LOADS], b_next[B_LOADS];
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
        const int k = k_begin + a_k[i];
        a_next[i] = k < k_end ? ld.a(actx[i], k) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
        const int k = k_begin + b_k[i];
        b_next[i] = k < k_end ? ld.b(bctx[i], k) : 0.f;
    }

    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
#pragma unroll
        for (int i = 0; i < A_LOADS; ++i) As[a_k[i] * AS + a_m[i]] = a_next[i];
#pragma unroll
        for (int i = 0; i < B_LOADS; ++i) Bs[b_k[i] * BS + b_n[i]] = b_next[i];
        __syncthreads();

        const int k1 = k0 + BK;
        if (k1 < k_end) {
#pragma unroll
            for (int i = 0; i < A_LOADS; ++i) {
                const int k = k1 + a_k[i];
                a_next[i] = k < k_end ? ld.a(actx[i], k) : 0.f;
            }
#pragma unroll
            for (int i = 0; i < B_LOADS; ++i) {
                const int k = k1 + b_k[i];
                b_next[i] = k < k_end ? ld.b(bctx[i], k) : 0.f;
            }
        }

#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[kk * AS + ty + i * TY];
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[kk * BS + tx + j * TX];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();  // the next iteration overwrites As/Bs
    }
}
