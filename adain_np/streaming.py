"""Stylize an image of any size in memory that does not grow with its height.

Every layer of the encoder and the decoder is local along the rows: a 3x3 conv after a
reflection pad reads one row above and below, a 2x2 ceil-mode pool reads two rows, a x2
upsample one. So each layer runs as a stage that is fed bands of rows from the top,
keeps only the rows its next output still needs (its halo: two input rows for a conv,
at most one for a pool), and hands on every output row it can finish.

The result is the whole-image computation, not an approximation with seams:
  * A conv stage calls the backend's conv (reflection pad folded in) on its carried rows
    plus the new band. Rows that touch the band's top or bottom edge see a wrong
    reflection there, and are exactly the ones dropped; at the real image border the
    band edge *is* the border, so the reflection is the right one. The whole width is
    always present, so columns reflect as in the whole image.
  * A pool stage pairs rows from an even global row, so its windows are the whole
    image's; an odd last row is pooled alone at the end (ceil mode), as there.
  * Input bands are multiples of 8 rows (2**pools), so every band lines up with the
    pools and the output is 8*ceil(H/8) x 8*ceil(W/8), like the whole-image path.

AdaIN needs the global mean and std of the content's relu4_1 features, so there are
two passes over the content. Pass 1 streams the encoder and merges each band's
statistics exactly (Chan et al.'s parallel formula, in float64). Pass 2 streams the
encoder again, applies AdaIN with the global statistics band by band, streams the
decoder, and writes each finished output band. A style image goes through pass 1's
path for its statistics; --preserve_color's CORAL needs the global pixel mean and
covariance of both images, which one more cheap pass over the pixels gathers.

Only backend ops are used for the networks (conv_forward, maxpool_forward,
upsample_forward, mean_std, asarray, to_host) plus elementwise array ops of
backend.xp, so this runs on NumPy, the GPU and the emulator alike.

Images: the source file is decoded once to its 8-bit RGB image (the only
whole-image buffer on the input side); float bands are made from it on demand, and a
resize is done band by band with Pillow's `box` argument, which computes the same
filter taps as the whole resize. Output: PNG rows go to a hand-written row encoder
(png_rows.py) as they finish; other formats (JPEG, ...) have no row-streaming encoder
in Pillow, so their rows are gathered in one 8-bit image (3 bytes per pixel, a sixth
of one float32 RGB copy) and saved by Pillow at the end.

Dimension names: C channels, r rows in a band, W width, h4/w4 the relu4_1 map size.
"""
import os

import numpy as np
from PIL import Image

from .cli import UserError, atomic_path
from .coral import coral_transfer
from .files import check_regular
from .images import (BILINEAR, ImageError, center_crop, load_image, resize_shorter, resized_size,
                     to_tensor, to_uint8)
from .masked import mask_to_features
from .params import DECODER_LAYERS, ENCODER_END, ENCODER_POOLS, MIN_IMAGE_SIDE, VGG_LAYERS
from .stats import EPS
from .xp import get_array_module

ROW_ALIGN = 2 ** ENCODER_POOLS  # input bands start on multiples of this (8)
DECODER_UPS = sum(layer[0] == "up" for layer in DECODER_LAYERS)
assert DECODER_UPS == ENCODER_POOLS
FULL_RES_CHANNELS = 64     # relu1_1's channels: a band's rows are sized by this activation
# One 64-channel full-resolution band (A). The peak is about 5A, at the decoder's first
# full-resolution conv: its 128-channel input (2A), NumPy's padded copy of it (2A) and its
# output (A). 96 MB keeps a 4K stylize under 1 GB, and at 96 rows (4K) each stage's two
# dropped band-edge rows cost about 2%-8% of its work.
BAND_BYTES = 96 << 20
# The whole-image path's peak per content pixel (float32): a 3840x2160 stylize peaked
# at 6.9 GB RSS, 830 bytes per pixel. Used to decide when to stream.
WHOLE_IMAGE_BYTES_PER_PIXEL = 850


