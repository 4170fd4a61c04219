"""``python -m adain_np.gallery``: the bundled contents x styles with the published weights.

    python -m adain_np.gallery                 # fetch the weights if missing, write output/
    python -m adain_np.gallery --no_download   # only use weights already in models/

Writes ``{output}/gallery.png`` (a grid: styles along the top, contents down the left,
each cell the content stylized with that style) and ``{output}/index.html`` showing it.
When the weights are missing and cannot be fetched (offline), it says so in one line and
exits 0 without writing anything: ``make demo`` then goes on to train as usual.
"""
import html
import io
import os
import sys
import time

import numpy as np
from PIL import Image

from .backend import DeviceError, select_backend
from .cli import (DEFAULT_DECODER, DEFAULT_VGG, ArgumentParser, UserError, add_device_flag,
                  apply_conv_flag, atomic_path, run_cli)
from .images import ImageError, sample_images, to_uint8
from .net import Net
from .stylize import encode_style, prepare, stylize

DOWNLOAD_TIMEOUT = 5.0  # seconds per connection: the demo must not hang offline


class _QuietUntilProgress(io.TextIOBase):
    """Holds back download's messages until bytes flow (its bar starts with a carriage
    return); offline nothing is shown but our own one line."""

    def __init__(self, target):
        self.target, self.held, self.flowing = target, [], False

    def write(self, text):
        if not self.flowing and "\r" in text:
            self.flowing = True
            self.target.write("".join(self.held))
        if self.flowing:
            self.target.write(text)
        else:
            self.held.append(text)
        return len(text)

    def flush(self):
        self.target.flush()


def build_parser():
    p = ArgumentParser(prog="python -m adain_np.gallery",
                       description="Stylize the bundled contents x styles with the published weights.")
    p.add_argument("--vgg", default=DEFAULT_VGG)
    p.add_argument("--decoder", default=DEFAULT_DECODER)
    p.add_argument("--output", default="output", help="folder for gallery.png and index.html")
    p.add_argument("--size", type=int, default=256,
                   help="side of each (square, centre-cropped) cell in px (default %(default)s)")
    p.add_argument("--no_download", action="store_true",
                   help="don't try to fetch missing weights")
    p.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT,
                   help="seconds to wait for the download server (default %(default)s)")
    add_device_flag(p, "where to run the network (default auto)")
    return p


def ensure_weights(args):
    """True when both weight files are there (fetching them if allowed); else prints why."""
    if os.path.isfile(args.vgg) and os.path.isfile(args.decoder):
        return True
    same_folder = os.path.dirname(args.vgg) == os.path.dirname(args.decoder)
    if args.no_download or not same_folder:
        print(f"gallery skipped: no published weights at {args.vgg} and {args.decoder}",
              file=sys.stderr)
        return False
    from .weights import download
    try:
        download(os.path.dirname(args.vgg) or ".", timeout=args.timeout,
                 stream=_QuietUntilProgress(sys.stderr))
    except UserError as err:
        reason = str(err).split(";", 1)[0]
        print(f"gallery skipped: the published weights are not here and {reason}"
              " (offline?)", file=sys.stderr)
        return False
    return os.path.isfile(args.vgg) and os.path.isfile(args.decoder)


def load_published(args):
    from .files import BadFileError
    from .param_files import load_params
    try:
        return load_params(args.vgg, "vgg"), load_params(args.decoder, "decoder")
    except BadFileError as err:
        raise UserError(str(err)) from None


def make_grid(net, content_paths, style_paths, size):
    """(H, W, 3) uint8: row 0 the styles, column 0 the contents, cell (i, j) content i in style j."""
    contents = [prepare(p, size, crop=True) for p in content_paths]   # [(3, size, size)]
    styles = [prepare(p, size, crop=True) for p in style_paths]
    style_stats = [encode_style(net, s) for s in styles]              # computed once per style
    rows, cols = len(contents) + 1, len(styles) + 1
    grid = np.full((rows * size, cols * size, 3), 255, np.uint8)

    def put(i, j, image):  # image (3, h, w), h and w >= size after the 8-rounding
        grid[i * size:(i + 1) * size, j * size:(j + 1) * size] = to_uint8(image[:, :size, :size])
    for j, s in enumerate(styles, 1):
        put(0, j, s)
    for i, c in enumerate(contents, 1):
        put(i, 0, c)
        for j, stats in enumerate(style_stats, 1):
            put(i, j, stylize(net, c, None, style_stats=[stats]))
    return grid


def write_index(path, content_paths, style_paths, weights_text):
    names = lambda paths: ", ".join(html.escape(os.path.basename(p)) for p in paths)  # noqa: E731
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>AdaIN gallery</title></head>
<body style="font-family: sans-serif; max-width: 1200px; margin: 2em auto">
<h1>AdaIN: bundled contents x styles</h1>
<p>Top row: styles ({names(style_paths)}). Left column: contents ({names(content_paths)}).
Each other cell is the content stylized with the style above it (alpha 1), by {html.escape(weights_text)}.</p>
<img src="gallery.png" alt="stylization grid" style="max-width: 100%">
</body></html>
"""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(page)


def main(argv=None):
    args = build_parser().parse_args(argv)
    apply_conv_flag(args)  # a bad ADAIN_CONV is one line here, not a traceback at the first conv
    if args.size < 16:
        raise UserError(f"--size must be at least 16, got {args.size}")
    if not args.timeout > 0:
        raise UserError("--timeout must be positive")
    if not ensure_weights(args):
        return 0
    vgg_params, decoder_params = load_published(args)
    try:
        backend, fallback = select_backend(args.device)
    except DeviceError as err:
        raise UserError(str(err)) from None
    net = Net(vgg_params, decoder_params, backend)
    content_paths, style_paths = sample_images("content"), sample_images("style")
    start = time.perf_counter()
    try:
        grid = make_grid(net, content_paths, style_paths, args.size)
    except ImageError as err:
        raise UserError(str(err)) from None
    try:
        os.makedirs(args.output, exist_ok=True)
        with atomic_path(os.path.join(args.output, "gallery.png")) as tmp:
            Image.fromarray(grid, mode="RGB").save(tmp, format="PNG")
        write_index(os.path.join(args.output, "index.html"), content_paths, style_paths,
                    f"the weights {os.path.basename(args.vgg)} + {os.path.basename(args.decoder)}")
    except OSError as err:
        raise UserError(f"cannot write to {args.output} ({err.strerror or err})") from None
    print(f"wrote {os.path.join(args.output, 'gallery.png')} and index.html"
          f" ({len(content_paths)} contents x {len(style_paths)} styles,"
          f" {backend.name}{' (' + fallback + ')' if fallback else ''},"
          f" {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
