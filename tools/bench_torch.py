"""The torch side of ``python -m adain_np.bench``: pytorch-AdaIN's Net on the CPU.

    python tools/bench_torch.py WORKLOAD REPEATS THREADS

Kept outside the package because the library never imports torch. It times the same
workload on the same inputs as the NumPy side and prints the same JSON line.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))  # torch_reference: test-only code
sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch_reference import TorchNet, adaptive_instance_normalization  # noqa: E402

from adain_np.bench import WORKLOADS, bench_inputs, report, time_runs  # noqa: E402
from adain_np.params import init_decoder_params, init_vgg_params  # noqa: E402


def main(workload, repeats, threads):
    torch.set_num_threads(threads)
    net = TorchNet(init_vgg_params(0), init_decoder_params(0))
    if workload == "bigimage":  # whole-image stylize of a 4K content with a 512x512 style
        from adain_np.bench_bigimage import SIZES, STYLE_SIDE
        content = torch.tensor(bench_inputs((1, 3) + SIZES["4K"])[0])
        style = torch.tensor(bench_inputs((1, 3, STYLE_SIDE, STYLE_SIDE))[1])
    else:
        content, style = (torch.tensor(a) for a in bench_inputs(WORKLOADS[workload][0]))

    def run():
        if workload == "encoder":
            with torch.no_grad():
                net.encode(content)
        elif workload == "step":
            net.decoder_grads(content, style)
        else:
            with torch.no_grad():
                net.decoder(adaptive_instance_normalization(net.encode(content), net.encode(style)))
    report(time_runs(run, repeats))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
