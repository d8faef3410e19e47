"""GroupNorm whose statistics use the whole GPU, and the in-place application the refiner needs.

``torch.nn.GroupNorm``'s CUDA kernel parallelises over ``N × groups`` rows only: the refiner's
``GroupNorm(8, 64)`` at 2048×2048 is 8 rows of 33.5 M values each, so 8 thread blocks walk them while the
rest of the card idles (64 % of a frame's GPU time on an H200). :class:`SpatialGroupNorm` computes the same
thing with two ordinary reductions over ``H × W`` per channel (a sum and a sum of squares, accumulated in
float32 inside the reduction kernel: no float32 copy of the activation is made), which torch's reduction
kernels split over every SM, then folds the channels of each group together in float32. The normalisation
and the affine transform are then one ``addcmul`` in float32 arithmetic per element.

It is an ``nn.GroupNorm`` (same parameters, same state-dict keys, same ``repr``), so checkpoints load
unchanged. With autograd off (inference) it can normalise in place (:meth:`SpatialGroupNorm.forward_`) and
fuse the ReLU that follows, so the refiner never holds a normalised copy beside its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_HALF = (torch.float16, torch.bfloat16)


def channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``[N, C, H, W]`` over ``H × W``: float32 ``[N, C]`` each.

    Float32 inputs: ``var_mean`` (a Welford reduction). Half-precision inputs are read as they are and
    accumulated in float32 by the reductions themselves (a sum and a sum of squares with ``dtype=float32``:
    no float32 copy of the activation is made). Any memory layout (``channels_last`` too).
    """
    if x.dtype in _HALF:
        count = x.shape[2] * x.shape[3]
        mean = torch.sum(x, dim=(2, 3), dtype=torch.float32).div_(count)
        squares = torch.linalg.vector_norm(x, 2, dim=(2, 3), dtype=torch.float32).square_().div_(count)
        return mean, squares.sub_(mean * mean).clamp_(min=0)
    var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
    return mean, var


def group_statistics(
    mean: torch.Tensor, var: torch.Tensor, groups: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's mean and ``1/sqrt(var + eps)`` (float32 ``[N, groups]``) from its channels' means and
    biased variances ``[N, C]`` over equally many pixels each (float32, or float64 when gathered over
    tiles): the group's variance is the mean of the channel variances plus the variance of the channel
    means, as ``nn.GroupNorm`` computes it over the group's values at once.
    """
    n, c = mean.shape
    channel_mean = mean.view(n, groups, c // groups)
    group_mean = channel_mean.mean(-1)
    spread = (channel_mean - group_mean[..., None]).square()
    group_var = (var.view(n, groups, c // groups) + spread).mean(-1)
    return group_mean.float(), torch.rsqrt(group_var + eps).float()


def affine_from_statistics(
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    channels: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale`` and ``shift`` (float32 ``[N, C, 1, 1]``) with ``norm(x) = x·scale + shift``."""
    n, groups = mean.shape
    scale = rstd.repeat_interleave(channels // groups, dim=1)
    shift = -mean.repeat_interleave(channels // groups, dim=1) * scale
    if weight is not None:
        scale = scale * weight.float()
        shift = shift * weight.float()
    if bias is not None:
        shift = shift + bias.float()
    return scale.view(n, channels, 1, 1), shift.view(n, channels, 1, 1)


def apply_affine(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *, relu: bool, inplace: bool
) -> torch.Tensor:
    """``x·scale + shift`` (then ReLU), computed in float32 and stored in ``x``'s dtype; into ``x`` itself
    when ``inplace`` (autograd must be off: ``out=`` has no gradient)."""
    if inplace:
        out = torch.addcmul(shift, x, scale, out=x)
        return out.relu_() if relu else out
    out = torch.addcmul(shift, x, scale).to(x.dtype)
    return F.relu(out) if relu else out


class SpatialGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` computed with reductions spread over ``H × W`` (see the module's docstring).

    ``kernel`` chooses the implementation: ``"auto"`` (default) the spatial reductions on CUDA and torch's
    own kernel elsewhere (on a CPU torch's fused kernel is several times faster than two reductions and an
    ``addcmul``); ``"spatial"`` or ``"native"`` force one. Inputs other than ``[N, C, H, W]`` always use
    torch's kernel.
    """

    kernel: str = "auto"

    def uses_spatial(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is normalised by the spatial reductions (else by ``nn.GroupNorm``'s kernel)."""
        if x.ndim != 4 or self.kernel == "native":
            return False
        return self.kernel == "spatial" or x.device.type == "cuda"

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's per-group mean and inverse standard deviation for ``x``: float32 ``[N, groups]``."""
        return group_statistics(*channel_moments(x), self.num_groups, self.eps)

    def scale_shift(self, mean: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel ``scale`` and ``shift`` that normalise with these statistics."""
        return affine_from_statistics(mean, rstd, self.weight, self.bias, self.num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_spatial(x):
            return super().forward(x)
        return apply_affine(x, *self.scale_shift(*self.statistics(x)), relu=False, inplace=False)

    def forward_(self, x: torch.Tensor, *, relu: bool = False) -> torch.Tensor:
        """Normalise ``x`` (and apply a ReLU) in place when autograd is off; otherwise out of place."""
        inplace = not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
        if not self.uses_spatial(x):
            out = super().forward(x)
            return (out.relu_() if inplace else F.relu(out)) if relu else out
        return apply_affine(x, *self.scale_shift(*self.statistics(x)), relu=relu, inplace=inplace)