# ---------------------------------------------------------------- sizes and budgets

def feature_side(side):
    """A side at relu4_1: each ceil-mode pool halves it, rounding up."""
    for _ in range(ENCODER_POOLS):
        side = (side + 1) // 2
    return side


def output_side(side):
    """A side of the decoded image: 8*ceil(side/8)."""
    return feature_side(side) * 2 ** DECODER_UPS


def band_rows_for(width, itemsize=4, band_bytes=BAND_BYTES):
    """Input rows per band so that one full-resolution activation band is about band_bytes."""
    rows = band_bytes // (FULL_RES_CHANNELS * itemsize * max(int(width), 1))
    return int(max(ROW_ALIGN, rows // ROW_ALIGN * ROW_ALIGN))


def whole_image_bytes(height, width, itemsize=4):
    """Estimated peak memory of the whole-image path for a content of height x width."""
    return int(WHOLE_IMAGE_BYTES_PER_PIXEL * itemsize / 4 * height * width)


def available_memory(backend):
    """Free memory where the backend's arrays live: the GPU's free memory, else available RAM
    (also for backend None)."""
    xp = np if backend is None else backend.xp
    if xp is not np:
        return int(xp.cuda.runtime.memGetInfo()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # unknown: assume a small machine


# ---------------------------------------------------------------- input rows

class ImageRows:
    """An image file as bands of test.py's transformed tensor, (3, r, W) float32 in [0, 1].

    Holds the decoded 8-bit image only. Without --crop a resize is made per band; with
    --crop the (at most size x size) cropped image is made once.
    """

    def __init__(self, path, size=0, crop=False, image=None):
        """From the file at `path`, or from an RGB PIL `image` (then `path` only names it)."""
        self.path = os.fspath(path)
        img = load_image(self.path, shorter_side=size) if image is None else image  # RGB, 8 bits
        if crop:
            img = resize_shorter(img, size)
            img = center_crop(img, size if size else min(img.size))
        self.image = img
        self.width, self.height = resized_size(*img.size, 0 if crop else size)
        if min(self.width, self.height) < MIN_IMAGE_SIDE:
            how = "" if size == 0 else " after resizing"
            raise ImageError(f"{self.path}: image is {self.width}x{self.height} px{how}; the"
                             f" encoder needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} px")

    def band(self, row0, row1):
        """Rows row0..row1 of the transformed image: (3, row1-row0, W) float32."""
        src_w, src_h = self.image.size
        if (src_w, src_h) == (self.width, self.height):
            part = self.image.crop((0, row0, src_w, row1))
        else:
            # Pillow places output row i at source centre box_top + (i + 0.5) * scale and
            # takes its taps from the whole image, so a band of a resize is that band of
            # the whole resize (up to the rounding of the box's float coordinates).
            scale = src_h / self.height
            part = self.image.resize((self.width, row1 - row0), BILINEAR,
                                     box=(0, row0 * scale, src_w, row1 * scale))
        return to_tensor(part)                                      # (3, r, W)


class ArrayRows:
    """A (3, H, W) float array in [0, 1] as a row source (tests, and images already in memory)."""

    def __init__(self, image):
        self.image = np.asarray(image)
        _, self.height, self.width = self.image.shape

    def band(self, row0, row1):
        return self.image[:, row0:row1]


def row_bands(height, rows):
    """(row0, row1) bands of `rows` rows (a multiple of ROW_ALIGN) covering 0..height."""
    if rows <= 0 or rows % ROW_ALIGN:
        raise ValueError(f"band rows must be a positive multiple of {ROW_ALIGN}, got {rows}")
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


# ---------------------------------------------------------------- the layers as row stages

class _ConvRows:
    """A conv (3x3 after a reflection pad, or 1x1), fed bands from the top."""

    def __init__(self, backend, w, b, reflect_pad, relu):
        self.backend, self.w, self.b = backend, w, b
        self.reflect_pad, self.relu = reflect_pad, relu
        self.carry = None   # input rows kept for the next output rows: (1, C, k, W)
        self.carry_start = 0  # global index of carry's first row
        self.done = 0       # output rows handed on so far

    def push(self, box, final):
        b, xp = self.backend, self.backend.xp
        x = box.pop() if box else None  # ours alone now: freed as soon as it is copied
        if not self.reflect_pad:  # 1x1: each row on its own
            return None if x is None else b.conv_forward(xp.ascontiguousarray(x), self.w, self.b,
                                                         False, self.relu)[0]
        parts = [p for p in (self.carry, x) if p is not None]
        if not parts:
            return None
        rows = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=2)  # (1, C, r, W)
        del x, parts
        start = self.carry_start
        end = start + rows.shape[2]
        limit = end if final else end - 1   # output row j needs input row j+1 (or the border)
        if limit <= self.done:
            self.carry = rows
            return None
        lo, hi = max(0, self.done - 1), min(end, limit + 1)
        band = xp.ascontiguousarray(rows[:, :, lo - start:hi - start])
        y, _ = b.conv_forward(band, self.w, self.b, True, self.relu)  # (1, F, hi-lo, W)
        # Rows lo (when lo > 0) and hi-1 (when hi < H) saw the band edge, not the image's.
        out = y[:, :, self.done - lo:limit - lo]
        self.carry = None if final else rows[:, :, limit - 1 - start:].copy()  # not a view of rows
        self.carry_start, self.done = limit - 1, limit
        return out


class _PoolRows:
    """2x2 max-pool, ceil mode: pairs rows from an even global row."""

    def __init__(self, backend):
        self.backend = backend
        self.carry = None  # an odd row waiting for its partner: (1, C, 1, W)

    def push(self, box, final):
        xp = self.backend.xp
        x = box.pop() if box else None
        parts = [p for p in (self.carry, x) if p is not None]
        if not parts:
            return None
        rows = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=2)
        del x, parts
        usable = rows.shape[2] if final else rows.shape[2] // 2 * 2
        self.carry = None if usable == rows.shape[2] else rows[:, :, usable:].copy()
        if usable == 0:
            return None
        return self.backend.maxpool_forward(xp.ascontiguousarray(rows[:, :, :usable]))[0]


class _UpRows:
    def __init__(self, backend):
        self.backend = backend

    def push(self, box, final):
        if not box:
            return None
        return self.backend.upsample_forward(self.backend.xp.ascontiguousarray(box.pop()))[0]


class RowPipeline:
    """layers[start:end] as row stages; push(band, final) -> the finished output rows or None.

    The walk and the conv/ReLU fusion are net.run_layers': a pad or conv runs with the
    ReLU that follows it fused.
    """

    def __init__(self, backend, layers, params, start, end):
        self.stages = []
        i = start
        while i < end:
            kind = layers[i][0]
            if kind in ("pad", "conv"):
                conv_index = i + 1 if kind == "pad" else i
                fuse_relu = conv_index + 1 < end and layers[conv_index + 1][0] == "relu"
                self.stages.append(_ConvRows(backend, params[f"{conv_index}.weight"],
                                             params[f"{conv_index}.bias"], kind == "pad", fuse_relu))
                i = conv_index + (2 if fuse_relu else 1)
            elif kind == "pool":
                self.stages.append(_PoolRows(backend))
                i += 1
            elif kind == "up":
                self.stages.append(_UpRows(backend))
                i += 1
            else:
                raise ValueError(f"unexpected layer {layers[i]} at {i}")

    def push(self, x, final=False):
        # Each stage gets its input in a list it empties, so that no reference here keeps
        # the previous activation alive while the stage computes the next one.
        box = [] if x is None else [x]
        del x
        for stage in self.stages:
            out = stage.push(box, final)
            if out is None and not final:
                return None
            box = [] if out is None else [out]
            del out
        return box[0] if box else None


def encoder_rows(net):
    return RowPipeline(net.backend, VGG_LAYERS, net.vgg_params, 0, ENCODER_END)


def decoder_rows(net):
    return RowPipeline(net.backend, DECODER_LAYERS, net.decoder_params, 0, len(DECODER_LAYERS))


def stream_encoder(net, source, band_rows, transform=None):
    """Yield (pixels (3, r, W) host, relu4_1 rows (1, 512, r', w4) on the backend, or None)."""
    b = net.backend
    encoder = encoder_rows(net)
    for row0, row1 in row_bands(source.height, band_rows):
        pixels = source.band(row0, row1)                            # (3, r, W)
        if transform is not None:
            pixels = transform(pixels)
        yield pixels, encoder.push(b.asarray(pixels[None]), final=row1 == source.height)


# ---------------------------------------------------------------- statistics, merged exactly

class RunningMoments:
    """Count, mean (C,) and sum of squared deviations (C,) or co-moment (C, C), in float64,
    merged band by band with Chan, Golub & LeVeque's parallel formula."""

    def __init__(self, covariance=False):
        self.covariance = covariance
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, count, mean, m2):
        if count == 0:
            return
        mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean.copy(), m2.copy()
            return
        total = self.count + count
        delta = mean - self.mean
        weight = self.count * count / total
        self.m2 = self.m2 + m2 + (np.outer(delta, delta) if self.covariance else delta * delta) * weight
        self.mean = self.mean + delta * (count / total)
        self.count = total

    def add_values(self, values):
        """values (C, n), any float array module: add their moments."""
        xp = get_array_module(values)
        n = values.shape[1]
        if n == 0:
            return
        v = values.astype(xp.float64)
        mean = v.mean(axis=1)                                       # (C,)
        centered = v - mean[:, None]
        m2 = centered @ centered.T if self.covariance else (centered * centered).sum(axis=1)
        self.add(n, _host(mean), _host(m2))

    def add_features(self, backend, feat, eps=EPS):
        """A band of features (1, C, r, w) through backend.mean_std: its unbiased std with
        eps gives back the band's variance, so its sum of squared deviations."""
        n = feat.shape[2] * feat.shape[3]
        mean, std = (backend.to_host(a).astype(np.float64).reshape(-1) for a in backend.mean_std(feat, eps))
        self.add(n, mean, np.maximum(std * std - eps, 0.0) * (n - 1))

    def variance(self):
        """The unbiased variance (C,) (or covariance, with the co-moment)."""
        return self.m2 / (self.count - 1)

    def mean_std(self, eps=EPS):
        """calc_mean_std's (mean, std), float64 (C,) each; a single value has variance 0."""
        var = self.variance() if self.count > 1 else np.zeros_like(self.mean)
        return self.mean, np.sqrt(var + eps)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def coral_transform(source, target):
    """coral.coral(style, content) from the two images' pixel moments (RunningMoments with
    covariance): a function from style pixels (3, r, W) to recoloured float32 pixels."""
    def standardised(m):
        std = np.sqrt(np.diag(m.variance()))                       # torch's unbiased std
        safe = np.where(std > 0, std, 1.0)  # a flat channel stays 0, as in coral.py
        return m.mean, std, safe, m.m2 / np.outer(safe, safe) + np.eye(3)

    source_mean, _, source_safe, source_cov_eye = standardised(source)
    target_mean, target_std, _, target_cov_eye = standardised(target)
    transfer = coral_transfer(source_cov_eye, target_cov_eye)      # (3, 3)

    def apply(pixels):
        flat = np.asarray(pixels, np.float64).reshape(3, -1)        # (3, n)
        norm = (flat - source_mean[:, None]) / source_safe[:, None]
        out = (transfer @ norm) * target_std[:, None] + target_mean[:, None]
        return out.reshape(pixels.shape).astype(np.float32)
    return apply


