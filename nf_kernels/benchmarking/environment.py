"""Where and on what a benchmark ran: commit, library versions and device name, recorded next to every result."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Optional

import torch

import nf_kernels

from .machine import cache_reach, last_level_cache

REPO_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str:
    """The checked-out commit, with "+dirty" when tracked files have uncommitted changes; "unknown" outside git."""
    commit = _git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if dirty else "")


def base_commit(branch: str = "main") -> Optional[str]:
    """Where the checkout left `branch`: their merge base (the commit itself on `branch`); None outside git."""
    commit = _git("merge-base", "HEAD", branch)
    return commit[:12] if commit else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def machine_slug(device: torch.device) -> str:
    """A file-name-safe name for the machine: the GPU's name on CUDA, "cpu-<cores>c-<arch>" on the CPU.

    >>> machine_slug(torch.device("cpu")).startswith("cpu-")
    True
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{os.cpu_count()}c-{platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def load_average() -> Optional[float]:
    """The 1-minute load average; None where the system has none (Windows)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_kernels() -> Optional[str]:
    """The instruction set the extension's CPU kernels run with here ("avx512", "avx2", "baseline"), None without
    the extension: two machines of one name can differ in it, and the CPU timings with it."""
    try:
        return str(torch.ops.nf_kernels_ext.cpu_isa())
    except (AttributeError, RuntimeError):
        return None


def environment(device: torch.device) -> dict:
    """Everything a reader needs to reproduce or compare a result."""
    cache = last_level_cache(device)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "nf_kernels": nf_kernels.__version__,
        "torch": torch.__version__,
        "triton": triton_version(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        # Other work on the machine skews CPU timings (a shared 2-core box is the usual case): say how busy it was.
        "load_average_1m": load_average(),
        "last_level_cache": str(cache),
        "cache_reach_bytes": cache_reach(device.type, cache),  # rows up to this many bytes are marked "in cache"
        "machine": machine_slug(device),
        "backends": [str(status) for status in nf_kernels.list_backends()],
        "cpu_kernels": cpu_kernels(),
    }
