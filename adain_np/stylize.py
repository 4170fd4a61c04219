"""``python -m adain_np.stylize``: pytorch-AdaIN's test.py without torch.

The flags, their defaults and their meaning are test.py's:

    python -m adain_np.stylize --content photo.jpg --style painting.jpg
    python -m adain_np.stylize --content_dir photos --style_dir paintings --alpha 0.8
    python -m adain_np.stylize --content photo.jpg --style a.jpg,b.jpg --style_interpolation_weights 1,3
    python -m adain_np.stylize --content photo.jpg --style a.jpg --preserve_color

and it writes the same files (``{content}_stylized_{style}{ext}``,
``{content}_interpolation{ext}``) with the same pixels, to within 1/255.

Beyond test.py:
  * ``--mask MASK --style FG,BG``: spatial control (the original Lua AdaIN's); the
    output is ``{content}_mask_{fg}_{bg}{ext}``. See masked.py.
  * Interpolated styles are encoded one by one, so they need not share a size;
    with equal sizes the result is test.py's. Weights may be decimals; without
    ``--style_interpolation_weights`` the styles get equal weights.
  * ``--preserve_color`` also applies to interpolated and masked styles (test.py
    ignores it when interpolating).
  * ``--crop`` with a size of 0 crops to the square of the shorter side (test.py
    would crop to nothing).
  * Any image mode is read (test.py fails on grayscale); ``--device``; ``--random_weights``;
    a progress line per image; one-line errors (exit 2) for bad input.
  * With no ``--content``/``--style`` at all, bundled sample images are used.
"""
import math
import os
import sys
import time

from PIL import Image
from tqdm import tqdm

from .backend import DeviceError, select_backend
from .cli import (DEFAULT_DECODER, DEFAULT_VGG, DOWNLOAD_COMMAND, ArgumentParser, UserError,
                  add_conv_flag, add_device_flag, apply_conv_flag, run_cli)
from .coral import coral
from .images import (ImageError, center_crop, list_images, load_image, resize_shorter,
                     sample_images, sample_path, save_image, to_tensor)
from .masked import load_mask, mask_to_features
from .net import Net, adain_target
from .params import MIN_IMAGE_SIDE as MIN_SIDE, init_decoder_params, init_vgg_params
from .streaming import StreamPlan, add_stream_flags

DEFAULT_SAMPLES = ("chelsea", "stained_glass")  # bundled content and style
RANDOM_SEED = 0


def build_parser():
    p = ArgumentParser(prog="python -m adain_np.stylize",
                description="AdaIN style transfer with pytorch-AdaIN's test.py options, in NumPy.")
    p.add_argument("--content", help="content image file")
    p.add_argument("--content_dir", help="folder of content images (used when --content is not given)")
    p.add_argument("--style", help="style image file, or several separated by commas for style"
                   " interpolation (or two, FG,BG, with --mask)")
    p.add_argument("--style_dir", help="folder of style images (used when --style is not given)")
    p.add_argument("--vgg", default=DEFAULT_VGG,
                   help="encoder weights, .pth (either torch format) or .npz (default %(default)s)")
    p.add_argument("--decoder", default=DEFAULT_DECODER,
                   help="decoder weights, .pth or .npz (default %(default)s)")
    p.add_argument("--content_size", type=int, default=512,
                   help="shorter side of the content image; 0 keeps its size (default %(default)s)")
    p.add_argument("--style_size", type=int, default=512,
                   help="shorter side of the style image; 0 keeps its size (default %(default)s)")
    p.add_argument("--crop", action="store_true", help="centre-crop to a square of that size")
    p.add_argument("--save_ext", default=".jpg", help="output file type (default %(default)s)")
    p.add_argument("--output", default="output", help="output folder (default %(default)s)")
    p.add_argument("--preserve_color", action="store_true",
                   help="keep the content's colours (CORAL colour transfer on the style)")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="degree of stylization, 0 (content) to 1 (full) (default %(default)s)")
    p.add_argument("--style_interpolation_weights", default="",
                   help="comma-separated weights, one per style in --style; normalised to sum 1")
    p.add_argument("--mask", help="with --style FG,BG: non-zero mask pixels take FG, zero ones BG")
    add_device_flag(p, "auto: the GPU when one is usable, else NumPy (default %(default)s)")
    add_conv_flag(p)
    add_stream_flags(p)
    p.add_argument("--random_weights", action="store_true",
                   help="use seeded random stand-in weights instead of --vgg/--decoder: the"
                   " pictures show the mechanics only, not a learned style")
    return p


