// conv_gemm_tile.cuh: the tiled GEMM cores shared by the tiled conv kernels. Included
// textually by adain_np.cuda.source.kernel_source, so NVRTC and the CPU emulator both
// see one file.
//   gemm_tile        (below) conv2d_forward.cu v2-v4, conv2d_backward.cu data v2-v4, weight v2-v3
//   gemm_tile_kstep  (at the end) conv2d_backward.cu weight v4-v7: both operands read along
//                    K with a stepping position, double-buffered shared memory, float4
//                    shared-memory reads.
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

// TAIL_SELECT: the slots past k_end are loaded at k_end - 1 and zeroed by a select instead
// of skipping the load behind a branch (the loader must then accept any k < k_end).
template <bool TAIL_SELECT, class Loader, class Ctx>
__device__ __forceinline__ float gemm_tail_load(const Loader& ld,
                                                float (Loader::*load)(const Ctx&, int) const,
                                                const Ctx& c, int k, int k_end)
{
    if (!TAIL_SELECT) return k < k_end ? (ld.*load)(c, k) : 0.f;
    const float v = (ld.*load)(c, min(k, k_end - 1));
    return k < k_end ? v : 0.f;
}

template <int BM, int BN, int BK, int TM, int TN, bool B_ALONG_K, class Loader,
          bool TAIL_SELECT = false>
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
        a_next[i] = gemm_tail_load<TAIL_SELECT>(ld, &Loader::a, actx[i], k, k_end);
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) {
        const int k = k_begin + b_k[i];
        b_next[i] = gemm_tail_load<TAIL_SELECT>(ld, &Loader::b, bctx[i], k, k_end);
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
                a_next[i] = gemm_tail_load<TAIL_SELECT>(ld, &Loader::a, actx[i], k, k_end);
            }
#pragma unroll
            for (int i = 0; i < B_LOADS; ++i) {
                const int k = k1 + b_k[i];
                b_next[i] = gemm_tail_load<TAIL_SELECT>(ld, &Loader::b, bctx[i], k, k_end);
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

// ---------------------------------------------------------------------------------------
// gemm_tile_kstep: C tile (BM x BN) += A (BM x K) * B (K x BN) for GEMMs whose K index is
// expensive to decode (backward-weight: k = pixel (n, oh, ow), a runtime division by H*W
// and W). Both A and B are fetched along k, and every element a thread fetches in a K-slice
// has the same k (k_begin + tid % BK + BK * slice), so one position per thread serves all
// of its loads, and the loader advances it by BK without dividing.
//
// Loader interface (all __device__, const):
//   Pos   pos(int k)                   position of index k (may divide; called once)
//   void  step(Pos&)                   advance the position by BK (no division)
//   ARow  a_row(int m), float a(const ARow&, const Pos&)    A[m][k]
//   BCol  b_col(int n), float b(const BCol&, const Pos&)    B[k][n]
// The core never calls a()/b() for k >= k_end (those slots are 0).
//
// Launch: blockDim.x == (BM/TM) * (BN/TN), TM and TN multiples of 4. Thread t owns
// TM/4 groups of 4 consecutive rows, group g at rows g*(BM/(TM/4)) + ty*4 + 0..3, and the
// same for columns with tx (tx = t % (BN/TN), ty = t / (BN/TN)), so each k-step reads
// TM/4 + TN/4 float4 from shared memory instead of TM + TN floats: the 16 threads of a
// half-warp that share ty read one broadcast float4 of As, and consecutive tx read
// consecutive float4 of Bs (conflict-free).
// Shared memory: As[2][BK][BM + PAD] and Bs[2][BK][BN + PAD], 16-byte aligned (two stages:
// the next slice is stored into the other stage while this one is multiplied, so one
// __syncthreads per slice). Sizes: gemm_kstep_a_floats / gemm_kstep_b_floats. A and B must
// be separate arrays: carved from one array, nvcc's alias analysis gives up and the
// 128x128 kernels spill.

template <int BM, int BK>
__host__ __device__ constexpr int gemm_kstep_a_floats() { return 2 * BK * (BM + GEMM_PAD); }
template <int BN, int BK>
__host__ __device__ constexpr int gemm_kstep_b_floats() { return 2 * BK * (BN + GEMM_PAD); }

// ROW_SUMS: also sum A's rows over [k_begin, k_end) from the values the loader fetched
// (no extra loads) and write row_sums[m] for m0 <= m < min(m0 + BM, rows) (bias gradient).
// The running sums live in shared memory, Rs[BK][BM] (each slot owned by one thread, so no
// race and a fixed order), not in registers: the 128x128 tile has none to spare on sm_75.
template <int BM, int BN, int BK, int TM, int TN, class Loader, bool ROW_SUMS = false>
__device__ __forceinline__ void gemm_tile_kstep(const Loader& ld, float* As, float* Bs,
                                                int m0, int n0, int k_begin, int k_end,
                                                float (&acc)[TM][TN],
                                                float* Rs = nullptr, float* row_sums = nullptr,
                                                int rows = 0)
{
    constexpr int TX = BN / TN;
    constexpr int TY = BM / TM;
    constexpr int THREADS = TX * TY;
    constexpr int ROWS_PER_PASS = THREADS / BK;  // rows (columns) fetched per pass over k
    constexpr int A_LOADS = BM / ROWS_PER_PASS;
    constexpr int B_LOADS = BN / ROWS_PER_PASS;
    constexpr int AS = BM + GEMM_PAD;
    constexpr int BS = BN + GEMM_PAD;
    constexpr int GM = TM / 4, GN = TN / 4;       // float4 groups per thread
    constexpr int GM_STRIDE = BM / GM, GN_STRIDE = BN / GN;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are float4 groups");
    static_assert(THREADS % BK == 0, "a pass over k must use whole threads");
    static_assert(A_LOADS * ROWS_PER_PASS == BM && B_LOADS * ROWS_PER_PASS == BN,
                  "tiles must split evenly over the threads");
    static_assert(AS % 4 == 0 && BS % 4 == 0, "rows must stay 16-byte aligned");
    static_assert(!ROW_SUMS || THREADS >= BM, "one thread per row sums the row");

    const int tid = threadIdx.x;
    const int tx = tid % TX;
    const int ty = tid / TX;
    const int k_own = tid % BK;      // this thread's k within every slice
    const int r_own = tid / BK;      // its first row (column) within the tile

    typename Loader::ARow arow[A_LOADS];
    typename Loader::BCol bcol[B_LOADS];
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) arow[i] = ld.a_row(m0 + r_own + i * ROWS_PER_PASS);
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) bcol[i] = ld.b_col(n0 + r_own + i * ROWS_PER_PASS);

