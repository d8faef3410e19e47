"""Registry details (written to kill mutants scripts/mutation found surviving in ckpt_formats.registry)."""

from __future__ import annotations

import pytest

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
