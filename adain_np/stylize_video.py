"""``python -m adain_np.stylize_video``: pytorch-AdaIN's test_video.py, with PyAV and without its bugs.

    python -m adain_np.stylize_video --content_video clip.mp4 --style_path painting.jpg
    python -m adain_np.stylize_video --content_video clip.mp4 --style_path other.mp4 --alpha 0.8

Same flags, defaults and output name as test_video.py (``{output}/{content}_stylized_{style}{ext}``).
Each frame is stylized at --content_size (shorter side; 0 keeps it), and the result is
resized back to the frame's size (bicubic). A style video gives one style frame per
content frame, so it needs at least as many frames. Unlike test_video.py:
  * frames stay RGB end to end (no BGR/RGB swap);
  * each output frame is clipped to [0, 1] and rounded like save_image: no per-frame rescale;
  * the frame rate is kept exactly, as a fraction (29.97 fps stays 30000/1001);
  * the frame size is kept exactly, odd sizes too (see ENCODERS);
  * the audio stream is copied through unchanged (clipped to --start/--duration);
  * the output is closed and complete, and appears only when finished (atomic rename);
  * a style image is encoded once, not once per frame.
Also --start/--duration, --device, --random_weights and a progress bar (frames/s, ETA).
"""
import os
import sys
import time
from fractions import Fraction

import numpy as np
from PIL import Image

from .backend import DeviceError, select_backend
from .cli import (DEFAULT_DECODER, DEFAULT_VGG, ArgumentParser, UserError, add_device_flag,
                  apply_conv_flag, atomic_path, run_cli)
from .coral import coral
from .images import ImageError, center_crop, resize_shorter, to_tensor, to_uint8
from .net import Net
from .stylize import MIN_SIDE, encode_style, load_weights, prepare, stylize

INSTALL_HINT = "video needs PyAV: pip install adain_np[video]"

# --save_ext -> (container format, encoder, pixel format for even sizes, for odd sizes, options).
# libx264's 4:2:0 needs even sides; an odd-sized frame gets 4:4:4 (full-resolution chroma,
# H.264 High 4:4:4 profile), so the size is kept instead of being rounded. crf 17 is
# visually lossless. .mkv is FFV1 on RGB: lossless, bit-exact frames (big files).
ENCODERS = {
    ".mp4": ("mp4", "libx264", "yuv420p", "yuv444p", {"crf": "17", "preset": "medium"}),
    ".mov": ("mov", "libx264", "yuv420p", "yuv444p", {"crf": "17", "preset": "medium"}),
    ".mkv": ("matroska", "ffv1", "bgr0", "bgr0", {}),
}


def _import_av():
    try:
        import av
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return av


def build_parser():
    p = ArgumentParser(prog="python -m adain_np.stylize_video",
                       description="AdaIN style transfer on a video, test_video.py's options.")
    p.add_argument("--content_video", required=True, help="the video to stylize")
    p.add_argument("--style_path", required=True,
                   help="a style image, or a style video (one style frame per content frame)")
    p.add_argument("--vgg", default=DEFAULT_VGG, help="encoder weights (default %(default)s)")
    p.add_argument("--decoder", default=DEFAULT_DECODER, help="decoder weights (default %(default)s)")
    p.add_argument("--content_size", type=int, default=512,
                   help="shorter side each frame is stylized at; 0 keeps it (default %(default)s)")
    p.add_argument("--style_size", type=int, default=512,
                   help="shorter side of the style; 0 keeps it (default %(default)s)")
    p.add_argument("--crop", action="store_true",
                   help="centre-crop the style to a square of --style_size")
    p.add_argument("--save_ext", default=".mp4", choices=sorted(ENCODERS),
                   help="output container: .mp4/.mov H.264, .mkv lossless FFV1 (default %(default)s)")
    p.add_argument("--output", default="output", help="output folder (default %(default)s)")
    p.add_argument("--preserve_color", action="store_true",
                   help="keep each frame's colours (CORAL colour transfer on the style)")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="degree of stylization, 0 to 1 (default %(default)s)")
    p.add_argument("--start", type=float, default=0.0, help="first second to stylize (default 0)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds to stylize from --start (default: to the end)")
    add_device_flag(p, "auto: the GPU when one is usable, else NumPy (default %(default)s)")
    p.add_argument("--random_weights", action="store_true",
                   help="seeded random stand-in weights instead of --vgg/--decoder (tests, demos)")
    return p


