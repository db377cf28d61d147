"""ActNorm (Glow): a per-channel affine map initialized from the first batch's statistics."""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .base import FlowLayer, check_batch_channels, check_channel_count


def _channel_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over the batch and all other dims, pooled over every process
    of torch.distributed when it is initialized (so all replicas start from identical parameters)."""
    values = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
    count = torch.full((x.shape[1],), float(values.shape[1]), dtype=torch.float64, device=x.device)
    moments = torch.stack([count, values.sum(1), values.square().sum(1)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(moments)  # a sum of counts and power sums: exact pooling, whatever each batch size
    count, total, total_sq = moments
    mean = total / count
    variance = (total_sq / count - mean.square()).clamp_min(0)
    return mean, variance.sqrt()


class ActNorm(FlowLayer):
    """Glow's activation normalization: a learned per-channel affine map, initialized from the first batch.

    Per channel ``c`` of dim 1, with ``P`` the elements per channel of one sample (``H * W`` for images, 1 for
    vectors)::

        y[:, c] = (x[:, c] + bias[c]) * exp(log_scale[c])
        logdet = P * sum_c log_scale[c]

    The first call to `forward` in training mode sets `bias` and `log_scale` so that the batch comes out with zero
    mean and unit variance per channel (data-dependent initialization), pooled across processes under
    torch.distributed. The `initialized` flag is part of the state_dict, so a loaded model is not re-initialized.

    Args:
        num_channels: the size of dim 1 of the data (int >= 1).
        eps: added to each channel's standard deviation before the log at initialization, so a constant channel
            does not give an infinite scale; default 1e-6.

    Returns:
        Called as ``layer(x)`` with ``x`` of shape ``[B, num_channels, ...]``: ``(y, logdet)``, ``y`` of ``x``'s
        shape and dtype, ``logdet`` of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s dtype).
        ``layer.inverse(y)`` returns ``(x, -logdet)``.

    Example:
        >>> layer = ActNorm(2)
        >>> y, logdet = layer(torch.randn(64, 2) * 3 + 1)
        >>> mean, std = y.mean(0), y.std(0, unbiased=False)
        >>> torch.allclose(mean, torch.zeros(2), atol=1e-5), torch.allclose(std, torch.ones(2))
        (True, True)
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        if num_channels <= 0:
            raise ValueError(f"ActNorm needs a positive channel count, got {num_channels}")
        self.num_channels, self.eps = int(num_channels), eps
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        # A host-side copy of `initialized`: reading the buffer on every call would sync a GPU each step.
        self._initialized_known = False

    def output_shape(self, input_shape):
        return check_channel_count("ActNorm", self.num_channels, input_shape)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set `bias` and `log_scale` from the batch `x` (called by the first `forward` in training mode).

        Args:
            x: a batch ``[B, num_channels, ...]`` with ``B >= 1``; its statistics are pooled over all processes
                when torch.distributed is initialized (each process calls this with its own batch).
        """
        mean, std = _channel_statistics(x)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._initialized_known = True

    @property
    def initialization_pending(self) -> bool:
        """Whether the next `forward` initializes the layer from its batch: in training mode, until it has been.

        The `initialized` buffer is read back once (a device sync on a GPU) and the answer remembered. A compiled
        :class:`Flow` runs a call with an initialization pending eagerly: reading data back cannot be in a graph.
        """
        if self.training and not self._initialized_known and bool(self.initialized):
            self._initialized_known = True
        return self.training and not self._initialized_known

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized_known = False  # re-read the loaded buffer on the next call

    def _broadcast(self, parameter: Tensor, x: Tensor) -> Tensor:
        return parameter.view(1, -1, *([1] * (x.dim() - 2)))

    def _logdet(self, x: Tensor, sign: float) -> Tensor:
        per_channel = x[0].numel() // self.num_channels if x.shape[0] else 0
        total = sign * per_channel * self.log_scale.sum()
        return total.to(torch.promote_types(x.dtype, torch.float32)).expand(x.shape[0])

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_batch_channels("ActNorm", self.num_channels, x)
        if x.shape[0] > 0 and self.initialization_pending:
            self.initialize(x)
        y = (x + self._broadcast(self.bias, x)) * torch.exp(self._broadcast(self.log_scale, x))
        return y, self._logdet(x, 1.0)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        check_batch_channels("ActNorm", self.num_channels, y)
        x = y * torch.exp(-self._broadcast(self.log_scale, y)) - self._broadcast(self.bias, y)
        return x, self._logdet(y, -1.0)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, initialized={bool(self.initialized)}"