#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    int k = k_begin + k_own;
    typename Loader::Pos pos = ld.pos(k);
    float a_next[A_LOADS], b_next[B_LOADS];
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) a_next[i] = k < k_end ? ld.a(arow[i], pos) : 0.f;
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) b_next[i] = k < k_end ? ld.b(bcol[i], pos) : 0.f;
    if (ROW_SUMS) {
#pragma unroll
        for (int i = 0; i < A_LOADS; ++i) Rs[k_own * BM + r_own + i * ROWS_PER_PASS] = a_next[i];
    }
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) As[k_own * AS + r_own + i * ROWS_PER_PASS] = a_next[i];
#pragma unroll
    for (int i = 0; i < B_LOADS; ++i) Bs[k_own * BS + r_own + i * ROWS_PER_PASS] = b_next[i];
    __syncthreads();

    int stage = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        const bool more = k0 + BK < k_end;
        if (more) {  // fetch the next slice into registers while this one is multiplied
            ld.step(pos);
            k += BK;
#pragma unroll
            for (int i = 0; i < A_LOADS; ++i) a_next[i] = k < k_end ? ld.a(arow[i], pos) : 0.f;
#pragma unroll
            for (int i = 0; i < B_LOADS; ++i) b_next[i] = k < k_end ? ld.b(bcol[i], pos) : 0.f;
            if (ROW_SUMS) {
#pragma unroll
                for (int i = 0; i < A_LOADS; ++i) Rs[k_own * BM + r_own + i * ROWS_PER_PASS] += a_next[i];
            }
        }

        const float* as = As + stage * BK * AS;
        const float* bs = Bs + stage * BK * BS;
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[TM], b[TN];
#pragma unroll
            for (int g = 0; g < GM; ++g) {
                const float4 v = *reinterpret_cast<const float4*>(as + kk * AS + g * GM_STRIDE + ty * 4);
                a[4 * g] = v.x; a[4 * g + 1] = v.y; a[4 * g + 2] = v.z; a[4 * g + 3] = v.w;
            }
#pragma unroll
            for (int g = 0; g < GN; ++g) {
                const float4 v = *reinterpret_cast<const float4*>(bs + kk * BS + g * GN_STRIDE + tx * 4);
                b[4 * g] = v.x; b[4 * g + 1] = v.y; b[4 * g + 2] = v.z; b[4 * g + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }

        if (more) {  // the other stage was last read before the previous barrier
            float* an = As + (stage ^ 1) * BK * AS;
            float* bn = Bs + (stage ^ 1) * BK * BS;
#pragma unroll
            for (int i = 0; i < A_LOADS; ++i) an[k_own * AS + r_own + i * ROWS_PER_PASS] = a_next[i];
#pragma unroll
            for (int i = 0; i < B_LOADS; ++i) bn[k_own * BS + r_own + i * ROWS_PER_PASS] = b_next[i];
        }
        __syncthreads();
        stage ^= 1;
    }

    if (ROW_SUMS && tid < BM && m0 + tid < rows) {  // after the loop's last barrier
        float v = 0.f;
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) v += Rs[kk * BM + tid];
        row_sums[m0 + tid] = v;
    }
}

// Row (column) of the accumulator acc[i][*] (acc[*][j]) in a gemm_tile_kstep tile.
template <int BM, int TM>
__device__ __forceinline__ int kstep_row(int ty, int i)
{
    return (i / 4) * (BM / (TM / 4)) + ty * 4 + (i % 4);
}
