"""The parsers of ``corridorkey``'s tool commands: ``export`` (docs/hosts.md) and ``preview`` (docs/ui.md).
Imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cli_options import (
    DEVICE_HELP,
    PUBLISHED,
    _add_choice_options,
    _add_common,
    _add_engine_options,
    _add_screen_color,
    _img_size,
    _number,
    _unit_float,
)

EXPORT_TARGETS = ("onnx", "torchscript", "exported-program")


def _add_export_parser(sub: Any) -> None:
    """``corridorkey export OUT --to TARGET`` (docs/hosts.md)."""
    export = sub.add_parser(
        "export",
        help="write the keyer as ONNX, TorchScript (Nuke) or a torch.export program for a host application",
        description="Write the whole keyer (resize to the model's size, normalisation, the model, Lanczos-4 "
        "back to the frame, optional despill) as one graph file: input [1, 4, H, W] float32 (sRGB RGB 0-1 "
        "and the linear alpha hint; any H and W), output [1, 4, H, W] (straight sRGB foreground and linear "
        "alpha). Despeckle and the preview comp stay the host's job. docs/hosts.md: using the file in Nuke, "
        "ONNX Runtime and TensorRT.",
    )
    export.add_argument("out", type=Path, metavar="OUT", help="the file to write (replaced whole)")
    export.add_argument("--to", dest="target", choices=EXPORT_TARGETS, required=True, help="the file type")
    export.add_argument(
        "--nuke",
        action="store_true",
        help="with --to torchscript: for Nuke's CatFileCreator (linear RGB + hint in, linear premultiplied "
        "RGBA out)",
    )
    export.add_argument(
        "--despill",
        dest="despill_strength",
        type=_unit_float,
        default=0.0,
        metavar="0-1",
        help="despill inside the graph on the --screen-color channel (0: none)",
    )
    export.add_argument(
        "--precision",
        dest="export_precision",
        choices=["float32", "float16"],
        default="float32",
        help="the model's weights and arithmetic in the file (float32); input and output stay float32",
    )
    export.add_argument(
        "--verify",
        action="store_true",
        help="run the written file with its own runtime on a generated frame (the model's size and an odd "
        "one) and compare it with the engine; exit 1 when it differs more than the tolerance",
    )
    g = export.add_argument_group("model and device")
    g.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="folder holding the checkpoint (as for infer)"
    )
    _add_screen_color(g)
    _add_choice_options(g)
    hub = g.add_mutually_exclusive_group()
    hub.add_argument("--hub", default=PUBLISHED, metavar="REPO_ID", help="repository to fetch from")
    hub.add_argument("--no-hub", dest="hub", action="store_const", const=None, help="never download")
    g.add_argument("--device", help="the device the graph is traced on: " + DEVICE_HELP)
    g.add_argument("--img-size", type=_img_size, metavar="N", help="model resolution (multiple of 32)")
    g.add_argument(
        "--safe-only", action="store_true", default=None, help="never load a format that can execute code"
    )
    # traced as the plain whole-image model: no compile, no tiles, the NCHW layout every runtime takes
    export.set_defaults(
        precision="float32", compile=False, compile_mode=None, low_memory=False, channels_last=False
    )
    _add_common(export)


def _add_preview(sub: Any) -> None:
    preview = sub.add_parser(
        "preview",
        help="tune the key in a local web viewer, then render with the same code as infer",
        description="Serve a local web page (docs/ui.md) that shows the clips' frames keyed with live "
        "settings (views, A/B wipe, zoom, pixel values), the equivalent `corridorkey infer` command line, "
        "and renders a clip exactly as that command would. The URL printed carries a random access "
        "token; the server answers only on that address. Ctrl-C stops it.",
    )
    preview.add_argument(
        "clips", nargs="+", type=Path, metavar="PATH", help="clip folder(s) or folder(s) of clips"
    )
    _add_engine_options(preview)
    s = preview.add_argument_group("server")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1); any other lets other machines reach the page (a warning "
        "says so)",
    )
    s.add_argument(
        "--port", type=_number(int, low=0, high=65535), default=0, help="port (default: a free one)"
    )
    s.add_argument("--open", action="store_true", help="open the page in the default browser")
    _add_common(preview)
