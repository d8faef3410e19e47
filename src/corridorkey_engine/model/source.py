"""Where the engine's weights come from: one :class:`CheckpointSource` value, and the published defaults.

A source is the checkpoint folder plus every setting of :func:`ckpt_formats.resolve` (hub, formats,
exclude, select, safe_only). It travels whole from the caller (``corridorkey infer``, ``CorridorKeyEngine``)
through :func:`~corridorkey_engine.model.loading.load_greenformer` to the registry, so a new resolution
setting is a new field here (and, if the CLI offers it, a flag). :meth:`CheckpointSource.default` is what
``corridorkey infer`` uses without options: the published model of the screen colour (CorridorKey v1.0 for
green, CorridorKeyBlue 1.0 for blue, :data:`PUBLISHED_MODELS`) from the hub, cached in
:func:`default_checkpoint_dir`. The screen colour and the MLX rule reach the registry as exclusions and a
selection (:meth:`CheckpointSource.registry_options`): the registry knows nothing of CorridorKey. This
module imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckpt_formats import HubSource, ResolvedCheckpoint

SCREEN_COLORS = ("green", "blue")
"""The screen colours CorridorKey keys, each with its own published model."""


@dataclass(frozen=True)
class PublishedModel:
    """Where one published CorridorKey model lives: its hub repository, file names and default folder.

    Attributes:
        repo_id: the Hugging Face repository.
        filenames: the weights' file names in it, per registry format (the registry fetches the best one).
        folder: the name of its default folder under ``~/.cache/corridorkey``
            (:func:`default_checkpoint_dir`).
    """

    repo_id: str
    filenames: dict[str, list[str]]
    folder: str


PUBLISHED_MODELS = {
    "green": PublishedModel(
        "nikopueringer/CorridorKey_v1.0",
        {
            "safetensors": ["CorridorKey_v1.0.safetensors"],
            "pickle": ["CorridorKey_v1.0.pth"],  # DEPRECATED: remove after .pth sunset
        },
        "CorridorKey_v1.0",
    ),
    "blue": PublishedModel(
        "nikopueringer/CorridorKeyBlue_1.0",
        {
            "safetensors": ["CorridorKeyBlue_1.0.safetensors"],
            "pickle": ["CorridorKeyBlue_1.0.pth"],  # DEPRECATED: remove after .pth sunset
        },
        "CorridorKeyBlue_1.0",
    ),
}
"""The published model of each screen colour (:data:`SCREEN_COLORS`)."""
DEFAULT_HUB_REPO = PUBLISHED_MODELS["green"].repo_id
"""Where the published CorridorKey v1.0 (green-screen) weights live."""
HUB_FILENAMES = PUBLISHED_MODELS["green"].filenames
"""The file names of :data:`DEFAULT_HUB_REPO`'s weights, per format. Any other hub repository is searched
the Hugging Face way, with each format's default names (``model.safetensors.index.json``,
``model.safetensors``, then the pickle names)."""
CHECKPOINT_DIR_ENV = "CORRIDORKEY_CHECKPOINT_DIR"

BLUE_NAMES = "*[Bb][Ll][Uu][Ee]*"
"""File names containing ``blue`` (any case) hold a blue-screen model: never chosen for green, and the only
ones chosen for blue (unless :attr:`CheckpointSource.match_screen` is off)."""
MLX_NAMES = "*[Mm][Ll][Xx]*"
"""File names containing ``mlx`` (any case) hold MLX weights (``corridorkey_mlx.safetensors``,
``*.mlx.safetensors``), which the Torch engine never loads (unless :attr:`CheckpointSource.skip_mlx` is
off)."""
SCREENS_KEY = "corridorkey.screens"
"""The metadata key by which a checkpoint declares the screens it keys: ``green``, ``blue`` or
``green,blue`` (the bundled demo model, trained on both)."""
CHOICE_ADVICE = "select=NAME or exclude=[GLOB] (CheckpointSource fields)"
"""How the ambiguity error tells a Python caller to choose; ``corridorkey`` passes its own flags."""


def default_checkpoint_dir(screen_color: str = "green") -> Path:
    """The folder the published model of ``screen_color`` is resolved from (and downloaded into).

    ``$CORRIDORKEY_CHECKPOINT_DIR`` when set (one folder for both colours: the file names tell the models
    apart), else ``$XDG_CACHE_HOME/corridorkey/CorridorKey_v1.0`` (~/.cache) for green and
    ``…/corridorkey/CorridorKeyBlue_1.0`` beside it for blue.

    Raises:
        ValueError: ``screen_color`` is not one of :data:`SCREEN_COLORS`.
    """
    model = _published(screen_color)
    explicit = os.environ.get(CHECKPOINT_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "corridorkey" / model.folder


def _published(screen_color: str) -> PublishedModel:
    try:
        return PUBLISHED_MODELS[screen_color]
    except (KeyError, TypeError):
        raise ValueError(f"screen_color must be 'green' or 'blue', got {screen_color!r}") from None


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint folder and how the registry resolves it.

    Attributes:
        checkpoint_dir: the folder holding the checkpoint (any registered format); None means
            :func:`default_checkpoint_dir` of the screen colour.
        hub: where to fetch the checkpoint from when the folder has none: a :class:`ckpt_formats.HubSource`,
            or a repository id (a :data:`PUBLISHED_MODELS` repository brings its known file names); None
            never downloads.
        formats, exclude, select, safe_only: passed to :func:`ckpt_formats.resolve` (``exclude`` adds to
            the exclusions below, ``select`` narrows the screen's candidates further).
        screen_color: ``"green"`` or ``"blue"``: the screen the model keys. File names containing ``blue``
            (:data:`BLUE_NAMES`) are blue-screen models, never candidates for green; for blue only they are.
        match_screen: False: any checkpoint keys either screen (a model trained on both, like the bundled
            demo model); the file names are not looked at.
        skip_mlx: MLX weights (:data:`MLX_NAMES`) are never candidates (default); False lets them compete.
        advice: how the ambiguity error tells your user to choose (``corridorkey``: its ``--select NAME or
            --exclude GLOB``); default :data:`CHOICE_ADVICE`.
    """

    checkpoint_dir: str | os.PathLike[str] | None = None
    hub: HubSource | str | None = None
    formats: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    select: str | None = None
    safe_only: bool | None = None
    screen_color: str = "green"
    match_screen: bool = True
    skip_mlx: bool = True
    advice: str | None = None

    def __post_init__(self) -> None:
        _published(self.screen_color)  # refuses anything but green/blue

    @classmethod
    def default(cls, **overrides: Any) -> CheckpointSource:
        """What ``corridorkey infer`` resolves without options: the published model of the screen colour
        (``screen_color`` among ``overrides``, default green) in its default folder, fetched on first use.
        ``overrides`` replace fields (e.g. ``safe_only=True``).

        Raises:
            ValueError: an unknown ``screen_color``.
        """
        color = overrides.get("screen_color", "green")
        return replace(cls(hub=_published(color).repo_id, screen_color=color), **overrides)

    @classmethod
    def of(
        cls, checkpoint: str | os.PathLike[str] | CheckpointSource | None = None, **overrides: Any
    ) -> CheckpointSource:
        """A source from a folder (or a source, or None for :meth:`default`), with fields replaced.

        Raises:
            TypeError: an override names no field of :class:`CheckpointSource`.
            ValueError: an unknown ``screen_color``.
        """
        if isinstance(checkpoint, CheckpointSource):
            source = checkpoint
        elif checkpoint is None:
            return cls.default(**overrides)
        else:
            source = cls(checkpoint_dir=checkpoint)
        return replace(source, **overrides) if overrides else source

    @property
    def directory(self) -> Path:
        """The checkpoint folder (the screen colour's default one when none was given)."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        return default_checkpoint_dir(self.screen_color)

    def hub_source(self) -> HubSource | None:
        """:attr:`hub` as a :class:`ckpt_formats.HubSource` (None: never download).

        Raises:
            ValueError: ``hub`` is not a valid repository id.
        """
        if self.hub is None or not isinstance(self.hub, str):
            return self.hub
        from ckpt_formats.hub import HubSource

        known = {m.repo_id: m.filenames for m in PUBLISHED_MODELS.values()}
        return HubSource(self.hub, filenames=known.get(self.hub))

    def registry_options(self, screen_rules: bool = True) -> dict[str, Any]:
        """The keywords of :func:`ckpt_formats.resolve` this source stands for (all but the folder and hub):
        the user's ``exclude`` plus MLX weights and, with ``screen_rules``, the file-name rules of the screen
        colour (the other screen's models left out) before the user's ``select``."""
        exclude = list(self.exclude)
        select = [self.select] if self.select is not None else []
        if self.skip_mlx:
            exclude.append(MLX_NAMES)
        by_name = self.match_screen and screen_rules
        if by_name and self.screen_color == "blue":
            select.insert(0, BLUE_NAMES)
        elif by_name:
            exclude.append(BLUE_NAMES)
        return {
            "formats": self.formats,
            "exclude": exclude,
            "select": select or None,
            "safe_only": self.safe_only,
            "advice": self.advice or CHOICE_ADVICE,
        }

    def resolve(self) -> ResolvedCheckpoint:
        """Resolve (and fetch, if needed) the checkpoint onto the CPU through the registry.

        Returns:
            The registry's :class:`ckpt_formats.ResolvedCheckpoint`.

        Raises:
            ckpt_formats.CheckpointError: the registry's errors, unchanged.
        """
        import ckpt_formats

        return ckpt_formats.resolve(
            self.directory, device="cpu", hub=self.hub_source(), **self.resolve_options()
        )

    def resolve_options(self) -> dict[str, Any]:
        """:meth:`registry_options` as :meth:`resolve` applies them: without the screen's file-name rules
        when the folder's one checkpoint declares the colour (:meth:`declared_screen`), or when the user's
        ``select`` names files that the rules would all leave out (a select is never combined with them
        into an empty set: the file is taken as named)."""
        import ckpt_formats

        if not self.match_screen or self.declared_screen():
            return self.registry_options(screen_rules=False)
        options = self.registry_options()
        if self.select is None or self.checkpoint_dir is None:
            return options
        keys = ("formats", "exclude", "select", "safe_only")
        try:
            found = ckpt_formats.get_registry().discover(self.directory, **{k: options[k] for k in keys})
        except (OSError, ckpt_formats.CheckpointError):
            return options  # resolve() reports it
        return options if found.winner is not None else self.registry_options(screen_rules=False)

    def declared_screen(self) -> bool:
        """True when an explicit :attr:`checkpoint_dir` holds exactly one checkpoint (the user's exclusions
        and the MLX rule applied) whose metadata (:data:`SCREENS_KEY`) declares :attr:`screen_color`: it is
        used as it is, whatever its name; the file-name rules only choose among several."""
        import ckpt_formats

        if self.checkpoint_dir is None or not self.match_screen or self.select is not None:
            return False
        exclude = [*self.exclude, MLX_NAMES] if self.skip_mlx else list(self.exclude)
        try:
            found = ckpt_formats.get_registry().discover(
                self.directory, formats=self.formats, exclude=exclude, safe_only=self.safe_only
            )
            every = [(f, c) for f in found.formats for c in found.candidates.get(f.name, [])]
            if len(every) != 1 or every[0][0].read_metadata is None:
                return False
            metadata = every[0][0].read_metadata(every[0][1])
        except (OSError, ckpt_formats.CheckpointError):
            return False  # resolve() reports it, with the rules of the names
        screens = {part.strip().lower() for part in str(metadata.get(SCREENS_KEY, "")).split(",")}
        return self.screen_color in screens
