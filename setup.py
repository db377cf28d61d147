"""Installs nf_kernels. `pip install -e . --no-build-isolation` (torch must already be installed: the C++
extension, when present, builds against the torch in the environment, the usual torch-extension convention)."""

import importlib.util
import warnings
from pathlib import Path

from setuptools import find_packages, setup


def _extension_build() -> dict:
    """ext_modules and cmdclass for the C++/CUDA extension (nf_kernels/_build.py says what it is made of).

    Without torch in the build environment (build isolation), the package installs without the extension and
    nf_kernels.list_backends() says so.
    """
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError:
        warnings.warn("torch is not importable: building nf_kernels without its C++ extension")
        return {}
    build_file = Path(__file__).parent / "nf_kernels" / "_build.py"
    spec = importlib.util.spec_from_file_location("_nf_kernels_build", build_file)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return {"ext_modules": [build.extension()], "cmdclass": {"build_ext": BuildExtension}}


setup(
    name="nf_kernels",
    version="0.1.0",
    description="Fused GPU and CPU kernels for normalizing-flow coupling layers",
    packages=find_packages(include=["nf_kernels", "nf_kernels.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4,<2.15",
        "triton>=3.2; platform_system == 'Linux'",
        "numpy<2.4",  # Triton 3.6's interpreter breaks on numpy 2.4
        "tqdm",  # progress bars for training and benchmarks
        "matplotlib",  # sample grids, density and benchmark plots
        "scikit-learn",  # the bundled 8x8 digits data set
    ],
    entry_points={"console_scripts": ["nf-kernels = nf_kernels.cli:main"]},
    extras_require={"test": ["pytest==9.2.0", "pytest-benchmark==5.3.1"]},
    **_extension_build(),
)
