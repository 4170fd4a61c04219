"""Get, convert and export the network weights: ``python -m adain_np.weights COMMAND``.

    download [--dir models]        fetch vgg_normalised.pth and decoder.pth (pytorch-AdaIN v0.0.0)
    convert IN.pth OUT.npz         any torch checkpoint -> .npz, checking the architecture
    export DECODER.npz OUT.pth     our decoder -> a .pth that pytorch-AdaIN's test.py loads

Downloads use urllib only. ADAIN_NP_WEIGHTS_URL overrides the release URL (tests point it
at a local server or a file:// folder).
"""
import http.client
import os
import sys
import tempfile
import threading
import urllib.request

from tqdm import tqdm

from adain_np.cli import ArgumentParser, UserError, atomic_path, run_cli
from adain_np.files import BadFileError
from adain_np.npz import write_npz
from adain_np.param_files import load_checked, read_weights
from adain_np.pth import save_state_dict

RELEASE_URL = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"
URL_ENV = "ADAIN_NP_WEIGHTS_URL"
WEIGHT_FILES = (("vgg_normalised.pth", "vgg"), ("decoder.pth", "decoder"))
DEFAULT_TIMEOUT = 10.0  # seconds; offline, the whole command must give up within 15 s
MAX_TIMEOUT = 3600.0    # a larger --timeout is a typo (and 1e300 overflows the thread join)
CHUNK = 1 << 20


# ---------------------------------------------------------------- download

def _open_url(url, timeout):
    """urlopen with a hard deadline: the socket timeout alone does not bound DNS lookups."""
    result = {}

    def connect():
        try:
            result["response"] = urllib.request.urlopen(url, timeout=timeout)
        except Exception as err:  # reported below, in the caller's thread
            result["error"] = err

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if "response" in result:
        return result["response"]
    err = result.get("error")
    if err is None:
        raise TimeoutError(f"no answer within {timeout:g} s")
    raise err


def _copy_with_progress(response, out, name, stream):
    """Copy the body to `out` under a tqdm bar; returns (bytes copied, bytes promised)."""
    total = int(response.headers.get("Content-Length") or 0)
    bar_format = ("{desc} [{bar:30}] {n_fmt}B/{total_fmt}B {rate_fmt} eta {remaining}"
                  if total else "{desc} {n_fmt}B {rate_fmt}")
    done = 0
    # ascii=".#": the bar is plain '#' and '.', readable in any log; leave=True ends its
    # line, so an error message gets a line of its own.
    with tqdm(total=total or None, desc=name, unit="B", unit_scale=True, unit_divisor=1000,
              file=stream, ascii=".#", bar_format=bar_format, leave=True) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    return done, total


def _fetch(url, target, kind, timeout, stream):
    """Download url to target atomically; keep it only if it holds valid `kind` weights."""
    with _open_url(url, timeout) as response, atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            done, total = _copy_with_progress(response, out, os.path.basename(target), stream)
        if total and done != total:
            raise ConnectionError(f"got {done} of {total} bytes")
        try:
            load_checked(tmp, kind)
        except BadFileError as err:
            raise UserError(f"downloaded {url} but it is not valid {kind} weights:"
                            f" {str(err).split(': ', 1)[-1]}") from None


def _by_hand_message(directory, base_url):
    files = ", ".join(f"{os.path.join(directory, name)} from {base_url}/{name}"
                      for name, _ in WEIGHT_FILES)
    return f"download them by hand and put them at: {files}"


def _is_valid(path, kind):
    try:
        load_checked(path, kind)
    except BadFileError:
        return False
    return True


def _writable_folder(directory):
    """Create `directory` if needed and make sure files can be written in it."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except FileExistsError:
        raise UserError(f"--dir {directory}: exists and is not a folder") from None
    except OSError as err:
        raise UserError(f"--dir {directory}: cannot write there ({err.strerror or err})") from None


def download(directory="models", base_url=None, timeout=DEFAULT_TIMEOUT, stream=None):
    """Fetch the published weights into `directory`, skipping files already there and valid.

    base_url defaults to $ADAIN_NP_WEIGHTS_URL, then the pytorch-AdaIN release; progress goes
    to `stream` (stderr). Raises UserError (one line, with the by-hand instructions) when
    the network fails.
    """
    stream = stream or sys.stderr  # looked up now, not at import: callers may redirect it
    base_url = (base_url or os.environ.get(URL_ENV) or RELEASE_URL).rstrip("/")
    _writable_folder(directory)
    for name, kind in WEIGHT_FILES:
        target, url = os.path.join(directory, name), f"{base_url}/{name}"
        if os.path.exists(target) and _is_valid(target, kind):
            stream.write(f"{target}: already present\n")
            continue
        try:
            _fetch(url, target, kind, timeout, stream)
        except (OSError, ValueError, http.client.HTTPException) as err:  # refused, timeout, 404
            reason = getattr(err, "reason", None) or err
            raise UserError(f"cannot download {url} ({reason});"
                            f" {_by_hand_message(directory, base_url)}") from None
        stream.write(f"{target}: ok\n")


# ---------------------------------------------------------------- convert / export

def _read_checked(path, kind):
    """The whole checked dict (float32, torch order); `auto` guesses the kind from the keys."""
    try:
        return read_weights(path, kind)
    except BadFileError as err:
        raise UserError(str(err)) from None


def convert(source, target, kind="auto"):
    """A .pth (or .npz) with checked `kind` weights -> .npz of float32; returns (kind, count)."""
    params, kind = _read_checked(source, kind)
    write_npz(params, target)
    return kind, len(params)


def export(source, target, kind="decoder"):
    """An .npz (or .pth) of checked weights -> torch zip .pth; returns (kind, count)."""
    params, kind = _read_checked(source, kind)
    save_state_dict(params, target)
    return kind, len(params)


def main(argv=None):
    parser = ArgumentParser(prog="python -m adain_np.weights",
                     description="Get, convert and export the AdaIN network weights.")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch the published pytorch-AdaIN weights")
    get.add_argument("--dir", default="models", help="folder to put the .pth files in")
    get.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                     help="seconds to wait for the server (default %(default)s)")
    for name, help_text, default in (("convert", ".pth -> .npz", "auto"),
                                     ("export", ".npz -> .pth for torch", "decoder")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("source")
        sub.add_argument("target")
        sub.add_argument("--kind", choices=("vgg", "decoder", "auto"), default=default,
                         help="architecture to check (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "download":
        if not 0 < args.timeout <= MAX_TIMEOUT:  # also refuses nan and inf
            raise UserError(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
        download(args.dir, timeout=args.timeout)
        return 0
    if os.path.abspath(args.source) == os.path.abspath(args.target):
        raise UserError("source and target are the same file")
    command = convert if args.command == "convert" else export
    try:
        kind, count = command(args.source, args.target, args.kind)
    except OSError as err:  # reading was checked already: this is the output side
        raise UserError(f"cannot write {args.target} ({err.strerror or err})") from None
    print(f"wrote {args.target} ({kind}, {count} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
