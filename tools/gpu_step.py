"""On a real GPU: one whole training step (forward, backward, Adam) and one stylize, ours
(KernelBackend on CuPy) against pytorch-AdaIN's Net in torch/cuDNN (fp32, TF32 off), with
peak memory (CuPy pool high-water vs torch.cuda.max_memory_allocated). Also checks the GPU
step against the NumPy step at a small size. Prints a table last; JSON under $OUT.
"""
import json
import os
import sys
import time

import cupy
import numpy as np
import torch

import adain_np
from adain_np.backend import NumpyBackend
from adain_np.kernel_backend import make_backend
from adain_np.optim import Adam
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from torch_reference import TorchNet, adaptive_instance_normalization  # noqa: E402

OUT = os.environ.get("OUT", ".")
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
# pytorch-AdaIN leaves cudnn.benchmark off; CUDNN_BENCHMARK=1 lets cuDNN search (bigger workspaces)
torch.backends.cudnn.benchmark = os.environ.get("CUDNN_BENCHMARK", "0") == "1"
results_name = "gpu_step_benchmark.json" if torch.backends.cudnn.benchmark else "gpu_step.json"
vgg, dec = adain_np.init_vgg_params(0), adain_np.init_decoder_params(0)
rng = np.random.default_rng(0)
results = {"device": torch.cuda.get_device_name()}


class PeakPool:
    """Track the CuPy pool's high-water mark by polling total_bytes after each phase."""
    def __init__(self):
        self.pool = cupy.get_default_memory_pool()
        self.peak = 0

    def poll(self):
        self.peak = max(self.peak, self.pool.total_bytes())


def median_time(fn, sync, repeats=5):
    fn(); sync()
    times = []
    for _ in range(repeats):
        sync(); t = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t)
    return float(np.median(times)), times


# 1. correctness: GPU step vs NumPy step, small size
backend = make_backend("gpu")
c = rng.random((2, 3, 64, 48), dtype=np.float32); s = rng.random((2, 3, 64, 48), dtype=np.float32)
gnet = adain_np.Net(vgg, dec, backend)
lc, ls = gnet.forward(c, s); gg = gnet.backward()
nnet = adain_np.Net(vgg, dec, NumpyBackend())
rc, rs = nnet.forward(c, s); rg = nnet.backward()
err = max(float(np.linalg.norm(backend.to_host(gg[k]) - rg[k]) / np.linalg.norm(rg[k])) for k in rg)
results["check"] = dict(loss_c=(lc, rc), loss_s=(ls, rs), max_grad_rel_err=err)
print("GPU vs NumPy step at 2x3x64x48:", results["check"], flush=True)
del gnet, gg

# 2. training step at batch 8, 256x256: forward + backward + Adam, all on the device
c = rng.random((8, 3, 256, 256), dtype=np.float32); s = rng.random((8, 3, 256, 256), dtype=np.float32)
cupy.get_default_memory_pool().free_all_blocks()
peak = PeakPool()
net = adain_np.Net(vgg, dec, backend)
opt = Adam(net.decoder_params, lr=1e-4, backend=backend)
c_dev, s_dev = backend.asarray(c), backend.asarray(s)


def our_step():
    net.forward(c_dev, s_dev); peak.poll()
    grads = net.backward(); peak.poll()
    opt.step(grads)


sync = cupy.cuda.Device().synchronize
t_ours, ours_all = median_time(our_step, sync)
peak.poll()
tnet = TorchNet(vgg, dec).cuda()
topt = torch.optim.Adam(tnet.decoder.parameters(), lr=1e-4)
ct, st = torch.tensor(c).cuda(), torch.tensor(s).cuda()
torch.cuda.reset_peak_memory_stats()


def torch_step():
    topt.zero_grad()
    loss_c, loss_s = tnet(ct, st)
    (loss_c + 10 * loss_s).backward()
    topt.step()
    loss_c.item(); loss_s.item()


t_torch, torch_all = median_time(torch_step, torch.cuda.synchronize)
results["step"] = dict(ours_s=t_ours, torch_s=t_torch, ours_all=ours_all, torch_all=torch_all,
                       ours_peak_mb=peak.peak / 2**20,
                       torch_peak_mb=torch.cuda.max_memory_allocated() / 2**20)
print("step:", results["step"], flush=True)
del net, opt, c_dev, s_dev, tnet, topt, ct, st
cupy.get_default_memory_pool().free_all_blocks(); torch.cuda.empty_cache()

# 3. stylize 1x512x512
c = rng.random((1, 3, 512, 512), dtype=np.float32); s = rng.random((1, 3, 512, 512), dtype=np.float32)
net = adain_np.Net(vgg, dec, backend)
t_ours, _ = median_time(lambda: adain_np.style_transfer(None, None, c, s, net=net), sync)
tnet = TorchNet(vgg, dec).cuda()


def torch_stylize():
    with torch.no_grad():
        ct, st = torch.tensor(c).cuda(), torch.tensor(s).cuda()
        tnet.decoder(adaptive_instance_normalization(tnet.encode(ct), tnet.encode(st))).cpu()


t_torch, _ = median_time(torch_stylize, torch.cuda.synchronize)
ours_img = adain_np.style_transfer(None, None, c, s, net=net)
with torch.no_grad():
    ref = tnet.decoder(adaptive_instance_normalization(tnet.encode(torch.tensor(c).cuda()),
                                                       tnet.encode(torch.tensor(s).cuda()))).cpu().numpy()
results["stylize"] = dict(ours_s=t_ours, torch_s=t_torch,
                          rel_err=float(np.linalg.norm(ours_img - ref) / np.linalg.norm(ref)))
with open(os.path.join(OUT, results_name), "w") as f:
    json.dump(results, f, indent=1)
st, sy = results["step"], results["stylize"]
print(f"\n{results['device']}  fp32, TF32 off, cudnn.benchmark={torch.backends.cudnn.benchmark}, medians")
print(f"{'work':<22} {'ours':>9} {'torch':>9} {'ratio':>6}")
print(f"{'train step 8x256^2 s':<22} {st['ours_s']:9.3f} {st['torch_s']:9.3f} {st['ours_s'] / st['torch_s']:6.2f}")
print(f"{'train peak MB':<22} {st['ours_peak_mb']:9.0f} {st['torch_peak_mb']:9.0f} {st['ours_peak_mb'] / st['torch_peak_mb']:6.2f}")
print(f"{'stylize 512^2 s':<22} {sy['ours_s']:9.3f} {sy['torch_s']:9.3f} {sy['ours_s'] / sy['torch_s']:6.2f}")
print(f"stylize rel err vs torch {sy['rel_err']:.1e}; step check {results['check']['max_grad_rel_err']:.1e}")
