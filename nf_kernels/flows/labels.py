"""Class labels as context: the embedding a class-conditional model puts in front of its conditioners."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LabelEmbedding(nn.Embedding):
    """Class labels to context vectors: ``labels -> weight[labels]``, an ``nn.Embedding`` that checks its labels.

    A plain ``nn.Embedding`` answers a float label with a dtype error about "indices" and an out-of-range one with
    an IndexError (on a GPU, a device-side assert that ends the process); here a label that is not a class is a
    TypeError (not an integer) or a ValueError (outside ``[0, num_classes)``). Parameters and state_dict keys are
    those of ``nn.Embedding``.

    Args:
        num_classes: how many classes (int >= 1); labels lie in ``[0, num_classes)``.
        features: the width of each context vector (int >= 1), the conditioners' `context_features`.

    Returns:
        Called as ``embed(labels)`` with an integer tensor of any shape (any integer dtype): the vectors, of shape
        ``[*labels.shape, features]`` in the weight's dtype.

    Example:
        >>> embed = LabelEmbedding(3, 4)
        >>> embed(torch.tensor([0, 2])).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_classes: int, features: int):
        super().__init__(num_classes, features)

    def forward(self, labels: Tensor) -> Tensor:
        classes = self.num_embeddings
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise TypeError(
                f"context holds class labels: an integer tensor (torch.long) of values in [0, {classes}), "
                f"got dtype {labels.dtype}"
            )
        # The range check reads the labels back (a sync on a GPU); a compiled graph keeps nn.Embedding's own checks.
        if labels.numel() and not torch.compiler.is_compiling():
            low, high = torch.stack(torch.aminmax(labels)).tolist()
            if low < 0 or high >= classes:
                raise ValueError(
                    f"class labels must lie in [0, {classes}) (the model has num_classes={classes}), "
                    f"got labels from {low} to {high}"
                )
        return super().forward(labels.long())
