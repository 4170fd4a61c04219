"""python -m adain_np.weights: export, convert and download, run as the user would.

Downloads never touch the network: ADAIN_NP_WEIGHTS_URL points at a loopback server
started here, at a file:// folder, or at a closed / silent loopback port.
"""
import functools
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from adain_np.params import DECODER_SHAPES, init_decoder_params, init_vgg_params
from adain_np.cli import UserError
from adain_np.weights import download
from torch_reference import make_decoder

REPO = Path(__file__).resolve().parents[1]


def run_weights(*args, env=None, timeout=60):
    """Run the command line in a fresh interpreter; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "ADAIN_NP_WEIGHTS_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "adain_np.weights", *map(str, args)],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result):
    """Exit 2, no traceback, one error line and it is last (download's bar may precede it)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # splitlines also splits on the bar's carriage returns; "\n\r" leaves empty lines.
    lines = [line for line in result.stderr.splitlines() if line]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    progress = ("vgg_normalised.pth ", "decoder.pth ")  # tqdm's bar lines
    assert all(line.startswith(progress) or line.endswith(": ok") for line in lines[:-1]), \
        result.stderr
    return errors[0]


def torch_state(params):
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in params.items()}


# ---------------------------------------------------------------- export / convert

def test_export_npz_to_pth_loads_in_torch(tmp_path):
    params = init_decoder_params(seed=7)
    source, target = tmp_path / "decoder.npz", tmp_path / "decoder.pth"
    np.savez(source, **params)
    result = run_weights("export", source, target)
    assert result.returncode == 0, result.stderr
    loaded = torch.load(target, weights_only=True)
    assert list(loaded) == list(DECODER_SHAPES)
    decoder = make_decoder()
    decoder.load_state_dict(loaded)  # strict, as pytorch-AdaIN's test.py does
    for key, tensor in decoder.state_dict().items():
        assert np.array_equal(tensor.numpy(), params[key]), key  # float32 in, float32 out


@pytest.mark.parametrize("new_zip", [True, False])
def test_convert_pth_to_npz_guesses_the_kind(tmp_path, new_zip):
    vgg = init_vgg_params(seed=8, full=True)
    decoder = init_decoder_params(seed=8)
    for name, params, kind in (("vgg_normalised", vgg, "vgg"), ("decoder", decoder, "decoder")):
        source, target = tmp_path / f"{name}.pth", tmp_path / f"{name}.npz"
        torch.save(torch_state(params), source, _use_new_zipfile_serialization=new_zip)
        result = run_weights("convert", source, target)
        assert result.returncode == 0, result.stderr
        assert kind in result.stdout
        with np.load(target, allow_pickle=False) as converted:
            assert sorted(converted.files) == sorted(params)  # the full vgg: all 34 tensors
            for key, value in params.items():
                assert converted[key].dtype == np.float32
                assert np.array_equal(converted[key], value), key


def test_convert_half_precision_decoder(tmp_path):
    params = {k: v.astype(np.float16) for k, v in init_decoder_params(seed=9).items()}
    source, target = tmp_path / "decoder_iter_10000.pth.tar", tmp_path / "out.npz"
    torch.save(torch_state(params), source)
    result = run_weights("convert", source, target, "--kind", "decoder")
    assert result.returncode == 0, result.stderr
    with np.load(target) as converted:
        for key, value in params.items():
            assert np.array_equal(converted[key], value.astype(np.float32)), key


def wrong_architecture(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(torch_state(init_vgg_params(seed=1)), path)
    return path


class RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def malicious(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"1.weight": RunsCommand(f"touch {tmp_path / 'MARKER'}")}, path)
    return path


def bad_source(case, tmp_path):
    """A source file that convert/export must refuse, by case name."""
    if case == "missing":
        return tmp_path / "nowhere.pth"
    if case == "malicious":
        return malicious(tmp_path)
    if case == "wrong_kind":
        return wrong_architecture(tmp_path)
    path = tmp_path / ("g.npz" if case == "npz_garbage" else "bad.pth")
    if case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif case == "npz_garbage":
        path.write_bytes(b"garbage")
    elif case == "unknown_kind":
        torch.save({"w": torch.zeros(2)}, path)
    return path


@pytest.mark.parametrize("case", ["missing", "random", "malicious", "wrong_kind", "unknown_kind",
                                  "npz_garbage"])
