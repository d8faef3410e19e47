"""GreenFormer: a Hiera encoder, two decoder heads (alpha, foreground) and a CNN refiner.

The module names and parameter shapes are those of the published CorridorKey v1.0 checkpoint
(``tests/engine/data/greenformer_keys_2048.json``): that is what makes it load with no missing or
unexpected key. Build it on the meta device (:func:`build_greenformer`) and assign the weights; nothing is
randomly initialised that the checkpoint then overwrites.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GreenFormerConfig
from .refiner import REFINER_OUTPUT_SCALE, CNNRefiner, RefinerBlock

__all__ = [
    "REFINER_OUTPUT_SCALE",
    "CNNRefiner",
    "DecoderHead",
    "GreenFormer",
    "LinearProjection",
    "RefinerBlock",
    "build_greenformer",
]


class LinearProjection(nn.Module):
    """A per-token linear map from one feature width to another (``proj``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W]`` -> ``[B, C_out, H, W]``."""
        n, _, h, w = features.shape
        tokens = self.proj(features.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(n, -1, h, w)


class DecoderHead(nn.Module):
    """Projects the four encoder stages to ``dim`` channels at 1/4 resolution, fuses, classifies."""

    def __init__(self, stage_channels: list[int], dim: int, out_channels: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = stage_channels
        # Declared deepest first: the checkpoint's key order.
        self.linear_c4 = LinearProjection(c4, dim)
        self.linear_c3 = LinearProjection(c3, dim)
        self.linear_c2 = LinearProjection(c2, dim)
        self.linear_c1 = LinearProjection(c1, dim)
        self.linear_fuse = nn.Conv2d(4 * dim, dim, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(dim, out_channels, kernel_size=1)

    def forward(self, features: list[torch.Tensor], *, in_parts: bool = False) -> torch.Tensor:
        """Four ``[B, C_i, H_i, W_i]`` stage outputs -> logits ``[B, out, H_1, W_1]``.

        ``in_parts``: apply the fusing convolution to each projection as it is made and sum (the same
        linear map, summed in another order) instead of concatenating all four first: a quarter of the
        memory at the fusing step.
        """
        c1, c2, c3, c4 = features
        size = c1.shape[2:]
        stages = ((self.linear_c4, c4), (self.linear_c3, c3), (self.linear_c2, c2), (self.linear_c1, c1))

        def project(layer: LinearProjection, c: torch.Tensor) -> torch.Tensor:
            out = layer(c)
            if out.shape[2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            return out

        if in_parts:
            parts = self.linear_fuse.weight.split(self.linear_fuse.in_channels // 4, dim=1)
            fused = F.conv2d(project(*stages[0]), parts[0])
            for (layer, c), weight in zip(stages[1:], parts[1:], strict=True):
                fused.add_(F.conv2d(project(layer, c), weight))
        else:
            fused = self.linear_fuse(torch.cat([project(layer, c) for layer, c in stages], dim=1))
        fused = self.relu(self.bn(fused))
        return self.classifier(self.dropout(fused))


class GreenFormer(nn.Module):
    """The CorridorKey keyer. ``forward(x)`` takes ``[B, 4, S, S]`` (ImageNet-normalised sRGB + alpha hint,
    ``S = config.img_size``) and returns ``{"alpha": [B,1,S,S], "fg": [B,3,S,S]}``, both sigmoid 0-1
    (``fg`` is straight sRGB)."""

    def __init__(self, config: GreenFormerConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        self.encoder = timm.create_model(
            config.encoder,
            pretrained=False,
            features_only=True,
            img_size=config.img_size,
            in_chans=config.in_channels,
            **config.encoder_kwargs,
        )
        for module in self.encoder.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = True  # PyTorch SDPA (flash / memory-efficient kernels on CUDA)
        stage_channels = list(self.encoder.feature_info.channels())
        if len(stage_channels) != 4:
            raise ValueError(
                f"{config.encoder}: GreenFormer needs 4 encoder stages, not {len(stage_channels)}"
            )
        self.alpha_decoder = DecoderHead(stage_channels, config.decoder_dim, out_channels=1)
        self.fg_decoder = DecoderHead(stage_channels, config.decoder_dim, out_channels=3)
        self.refiner = CNNRefiner(in_channels=3 + 4, channels=config.refiner_channels, out_channels=4)

    refiner_tile: int | None = None
    """None: the refiner runs on the whole image; a number: the low-memory mode, the refiner in tiles of
    that many pixels (the same result, see :mod:`.refiner`) and the decoders fused in parts."""

    def forward(self, x: torch.Tensor, refiner_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """``refiner_scale`` multiplies the refiner's corrections (0 = coarse prediction only)."""
        size = x.shape[2:]
        low_memory = self.refiner_tile is not None and not torch.is_grad_enabled()
        features = self.encoder(x)
        logits = torch.cat(
            [
                self.alpha_decoder(features, in_parts=low_memory),
                self.fg_decoder(features, in_parts=low_memory),
            ],
            dim=1,
        )
        del features  # the encoder's outputs are dead: free them before the full-resolution refiner
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if refiner_scale != 0.0:
            tile = self.refiner_tile if low_memory else None
            delta = self.refiner(x[:, :3], torch.sigmoid(logits), tile=tile)
            logits = logits + delta * refiner_scale if refiner_scale != 1.0 else logits + delta
        probs = torch.sigmoid(logits)
        return {"alpha": probs[:, :1], "fg": probs[:, 1:]}


def build_greenformer(config: GreenFormerConfig, device: str | torch.device = "meta") -> GreenFormer:
    """Build the model's structure on ``device`` (default ``meta``: no memory, no initialisation)."""
    with torch.device(device):
        return GreenFormer(config)
