"""`make demo` until training lands: one forward/backward of Net on the bundled images.

Random (seeded) weights stand in for the published ones, so the numbers show the
mechanics, not a painter's style. It prints the two losses and checks two decoder
gradient entries against centred differences.
"""
import sys
import time
from pathlib import Path

import numpy as np

import adain_np
from adain_np.images import load_image, resize_exact, sample_images, to_tensor


def main():
    content_path, style_path = (Path(p) for p in (sample_images("content")[0], sample_images("style")[-1]))
    size = 64
    content = to_tensor(resize_exact(load_image(content_path), (size, size)))[None]  # (1, 3, 64, 64)
    style = to_tensor(resize_exact(load_image(style_path), (size, size)))[None]
    print(f"content {content_path.name}, style {style_path.name}, resized to {size}x{size}")
    vgg, decoder = adain_np.init_vgg_params(0), adain_np.init_decoder_params(0)
    net = adain_np.Net(vgg, decoder)
    start = time.perf_counter()
    loss_c, loss_s = net.forward(content, style)
    grads = net.backward(content_weight=1.0, style_weight=10.0)
    print(f"loss_c {loss_c:.4f}  loss_s {loss_s:.4f}  forward+backward {time.perf_counter() - start:.2f} s")

    # Centred differences in float64 on two entries of the last decoder conv.
    vgg64 = {k: v.astype(np.float64) for k, v in vgg.items()}
    dec64 = {k: v.astype(np.float64) for k, v in decoder.items()}
    from adain_np.backend import NumpyBackend
    net64 = adain_np.Net(vgg64, dec64, NumpyBackend(np.float64))
    net64.forward(content, style)
    g64 = net64.backward(1.0, 10.0)
    w = net64.decoder_params["28.weight"].reshape(-1)
    worst = 0.0
    # The two largest entries: a ReLU channel that is dead on this image has exactly zero gradient.
    for i in np.argsort(np.abs(g64["28.weight"].reshape(-1)))[-2:]:
        old, h = w[i], 1e-5
        w[i] = old + h
        plus = sum(np.array(net64.forward(content, style)) * [1.0, 10.0])
        w[i] = old - h
        minus = sum(np.array(net64.forward(content, style)) * [1.0, 10.0])
        w[i] = old
        numeric = (plus - minus) / (2 * h)
        analytic = g64["28.weight"].reshape(-1)[i]
        worst = max(worst, abs(analytic - numeric) / (abs(analytic) + abs(numeric)))
    print(f"gradient check (float64, decoder 28.weight): max rel error {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
