"""``ckpt-formats`` output to the line, run in this process (``main(argv)``), where mutation testing sees it;
``test_convert_and_cli.py`` runs the same commands as users do, in a subprocess."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import write_pth, write_safetensors
from hub_testing import PTH, REPO, ST, safetensors_bytes

from ckpt_formats import get_registry
from ckpt_formats.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_list_table(capsys) -> None:
    status, out, _ = run(capsys, "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FORMAT", "PRIO", "CODE", "STATE", "PLUGIN", "(DISTRIBUTION)", "GLOBS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["safetensors-sharded"].split() == [
        "safetensors-sharded", "110", "no", "enabled", "safetensors", "(ckpt-formats)",
        "*.safetensors.index.json",
    ]  # fmt: skip
    assert rows["pickle-sharded"].split() == [
        "pickle-sharded", "10", "yes", "enabled", "pickle", "(ckpt-formats)", "*.bin.index.json"
    ]  # fmt: skip
    assert rows["pickle"].split() == [
        "pickle", "0", "yes", "enabled", "pickle", "(ckpt-formats)", "*.pth", "*.pt", "*.ckpt", "*.bin",
        "!training_args.bin",
    ]  # fmt: skip
    assert rows["npz"].split()[1:6] == ["50", "no", "enabled", "npz", "(ckpt-formats-npz)"]
    status, out, _ = run(capsys, "--safe-only", "list")
    assert " disabled " in next(line for line in out.splitlines() if line.startswith("pickle "))


def test_list_json_describes_every_format(capsys, project_plugins) -> None:
    status, out, _ = run(capsys, "list", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["broken_plugins"] == []
    formats = {f["name"]: f for f in data["formats"]}
    assert [f["name"] for f in data["formats"]] == [
        "safetensors-sharded", "safetensors", "npz", "onnx", "dcp", "pickle-sharded", "pickle"
    ]
    safetensors_format = get_registry().get_format("safetensors")
    assert formats["safetensors"] == {
        "name": "safetensors",
        "priority": 100,
        "globs": ["*.safetensors"],
        "exclude_globs": [],
        "executes_code": False,
        "enabled": True,
        "plugin": "safetensors",
        "distribution": "ckpt-formats",
        "can_save": True,
        "description": safetensors_format.description,
    }
    assert formats["pickle"]["executes_code"] is True and formats["pickle"]["can_save"] is False
    assert formats["safetensors-sharded"]["can_save"] is False


def test_list_reports_a_broken_plugin(tmp_path: Path, monkeypatch, capsys, caplog) -> None:
    info = tmp_path / "ckf_broken_cli-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-cli\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ckpt_formats]\nbrokencli = ckf_broken_cli\n")
    (tmp_path / "ckf_broken_cli.py").write_text("raise ImportError('needs numpy 9')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[get_registry.__module__], "_registry", None)  # a fresh process-wide one

    status, out, _ = run(capsys, "list")
    assert status == 0
    assert out.splitlines()[-1] == (
        "BROKEN plugin brokencli (broken-cli): import failed: ImportError: needs numpy 9"
    )
    assert any(
        r.getMessage() == "ckpt_formats plugin 'brokencli' (broken-cli) is broken and was skipped: "
        "import failed: ImportError: needs numpy 9"
        for r in caplog.records
    )
    status, out, _ = run(capsys, "list", "--json")
    assert json.loads(out)["broken_plugins"] == [
        {
            "name": "brokencli",
            "distribution": "broken-cli",
            "error": "import failed: ImportError: needs numpy 9",
        }
    ]


@pytest.fixture
def three(tmp_path: Path) -> Path:
    write_safetensors(tmp_path / "a.safetensors")
    write_safetensors(tmp_path / "b.safetensors")
    write_pth(tmp_path / "m.pth")
    (tmp_path / "notes.txt").write_text("x")
    return tmp_path


def test_resolve_lists_candidates_per_format_and_the_shadowed(three: Path, capsys, project_plugins) -> None:
    status, out, _ = run(capsys, "resolve", three, "--select", "*a.*", "--exclude", "b.*")
    assert status == 0
    assert out.splitlines() == [
        "  safetensors-sharded    priority  110: -",
        "  safetensors            priority  100: a.safetensors",
        "  npz                    priority   50: -",
        "  onnx                   priority   40: -",
        "  dcp                    priority   20: -",
        "  pickle-sharded         priority   10: -",
        "  pickle                 priority    0: -",
        "winner: a.safetensors (safetensors, highest priority with a candidate) [a.safetensors]",
    ]
    status, out, _ = run(capsys, "resolve", three, "--exclude", "b.*")
    assert out.splitlines()[-2:] == [
        "winner: a.safetensors (safetensors, highest priority with a candidate) [a.safetensors]",
        "shadowed: m.pth (pickle)",
    ]
    write_pth(three / "n.pt")
    status, out, _ = run(capsys, "resolve", three, "--select", "a*", "--format", "safetensors")
    assert out.splitlines() == [
        "  safetensors            priority  100: a.safetensors",
        "winner: a.safetensors (safetensors, highest priority with a candidate) [a.safetensors]",
    ]
    # two candidates of the winning format: an error naming both and how to choose
    status, out, err = run(capsys, "resolve", three, "--exclude", "*.safetensors")
    assert status == 1 and out == ""
    assert err == (
        f"ckpt-formats: error: {three}: 2 pickle checkpoints (m.pth, n.pt); keep exactly one, or choose one "
        "with --select NAME or --exclude GLOB\n"
    )


def test_resolve_shadowed_lists_all(tmp_path: Path, capsys) -> None:
    write_safetensors(tmp_path / "a.safetensors")
    write_pth(tmp_path / "m.pth")
    write_pth(tmp_path / "n.pt")
    _, out, _ = run(capsys, "resolve", tmp_path)
    assert out.splitlines()[-1] == "shadowed: m.pth (pickle), n.pt (pickle)"


def test_resolve_load_uses_the_device_and_the_selection(three: Path, capsys) -> None:
    status, out, _ = run(capsys, "resolve", three, "--load", "--select", "b*")
    assert status == 0 and out.splitlines()[-1] == "loaded b.safetensors (safetensors): 4 entries on cpu"
    status, out, err = run(capsys, "resolve", three, "--load", "--select", "b*", "--device", "meta")
    assert status == 1 and "device meta is invalid" in err  # the device reached the loader


def test_convert_output_lines(tmp_path: Path, capsys) -> None:
    import torch

    base = torch.ones(2, 2)
    src = write_pth(tmp_path / "m.pth", {"w": base, "v": base[0], "lr": 0.5, "name": "x"})
    status, out, _ = run(capsys, "convert", src, tmp_path / "m.safetensors")
    assert status == 0
    assert out.splitlines() == [
        f"wrote {tmp_path / 'm.safetensors'} as safetensors from m.pth (pickle): 2 tensors, 24 bytes, "
        "verified bit for bit",
        "skipped non-tensor entries: lr, name",
        "copied tensors that shared storage: v",
    ]


def test_errors_are_one_line(tmp_path: Path, capsys) -> None:
    status, out, err = run(capsys, "inspect", tmp_path / "nope.pth")
    assert (
        status == 1 and out == "" and err == f"ckpt-formats: error: {tmp_path / 'nope.pth'}: no such file\n"
    )
    status, _, err = run(capsys, "resolve", tmp_path / "missing")
    assert (
        status == 1
        and err.startswith("ckpt-formats: error: checkpoint directory")
        and "does not exist" in err
    )


# -- fetch, in process: the real client configured for the fake hub -------------------------------------


@pytest.fixture
def hf(hub, tmp_path: Path, monkeypatch):
    """huggingface_hub's endpoint and cache pointed at the fake hub (what HF_ENDPOINT/HF_HOME do at start)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return hub


