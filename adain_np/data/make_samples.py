"""Rebuild the bundled sample images (run by hand; not imported by the library).

    python adain_np/data/make_samples.py SKIMAGE_DATA_DIR

SKIMAGE_DATA_DIR is ``skimage/data`` unzipped from a scikit-image wheel
(``pip download scikit-image --no-deps``); scikit-image is not a dependency.
grace_hopper.jpg comes from matplotlib's sample data. The two colourful style
images are generated here from fixed seeds. Sources and licences: LICENSE.md.
"""
import os
import sys

import matplotlib
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SHORT_SIDE = 256
JPEG_QUALITY = 90

CONTENT = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
           "rocket": "rocket.jpg"}
STYLE = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png"}


def shrink(img):
    """Shorter side -> SHORT_SIDE, Lanczos (only for preparing the files)."""
    width, height = img.size
    scale = SHORT_SIDE / min(width, height)
    return img.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)


def palette_lookup(t, colours):
    """Map t in [0, 1] (H, W) through a piecewise-linear palette of RGB colours -> (H, W, 3)."""
    colours = np.asarray(colours, dtype=np.float64)  # (K, 3)
    stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1)


def smooth_noise(rng, size, waves=24, max_freq=6.0):
    """A smooth random field in [-1, 1]: a sum of random plane waves. (size, size)"""
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(waves):
        freq = rng.uniform(1.0, max_freq)
        angle = rng.uniform(0, 2 * np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase) / freq
    return field / np.abs(field).max()


def swirls(size=256, seed=1):
    """Warped bands in a night-sky palette, with fine streaks like brush strokes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    warp_a, warp_b = smooth_noise(rng, size), smooth_noise(rng, size)
    bands = np.sin(2 * np.pi * (5 * x + 1.5 * warp_a) + 3 * np.sin(2 * np.pi * (3 * y + warp_b)))
    t = (bands + 1) / 2
    # Streaks: noise smeared along x, so it reads as directional strokes.
    streaks = rng.standard_normal((size, size))
    kernel = np.ones(9) / 9
    streaks = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, streaks)
    t = np.clip(t + 0.12 * streaks, 0, 1)
    colours = [(16, 28, 84), (38, 84, 164), (96, 160, 210), (236, 214, 92), (250, 160, 40)]
    return Image.fromarray(palette_lookup(t, colours).round().astype(np.uint8), mode="RGB")


def stained_glass(size=256, seed=2, cells=90):
    """Voronoi cells in saturated colours with dark leading between them."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, (cells, 2))  # (cells, 2) as (y, x)
    y, x = np.mgrid[0:size, 0:size]
    dist = np.hypot(y[..., None] - points[:, 0], x[..., None] - points[:, 1])  # (size, size, cells)
    nearest_two = np.partition(dist, 1, axis=-1)[..., :2]
    owner = dist.argmin(axis=-1)
    palette = np.array([(200, 30, 40), (240, 170, 20), (30, 110, 190), (40, 150, 70),
                        (140, 50, 150), (245, 230, 200), (230, 90, 30)], dtype=np.float64)
    cell_colour = palette[rng.integers(0, len(palette), cells)]  # (cells, 3)
    shade = 0.75 + 0.25 * smooth_noise(rng, size, max_freq=10)[..., None]
    rgb = cell_colour[owner] * shade
    edge = np.clip((nearest_two[..., 1] - nearest_two[..., 0]) / 3.0, 0, 1)[..., None]
    rgb = rgb * edge + 20 * (1 - edge)
    return Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), mode="RGB")


def main(skimage_data):
    os.makedirs(os.path.join(HERE, "content"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "style"), exist_ok=True)
    for name, source in CONTENT.items():
        img = Image.open(os.path.join(skimage_data, source)).convert("RGB")
        shrink(img).save(os.path.join(HERE, "content", f"{name}.jpg"), quality=JPEG_QUALITY)
    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    shrink(Image.open(hopper).convert("RGB")).save(
        os.path.join(HERE, "content", "grace_hopper.jpg"), quality=JPEG_QUALITY)
    for name, source in STYLE.items():  # grayscale, kept as 8-bit L JPEGs
        img = Image.open(os.path.join(skimage_data, source)).convert("L")
        shrink(img).save(os.path.join(HERE, "style", f"{name}.jpg"), quality=JPEG_QUALITY)
    swirls().save(os.path.join(HERE, "style", "swirls.png"))
    stained_glass().save(os.path.join(HERE, "style", "stained_glass.png"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
