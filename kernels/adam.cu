// adam.cu: one in-place Adam step, torch.optim.Adam semantics (no weight decay, no amsgrad):
// Run: pytest tests/test_kernels.py -k adam; timed inside the step: python tools/bench_gpu.py --only step
//   m = lerp(m, g, 1 - beta1)              (torch: exp_avg.lerp_(grad, 1 - beta1))
//   v = beta2 * v + (1 - beta2) * g * g    (torch: exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2))
//   p = p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
// with step_size = lr / (1 - beta1^t) and bias_correction2_sqrt = sqrt(1 - beta2^t) computed
// on the host in double precision, as torch computes them in Python floats.
//
// Layouts: param, grad, m, v are flat float arrays of n elements (any shape, C-contiguous).
// adam_step (param, grad, m, v, n, one_minus_beta1, beta2, one_minus_beta2, eps, step_size,
//     bias_correction2_sqrt): one thread per element, block 256, grid ceil(n / 256).

extern "C" __global__ void adam_step(float* __restrict__ param,
                                     const float* __restrict__ grad,
                                     float* __restrict__ m,
                                     float* __restrict__ v,
                                     int n, float one_minus_beta1, float beta2,
                                     float one_minus_beta2, float eps, float step_size,
                                     float bias_correction2_sqrt)
{
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const float g = grad[idx];
    const float m_old = m[idx];
    // torch's lerp: start + w * (end - start) for w < 0.5, else end - (end - start) * (1 - w).
    const float m_new = one_minus_beta1 < 0.5f
                            ? m_old + one_minus_beta1 * (g - m_old)
                            : g - (g - m_old) * (1.f - one_minus_beta1);
    const float v_new = v[idx] * beta2 + one_minus_beta2 * (g * g);
    m[idx] = m_new;
    v[idx] = v_new;
    const float denom = sqrtf(v_new) / bias_correction2_sqrt + eps;
    param[idx] = param[idx] + (-step_size * m_new) / denom;  // torch's addcdiv_ order
}
