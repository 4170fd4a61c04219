"""python -m adain_np.gallery: the grid from weights files, and the one-line offline path."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from adain_np import gallery
from adain_np.images import sample_images, to_uint8
from adain_np.net import Net
from adain_np.params import init_decoder_params, init_vgg_params
from adain_np.pth import save_state_dict
from adain_np.stylize import prepare, stylize

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # cell side: small, so 25 stylizations take a second or two


def random_weights(folder):
    """Random parameters saved as the published files are: full 53-module vgg, torch zip."""
    folder.mkdir()
    vgg, decoder = init_vgg_params(seed=3, full=True), init_decoder_params(seed=3)
    # Scale the last (linear) conv so pixels spread over [0, 1] instead of clipping to 255.
    decoder["28.weight"] = decoder["28.weight"] * np.float32(0.01)
    decoder["28.bias"] = np.full(3, 0.5, np.float32)
    save_state_dict(vgg, folder / "vgg_normalised.pth")
    save_state_dict(decoder, folder / "decoder.pth")
    return vgg, decoder


def test_gallery_grid_from_weight_files(tmp_path, capsys):
    vgg, decoder = random_weights(tmp_path / "models")
    out = tmp_path / "out"
    code = gallery.main(["--vgg", str(tmp_path / "models" / "vgg_normalised.pth"),
                         "--decoder", str(tmp_path / "models" / "decoder.pth"),
                         "--output", str(out), "--size", str(SIZE), "--device", "cpu",
                         "--no_download"])
    assert code == 0
    contents, styles = sample_images("content"), sample_images("style")
    grid = np.asarray(Image.open(out / "gallery.png"))
    assert grid.shape == ((len(contents) + 1) * SIZE, (len(styles) + 1) * SIZE, 3)
    cell = lambda i, j: grid[i * SIZE:(i + 1) * SIZE, j * SIZE:(j + 1) * SIZE]  # noqa: E731
    # Corner blank, headers are the inputs, a cell is the image path on that pair.
    assert (cell(0, 0) == 255).all()
    style = prepare(styles[1], SIZE, crop=True)
    content = prepare(contents[2], SIZE, crop=True)
    np.testing.assert_array_equal(cell(0, 2), to_uint8(style))
    np.testing.assert_array_equal(cell(3, 0), to_uint8(content))
    net = Net(vgg, decoder)
    expected = to_uint8(stylize(net, content, [style]))
    np.testing.assert_array_equal(cell(3, 2), expected)
    assert not np.array_equal(cell(3, 2), cell(3, 3))  # different styles, different cells
    page = (out / "index.html").read_text()
    assert 'src="gallery.png"' in page and os.path.basename(styles[0]) in page
    assert "wrote" in capsys.readouterr().out


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is: connections are refused


def test_offline_is_one_line_and_writes_nothing(tmp_path):
    env = dict(os.environ, ADAIN_NP_WEIGHTS_URL=f"http://127.0.0.1:{closed_port()}",
               PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "adain_np.gallery"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("gallery skipped:"), lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "output").exists()


def test_bad_weights_file_is_one_line_exit_2(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg_normalised.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "models" / "decoder.pth").write_bytes(b"not a checkpoint")
    result = subprocess.run([sys.executable, "-m", "adain_np.gallery", "--no_download"],
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