# ---------------------------------------------------------------- options

def backend_for_flag(device):
    """(backend, one-line description) for --device auto/cpu/gpu/emulator."""
    try:
        backend, fallback = select_backend(device)
    except DeviceError as err:
        raise UserError(f"--device {err}") from None
    return backend, (f"numpy (auto: {fallback})" if fallback else backend.name)


def parse_weights(text, style_count):
    """--style_interpolation_weights '1,3' or '0.25,0.75' -> weights summing to 1."""
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--style_interpolation_weights {text!r}: not a comma-separated"
                        " list of numbers") from None
    if not all(math.isfinite(w) for w in weights):
        raise UserError(f"--style_interpolation_weights {text!r}: weights must be finite")
    if len(weights) != style_count:
        raise UserError(f"--style_interpolation_weights has {len(weights)} weights for"
                        f" {style_count} style{'s' if style_count != 1 else ''}; give one per style")
    try:
        total, size = math.fsum(weights), math.fsum(abs(w) for w in weights)
    except OverflowError:  # fsum raises where sum would give inf
        total = size = math.inf
    if not math.isfinite(size):
        raise UserError(f"--style_interpolation_weights {text!r}: their sum is not finite")
    if total == 0:
        raise UserError("--style_interpolation_weights sum to 0; they are divided by their sum")
    if abs(total) < 1e-9 * size:  # 1e308,-1e308,1 would become 1e308,-1e308,1 after dividing
        raise UserError(f"--style_interpolation_weights {text!r}: they nearly cancel out;"
                        " their sum is too small to divide by")
    return [w / total for w in weights]


