"""ckpt_formats.untrusted (what the hub checks every answer with), value by value: what passes unchanged,
and the exact one-line refusal of the rest (naming where the value came from and the value)."""

from __future__ import annotations

import os

import pytest

from ckpt_formats import HubAnswerError, UnsafeNameError, untrusted

TAIL = "; refused, nothing was written. If this is a mirror or proxy, check it (or HF_ENDPOINT)"


def refusal(call, value, *args) -> UnsafeNameError:
    with pytest.raises(UnsafeNameError) as err:
        call(value, "the thing", *args)
    assert err.value.what == "the thing" and err.value.value == value
    assert str(err.value).endswith(TAIL) and "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize("value", ["0" * 40, "abcdef0123" * 4])
def test_a_commit_hash_passes(value):
    assert untrusted.commit_hash(value, "the thing") == value


@pytest.mark.parametrize("value", ["0" * 39, "0" * 41, "G" * 40, "A" * 40, None, "../" + "0" * 37])
def test_anything_else_is_no_commit(value):
    err = refusal(untrusted.commit_hash, value)
    assert str(err) == f"the thing is {value!r}: not a commit hash (40 hexadecimal digits){TAIL}"


@pytest.mark.parametrize("value", ["a" * 32, "b" * 40, "c" * 64, "d" * 128])
def test_an_etag_passes(value):
    assert untrusted.etag(value, "the thing") == value


@pytest.mark.parametrize("value", ["a" * 31, "a" * 65 + "A", "x" * 40, "../etc", 7])
def test_anything_else_is_no_etag(value):
    err = refusal(untrusted.etag, value)
    assert str(err) == f"the thing is {value!r}: not an etag (a sha256 or git sha1: hexadecimal digits){TAIL}"


@pytest.mark.parametrize("value", ["model.safetensors", "a", "x" * 255, "é" * 127, "..."])
def test_a_file_name_passes(value):
    assert untrusted.file_name(value, "the thing") == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "not a file name"),
        (".", "not a file name"),
        ("..", "not a file name"),
        ("a/b", "a path, not a plain file name (it holds a separator)"),
        ("a\\b", "a path, not a plain file name (it holds a separator)"),
        ("a\x00b", "it holds a NUL or another control character"),
        ("a\x1fb", "it holds a NUL or another control character"),
        ("a\x7fb", "it holds a NUL or another control character"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
        (3, "a int, not a file name"),
    ],
)
def test_anything_else_is_no_file_name(value, why):
    err = refusal(untrusted.file_name, value)
    assert str(err).startswith("the thing is ") and str(err).endswith(f": {why}{TAIL}")


def test_a_long_value_is_shown_shortened():
    err = refusal(untrusted.file_name, "x" * 300)
    assert f"the thing is '{'x' * 79}... (300 characters): longer than 255 bytes" in str(err)
    assert str(refusal(untrusted.etag, "a" * 129)).startswith(f"the thing is '{'a' * 79}... (129 characters)")


@pytest.mark.parametrize("value", ["model.safetensors", "sub/model.safetensors", "a/b/c", "refs/pr/1"])
def test_a_repository_path_passes(value):
    assert untrusted.repo_path(value, "the thing") == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "not a path"),
        (None, "not a path"),
        ("/etc/passwd", "an absolute path"),
        ("C:model", "an absolute path"),
        ("x" * 1025, "longer than 1024 bytes"),
        ("a/../b", "its part '..' is not a plain file name"),
        ("a//b", "its part '' is not a plain file name"),
        ("a/b\\c", "its part 'b\\\\c' is not a plain file name"),
    ],
)
def test_anything_else_is_no_repository_path(value, why):
    err = refusal(untrusted.repo_path, value)
    assert str(err).endswith(f": {why}{TAIL}"), str(err)


@pytest.mark.parametrize("value", ["http://127.0.0.1:8/x", "https://cdn.example/a?b=c"])
def test_an_http_url_passes(value):
    assert untrusted.url(value, "the thing") == value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("file:///etc/passwd", "not an http(s) URL with a host"),
        ("http:///x", "not an http(s) URL with a host"),
        ("ftp://h/x", "not an http(s) URL with a host"),
        ("http://h/\x00", "not a URL (it holds a control character)"),
        (None, "not a URL (it holds a control character)"),
    ],
)
def test_anything_else_is_no_url(value, why):
    err = refusal(untrusted.url, value)
    assert str(err).endswith(f": {why}{TAIL}")


def test_the_callers_error_class_is_raised():
    with pytest.raises(HubAnswerError):
        untrusted.commit_hash("x", "the X-Repo-Commit header", HubAnswerError)
    with pytest.raises(HubAnswerError):
        untrusted.inside("/a", "/b/c", "the blob", HubAnswerError)


def test_inside_follows_the_links_of_the_folder(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert untrusted.inside(root, root / "sub" / "f", "it") == root / "sub" / "f"
    assert untrusted.inside(root, root / "f", "it") == root / "f"
    assert untrusted.inside(root, root / "new" / "deeper" / "f", "it") == root / "new" / "deeper" / "f"
    err = refusal(lambda v, w: untrusted.inside(root, v, w), str(root / "link" / "f"))
    assert f"its folder leads to {os.path.realpath(outside)}, outside {os.path.realpath(root)}" in str(err)
    refusal(lambda v, w: untrusted.inside(root, v, w), str(tmp_path / "f"))
