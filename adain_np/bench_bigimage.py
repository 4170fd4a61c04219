"""``python -m adain_np.bench bigimage``: streaming stylize of 4K and 8K images on the CPU.

Each size runs in its own subprocess, so its peak RSS (ru_maxrss) is its own. The
content is a seeded 8-bit image held as the CLI would hold a decoded file; the style
is 512x512; the output is written as PNG rows to a temporary folder. The comparisons:
our whole-image stylize at 512x512 (time per pixel; the target is streaming <= 1.2x)
and torch's whole-image stylize at 4K (tools/bench_torch.py bigimage), each in its own
process too. One timed run per big size (no warm-up run: they are long).

Targets: peak RSS <= 1 GB at 4K and <= 1.5 GB at 8K.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZES = {"4K": (2160, 3840), "8K": (4320, 7680)}  # name: (height, width)
STYLE_SIDE = 512
RSS_TARGET_MB = {"4K": 1024, "8K": 1536}


def _worker(height, width, out_dir):
    """Stylize one seeded height x width content by streaming; print time and peak RSS."""
    from PIL import Image

    import adain_np
    from adain_np.bench import report
    from adain_np.params import init_decoder_params, init_vgg_params
    from adain_np.streaming import ArrayRows, ImageRows, stylize_streaming
    rng = np.random.default_rng(0)
    content = ImageRows("content", image=Image.fromarray(
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB"))
    style = ArrayRows(rng.random((3, STYLE_SIDE, STYLE_SIDE), dtype=np.float32))
    net = adain_np.Net(init_vgg_params(0), init_decoder_params(0))
    start = time.perf_counter()
    stylize_streaming(net, content, [style], os.path.join(out_dir, "out.png"))
    report([time.perf_counter() - start])


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        from adain_np.cli import UserError
        raise UserError(f"{' '.join(cmd[1:3])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_bigimage(threads, sizes=tuple(SIZES), torch=True):
    """Rows of {size, pixels, seconds, peak_mb, ...}; prints a table. Runs the subprocesses."""
    from adain_np.bench import _measure, _tool

    class Args:
        repeats = 1
    Args.threads = threads
    base = _measure("ours", "stylize", Args)            # whole-image 512x512, one warm-up + 1 run
    base_per_mp = base["times"][0] / (512 * 512 / 1e6)
    rows = [dict(size="512 whole", pixels=512 * 512, seconds=base["times"][0], peak_mb=base["peak_mb"],
                 per_mp=base_per_mp)]
    for name in sizes:
        height, width = SIZES[name]
        with tempfile.TemporaryDirectory() as out_dir:
            got = _run([sys.executable, "-m", "adain_np.bench_bigimage", "--worker",
                        str(height), str(width), out_dir])
        seconds = got["times"][0]
        rows.append(dict(size=f"{name} stream", pixels=height * width, seconds=seconds,
                         peak_mb=got["peak_mb"], per_mp=seconds / (height * width / 1e6),
                         rss_target_mb=RSS_TARGET_MB[name]))
    if torch:
        got = _run([sys.executable, _tool("bench_torch.py"), "bigimage", "1", str(threads)])
        height, width = SIZES["4K"]
        rows.append(dict(size="4K torch whole", pixels=height * width, seconds=got["times"][0],
                         peak_mb=got["peak_mb"], per_mp=got["times"][0] / (height * width / 1e6)))
    print(f"{'run':<15} {'MP':>6} {'s':>8} {'s/MP':>7} {'vs 512':>7} {'peak MB':>8} {'RSS target':>10}")
    for r in rows:
        target = r.get("rss_target_mb")
        verdict = "" if target is None else f"{target:>6} {'ok' if r['peak_mb'] <= target else 'OVER'}"
        print(f"{r['size']:<15} {r['pixels'] / 1e6:6.2f} {r['seconds']:8.1f} {r['per_mp']:7.2f}"
              f" {r['per_mp'] / base_per_mp:7.2f} {r['peak_mb']:8.0f} {verdict:>10}", flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        bench_bigimage(os.cpu_count())