@pytest.mark.parametrize("command", ["convert", "export"])
def test_bad_input_is_one_line_exit_2_and_keeps_the_target(tmp_path, case, command):
    source = bad_source(case, tmp_path)
    target = tmp_path / "target.out"
    target.write_bytes(b"precious")
    kind = ["--kind", "decoder"] if case == "wrong_kind" else []
    line = assert_one_line_error(run_weights(command, source, target, *kind))
    assert str(source) in line
    if case == "wrong_kind":
        assert "decoder weights" in line and "'1.weight'" in line
    assert target.read_bytes() == b"precious"
    assert not (tmp_path / "MARKER").exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_unwritable_target_is_one_line(tmp_path):
    source = tmp_path / "decoder.npz"
    np.savez(source, **init_decoder_params(seed=11))
    line = assert_one_line_error(run_weights("export", source, tmp_path / "no_dir" / "out.pth"))
    assert "cannot write" in line and "no_dir" in line


def test_usage_errors_are_one_line():
    assert "invalid choice" in assert_one_line_error(run_weights("bogus"))
    assert_one_line_error(run_weights("convert", "only_one_argument"))
    assert_one_line_error(run_weights("convert", "a.pth", "b.npz", "--kind", "resnet"))


# ---------------------------------------------------------------- download

@pytest.fixture(scope="module")
def release_folder(tmp_path_factory):
    """The two release files as torch wrote them (vgg cut to vgg[:31] to keep tests quick)."""
    folder = tmp_path_factory.mktemp("release")
    torch.save(torch_state(init_vgg_params(seed=10)), folder / "vgg_normalised.pth",
               _use_new_zipfile_serialization=False)  # the 2018 files predate the zip format
    torch.save(torch_state(init_decoder_params(seed=10)), folder / "decoder.pth",
               _use_new_zipfile_serialization=False)
    return folder


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean; requests are counted instead
        self.server.requests.append(self.path)


@pytest.fixture
def serve():
    """serve(folder) -> (base URL on 127.0.0.1, list of requested paths)."""
    servers = []

    def start(folder, handler=_Handler):
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_over_http_with_progress(tmp_path, release_folder, serve):
    url, requests = serve(release_folder)
    models = tmp_path / "models"
    result = run_weights("download", "--dir", models, env={"ADAIN_NP_WEIGHTS_URL": url})
    assert result.returncode == 0, result.stderr
    for name in ("vgg_normalised.pth", "decoder.pth"):
        assert (models / name).read_bytes() == (release_folder / name).read_bytes()
    assert "[" + "#" * 30 + "]" in result.stderr and "MB" in result.stderr  # the finished bar
    assert sorted(os.listdir(models)) == ["decoder.pth", "vgg_normalised.pth"]  # no temp files
    assert len(requests) == 2

    again = run_weights("download", "--dir", models, env={"ADAIN_NP_WEIGHTS_URL": url})
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already present") == 2
    assert len(requests) == 2  # valid files are not fetched again


def test_download_from_file_url_replaces_an_invalid_file(tmp_path, release_folder):
    models = tmp_path / "models"
    models.mkdir()
    (models / "decoder.pth").write_bytes(b"half a download")
    log = io.StringIO()
    download(models, base_url=release_folder.as_uri(), stream=log)
    for name in ("vgg_normalised.pth", "decoder.pth"):
        assert (models / name).read_bytes() == (release_folder / name).read_bytes()
    assert "MB" in log.getvalue()


def test_download_of_wrong_weights_is_refused(tmp_path, release_folder, serve):
    served = tmp_path / "served"
    served.mkdir()
    vgg = (release_folder / "vgg_normalised.pth").read_bytes()
    (served / "vgg_normalised.pth").write_bytes(vgg)
    (served / "decoder.pth").write_bytes(vgg)  # the wrong network under the decoder's name
    url, _ = serve(served)
    models = tmp_path / "models"
    line = assert_one_line_error(run_weights("download", "--dir", models,
                                             env={"ADAIN_NP_WEIGHTS_URL": url}))
    assert "decoder.pth" in line and "not valid decoder weights" in line
    assert sorted(os.listdir(models)) == ["vgg_normalised.pth"]  # the good one stays; no temp file


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the with block ends


