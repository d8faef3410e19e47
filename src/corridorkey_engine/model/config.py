"""The GreenFormer architecture config, and how a checkpoint's metadata carries it.

A checkpoint without a config in its metadata (the published CorridorKey v1.0 ``.pth``/``.safetensors``) is
the v1.0 architecture: :data:`CORRIDORKEY_V1`. A checkpoint saved by this package (the bundled demo model, a
conversion) carries its config as JSON under the metadata key :data:`METADATA_KEY`, so the engine builds the
right architecture with no special case. This module does not import torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import ConfigError

METADATA_KEY = "corridorkey.config"
"""The safetensors ``__metadata__`` key whose value is the JSON of a :class:`GreenFormerConfig`."""

IMG_SIZE_MULTIPLE = 32
"""Hiera needs the token grid (``img_size / 4``) to tile into 8×8 mask units: ``img_size`` % 32 == 0."""


@dataclass(frozen=True)
class GreenFormerConfig:
    """What the GreenFormer's shape depends on.

    Attributes:
        encoder: a timm Hiera model name; built with ``pretrained=False, features_only=True``.
        encoder_kwargs: extra keyword arguments for ``timm.create_model`` (``embed_dim``, ``num_heads``,
            ``stages``, …): how a smaller Hiera is described. JSON-serialisable values only.
        img_size: the square resolution the model runs at (a multiple of 32); ``pos_embed`` follows it.
        in_channels: RGB + alpha hint.
        decoder_dim: width of the decoder heads' per-stage projections.
        refiner_channels: width of the CNN refiner (a multiple of 8, for GroupNorm(8)).
    """

    encoder: str = "hiera_base_plus_224.mae_in1k_ft_in1k"
    encoder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    img_size: int = 2048
    in_channels: int = 4
    decoder_dim: int = 256
    refiner_channels: int = 64

    def __post_init__(self) -> None:
        try:  # normalised through JSON (tuples become lists), so a config equals its metadata round trip
            kwargs = json.loads(json.dumps(dict(self.encoder_kwargs)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"encoder_kwargs must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "encoder_kwargs", kwargs)
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ConfigError(f"encoder must be a timm model name, got {self.encoder!r}")
        for name in ("img_size", "in_channels", "decoder_dim", "refiner_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.img_size % IMG_SIZE_MULTIPLE:
            raise ConfigError(
                f"img_size must be a multiple of {IMG_SIZE_MULTIPLE} (Hiera's mask units), "
                f"got {self.img_size}"
            )
        if self.refiner_channels % 8:
            raise ConfigError(f"refiner_channels must be a multiple of 8, got {self.refiner_channels}")
        reserved = {"img_size", "in_chans", "features_only", "pretrained"} & set(self.encoder_kwargs)
        if reserved:
            raise ConfigError(f"encoder_kwargs may not set {sorted(reserved)}: the config owns them")

    def with_img_size(self, img_size: int | None) -> GreenFormerConfig:
        """This config at another resolution (``None`` keeps it)."""
        return self if img_size is None or img_size == self.img_size else replace(self, img_size=img_size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata entry that carries this config."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_json(cls, text: str) -> GreenFormerConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{METADATA_KEY} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{METADATA_KEY} must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{METADATA_KEY} has unknown fields {unknown}: the checkpoint was made by a newer "
                "corridorkey_engine; upgrade it"
            )
        if "encoder_kwargs" in data and not isinstance(data["encoder_kwargs"], dict):
            raise ConfigError(f"{METADATA_KEY}: encoder_kwargs must be a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{METADATA_KEY}: {exc}") from exc

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> GreenFormerConfig:
        """The config a checkpoint's metadata carries, or the CorridorKey v1.0 one when it carries none."""
        text = (metadata or {}).get(METADATA_KEY)
        return CORRIDORKEY_V1 if text is None else cls.from_json(text)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
"""``torch.compile`` modes the engine accepts (see :mod:`corridorkey_engine.model.compiling`)."""

CORRIDORKEY_V1 = GreenFormerConfig()
"""The architecture of the published CorridorKey v1.0 checkpoint (Hiera Base+, 2048 px)."""
