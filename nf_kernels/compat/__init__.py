"""Drop-in fused replacements for the coupling layers of normflows, nflows, zuko, FrEIA and pyro.

Switch an existing model with one call, keeping its weights::

    report = nf_kernels.compat.accelerate(model)

or build layers from the drop-in classes, each with its library's constructor: ``nf_kernels.compat.normflows``,
``.nflows``, ``.zuko``, ``.freia`` and ``.pyro`` (importing one needs its library). docs/compat.md has the table of
what is accelerated and the conventions of each library.
"""

from ._adopt import Accelerated, Unsupported
from .accelerate import AccelerationReport, LeftAlone, Replaced, accelerate

__all__ = ["accelerate", "AccelerationReport", "Replaced", "LeftAlone", "Accelerated", "Unsupported"]
