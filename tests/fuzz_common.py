"""Running the fuzz driver and the CLIs under a memory limit, and checking what they say."""
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 1 << 30   # address space of a fuzzed process: the decoder is 14 MB of floats
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
           PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(args, timeout, cwd=None):
    """subprocess.run under RLIMIT_AS, text output captured."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=ENV, preexec_fn=limit_memory)


def run_driver(cases, tmp_path, timeout=300):
    """{path: outcome dict} for cases = [{"path", "kind", ...}], loaded in one process."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([dict(c, path=str(c["path"])) for c in cases]))
    result = run_limited([sys.executable, str(REPO / "tests" / "fuzz_driver.py"),
                          str(manifest)], timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = {}
    for line in result.stdout.splitlines():
        item = json.loads(line)
        outcomes[item["path"]] = item
    assert len(outcomes) == len(cases), "the driver stopped early"
    return outcomes


def assert_refused(item, why=None):
    """A clean refusal: one line, naming the file, from a check and not a crash."""
    assert item["outcome"] == "refused", item
    message = item["message"]
    assert "\n" not in message and message.startswith(item["path"]), item
    for symptom in ("MemoryError", "RecursionError", "allow_pickle", "Traceback"):
        assert symptom not in message, item
    if why is not None:
        assert why in message, item
    assert item["seconds"] < 5, item


def assert_cli_error(result):
    """Exit code 2, exactly one line on stderr, no traceback."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]
