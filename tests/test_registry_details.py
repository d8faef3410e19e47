"""Registry details (written to kill mutants scripts/mutation found surviving in ckpt_formats.registry)."""

from __future__ import annotations

import pytest
from conftest import tiny_state_dict, write_pth

from ckpt_formats import CheckpointFormat, PluginError, Registry, hookimpl


class Declares:
    """A runtime plugin declaring one format."""

    def __init__(self, name: str) -> None:
        self.fmt = CheckpointFormat(name=name, priority=1, globs=("*.dup",), load=lambda c, d: {})

    @hookimpl
    def ckpt_formats_register_formats(self, register):
        register(self.fmt)


def test_a_plugin_registered_again_after_unregister_counts_as_the_later_one() -> None:
    registry = Registry(load_entry_points=False)
    registry.register(Declares("dup"), name="first")
    registry.unregister("first")
    registry.register(Declares("dup"), name="second")

    with pytest.raises(PluginError) as err:
        registry.register(Declares("dup"), name="first")

    assert str(err.value) == "plugin 'first': format 'dup' is already registered by plugin 'second'"
    assert [f.plugin for f in registry.all_formats()] == ["second"]


@pytest.mark.parametrize("how", ["repo-without-weights", "hub-unreachable", "no-space"])
def test_a_failed_fetch_names_the_local_files_that_were_refused(tmp_path, hub, cache, how):
    from hub_testing import closed_port
    from safetensors.torch import save_file

    from ckpt_formats import CheckpointNotFoundError, HubSource
    from ckpt_formats.errors import CheckpointDownloadError, DownloadNoSpaceError

    hub.add_repo("someone/empty", {"README.md": b"no weights here"})
    hub.add_repo("someone/huge", {"model.safetensors": b"x"})
    hub.size_override["model.safetensors"] = 7 * 10**18
    write_pth(tmp_path / "model.pth", tiny_state_dict())
    write_pth(tmp_path / "model.pt", tiny_state_dict())
    for i in (1, 2):
        save_file(tiny_state_dict(), str(tmp_path / f"model-0000{i}-of-00003.safetensors"))
    endpoint = f"http://127.0.0.1:{closed_port()}" if how == "hub-unreachable" else hub.url
    repo = "someone/huge" if how == "no-space" else "someone/empty"
    source = HubSource(repo, endpoint=endpoint, cache_dir=cache, token=False, progress=False)
    expected = {
        "repo-without-weights": CheckpointNotFoundError,
        "hub-unreachable": CheckpointDownloadError,
        "no-space": DownloadNoSpaceError,
    }[how]
    with pytest.raises(expected) as err:
        Registry().resolve(tmp_path, safe_only=True, hub=source)
    text = str(err.value)
    assert text.endswith(
        f"; found in {tmp_path} but refused by policy (safe-only or CKPT_FORMATS_DISABLE): model.pt "
        f"(pickle), model.pth (pickle); shards without their index in {tmp_path}: "
        "model-00001-of-00003.safetensors, model-00002-of-00003.safetensors"
    ), text
    assert "\n" not in text
