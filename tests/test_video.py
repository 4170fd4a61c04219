"""python -m adain_np.stylize_video on small clips this file writes itself.

The clips are FFV1 on RGB (bgr0) in Matroska: lossless, so a decoded frame is bit for bit
the array that was encoded (checked below: measured error 0). Each output frame is compared
with the image path applied to the decoded source frame: python -m adain_np.stylize on that
frame as a PNG, cropped to the stylized size and resized back bicubic with PIL.
"""
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed:"
                                      " pip install adain_np[video]")

from adain_np import stylize as stylize_cli  # noqa: E402
from adain_np import stylize_video  # noqa: E402
from adain_np.params import init_decoder_params, init_vgg_params  # noqa: E402
from adain_np.pth import save_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NTSC = Fraction(30000, 1001)  # 29.97 fps
SIZE = 32                     # --content_size / --style_size: tiny, so the tests stay fast
AUDIO_RATE = 8000


def write_clip(path, width, height, frames, rate=NTSC, audio=True, seed=0):
    """A lossless clip (FFV1 RGB) of random frames, with a FLAC sine track; returns the frames."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames)]
    container = av.open(str(path), "w", format="matroska")
    video = container.add_stream("ffv1", rate=rate)
    video.width, video.height, video.pix_fmt = width, height, "bgr0"
    if audio:
        sound = container.add_stream("flac", rate=AUDIO_RATE)
        sound.layout = "mono"
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    if audio:
        samples = int(AUDIO_RATE * frames / rate)
        wave = (np.sin(np.arange(samples) / 5.0) * 10000).astype(np.int16)[None]  # (1, samples)
        frame = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, 0
        for packet in list(sound.encode(frame)) + list(sound.encode(None)):
            container.mux(packet)
    container.close()
    return images


def read_clip(path):
    """(frames [(H, W, 3) uint8], average rate, (width, height), pix_fmt, audio packet bytes)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = (stream.average_rate, (stream.codec_context.width, stream.codec_context.height),
                stream.codec_context.pix_fmt)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    audio = []
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
    return (frames, *info, audio)


def save_weights(folder):
    """Random weights as .pth files, the decoder's last (linear) conv scaled so that each colour
    channel sits at its own level (0.3, 0.5, 0.7) with some spread: unscaled, random weights
    clip red and blue to 255 and a red/blue swap would go unseen."""
    decoder = init_decoder_params(seed=5)
    decoder["28.weight"] = decoder["28.weight"] * np.float32(0.03)
    decoder["28.bias"] = np.array([0.3, 0.5, 0.7], np.float32)
    save_state_dict(init_vgg_params(seed=5), folder / "vgg.pth")
    save_state_dict(decoder, folder / "decoder.pth")


def weights(folder):
    return ["--vgg", str(folder / "vgg.pth"), "--decoder", str(folder / "decoder.pth")]


def image_path(frame, style_png, tmp_path, name, weights_folder):
    """What the image command makes of one decoded frame, brought back to the frame's size."""
    folder = tmp_path / f"img_{name}"
    folder.mkdir()
    Image.fromarray(frame).save(folder / "frame.png")
    assert stylize_cli.main(["--content", str(folder / "frame.png"), "--style", str(style_png),
                             "--content_size", str(SIZE), "--style_size", str(SIZE),
                             *weights(weights_folder), "--device", "cpu", "--save_ext", ".png",
                             "--output", str(folder)]) == 0
    out = Image.open(folder / "frame_stylized_style.png")
    height, width = frame.shape[:2]
    short = SIZE
    # torchvision's Resize(int): the shorter side becomes SIZE, the longer int(SIZE*long/short).
    h, w = (short, int(short * width / height)) if height <= width else (int(short * height / width), short)
    return np.asarray(out.crop((0, 0, w, h)).resize((width, height), Image.BICUBIC))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    content = write_clip(folder / "content.mkv", 37, 29, 5)
    style_frames = write_clip(folder / "style.mkv", 23, 25, 6, audio=False, seed=1)
    write_clip(folder / "short.mkv", 23, 25, 3, audio=False, seed=2)
    save_weights(folder)
    Image.fromarray(style_frames[0]).save(folder / "style.png")
    # The codec's error on the inputs: FFV1 RGB is lossless, so it is exactly 0.
    decoded, rate, size, _, audio = read_clip(folder / "content.mkv")
    assert rate == NTSC and size == (37, 29) and audio
    assert all(np.array_equal(a, b) for a, b in zip(decoded, content)) and len(decoded) == 5
    return folder, content, style_frames


