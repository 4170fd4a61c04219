// instance_stats.cu: per-(n, c) mean and std over H*W, as pytorch-AdaIN's calc_mean_std:
// Run one version: pytest tests/test_kernels.py -k 'mean_std and 2' (emulator, GPU if any);
// timed only inside the step: python tools/bench_gpu.py --only step
//   mean = sum(x) / L,  std = sqrt(sum((x - mean)^2) / (L - 1) + eps),  L = H*W
// (unbiased variance, so L = 1 gives NaN, as torch does), and its backward.
//
// Layouts: x, dx (N, C, H, W) seen as NC planes of L floats; mean, std, dmean, dstd (N, C, 1, 1)
// seen as NC floats.
//
// instance_mean_std_v1 (x, mean, std, NC, L, eps): one thread per plane, two passes
//     (mean, then the centred sum of squares). block 128, grid ceil(NC / 128).
// instance_mean_std_v2 (x, mean, std, NC, L, eps): one block per plane, one pass. Each thread
//     keeps a Welford running (count, mean, M2) over a strided subset; the partial results
//     are merged with Chan's formula across the warp by xor-shuffles, then across warps in
//     shared memory. Stable in fp32: no sum-of-squares cancellation.
//     block: a multiple of 32, at most 1024 (256 used); grid NC.
// instance_mean_std_backward (x, mean, std, dmean, dstd, dx, NC, L):
//     dx = dmean / L + dstd * (x - mean) / ((L - 1) * std)
//     (d std / d var = 1 / (2 std), d var / d x = 2 (x - mean) / (L - 1); the path through the
//     mean adds sum(x - mean) = 0). One thread per element: block 256, grid ceil(NC*L / 256).

extern "C" __global__ void instance_mean_std_v1(const float* __restrict__ x,
                                                float* __restrict__ mean,
                                                float* __restrict__ std,
                                                int NC, int L, float eps)
{
    const int nc = blockIdx.x * blockDim.x + threadIdx.x;
    if (nc >= NC) return;
    const float* plane = x + (size_t)nc * L;
    float sum = 0.f;
    for (int i = 0; i < L; ++i) sum += plane[i];
    const float m = sum / (float)L;
    float ss = 0.f;
    for (int i = 0; i < L; ++i) {
        const float d = plane[i] - m;
        ss = fmaf(d, d, ss);
    }
    mean[nc] = m;
    std[nc] = sqrtf(ss / (float)(L - 1) + eps);
}

struct Welford {
    float count, mean, m2;
};

__device__ __forceinline__ Welford welford_merge(Welford a, Welford b)
{
    // Chan et al.: combine two partial (count, mean, M2); either side may be empty.
    const float count = a.count + b.count;
    if (count == 0.f) return a;
    const float delta = b.mean - a.mean;
    const float wb = b.count / count;
    Welford r;
    r.count = count;
    r.mean = fmaf(delta, wb, a.mean);
    r.m2 = a.m2 + b.m2 + delta * delta * a.count * wb;
    return r;
}

__device__ __forceinline__ Welford welford_warp_merge(Welford s)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        Welford o;
        o.count = __shfl_xor_sync(0xffffffffu, s.count, offset);
        o.mean = __shfl_xor_sync(0xffffffffu, s.mean, offset);
        o.m2 = __shfl_xor_sync(0xffffffffu, s.m2, offset);
        s = welford_merge(s, o);
    }
    return s;
}

extern "C" __global__ void instance_mean_std_v2(const float* __restrict__ x,
                                                float* __restrict__ mean,
                                                float* __restrict__ std,
                                                int NC, int L, float eps)
{
    __shared__ float warp_count[32], warp_mean[32], warp_m2[32];
    const int nc = blockIdx.x;
    const float* plane = x + (size_t)nc * L;

    Welford s = {0.f, 0.f, 0.f};
    for (int i = threadIdx.x; i < L; i += blockDim.x) {
        const float v = plane[i];
        s.count += 1.f;
        const float d = v - s.mean;
        s.mean += d / s.count;
        s.m2 = fmaf(d, v - s.mean, s.m2);
    }
    s = welford_warp_merge(s);

    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    if (lane == 0) {
        warp_count[warp] = s.count;
        warp_mean[warp] = s.mean;
        warp_m2[warp] = s.m2;
    }
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / 32;
        Welford t = {0.f, 0.f, 0.f};
        if (lane < nwarps) {
            t.count = warp_count[lane];
            t.mean = warp_mean[lane];
            t.m2 = warp_m2[lane];
        }
        t = welford_warp_merge(t);
        if (lane == 0) {
            mean[nc] = t.mean;
            std[nc] = sqrtf(t.m2 / (float)(L - 1) + eps);
        }
    }
}

extern "C" __global__ void instance_mean_std_backward(const float* __restrict__ x,
                                                      const float* __restrict__ mean,
                                                      const float* __restrict__ std,
                                                      const float* __restrict__ dmean,
                                                      const float* __restrict__ dstd,
                                                      float* __restrict__ dx,
                                                      int NC, int L)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= NC * L) return;
    const int nc = idx / L;
    const float scale = dstd[nc] / ((float)(L - 1) * std[nc]);
    dx[idx] = dmean[nc] / (float)L + scale * (x[idx] - mean[nc]);
}