def pixel_moments(source, band_rows):
    moments = RunningMoments(covariance=True)
    for row0, row1 in row_bands(source.height, band_rows):
        moments.add_values(source.band(row0, row1).reshape(3, -1))
    return moments


def style_stats_streaming(net, source, band_rows, transform=None):
    """relu4_1 (mean, std) of a style row source, each (1, C, 1, 1) on the backend."""
    moments = RunningMoments()
    for _, feat in stream_encoder(net, source, band_rows, transform):
        if feat is not None:
            moments.add_features(net.backend, feat)
    return _to_backend(net.backend, moments.mean_std())


def _to_backend(backend, mean_std):
    return tuple(backend.asarray(a.reshape(1, -1, 1, 1)) for a in mean_std)


# ---------------------------------------------------------------- output rows

class _HeldWriter:
    """Formats without a row encoder here: rows gather in one 8-bit image, saved by Pillow."""

    def __init__(self, path, width, height, image_format):
        self.path, self.format = path, image_format
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)  # (H, W, 3)
        self.rows_written = 0

    def write_rows(self, rows):
        self.pixels[self.rows_written:self.rows_written + rows.shape[0]] = rows
        self.rows_written += rows.shape[0]

    def close(self):
        try:
            Image.fromarray(self.pixels, mode="RGB").save(self.path, format=self.format)
        except (ValueError, KeyError) as err:  # Pillow's refusals of a format or its options
            raise OSError(str(err)) from None