def test_fetch_prints_the_placed_files(hf, tmp_path: Path, capsys) -> None:
    data = safetensors_bytes()
    hf.add_repo(REPO, {"w=1.safetensors": data}, branches=("v2",))
    target = tmp_path / "ckpt"

    status, out, err = run(capsys, "fetch", REPO, target, "--filename", "safetensors=w=1.safetensors")
    assert status == 1 and "(revision main): revision not found" in err

    args = ["fetch", REPO, target, "--filename", "safetensors=w=1.safetensors", "--revision", "v2"]
    status, out, err = run(capsys, *args, "--no-progress")
    assert status == 0, err
    assert out == f"{target / 'w=1.safetensors'} (safetensors)\n"
    assert (target / "w=1.safetensors").read_bytes() == data


def test_fetch_of_a_sharded_set_prints_every_file(hf, tmp_path: Path, capsys) -> None:
    from test_write_paths import INDEX, SHARDS, sharded_repo

    hf.add_repo(REPO, sharded_repo())
    status, out, err = run(capsys, "fetch", REPO, tmp_path / "ckpt")
    assert status == 0, err
    assert out.splitlines() == [f"{tmp_path / 'ckpt' / INDEX} (safetensors-sharded)"] + [
        str(tmp_path / "ckpt" / s) for s in SHARDS
    ]


