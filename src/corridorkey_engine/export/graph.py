"""The keyer as one module for a host: a frame of any size in, the keyed frame out, everything the engine
does around the model inside (resize to the model's square, normalisation, the model, Lanczos-4 back to
the frame, optional despill), so the exported graph needs no Python beside it."""

from __future__ import annotations

import torch
from torch import nn

from ..keying import color
from ..model.network import GreenFormer
from .resample import resize_to_frame, resize_to_model


class KeyerGraph(nn.Module):
    """``forward(frame)``: ``[1, 4, H, W]`` float32 -> ``[1, 4, H, W]`` float32, any ``H × W``.

    The input is RGB (sRGB 0-1, or linear light with ``input_is_linear``: resized in linear light, then
    converted to sRGB, as the engine's ``input_is_linear``) followed by the linear alpha hint. The output is
    what :meth:`CorridorKeyEngine.process_frame` returns for that frame: the straight sRGB foreground
    (``fg``, despilled on ``screen_color``'s channel by ``despill_strength``) followed by the linear
    ``alpha``; with ``premultiply``, the foreground is converted to linear and multiplied by the alpha
    (the engine's ``processed`` output without despeckle).

    Args:
        model: the GreenFormer (its dtype is the precision the graph runs the model in).
        despill_strength: 0 (none) to 1.
        screen_color: ``"green"`` or ``"blue"``: the despill channel.
        input_is_linear: the RGB input is linear light.
        premultiply: output linear premultiplied RGB instead of straight sRGB.
    """

    def __init__(
        self,
        model: GreenFormer,
        *,
        despill_strength: float = 0.0,
        screen_color: str = "green",
        input_is_linear: bool = False,
        premultiply: bool = False,
    ) -> None:
        super().__init__()
        color.despill(torch.zeros(1, 3, 1, 1), despill_strength, screen_color)  # validates both
        self.model = model
        self.img_size = model.config.img_size
        self.despill_strength = float(despill_strength)
        self.screen_color = screen_color
        self.input_is_linear = input_is_linear
        self.premultiply = premultiply
        self.model_dtype = next(model.parameters()).dtype

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        frame = frame.float()
        small = resize_to_model(frame, self.img_size)
        rgb = color.linear_to_srgb(small[:, :3]) if self.input_is_linear else small[:, :3]
        inputs = torch.cat([color.imagenet_normalise(rgb), small[:, 3:]], dim=1).to(self.model_dtype)
        prediction = self.model(inputs)
        alpha = resize_to_frame(prediction["alpha"].float(), frame)
        fg = resize_to_frame(prediction["fg"].float(), frame)
        fg = color.despill(fg, self.despill_strength, self.screen_color)
        if self.premultiply:
            fg = color.srgb_to_linear(fg) * alpha
        return torch.cat([fg, alpha], dim=1)