class _PngWriter:
    def __init__(self, path, width, height):
        from .png_rows import PngRowWriter
        self.file = open(path, "wb")
        try:
            self.writer = PngRowWriter(self.file, width, height)
        except BaseException:
            self.file.close()
            raise
        self.write_rows = self.writer.write_rows

    def close(self):
        with self.file:
            self.writer.close()


def _save_format(path):
    ext = os.path.splitext(path)[1].lower()
    image_format = Image.registered_extensions().get(ext)
    if image_format is None or image_format not in Image.SAVE:
        raise ImageError(f"{path}: unknown image extension {ext!r} (use .png or .jpg, for example)")
    return image_format


# ---------------------------------------------------------------- AdaIN on a band

def _band_target(xp, feat, content_stats, style_stats, alpha, weights, mask_rows, region_stats):
    """The decoder's input for a band, as net.adain_target builds it for the whole map,
    with the content statistics of the whole map."""
    if mask_rows is not None:  # masked.masked_adain, with each region's global statistics
        _, C, r, w = feat.shape
        flat = feat.reshape(C, r * w)                               # (C, n)
        foreground = xp.asarray(mask_rows.reshape(-1))              # (n,) bool
        target = xp.empty_like(flat)
        for region, stats, (style_mean, style_std) in zip(
                (foreground, ~foreground), region_stats, style_stats):
            positions = xp.nonzero(region)[0]
            if positions.size == 0:
                continue
            mean, std = stats  # a region with positions in this band has statistics
            part = flat[:, positions]                               # (C, n_region)
            normalized = (part - mean.reshape(C, 1)) / std.reshape(C, 1)
            target[:, positions] = normalized * style_std.reshape(C, 1) + style_mean.reshape(C, 1)
        if alpha != 1.0:
            target = alpha * target + (1 - alpha) * flat
        return target.reshape(feat.shape)
    content_mean, content_std = content_stats
    normalized = (feat - content_mean) / content_std                # stats.adain_with_stats_forward
    if weights is None:
        t = normalized * style_stats[0][1] + style_stats[0][0]
        return alpha * t + (1 - alpha) * feat if alpha != 1.0 else t
    t = 0
    for w, (mean, std) in zip(weights, style_stats):                # sum_i w_i AdaIN(c, s_i)
        t = t + w * (normalized * std + mean)
    return t * alpha + feat * (1 - alpha)


