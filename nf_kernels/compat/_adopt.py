"""What every drop-in class of nf_kernels.compat shares: it is a subclass of one peer library's coupling layer that
computes through the fused ops, built either by its library's own constructor or by adopting an existing layer.

A drop-in class keeps its library's constructor signature, attributes, submodules and state_dict (it *is* that
library's class, with its forward and inverse replaced), so a model switches with one line and keeps its weights.
Adopting changes an existing layer's class in place: its parameters, hooks, device and every reference to it stay
what they were (the convention of Liger-Kernel's apply_liger_kernel_to_*, which patches a model's classes).
"""

from __future__ import annotations

import inspect
from typing import ClassVar

from torch import nn

from ..errors import UserError


class Unsupported(UserError, ValueError):
    """A peer library's layer (or a configuration of it) that the fused ops cannot compute exactly; the message
    says what is not supported."""


class Accelerated:
    """The mixin of every drop-in class, listed before the library class it replaces:
    ``class AffineCouplingTransform(Accelerated, nflows.transforms.AffineCouplingTransform)``.

    A subclass implements `check` (raise :class:`Unsupported` for what it cannot compute) and `prepare` (derive what
    the fused calls need from the library's own attributes); its constructor is the library's, then those two. (A
    library class whose first base is an ABC, like pyro's conditional transforms, goes first instead: a class
    swap needs the old and new memory layouts to match, which a mixin before such a class breaks.) The backend of the fused ops is the attribute
    `nf_kernels_backend` ("auto" unless set on the layer or by :func:`nf_kernels.compat.accelerate`).
    """

    replaces: ClassVar[type]  # the library class, set from the bases
    nf_kernels_backend: str = "auto"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        library = [base for base in cls.__bases__ if not issubclass(base, Accelerated)]
        if not library:
            return  # a mixin shared by several drop-in classes
        cls.replaces = library = library[0]

        def __init__(self, *args, **kwargs):
            library.__init__(self, *args, **kwargs)
            type(self).check(self)
            self.prepare()

        cls.__init__ = __init__
        # inspect.signature(cls) then shows the library's constructor, which is the one this class takes.
        cls.__signature__ = inspect.signature(library)

    @classmethod
    def check(cls, layer: nn.Module) -> None:
        """Raise Unsupported, saying why, if `layer` (an instance of the library class) cannot be computed exactly."""

    def prepare(self) -> None:
        """Derive, from the library's attributes, what the fused calls need (after `check` passed)."""

    @classmethod
    def adopt(cls, layer: nn.Module) -> nn.Module:
        """Turn `layer`, an instance of exactly the library class, into this class in place; returns it."""
        if type(layer) is not cls.replaces:
            raise TypeError(f"{cls.__name__}.adopt takes a {cls.replaces.__module__}.{cls.replaces.__name__}, "
                            f"got {type(layer).__name__}")  # fmt: skip
        cls.check(layer)
        layer.__class__ = cls
        layer.prepare()
        return layer
