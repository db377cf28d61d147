"""How to rebuild a model: what a checkpoint stores so ``eval`` and ``sample`` need nothing but the file."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from torch import nn

from ..errors import UserError

MODEL_NAMES = ("nice", "realnvp", "glow", "nsf")
# What every builder of nf_kernels.flows takes, whatever the model and data (the conditioners' size).
COMMON_SIZES = ("hidden", "depth")


class ModelError(UserError, ValueError):
    """A model that cannot be built for this data with these sizes; the message says why and what would fit."""


@contextlib.contextmanager
def _as_model_error() -> Iterator[None]:
    """The ValueErrors of nf_kernels.flows' builders are their checks of the model, sizes and sample shape given."""
    try:
        yield
    except ValueError as error:
        raise ModelError(str(error)) from error


def data_kind(sample_shape: tuple[int, ...]) -> str:
    return "vectors" if len(sample_shape) == 1 else "images"


def sizes_used(name: str, sample_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The size options model ``name`` has for samples of ``sample_shape``: the common ones and those of
    :func:`nf_kernels.flows.sizes_used`, the builders' own table.

    >>> sizes_used("glow", (2,))
    ('hidden', 'depth', 'num_steps')
    """
    from ..flows import sizes_used as builder_sizes  # the flows import the op layer: only when asked

    with _as_model_error():
        return COMMON_SIZES + builder_sizes(name, sample_shape)


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of :func:`nf_kernels.flows.build_model`, minus the run-time ones (backend, memory saving,
    compile).

    >>> spec = ModelSpec("realnvp", (2,), {"hidden": 32})
    >>> ModelSpec.from_dict(spec.to_dict()) == spec
    True
    """

    name: str
    sample_shape: tuple[int, ...]
    sizes: dict[str, Any] = field(default_factory=dict)  # only the sizes the user chose; the rest are defaults
    num_classes: Optional[int] = None

    def build(self, *, backend: str = "auto", memory_saving: bool = False, compile: bool = False,
              recompute_conditioner: bool = False) -> nn.Module:
        from ..flows import build_model  # the flows import the op layer: only when a model is needed

        with _as_model_error():
            return build_model(self.name, self.sample_shape, backend=backend, memory_saving=memory_saving,
                               compile=compile, num_classes=self.num_classes,
                               recompute_conditioner=recompute_conditioner, **self.sizes)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sample_shape": list(self.sample_shape), "sizes": dict(self.sizes),
                "num_classes": self.num_classes}  # fmt: skip

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> "ModelSpec":
        return cls(saved["name"], tuple(saved["sample_shape"]), dict(saved["sizes"]), saved.get("num_classes"))

    def describe(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(self.sizes.items()))
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return f"{self.name} on {self.sample_shape}" + (f" ({sizes})" if sizes else "") + classes
