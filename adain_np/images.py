"""Images in and out, and the torchvision transforms pytorch-AdaIN uses, on PIL images.

torchvision is not a dependency, so its documented behaviour is written out here:
``Resize(int)``, ``Resize((h, w))``, ``CenterCrop``, ``RandomCrop``, ``ToTensor`` and
``utils.save_image``. Each function says which one it stands for.

Loading is more forgiving than test.py's bare ``Image.open``: every PIL mode becomes
RGB (test.py fails on grayscale), high bit depths are scaled rather than clipped,
and EXIF orientation is applied.
"""
import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps

from adain_np.cli import atomic_path
from adain_np.files import BadFileError, check_regular

# Extensions listed as images in a folder. Anything else is skipped by name.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
)

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SAMPLE_KINDS = ("content", "style")

BILINEAR = Image.Resampling.BILINEAR


class ImageError(ValueError):
    """A file that cannot be read or written as an image; the message names the file."""


# ---------------------------------------------------------------- loading

# Refused before decoding: far beyond what the networks can process in memory (16384^2).
MAX_RESIZED_PIXELS = 1 << 28
# Pillow refuses to open an image of more than 2 * MAX_IMAGE_PIXELS (179 MP by default),
# which would stop a 16K x 16K content before the streaming path could take it. Its limit
# is raised to ours (a warning above half of it, an error above it), never lowered.
if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < MAX_RESIZED_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_RESIZED_PIXELS // 2


def resized_size(width, height, size):
    """(width, height) after ``resize_shorter(img, size)``; size 0 keeps the image as is."""
    if size == 0:
        return width, height
    short, long = min(width, height), max(width, height)
    other = int(size * long / short) if short else 0
    return (size, other) if width <= height else (other, size)


def load_image(path, shorter_side=None):
    """Open an image file as an RGB PIL image, EXIF orientation applied.

    With `shorter_side` (the size it will be resized to), an image that would exceed
    MAX_RESIZED_PIXELS after that resize is refused from its header, before any pixel
    is decoded. Raises ImageError (one line, naming the file) for a missing, unreadable,
    truncated, non-regular or non-image file. The mode conversions are those of ``to_rgb``.
    """
    path = os.fspath(path)
    try:
        check_regular(path)  # a FIFO or a device would block Image.open forever
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if shorter_side is not None:
                    _check_resized_size(path, img.size, shorter_side)
                img.load()  # decode now, so truncated data fails here and not later
                img = ImageOps.exif_transpose(img)
        for warning in caught:  # Pillow's warning is two lines on stderr; ours is one
            if issubclass(warning.category, Image.DecompressionBombWarning):
                print(f"warning: {path}: {img.size[0]}x{img.size[1]} pixels, more than"
                      f" Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS});"
                      " decoding it anyway", file=sys.stderr)
        return to_rgb(img)
    except ImageError:
        raise
    except BadFileError as err:
        raise ImageError(str(err)) from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except MemoryError:
        raise ImageError(f"{path}: image too large to decode in memory") from None
    except Exception as err:  # decoders raise many types (OSError, SyntaxError, struct.error...)
        reason = _one_line(err) or type(err).__name__
        raise ImageError(f"{path}: cannot read image ({reason})") from None


def _check_resized_size(path, size, shorter_side):
    width, height = resized_size(*size, shorter_side)
    if width * height > MAX_RESIZED_PIXELS:
        raise ImageError(f"{path}: {size[0]}x{size[1]} image would be {width}x{height} after"
                         f" resizing to {shorter_side}: too large (at most"
                         f" {MAX_RESIZED_PIXELS} pixels); use a smaller size")