# ---------------------------------------------------------------- the two passes

def stylized_rows(net, content, styles, alpha=1.0, weights=None, mask_img=None, crop=False,
                  preserve_color=False, style_stats=None, band_rows=None):
    """Stylize a content row source with style row sources, in bounded memory.

    content, styles: ImageRows / ArrayRows. The arguments are stylize.stylize's; style_stats
    (one (mean, std) per style) replaces encoding the styles (not with preserve_color).
    Yields the decoded image from the top as host bands (3, r, output_side(W)), float,
    output_side(H) rows in all.
    """
    b, xp = net.backend, net.backend.xp
    if band_rows is None:
        band_rows = band_rows_for(content.width, b.dtype.itemsize)
    h4, w4 = feature_side(content.height), feature_side(content.width)
    mask = None if mask_img is None else mask_to_features(mask_img, (h4, w4), crop)  # (h4, w4) bool

    # Pass 1: content relu4_1 statistics (per mask region with a mask), and pixel moments.
    content_moments = RunningMoments()
    regions = [RunningMoments(), RunningMoments()]
    pixels_of_content = RunningMoments(covariance=True) if preserve_color else None
    row = 0
    for pixels, feat in stream_encoder(net, content, band_rows):
        if pixels_of_content is not None:
            pixels_of_content.add_values(pixels.reshape(3, -1))
        if feat is None:
            continue
        r = feat.shape[2]
        if mask is None:
            content_moments.add_features(b, feat)
        else:
            flat = feat.reshape(feat.shape[1], -1)                  # (C, r*w4)
            foreground = mask[row:row + r].reshape(-1)
            for moments, region in zip(regions, (foreground, ~foreground)):
                moments.add_values(flat[:, xp.asarray(np.nonzero(region)[0])])
        row += r
    assert row == h4, (row, h4)

    # The styles: CORAL to the content's pixel statistics, then their relu4_1 statistics.
    if style_stats is None or preserve_color:
        style_stats = []
        for source in styles:
            transform = (coral_transform(pixel_moments(source, band_rows), pixels_of_content)
                         if preserve_color else None)
            style_stats.append(style_stats_streaming(net, source, band_rows, transform))
    content_stats = _to_backend(b, content_moments.mean_std()) if mask is None else None
    region_stats = None if mask is None else [
        _to_backend(b, m.mean_std()) if m.count else None for m in regions]

    # Pass 2: encoder, AdaIN with the global statistics, decoder, rows out.
    decoder = decoder_rows(net)
    row = 0
    for _, feat in stream_encoder(net, content, band_rows):
        final = row + (0 if feat is None else feat.shape[2]) == h4
        if feat is not None:
            mask_rows = None if mask is None else mask[row:row + feat.shape[2]]
            row += feat.shape[2]
            feat = _band_target(xp, feat, content_stats, style_stats, alpha, weights,
                                mask_rows, region_stats)
        image = decoder.push(feat, final)
        if image is not None:
            yield b.to_host(image)[0]                               # (3, r, W_out)


