"""Exercises for lesson 08: reductions, Welford, and a kernel of your own.

Grade them with:  python lessons/08_cuda_instance_stats.py --exercises
"""
import numpy as np


def welford_merge(a, b):
    """Merge two partial results (count, mean, M2) into the one of all values together.

    M2 is the sum of squared deviations from the mean. Either side may be empty
    (count 0). Returns (count, mean, M2).
    """
    na, mean_a, m2_a = a
    nb, mean_b, m2_b = b
    n = na + nb
    if n == 0:
        return 0, 0.0, 0.0
    delta = mean_b - mean_a
    return n, mean_a + delta * nb / n, m2_a + m2_b + delta * delta * na * nb / n


def warp_butterfly_sum(values):
    """What each of 32 lanes holds after the xor butterfly  v += shfl_xor(v, offset),
    offset = 16, 8, 4, 2, 1, written with NumPy on a (32,) array. Return (32,).
    """
    v = np.asarray(values, dtype=np.float64).copy()
    lanes = np.arange(32)
    for offset in (16, 8, 4, 2, 1):
        v = v + v[lanes ^ offset]
    return v


def sum_of_squares_kernel():
    """Return CUDA source for a kernel with instance_mean_std_v2's signature:

        extern "C" __global__ void instance_mean_std_sumsq(const float* x, float* mean,
                                                           float* std, int NC, int L, float eps)

    launched with one 256-thread block per plane (grid NC). It must use ONE pass over
    the data: each thread sums x and x*x (in float32), the block reduces both sums
    (shared memory), and thread 0 writes mean = s/L and std = sqrt((s2 - s*s/L)/(L-1) + eps).
    The grader runs it on the emulator, then on data with a large mean next to Welford.
    """
    return r"""
extern "C" __global__ void instance_mean_std_sumsq(const float* __restrict__ x,
                                                   float* __restrict__ mean,
                                                   float* __restrict__ std,
                                                   int NC, int L, float eps)
{
    __shared__ float sum[256], sum2[256];
    const int nc = blockIdx.x, t = threadIdx.x;
    if (nc >= NC) return;
    const float* plane = x + (size_t)nc * L;
    float s = 0.f, s2 = 0.f;
    for (int i = t; i < L; i += blockDim.x) {
        const float v = plane[i];
        s += v;
        s2 += v * v;
    }
    sum[t] = s;
    sum2[t] = s2;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (t < half) {
            sum[t] += sum[t + half];
            sum2[t] += sum2[t + half];
        }
        __syncthreads();
    }
    if (t == 0) {
        const float m = sum[0] / (float)L;
        mean[nc] = m;
        std[nc] = sqrtf((sum2[0] - sum[0] * m) / (float)(L - 1) + eps);
    }
}
"""