def test_fetch_safe_only_and_bad_filename(hf, tmp_path: Path, capsys) -> None:
    from hub_testing import pth_bytes

    hf.add_repo(REPO, {PTH: pth_bytes()})
    names = [f"--filename=safetensors={ST}", f"--filename=pickle={PTH}"]
    status, _, err = run(capsys, "fetch", REPO, tmp_path / "a", *names, "--safe-only")
    assert (
        status == 1 and "has none of the files asked for: CorridorKey_v1.0.safetensors (safetensors)." in err
    )
    assert hf.seen() == [("hub", "HEAD", ST)]
    status, out, _ = run(capsys, "fetch", REPO, tmp_path / "b", *names)
    assert status == 0 and out == f"{tmp_path / 'b' / PTH} (pickle)\n"
    for bad in ("=x.safetensors", "safetensors="):
        status, _, err = run(capsys, "fetch", REPO, tmp_path / "c", "--filename", bad)
        assert status == 1 and f"--filename {bad!r}: expected FORMAT=REMOTE_NAME" in err


def test_verbose_logs_the_failure_with_its_traceback(tmp_path: Path, capsys, caplog) -> None:
    status, _, err = run(capsys, "-v", "resolve", tmp_path)
    assert status == 1 and err.startswith("ckpt-formats: error: no checkpoint found in")
    failed = [r for r in caplog.records if r.name == "ckpt_formats.cli" and r.getMessage() == "failed"]
    assert failed and failed[0].exc_info is not None


def test_resolve_json_word_for_word(three: Path, capsys) -> None:
    status, out, _ = run(capsys, "resolve", three, "--json", "--format", "safetensors", "--format", "pickle",
                         "--select", "a*")  # fmt: skip
    assert status == 0
    assert json.loads(out) == {
        "directory": str(three),
        "candidates": {"safetensors": ["a.safetensors"], "pickle": []},
        "winner": "a.safetensors",
        "format": "safetensors",
        "files": ["a.safetensors"],
        "shadowed": [],
    }
    status, out, _ = run(capsys, "resolve", three, "--json", "--exclude", "b.*")
    assert json.loads(out)["shadowed"] == [{"file": "m.pth", "format": "pickle"}]
    status, out, _ = run(capsys, "resolve", three, "--json", "--load", "--select", "b*")
    data = json.loads(out)
    assert {k: data[k] for k in ("winner", "format", "files", "entries", "device")} == {
        "winner": "b.safetensors", "format": "safetensors", "files": ["b.safetensors"], "entries": 4,
        "device": "cpu",
    }  # fmt: skip
    assert out.startswith('{\n  "directory": ')  # indented, one key per line