def stylize_streaming(net, content, styles, out_path, **options):
    """stylized_rows (same options) written to out_path as the rows finish, atomically.

    PNG is written row by row; other formats gather 8-bit rows and are saved at the end.
    Returns the output's (height, width). Raises ImageError when it cannot be written.
    """
    out_h, out_w = output_side(content.height), output_side(content.width)
    out_path = os.fspath(out_path)
    image_format = _save_format(out_path)
    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise ImageError(f"{out_path}: directory {directory} does not exist")
    try:
        with atomic_path(out_path) as tmp:
            writer = (_PngWriter(tmp, out_w, out_h) if image_format == "PNG"
                      else _HeldWriter(tmp, out_w, out_h, image_format))
            for band in stylized_rows(net, content, styles, **options):
                writer.write_rows(to_uint8(band))                   # (r, W, 3) uint8
            writer.close()
    except OSError as err:
        raise ImageError(f"{out_path}: cannot save image ({' '.join(str(err).split())})") from None
    return out_h, out_w


# ---------------------------------------------------------------- the command line (stylize.py)

MEMORY_FRACTION = 0.5  # default --max_memory: this share of the free memory where the arrays live
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def add_stream_flags(parser):
    parser.add_argument("--stream", action="store_true",
                        help="stylize in bands of rows, in memory that does not grow with the image"
                        " height (the same pixels as the whole-image path)")
    parser.add_argument("--max_memory", metavar="BYTES",
                        help="memory budget of the whole-image path, e.g. 4G or 800M; a larger job"
                        f" streams (default: {MEMORY_FRACTION:g} of the free RAM, or of the GPU's"
                        " free memory)")


