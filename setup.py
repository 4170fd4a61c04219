"""Build hook (the metadata is in pyproject.toml): kernels/ sits at the top of the repository,
and the built package carries its CUDA sources as adain_np/cuda/kernels/."""
import glob
import os

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_SOURCES = ("kernels/*.cu", "kernels/*.cuh")


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "adain_np", "cuda", "kernels")
        self.mkpath(target)
        for pattern in KERNEL_SOURCES:
            for source in sorted(glob.glob(pattern)):
                self.copy_file(source, os.path.join(target, os.path.basename(source)))


setup(cmdclass={"build_py": BuildPyWithKernels})
