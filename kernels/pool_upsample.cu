// pool_upsample.cu: 2x2 max-pool (stride 2, ceil_mode=True), nearest x2 upsampling,
// Run: pytest tests/test_kernels.py -k 'pool or upsample'; timed inside the step:
// python tools/bench_gpu.py --only step
// and their backwards. All fp32, NCHW seen as NC planes.
//
// maxpool2d_forward (x, y, argmax, NC, H, W): x (NC, H, W) -> y (NC, Ho, Wo), Ho = ceil(H/2),
//     Wo = ceil(W/2). argmax (NC, Ho, Wo) uint8 holds the winner's window position
//     0..3 = (0,0), (0,1), (1,0), (1,1); windows over the edge see only the real pixels.
//     The first maximum in row-major window order wins and a NaN wins over numbers, as in
//     torch's kernel (val > max || isnan(val)). One thread per output: block 256,
//     grid ceil(NC*Ho*Wo / 256).
// maxpool2d_backward (dy, argmax, dx, NC, H, W): dx (NC, H, W). The windows tile the input
//     without overlap, so each dx element reads its one window: no atomics, no zero-fill.
//     One thread per input element: block 256, grid ceil(NC*H*W / 256).
// upsample_nearest2d_forward (x, y, NC, H, W): x (NC, H, W) -> y (NC, 2H, 2W), y[i][j] =
//     x[i/2][j/2]. One thread per output: block 256, grid ceil(NC*4*H*W / 256).
// upsample_nearest2d_backward (dy, dx, NC, H, W): dy (NC, 2H, 2W) -> dx (NC, H, W), the sum
//     of the 2x2 block each input pixel was copied to. One thread per dx element.

extern "C" __global__ void maxpool2d_forward(const float* __restrict__ x,
                                             float* __restrict__ y,
                                             unsigned char* __restrict__ argmax,
                                             int NC, int H, int W)
{
    const int Ho = (H + 1) / 2;
    const int Wo = (W + 1) / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= NC * Ho * Wo) return;
    const int ow = idx % Wo;
    const int oh = (idx / Wo) % Ho;
    const int nc = idx / (Ho * Wo);
    const float* plane = x + (size_t)nc * H * W;

    // Window position 0 always exists; starting from it equals torch's start from -inf.
    float best = plane[2 * oh * W + 2 * ow];
    int best_k = 0;
    for (int k = 1; k < 4; ++k) {
        const int ih = 2 * oh + k / 2;
        const int iw = 2 * ow + k % 2;
        if (ih >= H || iw >= W) continue;
        const float v = plane[ih * W + iw];
        if (v > best || isnan(v)) {
            best = v;
            best_k = k;
        }
    }
    y[idx] = best;
    argmax[idx] = (unsigned char)best_k;
}

extern "C" __global__ void maxpool2d_backward(const float* __restrict__ dy,
                                              const unsigned char* __restrict__ argmax,
                                              float* __restrict__ dx,
                                              int NC, int H, int W)
{
    const int Ho = (H + 1) / 2;
    const int Wo = (W + 1) / 2;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= NC * H * W) return;
    const int iw = idx % W;
    const int ih = (idx / W) % H;
    const int nc = idx / (H * W);
    const int o = (nc * Ho + ih / 2) * Wo + iw / 2;
    const int k = (ih % 2) * 2 + iw % 2;
    dx[idx] = argmax[o] == k ? dy[o] : 0.f;
}

extern "C" __global__ void upsample_nearest2d_forward(const float* __restrict__ x,
                                                      float* __restrict__ y,
                                                      int NC, int H, int W)
{
    const int Wo = 2 * W;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= NC * 4 * H * W) return;
    const int j = idx % Wo;
    const int i = (idx / Wo) % (2 * H);
    const int nc = idx / (4 * H * W);
    y[idx] = x[((size_t)nc * H + i / 2) * W + j / 2];
}

extern "C" __global__ void upsample_nearest2d_backward(const float* __restrict__ dy,
                                                       float* __restrict__ dx,
                                                       int NC, int H, int W)
{
    const int Wo = 2 * W;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= NC * H * W) return;
    const int j = idx % W;
    const int i = (idx / W) % H;
    const int nc = idx / (H * W);
    const float* top = dy + ((size_t)nc * 2 * H + 2 * i) * Wo + 2 * j;
    const float* bottom = top + Wo;
    dx[idx] = (top[0] + top[1]) + (bottom[0] + bottom[1]);
}