def test_fetch_json_and_a_set_already_there(hf, tmp_path: Path, capsys) -> None:
    from test_write_paths import INDEX, SHARDS, sharded_repo

    hf.add_repo(REPO, sharded_repo())
    target = tmp_path / "ckpt"
    status, out, err = run(capsys, "fetch", REPO, target, "--json")
    assert status == 0, err
    placed = [str(target / n) for n in (INDEX, *SHARDS)]
    assert json.loads(out) == {"files": placed, "format": "safetensors-sharded", "downloaded": True}
    status, out, _ = run(capsys, "fetch", REPO, target)
    assert out.splitlines() == [
        f"{target / INDEX} (safetensors-sharded) is already there: nothing downloaded (--force fetches "
        "anyway)",
        *placed[1:],
    ]
    status, out, _ = run(capsys, "fetch", REPO, target, "--json")
    assert json.loads(out) == {"files": placed, "format": "safetensors-sharded", "downloaded": False}
    before = len(hf.requests)
    status, out, _ = run(capsys, "fetch", REPO, target, "--force", "--json")
    assert json.loads(out)["downloaded"] is True and len(hf.requests) > before


def test_inspect_argument_errors_word_for_word(tmp_path: Path, capsys) -> None:
    write_safetensors(tmp_path / "m.safetensors")
    for args, message in [
        (["--hub", REPO, tmp_path / "m.safetensors"], "inspect: give either FILE or --hub REPO_ID, not both"),
        ([tmp_path / "m.safetensors", "--revision", "v2"],
         "inspect: --filename and --revision only apply with --hub REPO_ID"),
        ([tmp_path / "m.safetensors", "--filename", "x.safetensors"],
         "inspect: --filename and --revision only apply with --hub REPO_ID"),
    ]:  # fmt: skip
        status, out, err = run(capsys, "inspect", *args)
        assert (status, out, err) == (1, "", f"ckpt-formats: error: {message}\n")


def test_inspect_hub_sends_the_revision(hf, capsys) -> None:
    hf.add_repo(REPO, {"model.safetensors": safetensors_bytes()}, branches=("main", "v2"))
    status, out, err = run(capsys, "inspect", "--hub", REPO, "--revision", "v2", "--json")
    assert status == 0, err
    assert json.loads(out)["path"] == f"{REPO}/model.safetensors@v2"


@pytest.fixture
def runtime_plugin():
    """A plugin registered at run time on the process-wide registry (the one the CLI uses): format
    ``interrupting`` (``*.intr``), whose loader is interrupted as by Ctrl-C."""
    from plugin_testing import declaring

    from ckpt_formats import CheckpointFormat

    def load(candidate, device):
        raise KeyboardInterrupt

    registry = get_registry()
    registry.register(declaring(CheckpointFormat("interrupting", 1, ("*.intr",), load)), name="at-run-time")
    yield registry
    registry.unregister("at-run-time")


def test_list_names_a_runtime_plugin_as_such(runtime_plugin, capsys) -> None:
    _, out, _ = run(capsys, "list")
    row = next(line for line in out.splitlines() if line.startswith("interrupting "))
    assert "at-run-time (runtime)" in row


def test_ctrl_c_in_a_command_is_one_line_and_status_130(runtime_plugin, tmp_path: Path, capsys) -> None:
    (tmp_path / "m.intr").write_bytes(b"")
    status, _, err = run(capsys, "resolve", tmp_path, "--load")
    assert (status, err) == (130, "ckpt-formats: interrupted\n")


def test_the_fetch_defaults_are_the_hub_sources() -> None:
    from ckpt_formats import HubSource
    from ckpt_formats.cli import build_parser

    args = build_parser().parse_args(["fetch", "someone/x", "DIR"])
    source = HubSource("someone/x")
    assert (args.stall_timeout, args.deadline) == (source.stall_timeout, source.deadline)