def run_video(folder, out, *extra):
    return stylize_video.main(["--content_video", str(folder / "content.mkv"),
                               "--content_size", str(SIZE), "--style_size", str(SIZE),
                               *weights(folder), "--device", "cpu", "--output", str(out), *extra])


@pytest.mark.parametrize("style", ["image", "video"])
def test_lossless_output_equals_the_image_path(clips, tmp_path, style):
    folder, content, style_frames = clips
    style_path = folder / ("style.png" if style == "image" else "style.mkv")
    assert run_video(folder, tmp_path, "--style_path", str(style_path), "--save_ext", ".mkv") == 0
    frames, rate, size, pix_fmt, audio = read_clip(tmp_path / "content_stylized_style.mkv")
    assert len(frames) == 5 and rate == NTSC and size == (37, 29) and pix_fmt == "bgr0"
    assert audio == read_clip(folder / "content.mkv")[4]  # the audio packets, copied unchanged
    for i, frame in enumerate(frames):
        style_png = folder / "style.png"
        if style == "video":  # one style frame per content frame
            style_png = tmp_path / f"style{i}" / "style.png"
            style_png.parent.mkdir()
            Image.fromarray(style_frames[i]).save(style_png)
        # Lossless output codec: the measured error is 0, so the frames are compared exactly.
        expected = image_path(content[i], style_png, tmp_path, i, folder)
        np.testing.assert_array_equal(frame, expected, err_msg=f"frame {i}")
        # The channels differ enough that red/blue swapped would fail the comparison.
        assert np.abs(expected[..., ::-1].astype(int) - expected).mean() > 50
    assert not np.array_equal(frames[0], frames[1])


# libx264 at crf 17 is lossy (and yuv444p here, the sides being odd). Measured on these
# frames against the lossless result: mean |error| 1.37-1.46 and max 6-9 (of 255), over
# 5 frames. The bounds leave about 2x; a red/blue swap measured mean ~65.
H264_MEAN_ABS, H264_MAX_ABS = 3.0, 20


def test_style_video_mp4_odd_size_keeps_rate_size_audio(clips, tmp_path):
    folder, content, style_frames = clips
    assert run_video(folder, tmp_path, "--style_path", str(folder / "style.mkv")) == 0
    frames, rate, size, pix_fmt, audio = read_clip(tmp_path / "content_stylized_style.mp4")
    assert len(frames) == 5 and rate == NTSC and size == (37, 29)
    assert pix_fmt == "yuv444p"  # odd sides: 4:2:0 would need an even size
    assert audio == read_clip(folder / "content.mkv")[4]
    for i, frame in enumerate(frames):
        style_png = tmp_path / f"style{i}" / "style.png"
        style_png.parent.mkdir()
        Image.fromarray(style_frames[i]).save(style_png)
        expected = image_path(content[i], style_png, tmp_path, i, folder).astype(int)
        error = np.abs(frame.astype(int) - expected)
        assert error.mean() <= H264_MEAN_ABS and error.max() <= H264_MAX_ABS, \
            (i, error.mean(), error.max())