def check_options(args):
    for flag in ("content_size", "style_size"):
        size = getattr(args, flag)
        if size < 0 or 0 < size < MIN_SIDE:
            raise UserError(f"--{flag} must be 0 or at least {MIN_SIDE}, got {size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not args.start >= 0.0 or args.start == float("inf"):
        raise UserError(f"--start must be a finite number of seconds >= 0, got {args.start}")
    if args.duration is not None and not 0.0 < args.duration < float("inf"):
        raise UserError(f"--duration must be a positive number of seconds, got {args.duration}")


def _stem(path):
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


# ---------------------------------------------------------------- reading

class VideoInput:
    """A video file's first video stream (and first audio stream), clipped to [start, end)."""

    def __init__(self, av, path, flag, start=0.0, duration=None, what="not a readable video"):
        if not os.path.isfile(path):
            raise UserError(f"--{flag} {path}: file not found")
        self.av, self.path, self.flag, self.what = av, path, flag, what
        self.start = Fraction(start).limit_denominator(1_000_000)
        self.end = None if duration is None else self.start + Fraction(duration).limit_denominator(1_000_000)
        container = self._open()
        try:
            if not container.streams.video:
                raise UserError(f"--{flag} {path}: has no video stream")
            stream = container.streams.video[0]
            self.rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not self.rate or self.rate <= 0:
                raise UserError(f"--{flag} {path}: the video stream has no frame rate")
            self.rate = Fraction(self.rate)
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            self.has_audio = bool(container.streams.audio)
            self.frames = self._count(container, stream)
        finally:
            container.close()
        if self.frames == 0:
            clip = "" if (self.start == 0 and self.end is None) else " in the chosen --start/--duration"
            raise UserError(f"--{flag} {path}: no video frames{clip}")

    def _open(self):
        try:
            return self.av.open(self.path, "r")
        except (self.av.FFmpegError, OSError, ValueError) as err:
            raise UserError(f"--{self.flag} {self.path}: {self.what}"
                            f" ({' '.join(str(err).split())})") from None

    def _seconds(self, stream, pts):
        return (pts - (stream.start_time or 0)) * stream.time_base

    def _inside(self, t):
        return t >= self.start and (self.end is None or t < self.end)

    def _count(self, container, stream):
        """Frames in the clip, counted from the packets' timestamps (no decoding)."""
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if self._inside(self._seconds(stream, packet.pts)):
                    count += 1
        except self.av.FFmpegError as err:
            raise UserError(f"--{self.flag} {self.path}: cannot read the video"
                            f" ({' '.join(str(err).split())})") from None
        return count

    def frames_rgb(self):
        """Yields each frame of the clip as (H, W, 3) uint8 RGB."""
        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.start > 0:
                container.seek(int(self.start / stream.time_base) + (stream.start_time or 0),
                               stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = self._seconds(stream, frame.pts)
                if t < self.start:
                    continue
                if self.end is not None and t >= self.end:
                    break
                yield frame.to_ndarray(format="rgb24")
        except self.av.FFmpegError as err:
            raise UserError(f"--{self.flag} {self.path}: cannot decode the video"
                            f" ({' '.join(str(err).split())})") from None
        finally:
            container.close()

    def audio_packets(self):
        """The first audio stream's packets inside the clip, timestamps as in the file."""
        container = self._open()
        try:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                if self._inside(self._seconds(stream, packet.pts)):
                    yield stream, packet
        finally:
            container.close()


def _is_image(path):
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for "not an image"
        return False


def prepare_frame(rgb, size, crop=False):
    """A decoded (H, W, 3) uint8 frame -> (3, h, w) float32, as stylize's prepare does a file."""
    img = resize_shorter(Image.fromarray(rgb, mode="RGB"), size)
    if crop:
        img = center_crop(img, size if size else min(img.size))
    if min(img.size) < MIN_SIDE:
        raise UserError(f"a frame is {img.size[0]}x{img.size[1]} px after resizing; the encoder"
                        f" needs at least {MIN_SIDE}x{MIN_SIDE} px")
    return to_tensor(img)


def stylize_frame(net, rgb, content_size, style_stats=None, style=None, alpha=1.0):
    """One frame: stylize at content_size, crop the decoder's 8-rounding, clip and round
    to uint8, then bicubic back to the frame's size. (H, W, 3) uint8 -> (H, W, 3) uint8."""
    height, width = rgb.shape[:2]
    content = prepare_frame(rgb, content_size)                       # (3, h, w)
    out = stylize(net, content, None if style is None else [style], alpha,
                  style_stats=None if style_stats is None else [style_stats])
    out = to_uint8(out[:, :content.shape[1], :content.shape[2]])    # (h, w, 3), clipped
    if out.shape[:2] != (height, width):
        out = np.asarray(Image.fromarray(out, mode="RGB").resize((width, height), Image.BICUBIC))
    return out


# ---------------------------------------------------------------- writing

class VideoOutput:
    """Encodes RGB frames at an exact rate and size; copies an audio stream through."""

    def __init__(self, av, path, ext, rate, width, height, audio_template=None):
        fmt, codec, even_pix, odd_pix, options = ENCODERS[ext]
        self.av = av
        self.container = av.open(path, "w", format=fmt)
        self.video = self.container.add_stream(codec, rate=rate, options=dict(options))
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = even_pix if width % 2 == 0 and height % 2 == 0 else odd_pix
        self.video.codec_context.time_base = 1 / rate
        self.audio = None
        if audio_template is not None:
            self.audio = self.container.add_stream_from_template(audio_template)
        self.count = 0

    def write(self, rgb):
        frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def write_audio(self, packet, shift):
        """packet from the source's audio stream, moved `shift` (in its time base) earlier."""
        if packet.dts is None:
            return
        packet.pts -= shift
        packet.dts -= shift
        packet.stream = self.audio
        self.container.mux(packet)

    def close(self):
        for packet in self.video.encode(None):  # flush the encoder's delayed frames
            self.container.mux(packet)
        self.container.close()


# ---------------------------------------------------------------- main

def load_style(av, args, content_frames):
    """(style image (3, h, w), None) for an image, (None, VideoInput) for a video."""
    if not os.path.isfile(args.style_path):
        raise UserError(f"--style_path {args.style_path}: file not found")
    if _is_image(args.style_path):
        try:
            return prepare(args.style_path, args.style_size, args.crop), None
        except ImageError as err:
            raise UserError(f"--style_path {err}") from None
    style_video = VideoInput(av, args.style_path, "style_path",
                             what="neither an image nor a readable video")
    if style_video.frames < content_frames:
        raise UserError(f"--style_path {args.style_path}: the style video has {style_video.frames}"
                        f" frames, fewer than the {content_frames} content frames to stylize")
    return None, style_video


def output_path(args):
    return os.path.join(args.output, f"{_stem(args.content_video)}_stylized_"
                                     f"{_stem(args.style_path)}{args.save_ext}")


def run(args, progress=True):
    """Stylize the clip; returns (output path, frames written)."""
    av = _import_av()
    check_options(args)
    content = VideoInput(av, args.content_video, "content_video", args.start, args.duration)
    style_image, style_video = load_style(av, args, content.frames)
    try:
        backend, fallback = select_backend(args.device)
    except DeviceError as err:
        raise UserError(str(err)) from None
    net = Net(*load_weights(args), backend)
    print(f"device: {backend.name}{f' (auto: {fallback})' if fallback else ''}", flush=True)
    # A style image's statistics once for the whole video (not with --preserve_color, where
    # the style is recoloured to each frame first).
    style_stats = None
    if style_image is not None and not args.preserve_color:
        style_stats = encode_style(net, style_image)
    out_path = output_path(args)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as err:
        raise UserError(f"--output {args.output}: cannot create it ({err.strerror or err})") from None

    from tqdm import tqdm
    written = 0
    try:
        with atomic_path(out_path) as tmp:
            audio_template = None
            audio_source = content.audio_packets() if content.has_audio else None
            first_audio = next(audio_source, None) if audio_source is not None else None
            if first_audio is not None:
                audio_template = first_audio[0]
            writer = VideoOutput(av, tmp, args.save_ext, content.rate, content.width,
                                 content.height, audio_template)
            try:
                styles = style_video.frames_rgb() if style_video is not None else None
                bar = tqdm(total=content.frames, unit="frame", disable=not progress,
                           desc=os.path.basename(out_path), file=sys.stderr)
                for rgb in content.frames_rgb():
                    if written == content.frames:
                        break  # a stream with more frames than packets counted: keep the count
                    if (rgb.shape[1], rgb.shape[0]) != (content.width, content.height):
                        raise UserError(f"--content_video {args.content_video}: the frame size"
                                        " changes mid-stream, which is not supported")
                    stats, style = style_stats, None
                    if stats is None:  # a style video, or --preserve_color: per frame
                        style = style_image
                        if styles is not None:
                            style_rgb = next(styles, None)
                            if style_rgb is None:
                                raise UserError(f"--style_path {args.style_path}: the style video"
                                                f" ran out of frames after {written}")
                            style = prepare_frame(style_rgb, args.style_size, args.crop)
                        if args.preserve_color:
                            style = coral(style, prepare_frame(rgb, args.content_size))
                        else:
                            stats, style = encode_style(net, style), None
                    writer.write(stylize_frame(net, rgb, args.content_size, stats, style, args.alpha))
                    written += 1
                    bar.update(1)
                bar.close()
                if first_audio is not None:
                    stream, packet = first_audio
                    shift = int(content.start / stream.time_base) + (stream.start_time or 0)
                    writer.write_audio(packet, shift)
                    for _, packet in audio_source:
                        writer.write_audio(packet, shift)
            finally:
                writer.close()
            if written == 0:
                raise UserError(f"--content_video {args.content_video}: no frame could be decoded")
    except av.FFmpegError as err:
        raise UserError(f"cannot write {out_path} ({' '.join(str(err).split())})") from None
    except OSError as err:
        raise UserError(f"cannot write {out_path} ({err.strerror or err})") from None
    except MemoryError:
        raise UserError("out of memory; try a smaller --content_size or --style_size") from None
    return out_path, written


def main(argv=None):
    args = build_parser().parse_args(argv)
    apply_conv_flag(args)  # a bad ADAIN_CONV is one line here, not a traceback at the first conv
    start = time.perf_counter()
    path, frames = run(args)
    seconds = time.perf_counter() - start
    print(f"wrote {path} ({frames} frames in {seconds:.1f} s, {frames / seconds:.2f} frames/s)")
    return 0


# ---------------------------------------------------------------- bench

def bench_video(size=512, frames=4, device="cpu"):
    """Frames per second stylizing `frames` frames of a size x size clip with an image style,
    random weights (the work is the same as with the published ones). Returns a dict."""
    import tempfile
    av = _import_av()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        clip, style = os.path.join(folder, "clip.mkv"), os.path.join(folder, "style.png")
        container = av.open(clip, "w", format="matroska")
        stream = container.add_stream("ffv1", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = size, size, "bgr0"
        base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(style)
        args = build_parser().parse_args(
            ["--content_video", clip, "--style_path", style, "--content_size", str(size),
             "--style_size", str(size), "--output", folder, "--save_ext", ".mkv",
             "--device", device, "--random_weights"])
        start = time.perf_counter()
        _, written = run(args, progress=False)
        seconds = time.perf_counter() - start
    return {"workload": "video", "size": size, "frames": written, "seconds": seconds,
            "frames_per_second": written / seconds, "device": device}


if __name__ == "__main__":
    sys.exit(run_cli(main))
