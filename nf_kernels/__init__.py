"""nf_kernels: fused kernels for normalizing-flow coupling layers.

    >>> import torch, nf_kernels
    >>> y, logdet = nf_kernels.affine_coupling(torch.randn(8, 6), torch.randn(8, 6), scale="tanh")

See docs/spec.md (the contract) and README.md.
"""

from ._dispatch import list_backends
from ._outputs import poison_outputs
from .cpu_memory import keep_freed_cpu_memory
from .functional import additive_coupling, affine_coupling, spline_coupling

__all__ = ["affine_coupling", "additive_coupling", "keep_freed_cpu_memory", "list_backends", "poison_outputs",
           "spline_coupling"]
__version__ = "0.1.0"