def check_options(args):
    if not 0.0 <= args.alpha <= 1.0:  # also refuses NaN
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    for flag in ("content_size", "style_size"):
        size = getattr(args, flag)
        if size < 0:
            raise UserError(f"--{flag} must be >= 0 (0 keeps the image size), got {size}")
        if 0 < size < MIN_SIDE:
            raise UserError(f"--{flag} {size} is too small: the encoder needs images of at"
                            f" least {MIN_SIDE}x{MIN_SIDE} px")
    if not args.save_ext.startswith("."):
        args.save_ext = "." + args.save_ext
    Image.init()
    image_format = Image.registered_extensions().get(args.save_ext.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise UserError(f"--save_ext {args.save_ext}: not an image type Pillow can write"
                        " (use .jpg or .png, for example)")


# ---------------------------------------------------------------- inputs

def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def folder_images(folder, flag):
    """Image paths in a folder; other entries are skipped with one warning line."""
    try:
        paths, skipped = list_images(folder)
    except FileNotFoundError:
        raise UserError(f"--{flag} {folder}: no such folder") from None
    except NotADirectoryError:
        raise UserError(f"--{flag} {folder}: not a folder") from None
    except OSError as err:
        raise UserError(f"--{flag} {folder}: cannot list ({err.strerror or err})") from None
    if not paths:
        others = f" ({len(skipped)} other entries)" if skipped else ""
        raise UserError(f"--{flag} {folder}: no image files in this folder{others}")
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warn(f"{folder}: skipping {len(skipped)} entries that are not image files: {shown}")
    return paths


def existing_file(path, flag):
    if not os.path.exists(path):
        raise UserError(f"--{flag} {path}: no such file")
    if os.path.isdir(path):
        hint = f" (use --{flag}_dir for a folder)" if flag in ("content", "style") else ""
        raise UserError(f"--{flag} {path}: is a folder, not an image file{hint}")
    return path


def resolve_inputs(args):
    """(contents, contents_in_folder, styles, styles_in_folder, mode, weights).

    mode is 'single' (each content with each style), 'interpolation' (weights: one per
    style, summing to 1) or 'mask'; weights is None except for interpolation.
    """
    if not (args.content or args.content_dir or args.style or args.style_dir):
        content, style = (_sample(name, kind) for name, kind in zip(DEFAULT_SAMPLES, ("content", "style")))
        say(f"no --content/--style given: using the bundled samples {os.path.basename(content)}"
            f" and {os.path.basename(style)}")
        args.content, args.style = content, style
    if not (args.content or args.content_dir):
        raise UserError("give --content or --content_dir too (or neither, with no --style, for the samples)")
    if not (args.style or args.style_dir):
        raise UserError("give --style or --style_dir too (or neither, with no --content, for the samples)")
    if args.mask is not None and not args.style:
        raise UserError("--mask needs exactly two styles, given as --style FG,BG")
    if args.content:
        if args.content_dir:
            warn("--content_dir is ignored because --content is given")
        contents, contents_in_folder = [existing_file(args.content, "content")], False
    else:
        contents, contents_in_folder = folder_images(args.content_dir, "content_dir"), True
    if args.style:
        if args.style_dir:
            warn("--style_dir is ignored because --style is given")
        styles = [existing_file(p, "style") for p in args.style.split(",")]
        styles_in_folder = False
    else:
        styles, styles_in_folder = folder_images(args.style_dir, "style_dir"), True

    if args.mask is not None:
        if styles_in_folder or len(styles) != 2:
            raise UserError(f"--mask needs exactly two styles, --style FG,BG (got"
                            f" {len(styles)}{' from --style_dir' if styles_in_folder else ''})")
        if args.style_interpolation_weights:
            raise UserError("--style_interpolation_weights does not apply with --mask")
        mode, weights = "mask", None
    elif len(styles) > 1 and not styles_in_folder:
        mode = "interpolation"
        weights = (parse_weights(args.style_interpolation_weights, len(styles))
                   if args.style_interpolation_weights else [1.0 / len(styles)] * len(styles))
    else:
        mode, weights = "single", None
        if args.style_interpolation_weights:
            if styles_in_folder:
                raise UserError("--style_interpolation_weights applies to several styles given"
                                " as --style a,b, not to --style_dir")
            parse_weights(args.style_interpolation_weights, 1)  # one style: only '1'-like is valid
    return contents, contents_in_folder, styles, styles_in_folder, mode, weights


def _sample(name, kind):
    try:
        return sample_path(name)
    except ValueError:  # renamed samples: any one of the kind will do
        return sample_images(kind)[0]


def prepare(path, size, crop):
    """test.py's test_transform on a file: (3, H, W) float32 in [0, 1]. Raises ImageError."""
    img = resize_shorter(load_image(path, shorter_side=size), size)  # refuses huge-after-resize
    if crop:
        img = center_crop(img, size if size else min(img.size))
    width, height = img.size
    if min(width, height) < MIN_SIDE:
        how = "" if size == 0 else " after resizing"
        raise ImageError(f"{path}: image is {width}x{height} px{how}; the encoder needs at"
                         f" least {MIN_SIDE}x{MIN_SIDE} px")
    return to_tensor(img)                                           # (3, H, W)


def load_weights(args):
    """(vgg params, decoder params): from the files, or seeded random with --random_weights."""
    if args.random_weights:
        say("using random stand-in weights (--random_weights): the pictures show the mechanics only")
        return init_vgg_params(RANDOM_SEED), init_decoder_params(RANDOM_SEED)
    from .files import BadFileError
    from .param_files import load_params  # reads torch files without torch
    params = []
    for flag, kind in (("vgg", "vgg"), ("decoder", "decoder")):
        path = getattr(args, flag)
        if not os.path.isfile(path):
            raise UserError(f"--{flag} {path}: weights file not found; {_how_to_get(path, flag)}")
        try:
            params.append(load_params(path, kind))
        except BadFileError as err:
            raise UserError(str(err)) from None
    return params


def _how_to_get(path, flag):
    folder, name = os.path.split(os.path.normpath(path))
    if name == os.path.basename(build_parser().get_default(flag)):
        get = DOWNLOAD_COMMAND if folder == "models" else f"{DOWNLOAD_COMMAND} --dir {folder or '.'}"
        return f"get the published weights with `{get}` (or try --random_weights)"
    return (f"`{DOWNLOAD_COMMAND}` fetches the published weights into models/"
            " (or try --random_weights)")


# ---------------------------------------------------------------- the network

def encode_style(net, style):
    """style (3, Hs, Ws) -> relu4_1 (mean, std), each (1, 512, 1, 1) on the backend."""
    b = net.backend
    return b.mean_std(net.encode(b.asarray(style[None])))


def stylize(net, content, styles, alpha=1.0, weights=None, mask_img=None, crop=False,
            style_stats=None):
    """content (3, H, W) and styles [(3, Hs, Ws)] -> (3, 8*ceil(H/8), 8*ceil(W/8)) host image.

    style_stats, when given, replaces encoding the styles (precomputed, one per style).
    """
    b = net.backend
    content_feat = net.encode(b.asarray(content[None]))             # (1, 512, h, w)
    if style_stats is None:
        style_stats = [encode_style(net, s) for s in styles]
    mask = None
    if mask_img is not None:
        mask = mask_to_features(mask_img, content_feat.shape[2:], crop)  # (h, w)
    feat = adain_target(net.backend, content_feat, style_stats, alpha, weights, mask)
    return b.to_host(net.decode(feat))[0]


# ---------------------------------------------------------------- command line

def say(message):
    tqdm.write(message, file=sys.stdout)  # above a progress bar, when one is drawn
    sys.stdout.flush()


def warn(message):
    tqdm.write(f"warning: {message}", file=sys.stderr)


def output_name(content, styles, mode, ext):
    if mode == "interpolation":
        return f"{_stem(content)}_interpolation{ext}"
    if mode == "mask":
        return f"{_stem(content)}_mask_{_stem(styles[0])}_{_stem(styles[1])}{ext}"
    return f"{_stem(content)}_stylized_{_stem(styles[0])}{ext}"


def plan_jobs(contents, styles, mode, ext, output):
    """[(content, [styles], output path)], refusing two jobs that would write one file."""
    groups = [[s] for s in styles] if mode == "single" else [styles]
    jobs, seen = [], {}
    for content in contents:
        for group in groups:
            path = os.path.join(output, output_name(content, group, mode, ext))
            if path in seen:
                raise UserError(f"{seen[path]} and {content} + {', '.join(group)} would both be"
                                f" written to {path}; rename one of the inputs")
            seen[path] = f"{content} + {', '.join(group)}"
            jobs.append((content, group, path))
    return jobs


def make_output_dir(output):
    try:
        os.makedirs(output, exist_ok=True)
    except FileExistsError:
        raise UserError(f"--output {output}: exists and is not a folder") from None
    except OSError as err:
        raise UserError(f"--output {output}: cannot create the folder ({err.strerror or err})") from None


class _Images:
    """Loads and preprocesses images. Explicit files are kept once loaded (there are few)
    and their failures are errors; folder images are kept only while they are the latest
    one asked for, and one that fails is skipped with a warning, once."""

    def __init__(self, crop):
        self.crop = crop
        self.failed = set()
        self.kept = {}      # (path, size) -> (3, H, W), explicit files
        self.latest = None  # ((path, size), (3, H, W)), the last folder image

    def get(self, path, size, in_folder):
        key = (path, size)
        if key in self.kept:
            return self.kept[key]
        if self.latest is not None and self.latest[0] == key:
            return self.latest[1]
        if path in self.failed:
            return None
        try:
            image = prepare(path, size, self.crop)
        except ImageError as err:
            if not in_folder:
                raise UserError(str(err)) from None
            self.failed.add(path)
            warn(f"skipping {err}")
            return None
        if in_folder:
            self.latest = (key, image)
        else:
            self.kept[key] = image
        return image


def main(argv=None):
    args = build_parser().parse_args(argv)
    apply_conv_flag(args)
    check_options(args)
    contents, contents_in_folder, styles, styles_in_folder, mode, weights = resolve_inputs(args)
    mask_img = None
    if mode == "mask":
        existing_file(args.mask, "mask")
        try:
            mask_img = load_mask(args.mask)
        except ImageError as err:
            raise UserError(f"--mask {err}") from None
    images = _Images(args.crop)
    plan = StreamPlan(args, say, warn)  # which contents stream in bands of rows (streaming.py)
    # Explicit files are checked before anything is computed or written.
    for path in ([] if contents_in_folder else contents):
        if not plan.wants(path):  # a streamed content is read when its job runs
            images.get(path, args.content_size, False)
    for path in ([] if styles_in_folder else styles):
        images.get(path, args.style_size, False)
    jobs = plan_jobs(contents, styles, mode, args.save_ext, args.output)
    backend, device_text = backend_for_flag(args.device)
    vgg_params, decoder_params = load_weights(args)
    net = Net(vgg_params, decoder_params, backend)
    say(f"device: {device_text}")
    make_output_dir(args.output)

    start, written, skipped = time.perf_counter(), 0, 0
    stats_cache = {}  # style path -> relu4_1 (mean, std); not with --preserve_color
    # A bar on a terminal only: a log gets the per-image lines, which say as much.
    bar = tqdm(jobs, unit="image", desc="stylize", file=sys.stderr, dynamic_ncols=True,
               disable=len(jobs) < 2 or not sys.stderr.isatty())
    for number, (content_path, style_paths, out_path) in enumerate(bar, 1):
        job_start = time.perf_counter()
        if plan.wants(content_path, backend):  # in bands of rows, in bounded memory
            if plan.run(net, content_path, style_paths, out_path, weights, mask_img,
                        contents_in_folder, styles_in_folder):
                written += 1
                say(f"[{number}/{len(jobs)}] {os.path.basename(content_path)} -> {out_path}"
                    f" (streamed, {time.perf_counter() - job_start:.1f} s)")
            else:
                skipped += 1
            continue
        content = images.get(content_path, args.content_size, contents_in_folder)
        style_list = [images.get(p, args.style_size, styles_in_folder) for p in style_paths]
        if content is None or any(s is None for s in style_list):
            skipped += 1
            continue
        style_stats = None
        if args.preserve_color:
            style_list = [coral(s, content) for s in style_list]
        else:
            for p, s in zip(style_paths, style_list):
                if p not in stats_cache:
                    stats_cache[p] = encode_style(net, s)
            style_stats = [stats_cache[p] for p in style_paths]
        try:
            image = stylize(net, content, style_list, args.alpha, weights, mask_img,
                            args.crop, style_stats)
            save_image(image, out_path)
        except MemoryError:
            raise UserError(f"out of memory on {content_path}; try a smaller --content_size"
                            " or --style_size") from None
        except ImageError as err:
            raise UserError(str(err)) from None
        written += 1
        say(f"[{number}/{len(jobs)}] {os.path.basename(content_path)} +"
            f" {', '.join(os.path.basename(p) for p in style_paths)} -> {out_path}"
            f" ({time.perf_counter() - job_start:.1f} s)")
    bar.close()
    seconds = time.perf_counter() - start
    if written == 0:
        raise UserError(f"no image was written: all {len(jobs)} were skipped (see the warnings)")
    extra = f", {skipped} skipped" if skipped else ""
    say(f"wrote {written} image{'s' if written != 1 else ''} to {args.output}{extra}"
        f" in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