def to_rgb(img):
    """Convert a PIL image of any mode to RGB (8 bits per channel).

    - 16-bit integer modes (I;16, I;16B, ...) are scaled: value v -> round(v / 257),
      so 65535 -> 255 and 32768 -> 128 (PIL's own convert would clip them to 255).
    - Mode I (32-bit signed): if every value lies in 0..65535 (16-bit PNG/PGM data
      some decoders hand out as I), it is scaled like 16-bit; otherwise negative
      values become 0 and 0..2**31-1 is scaled to 0..255.
    - Mode F (float): taken on PIL's own 0..255 scale, rounded and clipped; NaN -> 0.
    - Alpha (LA, PA, RGBA, P with transparency) is dropped: the stored colour is
      kept as it is, exactly what ``convert('RGB')`` does (not composited on any
      background). The training and test code of pytorch-AdaIN does the same.
    - Everything else (1, L, P, CMYK, YCbCr, ...) goes through ``convert('RGB')``.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        return _gray_to_rgb(_scale_16bit(np.asarray(img)))
    if img.mode == "I":
        values = np.asarray(img)  # (H, W) int32
        if values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
            return _gray_to_rgb(_scale_16bit(values))
        out = np.empty(values.shape, dtype=np.uint8)
        for rows in _row_blocks(values):
            out[rows] = np.rint(np.clip(values[rows], 0, None) * (255.0 / (2**31 - 1)))
        return _gray_to_rgb(out)
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)  # (H, W)
        return _gray_to_rgb(np.rint(np.clip(values, 0.0, 255.0)))
    if img.mode == "PA":
        img = img.convert("RGBA")  # PIL has no direct PA -> RGB conversion
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageError(f"cannot convert image mode {img.mode} to RGB ({_one_line(err)})") from None


ROWS_PER_BLOCK_PIXELS = 1 << 18  # convert high bit depths a block of rows at a time


def _row_blocks(values):
    step = max(1, ROWS_PER_BLOCK_PIXELS // max(1, values.shape[1] if values.ndim > 1 else 1))
    for start in range(0, values.shape[0], step):
        yield slice(start, start + step)


def _scale_16bit(values):
    """Map 0..65535 to 0..255 by rounding v / 257 (257 = 65535 / 255), in integers.

    round(v / 257) == (v + 128) // 257 for every integer v (v / 257 is never exactly
    k + 1/2 since 257 is odd). Done a block of rows at a time, so a huge 16-bit image
    needs no full-size temporaries beyond its 8-bit result.
    """
    values = np.asarray(values)  # (H, W)
    out = np.empty(values.shape, dtype=np.uint8)
    for rows in _row_blocks(values):
        block = np.clip(values[rows], 0, 65535).astype(np.uint32)
        out[rows] = (block + 128) // 257
    return out


def _gray_to_rgb(gray):
    """A (H, W) array of 0..255 values -> RGB PIL image."""
    gray = np.asarray(gray, dtype=np.uint8)  # (H, W); no copy when it is uint8 already
    return Image.fromarray(np.stack([gray, gray, gray], axis=-1), mode="RGB")


def _one_line(err):
    return " ".join(str(err).split())


# ---------------------------------------------------------------- transforms

def resize_shorter(img, size):
    """torchvision ``Resize(size)`` with an int: the shorter side becomes `size`.

    The longer side becomes ``int(size * long / short)`` (truncated, as in
    torchvision's ``_compute_resized_output_size``), PIL bilinear. ``size == 0``
    keeps the image (test.py's convention); the same image object is returned.
    """
    if size < 0:
        raise ValueError(f"resize size must be >= 0, got {size}")
    new_size = resized_size(*img.size, size)
    if new_size == img.size:
        return img  # size 0, or the shorter side already is size: torchvision returns the input too
    return img.resize(new_size, BILINEAR)


def resize_exact(img, size):
    """torchvision ``Resize((h, w))``: both sides set, aspect ratio not kept, bilinear."""
    height, width = _pair(size)
    if (width, height) == img.size:
        return img
    return img.resize((width, height), BILINEAR)


def center_crop(img, size):
    """torchvision ``CenterCrop(size)``; `size` is an int or (h, w).

    The offsets are ``int(round((h - th) / 2.0))`` (Python's round: halves go to
    even). A crop larger than the image first pads it with zeros, left/top getting
    ``(th - h) // 2`` and right/bottom the rest, as torchvision does.
    """
    crop_h, crop_w = _pair(size)
    width, height = img.size
    if crop_w > width or crop_h > height:
        pad_left = (crop_w - width) // 2 if crop_w > width else 0
        pad_top = (crop_h - height) // 2 if crop_h > height else 0
        padded = Image.new(img.mode, (max(width, crop_w), max(height, crop_h)), 0)
        padded.paste(img, (pad_left, pad_top))
        img = padded
        width, height = img.size
        if (width, height) == (crop_w, crop_h):
            return img
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def random_crop(img, size, rng):
    """torchvision ``RandomCrop(size)`` (no padding): a uniform position from `rng`.

    `rng` is a numpy Generator; the top offset is drawn first, then the left one.
    An image smaller than the crop raises ValueError, as torchvision does.
    """
    crop_h, crop_w = _pair(size)
    width, height = img.size
    if height < crop_h or width < crop_w:
        raise ValueError(f"crop size {(crop_h, crop_w)} is larger than the image size {(height, width)}")
    if (width, height) == (crop_w, crop_h):
        return img
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return img.crop((left, top, left + crop_w, top + crop_h))


def to_tensor(img):
    """torchvision ``ToTensor`` for an 8-bit image: (C, H, W) float32 in [0, 1], value / 255."""
    pixels = np.asarray(img)  # (H, W, C) or (H, W), uint8
    if pixels.dtype != np.uint8:
        raise ValueError(f"to_tensor needs an 8-bit image, got mode {img.mode}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def _pair(size):
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


# ---------------------------------------------------------------- saving

def to_uint8(x):
    """torchvision ``save_image``'s conversion: (3, H, W) or (1, 3, H, W) float -> (H, W, 3) uint8.

    Same order of operations: ``x * 255 + 0.5``, clamp to [0, 255], then truncate,
    in the array's own float precision. NaN becomes 0.
    """
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W) or (1, 3, H, W), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    scaled = x * x.dtype.type(255) + x.dtype.type(0.5)  # (3, H, W)
    scaled = np.nan_to_num(scaled, nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    return np.ascontiguousarray(scaled.transpose(1, 2, 0)).astype(np.uint8)  # (H, W, 3)


def save_image(x, path):
    """Write a (3, H, W) / (1, 3, H, W) float image in [0, 1] like ``torchvision.utils.save_image``.

    The format follows the extension, with PIL's default options (so JPEG gets
    PIL's default quality). The file appears only when complete: it is written
    to a temporary name beside `path` and renamed. Raises ImageError for an
    unknown extension, a missing directory or a format that cannot hold RGB.
    """
    path = os.fspath(path)
    image_format = _save_format(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ImageError(f"{path}: directory {directory} does not exist")
    img = Image.fromarray(to_uint8(x), mode="RGB")
    try:
        with atomic_path(path) as tmp:
            # The temporary name ends in .tmp, so the format is given explicitly.
            img.save(tmp, format=image_format)
    except (OSError, ValueError, KeyError) as err:
        raise ImageError(f"{path}: cannot save image ({_one_line(err)})") from None


def _save_format(path):
    ext = os.path.splitext(path)[1].lower()
    image_format = Image.registered_extensions().get(ext)
    if image_format is None or image_format not in Image.SAVE:
        raise ImageError(f"{path}: unknown image extension {ext!r} (use .png or .jpg, for example)")
    return image_format


# ---------------------------------------------------------------- folders

def is_image_file(path):
    """True for a name with an image extension that is not hidden (no leading dot).

    Hidden names are left out because of files like macOS's ``._photo.jpg``, which
    carry an image extension but are not images.
    """
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder):
    """Image files directly in `folder` (not in subfolders): (paths, skipped).

    `paths` are full paths sorted by name, so the order does not depend on the
    file system; `skipped` are the names of other entries (files of other types,
    subfolders, hidden files), sorted. A missing folder raises FileNotFoundError
    and a file NotADirectoryError, as ``os.scandir`` does.
    """
    folder = os.fspath(folder)
    paths, skipped = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and is_image_file(entry.name):
                paths.append(entry.path)
            else:
                skipped.append(entry.name)
    return sorted(paths), sorted(skipped)


# ---------------------------------------------------------------- bundled samples

def sample_dir(kind):
    """The folder of bundled 'content' or 'style' images."""
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"sample kind must be one of {SAMPLE_KINDS}, got {kind!r}")
    return os.path.join(DATA_DIR, kind)


def sample_images(kind=None):
    """Paths of the bundled images, sorted; `kind` 'content' or 'style' picks one folder."""
    kinds = SAMPLE_KINDS if kind is None else (kind,)
    paths = []
    for one_kind in kinds:
        paths += list_images(sample_dir(one_kind))[0]
    return paths


def sample_path(name):
    """Path of a bundled image by file name or stem, e.g. 'chelsea' or 'style/brick.jpg'."""
    matches = [
        path for path in sample_images()
        if name in (os.path.basename(path), os.path.splitext(os.path.basename(path))[0],
                    os.path.relpath(path, DATA_DIR).replace(os.sep, "/"))
    ]
    if len(matches) != 1:
        names = ", ".join(os.path.splitext(os.path.basename(p))[0] for p in sample_images())
        raise ValueError(f"no bundled sample image named {name!r}; there are: {names}")
    return matches[0]