def test_even_size_mp4_is_yuv420p_and_no_audio_stays_none(clips, tmp_path):
    folder = clips[0]
    write_clip(tmp_path / "even.mkv", 38, 30, 2, rate=Fraction(25), audio=False, seed=3)
    assert stylize_video.main(["--content_video", str(tmp_path / "even.mkv"), "--style_path",
                               str(folder / "style.png"), "--content_size", str(SIZE),
                               "--style_size", str(SIZE), *weights(folder), "--device", "cpu",
                               "--output", str(tmp_path)]) == 0
    frames, rate, size, pix_fmt, audio = read_clip(tmp_path / "even_stylized_style.mp4")
    assert len(frames) == 2 and rate == 25 and size == (38, 30)
    assert pix_fmt == "yuv420p" and audio == []  # the widely played 4:2:0 when the size allows


def test_start_and_duration_pick_a_clip(clips, tmp_path):
    folder, content, _ = clips
    # Frames are at i * 1001/30000 s: [0.03, 0.11) holds frames 1, 2 and 3.
    assert run_video(folder, tmp_path, "--style_path", str(folder / "style.png"), "--save_ext",
                     ".mkv", "--start", "0.03", "--duration", "0.08") == 0
    frames, rate, _, _, audio = read_clip(tmp_path / "content_stylized_style.mkv")
    assert len(frames) == 3 and rate == NTSC and audio
    np.testing.assert_array_equal(frames[0], image_path(content[1], folder / "style.png",
                                                        tmp_path, "clip", folder))


def run_cli(args, tmp_path, code=None):
    command = code or "from adain_np.stylize_video import main; from adain_np.cli import run_cli;" \
                      " import sys; sys.exit(run_cli(main))"
    return subprocess.run([sys.executable, "-c", command, *args], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)


def write_sound(container):
    """A 0.1 s silent FLAC track."""
    sound = container.add_stream("flac", rate=AUDIO_RATE)
    sound.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = AUDIO_RATE, 0
    for packet in list(sound.encode(frame)) + list(sound.encode(None)):
        container.mux(packet)


def bad_input(case, folder, tmp_path):
    if case == "not a video":
        path = tmp_path / "notes.mp4"
        path.write_text("hello, not a video\n")
        return ["--content_video", str(path)], "not a readable video"
    if case == "no video stream":
        path = tmp_path / "sound.mkv"
        container = av.open(str(path), "w", format="matroska")
        write_sound(container)
        container.close()
        return ["--content_video", str(path)], "no video stream"
    if case == "zero frames":
        # A video stream that holds no frame (beside a short audio track, so that the
        # container is complete and opens).
        path = tmp_path / "empty.mkv"
        container = av.open(str(path), "w", format="matroska")
        video = container.add_stream("ffv1", rate=NTSC)
        video.width, video.height, video.pix_fmt = 37, 29, "bgr0"
        write_sound(container)
        container.close()
        return ["--content_video", str(path)], "no video frames"
    if case == "short style video":
        return ["--content_video", str(folder / "content.mkv"), "--style_path",
                str(folder / "short.mkv")], "fewer than the 5 content frames"
    if case == "missing file":
        return ["--content_video", str(tmp_path / "nowhere.mp4")], "file not found"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["not a video", "no video stream", "zero frames",
                                  "short style video", "missing file"])
def test_bad_input_is_one_line_exit_2(clips, tmp_path, case):
    folder = clips[0]
    args, message = bad_input(case, folder, tmp_path)
    if "--style_path" not in args:
        args += ["--style_path", str(folder / "style.png")]
    result = run_cli(args + ["--random_weights", "--output", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_missing_pyav_is_one_line(clips, tmp_path):
    folder = clips[0]
    code = ("import sys; sys.modules['av'] = None;"  # makes `import av` fail as if not installed
            " from adain_np.stylize_video import main; from adain_np.cli import run_cli;"
            " sys.exit(run_cli(main))")
    result = run_cli(["--content_video", str(folder / "content.mkv"), "--style_path",
                      str(folder / "style.png")], tmp_path, code)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: " + stylize_video.INSTALL_HINT]
    assert "pip install adain_np[video]" in stylize_video.INSTALL_HINT


def test_bench_workload_reports_frames_per_second():
    result = stylize_video.bench_video(size=16, frames=2)
    assert result["frames"] == 2 and result["frames_per_second"] > 0
