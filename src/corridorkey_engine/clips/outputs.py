"""What ``corridorkey infer`` writes: the outputs (Matte, FG, Processed, Comp), each one's file type, and
the writer that turns an engine result into that file.

Every output has a default file type (EXR for Matte/FG/Processed, 8-bit PNG for Comp) that ``--format``
changes per output: ``matte=png:16,fg=exr:float:piz``. :class:`FileType` is that choice as a value; it is
recorded in the clip's manifest, so a rerun with another type redoes the frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FrameIOError
from .exr import COMPRESSIONS as EXR_COMPRESSIONS
from .images import write_exr, write_png


@dataclass(frozen=True)
class FileType:
    """One output's file type: ``exr`` (``depth`` ``half``/``float``, a ``compression``) or ``png``
    (``depth`` ``8``/``16``)."""

    kind: str = "exr"
    depth: str = "half"
    compression: str = "zip"

    def __post_init__(self) -> None:
        if self.kind == "exr":
            if self.depth not in ("half", "float") or self.compression not in EXR_COMPRESSIONS:
                raise ValueError(f"EXR takes half/float and one of {', '.join(EXR_COMPRESSIONS)}")
        elif self.kind == "png":
            if self.depth not in ("8", "16") or self.compression != "zip":
                raise ValueError("PNG takes a depth of 8 or 16 bits")
        else:
            raise ValueError(f"file type must be exr or png, got {self.kind!r}")

    @property
    def suffix(self) -> str:
        return f".{self.kind}"

    def label(self) -> str:
        """How ``--format`` spells it: ``exr:half:zip``, ``png:8``."""
        return f"exr:{self.depth}:{self.compression}" if self.kind == "exr" else f"png:{self.depth}"

    @classmethod
    def parse(cls, text: str, exr_depth: str = "half") -> FileType:
        """``exr``, ``exr:float``, ``exr:half:piz``, ``exr:dwaa``, ``png``, ``png:16`` (any order after the
        type); ``exr_depth`` is the depth of a bare ``exr``.

        Raises:
            ValueError: an unknown type or option, with what is accepted.
        """
        kind, *opts = [p.strip().lower() for p in text.split(":")]
        if kind == "png":
            depth = "8"
            for opt in opts:
                if opt.removesuffix("bit") not in ("8", "16"):
                    raise ValueError(f"png:{opt}: PNG takes 8 or 16 (bits)")
                depth = opt.removesuffix("bit")
            return cls("png", depth)
        if kind != "exr":
            raise ValueError(f"unknown file type {kind!r}: use exr or png")
        depth, compression = exr_depth, "zip"
        for opt in opts:
            if opt in ("half", "float"):
                depth = opt
            elif opt in EXR_COMPRESSIONS:
                compression = opt
            else:
                raise ValueError(
                    f"exr:{opt}: EXR takes half or float and a compression ({', '.join(EXR_COMPRESSIONS)})"
                )
        return cls("exr", depth, compression)


@dataclass(frozen=True)
class OutputKind:
    """One kind of output: its folder, default file type and what it holds."""

    name: str
    folder: str
    default: FileType
    description: str

    @property
    def suffix(self) -> str:
        """The default file type's extension (``--format`` may choose another)."""
        return self.default.suffix


OUTPUTS: dict[str, OutputKind] = {
    "matte": OutputKind("matte", "Matte", FileType(), "linear alpha, single-channel EXR"),
    "fg": OutputKind("fg", "FG", FileType(), "straight foreground, sRGB, RGB EXR"),
    "processed": OutputKind("processed", "Processed", FileType(), "linear premultiplied RGBA EXR"),
    "comp": OutputKind("comp", "Comp", FileType("png", "8"), "8-bit sRGB PNG preview over a checkerboard"),
}
"""Every output ``corridorkey infer`` can write, keyed by the name ``--outputs`` takes."""


def parse_format_spec(text: str, exr_depth: str = "half") -> dict[str, FileType]:
    """``--format``'s value: ``matte=png,fg=exr:float`` → ``{"matte": FileType("png"), ...}``.

    Args:
        text: comma-separated ``OUTPUT=TYPE[:OPTION...]`` items (``all=`` sets every output).
        exr_depth: the depth of a bare ``exr`` (``--exr-dtype``).

    Returns:
        The file type per output named (others keep their default).

    Raises:
        ValueError: an unknown output, type or option; the message names it and what is accepted.
    """
    chosen: dict[str, FileType] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, spec = item.partition("=")
        name = name.strip().lower()
        if not sep or not spec.strip():
            raise ValueError(f"{item!r}: write OUTPUT=TYPE, e.g. matte=png:16 or fg=exr:float:piz")
        if name != "all" and name not in OUTPUTS:
            raise ValueError(f"unknown output {name!r}; choose from {', '.join(OUTPUTS)} or all")
        filetype = FileType.parse(spec, exr_depth)
        for key in OUTPUTS if name == "all" else (name,):
            chosen[key] = filetype
    if not chosen:
        raise ValueError("give at least one OUTPUT=TYPE")
    return chosen


def write_output(path: Path, kind: str, result: dict[str, np.ndarray], filetype: FileType) -> None:
    """Write output ``kind`` of one engine result to ``path``, whole or not at all.

    Matte is one channel (``Y`` in EXR, grey PNG), FG ``RGB``, Processed ``RGBA`` (linear, premultiplied,
    in PNG too), Comp ``RGB``. Values are written as the engine computed them (PNG clips them to 0-1).

    Raises:
        FrameIOError: the file cannot be encoded or written.
    """
    data = result["alpha"] if kind == "matte" else result[kind]
    if kind == "matte" and data.ndim == 3:
        data = data[..., 0]
    try:
        if filetype.kind == "png":
            write_png(path, data, bits=int(filetype.depth))
            return
        channels = {"matte": "Y", "fg": "RGB", "processed": "RGBA", "comp": "RGB"}[kind]
        write_exr(path, data, channels, half=filetype.depth == "half", compression=filetype.compression)
    except (OSError, RuntimeError) as exc:  # a full disk, a file size limit, a folder gone: name the file
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        else:  # OpenEXR's message names the temporary file, which no longer exists: leave it out
            reason = " ".join(re.sub(r'\s*"[^"]*\.tmp"', "", str(exc)).split()) or type(exc).__name__
        raise FrameIOError(
            f"{path}: could not write the {kind} output ({reason}); the previous file, if any, is unchanged. "
            "Free some space, or write elsewhere with --output DIR"
        ) from exc
