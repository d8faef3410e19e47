"""``corridorkey preview`` without a browser: its settings are the infer command line, a frame it shows is
``process_frame``'s, post-processing reuses the prediction, a render is ``infer``'s byte for byte, cancel
leaves whole files, and the server's guards (token, Host, clips by id, files confined to the clip folders).

The browser tests are tests/test_preview_browser.py.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from preview_testing import ENGINE_ARGS, demo_clip, get, output_files, running, session_for

from corridorkey_engine.clips.pixels import to_uint8
from corridorkey_engine.demo.clip import bundled_checkpoint_dir
from corridorkey_engine.errors import ConfigError
from corridorkey_engine.preview.settings import SETTINGS_FILE, Settings, infer_argv


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return demo_clip(tmp_path_factory.mktemp("preview") / "shot", frames=3, spill=True)


@pytest.fixture(scope="module")
def session(clip):
    return session_for([clip])


@pytest.fixture(scope="module")
def reference():
    from corridorkey_engine.engine import load_engine

    return load_engine(bundled_checkpoint_dir(), device="cpu")


def _png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def _frame(clip: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` read as ``corridorkey infer`` reads it."""
    from corridorkey_engine.clips.images import read_image
    from corridorkey_engine.clips.pixels import as_mask, as_rgb

    name = sorted((clip / "Input").iterdir())[index].name
    return as_rgb(read_image(clip / "Input" / name)), as_mask(read_image(clip / "AlphaHint" / name))


# ---- settings: each one is a flag of the infer command line and reaches infer's options ----------------


@pytest.mark.parametrize(
    ("change", "flags", "field", "value"),
    [
        ({"despill": 0.3}, ["--despill", "0.3"], "post.despill_strength", 0.3),
        ({"despeckle": False}, ["--no-despeckle"], "post.auto_despeckle", False),
        ({"despeckle_size": 120}, ["--despeckle-size", "120"], "post.despeckle_size", 120),
        ({"refiner_scale": 0.5}, ["--refiner-scale", "0.5"], "refiner_scale", 0.5),
        ({"screen_color": "blue"}, ["--screen-color", "blue"], "post.screen_color", "blue"),
        ({"hint": "chroma"}, ["--hint", "chroma"], "hint", "chroma"),
        ({"linear": True}, ["--linear"], "input_is_linear", True),
        ({"linear": False}, ["--srgb"], "input_is_linear", False),
        ({"frames": "1-2"}, ["--frames", "1-2"], "frames.ranges", ((1, 2),)),
    ],
)
def test_each_setting_is_its_infer_flag_and_reaches_infers_options(change, flags, field, value):
    from corridorkey_engine.cli_preview import infer_options

    default = infer_argv(Path("/clips/shot"), Settings(), ENGINE_ARGS)
    assert default == ["infer", "/clips/shot", *ENGINE_ARGS]
    argv = infer_argv(Path("/clips/shot"), Settings.from_json(change), ENGINE_ARGS)
    assert argv == [*default, *flags]

    def get_field(opts):
        for part in field.split("."):
            opts = getattr(opts, part)
        return opts

    assert get_field(infer_options(argv)) == value
    assert get_field(infer_options(default)) != value


