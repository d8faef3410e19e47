"""ckpt_formats.atomic: temporary names, their recognition and sweeping, and all-or-nothing writes."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import pytest

from ckpt_formats.atomic import (
    TEMP_SUFFIX,
    atomic_write,
    fsync_directory,
    is_temp_file,
    replace_durably,
    staged,
    sweep_temps,
    temp_path_for,
)


def test_temporary_names_are_hidden_beside_the_target_and_recognised(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    a, b = temp_path_for(target), temp_path_for(str(target))
    assert a.parent == tmp_path and a != b
    assert a.name.startswith(".model.safetensors.") and a.name.endswith(TEMP_SUFFIX)
    assert len(a.name) == len(".model.safetensors.") + 12 + len(".tmp")
    assert is_temp_file(a) and is_temp_file(str(a)) and is_temp_file(a, "model.safetensors")
    assert not is_temp_file(a, "other.safetensors")
    for name in (
        "model.safetensors",
        ".model.safetensors.tmp",  # no hex
        ".model.safetensors.0123456789ab.part",
        "model.safetensors.0123456789ab.tmp",  # not hidden
        ".model.safetensors.0123456789AB.tmp",  # upper-case hex is not ours
        ".model.safetensors.0123456789a.tmp",  # 11 hex
        "..0123456789ab.tmp",  # no target
    ):
        assert not is_temp_file(tmp_path / name), name
    assert is_temp_file(tmp_path / ".a\nb.0123456789ab.tmp", "a\nb")


def test_atomic_write_writes_the_whole_file_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    assert atomic_write(str(target), lambda tmp: tmp.write_bytes(b"whole")) == target
    assert target.read_bytes() == b"whole"

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"par")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"whole"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"par")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_the_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "f", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_staged_renames_on_a_clean_exit_and_deletes_on_an_error(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    with staged(str(target)) as tmp:
        assert is_temp_file(tmp, "f.txt") and tmp.parent == tmp_path
        tmp.write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"

    with pytest.raises(ValueError), staged(target) as tmp:
        tmp.write_text("two")
        raise ValueError("stop")
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_replace_durably_moves_the_file(tmp_path: Path) -> None:
    tmp, dest = tmp_path / "a", tmp_path / "b"
    tmp.write_text("data")
    dest.write_text("old")
    replace_durably(str(tmp), str(dest))
    assert dest.read_text() == "data" and not tmp.exists()
    fsync_directory(tmp_path)
    fsync_directory(tmp_path / "missing")  # a folder that cannot be opened: nothing to do, no error


def test_sweep_removes_only_temporaries_and_says_how_many(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ckpt_formats.atomic")
    keep = ["model.safetensors", ".hidden", ".x.0123456789ab.part"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    mine = [temp_path_for(tmp_path / "model.safetensors") for _ in range(2)]
    other = temp_path_for(tmp_path / "other.bin")
    for p in (*mine, other):
        p.write_text("partial")
    folder_like_a_temp = temp_path_for(tmp_path / "dir")
    folder_like_a_temp.mkdir()

    assert sweep_temps(tmp_path, "model.safetensors") == 2
    assert other.exists() and folder_like_a_temp.is_dir()
    assert caplog.messages == [f"removed 2 temporary file(s) left by an interrupted write in {tmp_path}"]
    caplog.clear()

    assert sweep_temps(str(tmp_path)) == 1
    assert not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, folder_like_a_temp.name])
    caplog.clear()
    assert sweep_temps(tmp_path) == 0 and caplog.messages == []
    assert sweep_temps(tmp_path / "missing") == 0


def test_a_folder_that_refuses_fsync_is_logged_not_raised(caplog) -> None:
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("needs /proc (a file system that refuses fsync on folders)")
    caplog.set_level(logging.DEBUG, logger="ckpt_formats.atomic")
    fsync_directory(proc)
    assert caplog.messages == ["fsync of folder /proc failed: [Errno 22] Invalid argument"]


def test_a_write_in_a_private_folder_leaves_only_its_file_and_a_killed_one_is_swept(tmp_path: Path) -> None:
    from ckpt_formats.atomic import write_in_private_folder

    final = tmp_path / "model.safetensors"
    tmp = temp_path_for(final)
    seen: list[Path] = []

    def write(inner: Path) -> None:
        seen.append(inner)
        (inner.parent / ".tmpAbC123").write_text("a library's own temporary")  # as safetensors does
        inner.write_text("weights")

    write_in_private_folder(tmp, write)
    assert tmp.read_text() == "weights" and sorted(p.name for p in tmp_path.iterdir()) == [tmp.name]
    work = seen[0].parent
    assert work.parent == tmp_path  # named as the sweep recognises it:
    assert re.fullmatch(r"\.model\.safetensors\.[0-9a-f]{12}\.tmpdir", work.name), work.name
    assert seen[0].name == tmp.name

    def failing(inner: Path) -> None:
        inner.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_in_private_folder(final, failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == [tmp.name]  # the folder went with the failure
    tmp.rename(final)

    left = tmp_path / f".model.safetensors.{'a' * 12}.tmpdir"  # what a killed writer leaves
    (left / "x").mkdir(parents=True)
    others = [tmp_path / f".other.bin.{'b' * 12}.tmpdir", tmp_path / f".model.safetensors.{'c' * 12}.tmpdir"]
    others[0].mkdir()
    others[1].write_text("a file, not a folder")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    link = tmp_path / f".model.safetensors.{'d' * 12}.tmpdir"
    link.symlink_to(elsewhere, target_is_directory=True)
    assert sweep_temps(tmp_path, "model.safetensors") == 1
    assert not left.exists() and all(p.exists() for p in others) and link.is_symlink() and elsewhere.is_dir()
    assert sweep_temps(tmp_path) == 1  # every target: the other's folder
    assert not others[0].exists() and others[1].exists() and link.is_symlink() and final.exists()
