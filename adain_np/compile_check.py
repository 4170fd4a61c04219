"""Entry point kept for ``python -m adain_np.compile_check``; the code is adain_np/cuda/compile_check.py."""
import sys

from .cli import run_cli
from .cuda.compile_check import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