def parse_memory(text):
    """'4G', '800M', '1.5g', '123456' -> bytes; ValueError with a one-line reason."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        raise ValueError(f"--max_memory {text!r}: not a size (use 4G, 800M or a byte count)") from None
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"--max_memory {text!r}: must be a positive size")
    return int(value * _UNITS[unit])


class StreamPlan:
    """Which jobs stream (--stream, or the whole image over the budget), and running one."""

    def __init__(self, args, say, warn):
        self.args, self.say, self.warn = args, say, warn
        try:
            self.budget = None if args.max_memory is None else parse_memory(args.max_memory)
        except ValueError as err:
            raise UserError(str(err)) from None
        self.style_stats = {}  # style path -> relu4_1 (mean, std), streamed; not with preserve_color

    def _content_size(self, path):
        """(height, width) the content will have, from the file's header (no decoding)."""
        check_regular(path)  # a FIFO would block Image.open forever
        with Image.open(path) as img:
            width, height = img.size
        size = self.args.content_size
        if self.args.crop:
            side = size if size else min(width, height)
            return side, side
        width, height = resized_size(width, height, size)
        return height, width

    def wants(self, path, backend=None):
        """Stream this content? backend None: judged for float32 in host RAM (before a
        backend is chosen, when explicit files are checked)."""
        if self.args.stream:
            return True
        try:
            height, width = self._content_size(path)
        except Exception:  # unreadable: the whole-image path reports it as usual
            return False
        budget = self.budget
        if budget is None:
            free = available_memory(backend) if backend is not None else available_memory(None)
            budget = int(free * MEMORY_FRACTION)
        itemsize = 4 if backend is None else backend.dtype.itemsize
        return whole_image_bytes(height, width, itemsize) > budget

    def _rows(self, path, size, in_folder):
        try:
            return ImageRows(path, size, self.args.crop)
        except ImageError as err:
            if not in_folder:
                raise UserError(str(err)) from None
            self.warn(f"skipping {err}")
            return None

    def run(self, net, content_path, style_paths, out_path, weights, mask_img,
            contents_in_folder, styles_in_folder):
        """Stylize one job by streaming into out_path. False when an input was skipped."""
        args = self.args
        content = self._rows(content_path, args.content_size, contents_in_folder)
        if content is None:
            return False
        styles, style_stats = [], None
        for path in style_paths:
            if args.preserve_color or path not in self.style_stats:
                rows = self._rows(path, args.style_size, styles_in_folder)
                if rows is None:
                    return False
                styles.append(rows)
        band_rows = band_rows_for(content.width, net.backend.dtype.itemsize)
        if not args.preserve_color:
            for path, rows in zip([p for p in style_paths if p not in self.style_stats], styles):
                self.style_stats[path] = style_stats_streaming(net, rows, band_rows)
            style_stats = [self.style_stats[p] for p in style_paths]
        self.say(f"streaming {os.path.basename(content_path)} ({content.width}x{content.height})"
                 f" in bands of {band_rows} rows")
        try:
            stylize_streaming(net, content, styles, out_path, alpha=args.alpha, weights=weights,
                              mask_img=mask_img, crop=args.crop, preserve_color=args.preserve_color,
                              style_stats=style_stats, band_rows=band_rows)
        except MemoryError:
            raise UserError(f"out of memory on {content_path} even in bands; try a smaller"
                            " --content_size") from None
        except ImageError as err:
            raise UserError(str(err)) from None
        return True