def test_model_settings_are_the_engine_flags():
    from corridorkey_engine.cli_preview import parse_infer

    settings = Settings(img_size=64, precision="float32")
    args = parse_infer(infer_argv(Path("shot"), settings, ENGINE_ARGS))
    assert (args.img_size, args.precision, args.checkpoint_dir) == (64, "float32", bundled_checkpoint_dir())
    assert settings.model_args() == ["--img-size", "64", "--precision", "float32"]
    assert Settings().model_args() == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"despill": 1.5}, "setting despill: a number from 0 to 1, got 1.5"),
        ({"despill": True}, "setting despill: a number from 0 to 1, got True"),
        ({"despeckle_size": 0}, "setting despeckle_size: at least 1, got 0"),
        ({"despeckle_size": 2.5}, "setting despeckle_size: a whole number of pixels, got 2.5"),
        ({"screen_color": "red"}, "setting screen_color: one of green, blue, got 'red'"),
        ({"img_size": 8}, "setting img_size: a whole number of at least 32"),
        ({"precision": "fp8"}, "setting precision: one of float32, float16, bfloat16"),
        ({"hint": "magic"}, "setting hint: alphahint or chroma, got 'magic'"),
        ({"frames": "9-1"}, "setting frames: '9-1': the range ends before it starts"),
        ({"despeckle": "yes"}, "setting despeckle: true or false, got 'yes'"),
        ({"refiner_scale": "x"}, "setting refiner_scale: a number, got 'x'"),
        ({"linear": "auto"}, "setting linear: true, false or null, got 'auto'"),
        ({"frames": 5}, "setting frames: frame ranges such as 1001-1050,1060, or null, got 5"),
        (
            {"colour": 1},
            "unknown setting 'colour'; known: despeckle, despeckle_size, despill, frames, hint, img_size, "
            "linear, precision, refiner_scale, screen_color",
        ),
        ([1], "settings must be a JSON object"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line(data, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_json(data)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_frame_range_means_every_frame():
    assert Settings.from_json({"frames": "  "}).frames is None


# ---- what the viewer shows ---------------------------------------------------------------------------


def test_a_view_is_the_frame_process_frame_keys(session, clip, reference):
    image, hint = _frame(clip, 2)
    expected = reference.process_frame(image, hint)
    assert np.array_equal(_png(session.view("shot", 2, "comp")), to_uint8(expected["comp"]))
    matte = _png(session.view("shot", 2, "matte"))
    assert np.array_equal(matte[..., 0], to_uint8(expected["alpha"][..., 0]))
    assert np.array_equal(matte[..., 0], matte[..., 2])  # grey
    assert np.array_equal(_png(session.view("shot", 2, "fg")), to_uint8(expected["fg"]))
    assert np.array_equal(_png(session.view("shot", 2, "input")), to_uint8(image))
    assert np.array_equal(_png(session.view("shot", 2, "hint"))[..., 1], to_uint8(hint))
    other = _png(session.view("shot", 0, "input"))
    assert not np.array_equal(other, to_uint8(image))  # another frame is another picture


def test_views_are_stored_pngs_on_this_machine_and_compressed_for_another(clip):
    from corridorkey_engine.preview.server import is_loopback

    session = session_for([clip])
    stored = session.view("shot", 0, "comp")
    session.compress_views = True
    compressed = session.view("shot", 0, "comp")
    assert np.array_equal(_png(stored), _png(compressed))  # the same pixels
    assert len(stored) > 128 * 128 * 3 > 4 * len(compressed)  # stored: every byte of the frame is there
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.20", "::", "studio.example"):
        assert not is_loopback(host), host


def test_processed_is_shown_over_the_chosen_background(session, clip, reference):
    import torch

    from corridorkey_engine.keying.color import linear_to_srgb

    image, hint = _frame(clip, 1)
    rgba = reference.process_frame(image, hint)["processed"]
    for background, level in [("black", 0.0), ("white", 1.0)]:
        over = rgba[..., :3] + level * (1.0 - rgba[..., 3:])
        expected = to_uint8(linear_to_srgb(torch.from_numpy(over).clamp(min=0)).numpy())
        assert np.array_equal(_png(session.view("shot", 1, "processed", background)), expected)
    checker = _png(session.view("shot", 1, "processed", "checker")).astype(int)
    clear = rgba[..., 3] == 0
    assert clear.any() and set(np.unique(checker[clear])) == {38}  # the comp's 0.15 square
    with pytest.raises(ValueError, match="unknown background 'pink'"):
        session.view("shot", 1, "processed", "pink")
    with pytest.raises(ValueError, match="unknown view 'alpha'"):
        session.view("shot", 1, "alpha")


def test_a_post_processing_change_reuses_the_prediction_a_model_setting_rekeys(clip):
    session = session_for([clip])
    session.view("shot", 0, "comp")
    engine, _ = session.engine(session.clip("shot"))
    calls = []
    engine.model.register_forward_hook(lambda *_: calls.append(1))
    session.set_settings("shot", {"despill": 0.0})
    no_despill = _png(session.view("shot", 0, "comp")).astype(int)
    session.set_settings("shot", {"despill": 1.0, "despeckle_size": 30, "despeckle": False})
    full = _png(session.view("shot", 0, "comp")).astype(int)
    assert calls == []  # post-processing only: the cached prediction
    spilled = no_despill[..., 1] > no_despill[..., 0] + 30  # green spill on the subject
    assert spilled.mean() > 0.1
    assert full[spilled, 1].mean() < no_despill[spilled, 1].mean() - 20  # despill lowers the green
    session.set_settings("shot", {"refiner_scale": 0.0})
    no_refiner = _png(session.view("shot", 0, "comp"))
    assert calls == [1]  # the refiner is inside the model: keyed again
    image, hint = _frame(clip, 0)
    s = session.clip("shot").settings
    expected = engine.process_frame(
        image, hint, refiner_scale=0.0, despill_strength=s.despill, auto_despeckle=s.despeckle
    )
    assert np.array_equal(no_refiner, to_uint8(expected["comp"]))  # keyed with that refiner scale
    session.set_settings("shot", {"img_size": 64})
    session.view("shot", 0, "comp")
    assert session.engine(session.clip("shot"))[0].img_size == 64  # another engine


@pytest.mark.parametrize("first_view", ["comp", "matte"])
def test_post_processing_changes_redo_only_what_they_change(clip, reference, monkeypatch, first_view):
    """Each change shows process_frame's pixels for its settings; the resize to the frame is done once per
    frame and a despeckle once per despeckle setting (the viewer caches both), whatever is viewed first."""
    from corridorkey_engine.keying import frames as keying_frames

    calls: dict[str, int] = {"resize": 0, "despeckle": 0}

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(keying_frames, "resize_lanczos", counted("resize", keying_frames.resize_lanczos))
    monkeypatch.setattr(keying_frames, "despeckle", counted("despeckle", keying_frames.despeckle))
    session = session_for([clip])
    image, hint = _frame(clip, 1)
    session.view("shot", 1, first_view)
    assert calls["despeckle"] == (1 if first_view == "comp" else 0)  # a matte view despeckles nothing
    steps = [
        ({"despill": 0.2}, 0 if first_view == "comp" else 1),  # a matte view despeckles nothing
        ({"despill": 0.7}, 0),
        ({"despeckle_size": 30}, 1),
        ({"despeckle": False}, 0),
        ({"despeckle": True, "despeckle_size": 400, "despill": 0.2}, 0),
    ]
    resizes = calls["resize"]
    for change, despeckles in steps:
        before = dict(calls)
        s = session.set_settings("shot", change).settings
        comp = _png(session.view("shot", 1, "comp"))
        processed = session.pixel("shot", 1, 60, 50)["processed"]
        assert calls["despeckle"] - before["despeckle"] == despeckles, change
        assert calls["resize"] == before["resize"], change  # the frame-size prediction is reused
        after = dict(calls)
        expected = reference.process_frame(
            image,
            hint,
            despill_strength=s.despill,
            auto_despeckle=s.despeckle,
            despeckle_size=s.despeckle_size,
        )
        assert np.array_equal(comp, to_uint8(expected["comp"])), change
        assert processed == pytest.approx(expected["processed"][50, 60].tolist(), abs=1e-5), change
        calls.update(after)  # the reference's own calls do not count
    assert resizes == 2  # the first view resized alpha and fg


def test_a_view_computes_only_the_outputs_it_shows(clip):
    session = session_for([clip])
    entry = session.clip("shot")
    session.view("shot", 0, "matte")
    engine, key = session.engine(entry)
    prepared, opts = session.prepared(entry)
    _, outputs = session.keyer.outputs(engine, key, prepared, opts, 0, ("alpha",))
    assert list(outputs) == ["alpha"]
    _, outputs = session.keyer.outputs(engine, key, prepared, opts, 0, ("fg", "alpha"))
    assert list(outputs) == ["fg", "alpha"]


def test_a_change_keeps_the_settings_it_does_not_name(clip):
    session = session_for([clip])
    session.set_settings("shot", {"despill": 0.3})
    settings = session.set_settings("shot", {"despeckle": False}).settings
    assert (settings.despill, settings.despeckle) == (0.3, False)


def test_a_clip_that_cannot_be_prepared_is_listed_with_its_error(tmp_path):
    clip = demo_clip(tmp_path / "shot", frames=3)
    sorted((clip / "AlphaHint").iterdir())[-1].unlink()  # a hint short of the plate
    (state,) = session_for([clip]).state()["clips"]
    assert "frames" not in state and "AlphaHint" in state["error"] and "\n" not in state["error"]


def test_unnumbered_frames_are_numbered_from_1_on_the_page(tmp_path):
    clip = demo_clip(tmp_path / "shot", frames=2)
    for part in ("Input", "AlphaHint"):
        for old, new in zip(sorted((clip / part).iterdir()), ("a.png", "b.png"), strict=True):
            old.rename(old.with_name(new))
    (state,) = session_for([clip]).state()["clips"]
    assert state["frames"] == 2 and state["numbers"] == [1, 2]


def test_the_pixel_readout_is_the_engines_values(session, clip, reference):
    session.set_settings("shot", {})
    image, hint = _frame(clip, 1)
    expected = reference.process_frame(image, hint)
    read = session.pixel("shot", 1, 60, 50)
    assert read["input"] == pytest.approx(image[50, 60].tolist(), abs=1e-5)
    assert read["matte"] == pytest.approx(expected["alpha"][50, 60].tolist(), abs=1e-5)
    assert read["processed"] == pytest.approx(expected["processed"][50, 60].tolist(), abs=1e-5)
    assert session.pixel("shot", 1, 0, 127)["hint"] == pytest.approx([hint[127, 0]], abs=1e-5)  # the corners
    for x, y in [(128, 0), (0, 128), (-1, 0)]:
        with pytest.raises(ValueError, match=f"pixel {x},{y} is outside the 128x128 frame"):
            session.pixel("shot", 1, x, y)
    with pytest.raises(ValueError, match="shot has frames 0 to 2"):
        session.view("shot", 3, "comp")


def test_settings_saved_to_the_clip_come_back_and_a_bad_file_is_named(tmp_path):
    clip = demo_clip(tmp_path / "shot", frames=1)
    session = session_for([clip])
    session.set_settings("shot", {"despill": 0.25, "despeckle": False})
    path = session.save("shot")
    assert path == clip / SETTINGS_FILE
    saved = json.loads(path.read_text())
    assert saved["command"] == session.command(session.clip("shot"))
    assert "--despill 0.25 --no-despeckle" in saved["command"]
    again = session_for([clip])
    assert (again.clip("shot").settings.despill, again.clip("shot").settings.despeckle) == (0.25, False)
    path.write_text('{"settings": {"despill": 7}}')
    broken = session_for([clip])
    assert broken.clip("shot").settings == Settings()
    assert broken.clip("shot").warning == f"{path}: ignored (setting despill: a number from 0 to 1, got 7)"
    assert broken.state()["clips"][0]["warning"] == broken.clip("shot").warning  # the page shows it


def test_saving_settings_failing_midway_keeps_the_previous_file_whole(tmp_path):
    import errno

    from test_write_paths import file_size_limit

    clip = demo_clip(tmp_path / "shot", frames=1)
    session = session_for([clip])
    session.set_settings("shot", {"despill": 0.25})
    before = session.save("shot").read_bytes()
    session.set_settings("shot", {"frames": ",".join(str(n) for n in range(400))})  # a longer file
    with file_size_limit(len(before) + 50), pytest.raises(OSError) as caught:
        session.save("shot")
    assert caught.value.errno == errno.EFBIG
    assert (clip / SETTINGS_FILE).read_bytes() == before
    assert sorted(p.name for p in clip.iterdir() if p.is_file()) == [SETTINGS_FILE]  # no temporary left


# ---- render: infer's code path ------------------------------------------------------------------------


def _wait(session, timeout: float = 120.0) -> dict:
    session.renderer.join(timeout)
    return session.renderer.status.to_json()


def test_a_render_writes_what_infer_writes_byte_for_byte(tmp_path):
    from conftest import run_main

    from corridorkey_engine.cli import main

    clip = demo_clip(tmp_path / "a" / "shot", frames=4)
    twin = tmp_path / "b" / "shot"
    shutil.copytree(clip, twin)
    session = session_for([clip])
    session.set_settings("shot", {"despill": 0.3, "despeckle_size": 50, "frames": "1-2"})
    session.render("shot")
    assert session.renderer.status.clip == "shot" and session.renderer.status.state in ("running", "done")
    status = _wait(session)
    assert status["state"] == "done" and status["done"] == status["total"] == 2, status
    assert 0 < status["fps"] < 1000 and status["fps"] == round(status["fps"], 2)
    command = shlex.split(status["command"])
    assert command[:3] == ["corridorkey", "infer", str(clip)]
    done = run_main(main, "corridorkey", [command[1], str(twin), *command[3:]])
    assert done.returncode == 0, done.stderr
    rendered, inferred = output_files(clip), output_files(twin)
    assert sorted(rendered) == [
        f"{k}/frame_000{i}.{e}"
        for k, e in [("Comp", "png"), ("FG", "exr"), ("Matte", "exr"), ("Processed", "exr")]
        for i in (1, 2)
    ]
    assert rendered == inferred
    manifests = [json.loads((c / "corridorkey.json").read_text()) for c in (clip, twin)]
    settings = [{k: v["settings"] for k, v in m["outputs"].items()} for m in manifests]
    assert settings[0] == settings[1]  # the same settings recorded (only the times differ)
    assert manifests[0]["about"] == manifests[1]["about"] and "program" in manifests[0]["about"]
    # infer sees the render's frames as done with its settings: resume
    again = run_main(main, "corridorkey", [command[1], str(clip), *command[3:]])
    assert again.stdout.startswith("nothing to do: all ")
    assert "frames of 1 clip(s) are done" in again.stdout
    session.render("shot")
    assert "nothing to do" in _wait(session)["message"]


@pytest.mark.slow
def test_a_cancelled_render_leaves_only_whole_files_and_infer_finishes_it(tmp_path):
    from conftest import run_main

    from ckpt_formats.atomic import is_temp_file
    from corridorkey_engine.cli import main

    clip = demo_clip(tmp_path / "shot", frames=24, size=(192, 256))
    session = session_for([clip])
    session.view("shot", 0, "comp")  # the engine is loaded
    with session.lock:  # the viewer is keying a frame: the render's engine calls wait for it
        session.render("shot")
        time.sleep(0.5)
        assert session.renderer.running and session.renderer.status.done == 0
        session.renderer.cancel()
    status = _wait(session)
    assert status["state"] == "cancelled", status
    assert status["done"] == 1  # the engine call under way when the cancel came, written whole
    assert status["message"].startswith(f"cancelled after {status['done']} frame(s); every written file is")
    files = output_files(clip)
    assert not [name for name in files if is_temp_file(clip / name)]
    frames = {name.split("/")[1].split(".")[0] for name in files}
    assert len(files) == 4 * len(frames) == 4 * status["done"] < 4 * 24
    for name in files:
        if name.endswith(".png"):
            assert cv2.imread(str(clip / name)) is not None
    finished = run_main(main, "corridorkey", shlex.split(status["command"])[1:])
    assert f"keyed {24 - status['done']} frames ({status['done']} already done" in finished.stdout, finished


def test_a_renders_progress_and_a_bug_in_it_are_said_as_the_cli_says_them():
    from corridorkey_engine.preview.render import Renderer, one_line

    def job(on_frame, on_plan):
        on_plan(3)
        time.sleep(0.01)
        on_frame(2)
        raise KeyError("boom")  # not one of the errors the CLI expects: a bug, named by its type

    renderer = Renderer()
    renderer.start("shot", "corridorkey infer shot", job)
    renderer.join(30)
    status = renderer.status.to_json()
    assert (status["state"], status["done"], status["total"]) == ("failed", 2, 3)
    assert status["message"] == "corridorkey: error: KeyError: 'boom'"
    assert isinstance(status["fps"], float) and 0 < status["fps"] <= 200  # two frames in >= 10 ms
    assert one_line(ValueError()) == "ValueError" and one_line(OSError("a\n  b")) == "a b"


def test_a_render_error_is_the_clis_one_line_message(tmp_path):
    clip = demo_clip(tmp_path / "shot", frames=2)
    session = session_for([clip])
    session.set_settings("shot", {"frames": "7-9"})
    session.render("shot")
    status = _wait(session)  # a selection of no frame is infer's usage error, said in one line
    assert status["state"] == "failed" and "--frames 7-9 selects none of its frames" in status["message"]
    (clip / "AlphaHint" / "frame_0001.png").write_bytes(b"not a png")
    session.set_settings("shot", {"frames": None})
    session.render("shot")
    status = _wait(session)
    assert status["state"] == "failed"
    assert status["message"].startswith("corridorkey: error: ") and "frame_0001.png" in status["message"]
    assert "\n" not in status["message"]


# ---- the server's guards ------------------------------------------------------------------------------


def test_every_request_needs_the_token_and_the_printed_host(session):
    with running(session) as server:
        base = f"http://{server.address}"
        token = server.token
        assert server.url == f"{base}/?token={token}" and len(token) == 32  # 24 random bytes
        for path in ["/", "/static/app.js", "/api/state", "/api/view?clip=shot&frame=0&view=comp"]:
            assert get(base + path)[0] == 403, path
            sep = "&" if "?" in path else "?"
            assert get(f"{base}{path}{sep}token={token[:-1]}x")[0] == 403, path
            assert get(f"{base}{path}{sep}token={token}")[0] == 200, path
        assert get(base + "/api/state", {"X-CorridorKey-Token": token})[0] == 200
        for host in ["evil.example", f"evil.example:{server.port}", f"localhost:{server.port}", ""]:
            status, body = get(f"{base}/api/state?token={token}", {"Host": host})
            assert status == 403 and b"Host" in body, host
        status, page = get(f"{base}/?token={token}")
        assert f'src="static/app.js?token={token}"'.encode() in page  # the page's own files carry it
        assert b"http" not in page.replace(b"http-equiv", b"")  # nothing from another server


def test_connections_send_small_responses_at_once(session):
    """Nagle's algorithm is off on every connection the server accepts: a response's body does not wait
    behind its headers for the browser's delayed ACK (40 ms on each settings change otherwise)."""
    import http.client
    import socket

    with running(session) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for despill in (0.3, 0.5):  # the same keep-alive connection, as the page's
            body = json.dumps({"despill": despill})
            headers = {"Host": server.address, "Content-Type": "application/json"}
            connection.request("POST", f"/api/settings?clip=shot&token={server.token}", body, headers)
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["settings"]["despill"] == despill
        accepted = [c.transport.get_extra_info("socket") for c in server.server.server_state.connections]
        assert accepted and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted)
        connection.close()


def test_an_ipv6_address_is_served_and_printed_in_brackets(session):
    import socket

    from corridorkey_engine.preview.server import PreviewServer

    try:
        server = PreviewServer(session, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        assert server.url == f"http://[::1]:{server.port}/?token={server.token}"
        assert session.compress_views is False  # the loopback: views are sent stored
        assert server.socket.family == socket.AF_INET6
    finally:
        server.socket.close()


def test_requests_name_clips_by_id_and_never_reach_another_file(session, clip):
    with running(session) as server:
        base = f"http://{server.address}"
        t = server.token
        for name in ["../shot", "shot/..", "/etc/passwd", str(clip), "shot/../shot", "%2e%2e", ""]:
            status, body = get(f"{base}/api/view?token={t}&clip={name}&frame=0&view=comp")
            assert status == 404 and body.startswith(b"corridorkey: error: no clip"), name
        for path in [
            "/static/../server.py",
            "/static/%2e%2e/server.py",
            "/static/index.html",
            "/static/app.js/..",
            "/etc/passwd",
            "/api/../static/app.js",
        ]:
            status, body = get(f"{base}{path}?token={t}")
            assert status == 404 or (status == 200 and body == get(f"{base}/static/app.js?token={t}")[1]), (
                path
            )
        status, body = get(f"{base}/api/view?token={t}&clip=shot&frame=-1&view=comp")
        assert status == 400 and body == b"corridorkey: error: shot has frames 0 to 2 (by index), not -1"


def test_symlinks_out_of_the_given_folders_are_refused(tmp_path):
    outside = demo_clip(tmp_path / "outside" / "secret", frames=2)
    shots = tmp_path / "shots"
    demo_clip(shots / "good", frames=2)
    (shots / "link").symlink_to(outside, target_is_directory=True)  # a clip that is elsewhere
    leaky = demo_clip(shots / "leaky", frames=2)
    frame = leaky / "Input" / "frame_0001.png"
    frame.unlink()
    frame.symlink_to(outside / "Input" / "frame_0001.png")  # one frame file from elsewhere
    matte = demo_clip(shots / "matte", frames=2)
    (tmp_path / "elsewhere").mkdir()
    (matte / "Matte").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    session = session_for([shots])
    assert set(session.clips) == {"good", "leaky", "link", "matte"}
    assert "leads outside" in session.clip("link").error and "secret" in session.clip("link").error
    assert f"{shots / 'link'}: the clip folder leads outside" in session.clip("link").error
    with pytest.raises(Exception, match="a frame file leads outside"):
        session.view("leaky", 0, "comp")
    with pytest.raises(Exception, match="an output folder or file leads outside"):
        session.render("matte")
    with pytest.raises(Exception, match="leads outside"):
        session.save("link")
    (shots / "good" / "corridorkey.json").symlink_to(tmp_path / "elsewhere" / "corridorkey.json")
    with pytest.raises(Exception, match="an output folder or file leads outside"):
        session.render("good")  # a manifest that is a link out
    (shots / "good" / "corridorkey.json").unlink()
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert sorted(p.name for p in outside.iterdir()) == ["AlphaHint", "GroundTruth", "GroundTruthFG", "Input"]
    assert session.view("good", 0, "comp").startswith(b"\x89PNG")
    # a settings file that is a link out is replaced, never written through
    target = tmp_path / "outside" / "note.txt"
    target.write_text("keep")
    (shots / "good" / SETTINGS_FILE).symlink_to(target)
    session.save("good")
    assert target.read_text() == "keep" and not (shots / "good" / SETTINGS_FILE).is_symlink()


def test_the_state_lists_each_clip_with_its_command_line(session, clip):
    state = session.state()
    (item,) = state["clips"]
    assert item["frames"] == 3 and item["numbers"] == [0, 1, 2]
    assert (item["id"], item["path"], item["error"], item["warning"]) == ("shot", str(clip), None, None)
    assert item["command"] == shlex.join(["corridorkey", "infer", str(clip), *ENGINE_ARGS])
    assert state["views"] == ["input", "hint", "matte", "fg", "processed", "comp"]
    assert replace(Settings(), **item["settings"]) == Settings()


# ---- the command ----------------------------------------------------------------------------------------


def test_preview_without_a_usable_clip_fails_in_one_line_per_path(tmp_path):
    from conftest import run_main

    from corridorkey_engine.cli import main

    (tmp_path / "empty").mkdir()
    done = run_main(main, "corridorkey", ["preview", str(tmp_path / "missing"), str(tmp_path / "empty")])
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"corridorkey: error: {tmp_path / 'missing'}: clip folder not found"
    assert (
        lines[1].startswith(f"corridorkey: error: {tmp_path / 'empty'}: neither a clip") and len(lines) == 2
    )


def test_the_commands_checkpoint_options_are_in_every_infer_command_line(tmp_path):
    from corridorkey_engine.cli import checkpoint_source
    from corridorkey_engine.cli_args import build_parser
    from corridorkey_engine.cli_preview import preview_engine_args

    options = [
        "--checkpoint-dir", str(tmp_path), "--select", "a.safetensors", "--exclude", "*.pth", "--exclude",
        "old*", "--device", "cpu", "--compile-backend", "eager", "--safe-only", "--screen-color", "blue",
        "--img-size", "64", "--precision", "fp32",
    ]  # fmt: skip
    for extra in [["--no-hub"], ["--hub", "me/weights"], []]:
        preview = build_parser().parse_args(["preview", "shot", *options, *extra])
        base = Settings(screen_color="blue", img_size=64, precision="float32")
        infer = build_parser().parse_args(infer_argv(Path("shot"), base, preview_engine_args(preview)))
        assert checkpoint_source(infer) == checkpoint_source(preview)
        for name in ["device", "compile", "img_size", "screen_color", "safe_only", "select", "exclude"]:
            assert getattr(infer, name) == getattr(preview, name), name
        assert infer.precision == "float32"
    assert preview_engine_args(build_parser().parse_args(["preview", "shot", "--compile"]))[-1] == "--compile"


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [False, True])
def test_the_command_serves_on_its_address_opens_a_browser_and_stops_on_ctrl_c(clip, tmp_path, quiet):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    program = str(Path(sys.executable).with_name("corridorkey"))
    command = [program, "preview", str(clip), *ENGINE_ARGS, "--host", "127.0.0.2", "--port", str(port)]
    command += ["--open", *(["-q"] if quiet else [])]
    env = {**os.environ, "BROWSER": str(browser)}
    with (tmp_path / "stderr").open("w+") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        try:
            line = proc.stdout.readline()
            url = line.split(": ", 1)[1].strip()
            assert url.startswith(f"http://127.0.0.2:{port}/?token=") and len(url.split("token=")[1]) >= 32
            status, body = get(url.replace("/?", "/api/state?"))
            assert status == 200 and json.loads(body)["clips"][0]["id"] == "shot"
            assert get(url.replace("127.0.0.2", "127.0.0.1"))[0] == 0  # only on the address printed
            for _ in range(200):
                if opened.exists() and opened.read_text().strip():
                    break
                time.sleep(0.05)
            assert opened.read_text().strip() == url
            proc.send_signal(signal.SIGINT)
            out = proc.stdout.read()
            proc.wait(60)
        finally:
            proc.kill()
        err.seek(0)
        errors = err.read()
    assert proc.returncode == 0, errors
    assert errors == (
        "corridorkey: warning: listening on 127.0.0.2, not 127.0.0.1: where other machines reach that "
        "address, anyone with the URL (its token) can view the clips and render into their folders\n"
    )
    assert out == ("" if quiet else "press Ctrl-C to stop\npreview stopped\n")


def test_a_missing_checkpoint_is_the_clis_one_line_error_before_any_url(clip, tmp_path):
    from conftest import run_main

    from corridorkey_engine.cli import main

    empty = tmp_path / "no-model"
    empty.mkdir()
    done = run_main(main, "corridorkey", ["preview", str(clip), "--checkpoint-dir", str(empty), "--no-hub"])
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("corridorkey: error: ") and str(empty) in line and "corridorkey demo" in line


def test_a_video_clip_is_shown_frame_by_frame_in_any_order(tmp_path, reference):
    from test_cli_studio import write_video

    from corridorkey_engine.clips import sequences
    from corridorkey_engine.clips.pixels import as_mask, as_rgb

    frames = demo_clip(tmp_path / "frames", frames=3)
    clip = tmp_path / "vid"
    clip.mkdir()
    for part in ("Input", "AlphaHint"):
        pictures = [cv2.imread(str(p))[..., ::-1].copy() for p in sorted((frames / part).iterdir())]
        write_video(clip / f"{part}.mp4", pictures, fps=24)
    session = session_for([clip])
    (item,) = session.state()["clips"]
    assert item["frames"] == 3 and item["numbers"] == [0, 1, 2]  # a video's frames by index
    inputs = list(sequences.iter_frames(sequences.discover_frames(clip / "Input.mp4")))
    hints = list(sequences.iter_frames(sequences.discover_frames(clip / "AlphaHint.mp4")))
    for index in (2, 0, 1):  # backwards too: each frame is decoded from the start
        expected = reference.process_frame(as_rgb(inputs[index]), as_mask(hints[index]))
        assert np.array_equal(_png(session.view("vid", index, "comp")), to_uint8(expected["comp"]))


def test_a_linear_exr_clip_is_keyed_as_linear_and_its_input_shown_in_srgb(tmp_path, reference):
    import torch

    from corridorkey_engine.clips.images import read_image, write_exr
    from corridorkey_engine.keying.color import srgb_to_linear

    plates = demo_clip(tmp_path / "plates", frames=2)
    clip = tmp_path / "exr"
    (clip / "Input").mkdir(parents=True)
    shutil.copytree(plates / "AlphaHint", clip / "AlphaHint")
    for path in sorted((plates / "Input").iterdir()):
        srgb = torch.from_numpy(read_image(path))
        write_exr(clip / "Input" / f"{path.stem}.exr", srgb_to_linear(srgb).numpy(), "RGB", half=False)
    session = session_for([clip])
    linear = read_image(clip / "Input" / "frame_0001.exr")
    hint = read_image(clip / "AlphaHint" / "frame_0001.png")
    expected = reference.process_frame(linear, hint, input_is_linear=True)
    assert np.array_equal(_png(session.view("exr", 1, "comp")), to_uint8(expected["comp"]))
    shown = _png(session.view("exr", 1, "input")).astype(int)
    original = cv2.imread(str(plates / "Input" / "frame_0001.png"))[..., ::-1].astype(int)
    assert np.abs(shown - original).max() <= 1  # linear converted back to sRGB for the eye
    session.set_settings("exr", {"linear": False})  # --srgb: the same file keyed as sRGB
    assert not np.array_equal(_png(session.view("exr", 1, "comp")), to_uint8(expected["comp"]))


def test_clips_of_the_same_name_get_ids_of_their_own(tmp_path):
    paths = [demo_clip(tmp_path / place / "shot", frames=1) for place in ("a", "b", "c")]
    session = session_for(paths)
    assert [(e.id, e.path) for e in session.clips.values()] == list(
        zip(["shot", "shot-2", "shot-3"], paths, strict=True)
    )


def test_the_chroma_hint_is_the_pipelines(tmp_path, reference):
    from corridorkey_engine.keying.chroma import chroma_hint

    clip = demo_clip(tmp_path / "shot", frames=1)
    session = session_for([clip])
    session.set_settings("shot", {"hint": "chroma"})
    image, _ = _frame(clip, 0)
    mask = chroma_hint(image, "green")
    assert np.array_equal(_png(session.view("shot", 0, "hint"))[..., 0], to_uint8(mask))
    expected = reference.process_frame(image, mask)
    assert np.array_equal(_png(session.view("shot", 0, "comp")), to_uint8(expected["comp"]))