def assert_by_hand_instructions(line, models):
    for name in ("vgg_normalised.pth", "decoder.pth"):
        assert str(models / name) in line
        assert f"/{name}" in line


def test_download_from_closed_port_fails_fast(tmp_path):
    models = tmp_path / "models"
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run_weights("download", "--dir", models, env={"ADAIN_NP_WEIGHTS_URL": url})
    elapsed = time.monotonic() - start
    line = assert_one_line_error(result)
    assert_by_hand_instructions(line, models)
    assert url in line
    assert elapsed < 15  # failing offline must be quick: a 5 s timeout plus start-up
    assert not models.exists() or os.listdir(models) == []


def test_download_from_silent_server_hits_the_deadline(tmp_path):
    # The server accepts the connection (kernel backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        models = tmp_path / "models"
        start = time.monotonic()
        result = run_weights("download", "--dir", models, "--timeout", "1",
                             env={"ADAIN_NP_WEIGHTS_URL": url})
        elapsed = time.monotonic() - start
    line = assert_one_line_error(result)
    assert_by_hand_instructions(line, models)
    assert elapsed < 8  # 1 s deadline + interpreter start; generous for a loaded 2-core box
    assert not models.exists() or os.listdir(models) == []


def test_deadline_cuts_a_hanging_connect(tmp_path, monkeypatch):
    # Offline, a DNS lookup can hang beyond any socket timeout; only the deadline bounds it.
    release = threading.Event()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: release.wait(30))
    start = time.monotonic()
    try:
        with pytest.raises(UserError, match="no answer within 0.5 s"):
            download(tmp_path / "models", base_url="http://weights.invalid", timeout=0.5,
                     stream=io.StringIO())
    finally:
        release.set()
    assert time.monotonic() - start < 3  # 0.5 s deadline; the rest is slack for a busy machine


class _CutShortHandler(_Handler):
    """Promises the whole file, sends half of it, then hangs up."""

    def do_GET(self):
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


def test_download_cut_short_leaves_no_partial_file(tmp_path, release_folder, serve):
    url, _ = serve(release_folder, _CutShortHandler)
    models = tmp_path / "models"
    line = assert_one_line_error(run_weights("download", "--dir", models,
                                             env={"ADAIN_NP_WEIGHTS_URL": url}))
    assert "vgg_normalised.pth" in line
    assert os.listdir(models) == []


def test_download_404(tmp_path, serve):
    url, _ = serve(tmp_path)  # an empty folder
    models = tmp_path / "models"
    line = assert_one_line_error(run_weights("download", "--dir", models,
                                             env={"ADAIN_NP_WEIGHTS_URL": url}))
    assert "Not Found" in line or "404" in line
    assert os.listdir(models) == []


@pytest.mark.parametrize("timeout", ["inf", "1e300", "nan", "-1", "0"])
def test_download_timeout_must_be_a_sane_number(tmp_path, timeout):
    line = assert_one_line_error(run_weights("download", "--dir", tmp_path, "--timeout", timeout))
    assert "--timeout" in line


def test_download_dir_that_is_a_file_or_read_only(tmp_path, monkeypatch):
    a_file = tmp_path / "models"
    a_file.write_bytes(b"not a folder")
    line = assert_one_line_error(run_weights("download", "--dir", a_file))
    assert "not a folder" in line and str(a_file) in line
    # A read-only disk (root ignores chmod, so the refusal is simulated where it happens).
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(UserError, match="cannot write there .Read-only file system"):
        download(tmp_path / "ro", base_url="http://127.0.0.1:9")


def test_crafted_download_is_refused_without_leftovers(tmp_path, serve):
    """The out-of-bounds construction served as decoder.pth: one line, nothing left behind."""
    from test_fuzz_pth import crafted_cases
    served = tmp_path / "served"
    served.mkdir()
    files = {name: data for name, data, *_ in crafted_cases()}
    (served / "vgg_normalised.pth").write_bytes(files["build_on_tensor"])
    (served / "decoder.pth").write_bytes(files["heap_leak_decoder"])
    url, _ = serve(served)
    models = tmp_path / "models"
    line = assert_one_line_error(run_weights("download", "--dir", models,
                                             env={"ADAIN_NP_WEIGHTS_URL": url}))
    assert "not valid vgg weights" in line and "sets the state" in line
    assert os.listdir(models) == []  # no .tmp file
