"""Installs nf_kernels. `pip install -e . --no-build-isolation` (torch must already be installed: the C++
extension, when present, builds against the torch in the environment, the usual torch-extension convention)."""

from setuptools import find_packages, setup

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
    extras_require={"test": ["pytest", "pytest-benchmark"]},
)
