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

REFINER_OUTPUT_SCALE = 10.0
"""The refiner predicts small values; its logit corrections are its output times this."""


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

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Four ``[B, C_i, H_i, W_i]`` stage outputs -> logits ``[B, out, H_1, W_1]``."""
        c1, c2, c3, c4 = features
        size = c1.shape[2:]
        projected = [
            F.interpolate(layer(c), size=size, mode="bilinear", align_corners=False)
            for layer, c in ((self.linear_c4, c4), (self.linear_c3, c3), (self.linear_c2, c2))
        ]
        projected.append(self.linear_c1(c1))
        fused = self.relu(self.bn(self.linear_fuse(torch.cat(projected, dim=1))))
        return self.classifier(self.dropout(fused))


class RefinerBlock(nn.Module):
    """A residual block of two dilated 3×3 convolutions with GroupNorm(8)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=dilation, dilation=dilation)
        self.gn1 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=dilation, dilation=dilation)
        self.gn2 = nn.GroupNorm(8, channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return self.relu(out + x)


class CNNRefiner(nn.Module):
    """Full-resolution correction of the coarse logits from the image and the coarse predictions.

    Input: normalised RGB (3) + coarse sigmoid alpha (1) and foreground (3). Output: logit deltas for
    alpha (1) and foreground (3), already scaled by :data:`REFINER_OUTPUT_SCALE`.
    """

    def __init__(self, in_channels: int = 7, channels: int = 64, out_channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
            nn.GroupNorm(8, channels),
            nn.ReLU(inplace=True),
        )
        self.res1 = RefinerBlock(channels, dilation=1)
        self.res2 = RefinerBlock(channels, dilation=2)
        self.res3 = RefinerBlock(channels, dilation=4)
        self.res4 = RefinerBlock(channels, dilation=8)
        self.final = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, rgb: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = self.stem(torch.cat([rgb, coarse], dim=1))
        x = self.res4(self.res3(self.res2(self.res1(x))))
        return self.final(x) * REFINER_OUTPUT_SCALE


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

    def forward(self, x: torch.Tensor, refiner_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """``refiner_scale`` multiplies the refiner's corrections (0 = coarse prediction only)."""
        size = x.shape[2:]
        features = self.encoder(x)
        logits = torch.cat([self.alpha_decoder(features), self.fg_decoder(features)], dim=1)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if refiner_scale != 0.0:
            delta = self.refiner(x[:, :3], torch.sigmoid(logits))
            logits = logits + delta * refiner_scale if refiner_scale != 1.0 else logits + delta
        probs = torch.sigmoid(logits)
        return {"alpha": probs[:, :1], "fg": probs[:, 1:]}


def build_greenformer(config: GreenFormerConfig, device: str | torch.device = "meta") -> GreenFormer:
    """Build the model's structure on ``device`` (default ``meta``: no memory, no initialisation)."""
    with torch.device(device):
        return GreenFormer(config)
