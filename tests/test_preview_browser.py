"""``corridorkey preview`` in a real browser: Playwright driving the system's Chromium (Debian's
``chromium``, which .ci/run installs; Playwright's own browser download is not used).

The page is served by a real server on 127.0.0.1 over two demo clips keyed with the bundled model. The tests
save screenshots; with ``UPDATE_SCREENSHOTS=1`` they go to docs/images/ (shown by docs/ui.md).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from preview_testing import chromium, demo_clip, get, output_files, running, session_for

from corridorkey_engine.clips.pixels import to_uint8

pytestmark = pytest.mark.slow
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
READ_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  return [canvas.width, canvas.height, Array.from(data)];
}"""


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if executable is None:
        message = "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--force-color-profile=srgb"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """A folder of two clips, ``shot`` (4 frames of 256x192, green spill on the subject) and ``long`` (24
    larger frames, to cancel), and an untouched copy of each in ``twins/`` for ``corridorkey infer``."""
    root = tmp_path_factory.mktemp("browser")
    demo_clip(root / "shots" / "long", frames=24, size=(192, 256))
    demo_clip(root / "shots" / "shot", frames=4, size=(192, 256), spill=True)
    shutil.copytree(root / "shots", root / "twins")
    return root


@pytest.fixture(scope="module")
def server(shots):
    with running(session_for([shots / "shots"])) as server:
        yield server


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 760}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    page.wait_for_selector("#viewport[data-seq]", state="attached")
    yield page
    context.close()
    assert not errors, errors


def screenshot(page, name: str, tmp_path: Path, **options) -> Path:
    folder = DOCS_IMAGES if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    (page.locator(options.pop("element")) if "element" in options else page).screenshot(path=str(path))
    return path


def shown(page, img: str = "imgA") -> np.ndarray:
    width, height, data = page.evaluate(READ_PIXELS, img)
    return np.array(data, np.uint8).reshape(height, width, 4)[..., :3]


def settle(page, change, wanted: str | None = None) -> None:
    """Do ``change`` and wait until the viewer shows a newer picture (made with ``wanted`` in its command
    line, when given)."""
    seq = int(page.get_attribute("#viewport", "data-seq") or 0)
    change()
    page.wait_for_function(
        "([seq, wanted]) => { const v = document.querySelector('#viewport');"
        " return Number(v.dataset.seq) > seq && (!wanted || v.dataset.command.includes(wanted)); }",
        arg=[seq, wanted],
    )


def select_clip(page, name: str) -> None:
    settle(page, lambda: page.select_option("#clip", name))


def expected_comp(clip: Path, index: int, **settings) -> np.ndarray:
    from corridorkey_engine.clips.images import read_image
    from corridorkey_engine.clips.pixels import as_mask, as_rgb
    from corridorkey_engine.demo.clip import bundled_checkpoint_dir
    from corridorkey_engine.engine import load_engine

    name = f"frame_{index:04d}.png"
    engine = load_engine(bundled_checkpoint_dir(), device="cpu")
    image, hint = as_rgb(read_image(clip / "Input" / name)), as_mask(read_image(clip / "AlphaHint" / name))
    return to_uint8(engine.process_frame(image, hint, **settings)["comp"])


def test_scrubbing_shows_that_frame_as_process_frame_keys_it(page, shots, tmp_path):
    select_clip(page, "shot")
    assert page.input_value("#number") == "0"
    settle(page, lambda: page.keyboard.press("ArrowRight"))
    settle(page, lambda: page.keyboard.press("ArrowRight"))
    assert page.get_attribute("#viewport", "data-frame") == "2" and page.input_value("#number") == "2"
    assert np.array_equal(shown(page), expected_comp(shots / "twins" / "shot", 2))
    settle(page, lambda: (page.fill("#number", "3"), page.press("#number", "Enter")))
    assert page.input_value("#scrub") == "3"
    assert np.array_equal(shown(page), expected_comp(shots / "twins" / "shot", 3))
    settle(
        page,
        lambda: page.eval_on_selector("#scrub", "s => { s.value = 1; s.dispatchEvent(new Event('input')); }"),
    )
    assert page.get_attribute("#viewport", "data-frame") == "1"
    # zoom: 1:1 shows image pixels as screen pixels, fit fills the viewer; the readout follows the cursor
    page.click("#one")
    assert "scale(1)" in page.get_attribute("#stage", "style")
    page.click("#fit")
    box = page.locator("#imgA").bounding_box()
    assert box["width"] > 600  # a 256-px frame fitted into the viewer
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.querySelector('#readout').textContent.includes('matte')")
    assert "x 128 y 96" in page.inner_text("#readout")
    screenshot(page, "preview-comp.png", tmp_path)


def test_the_despill_slider_lowers_the_comps_green(page, tmp_path):
    select_clip(page, "shot")
    set_despill = "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }"
    settle(page, lambda: page.eval_on_selector("#despill", set_despill, "0"), "--despill 0")
    none = shown(page).astype(int)
    settle(page, lambda: page.eval_on_selector("#despill", set_despill, "1"), "--despill 1")
    full = shown(page).astype(int)
    spilled = none[..., 1] > none[..., 0] + 30  # where the spill shows without despill
    assert spilled.mean() > 0.1
    assert full[spilled, 1].mean() < none[spilled, 1].mean() - 20  # despill pulls the green down there
    assert "--despill 1" in page.inner_text("#command")
    settle(page, lambda: page.eval_on_selector("#despill", set_despill, "0.5"))
    assert "--despill" not in page.inner_text("#command")  # infer's default: not repeated


def test_dragging_the_despill_slider_ends_on_its_last_value(page, server, shots):
    """Every step of a drag is sent at once (no debounce), one request at a time: the server ends with the
    slider's last value and the picture shown is the comp keyed with it."""
    select_clip(page, "shot")
    drag = "(s) => { for (const v of [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]) { s.value = v;"
    drag += " s.dispatchEvent(new Event('input')); } }"
    settle(page, lambda: page.eval_on_selector("#despill", drag), "--despill 0.9")
    assert server.session.clip("shot").settings.despill == 0.9
    index = int(page.get_attribute("#viewport", "data-frame"))
    assert np.array_equal(shown(page), expected_comp(shots / "shots" / "shot", index, despill_strength=0.9))
    back = "(s) => { s.value = 0.5; s.dispatchEvent(new Event('input')); }"
    settle(page, lambda: page.eval_on_selector("#despill", back))


def test_the_ab_wipe_shows_both_views(page, tmp_path):
    select_clip(page, "shot")
    page.select_option("#viewA", "matte")
    settle(page, lambda: page.select_option("#viewB", "input"))
    settle(page, lambda: page.check("#wipe"))
    page.click("#fit")
    path = screenshot(page, "preview-wipe.png", tmp_path, element="#viewport")
    picture = cv2.imread(str(path))[..., ::-1].astype(int)
    box, view = page.locator("#imgA").bounding_box(), page.locator("#viewport").bounding_box()
    top, left = int(box["y"] - view["y"]) + 4, int(box["x"] - view["x"]) + 4
    width, height = int(box["width"]) - 8, int(box["height"]) - 8
    image = picture[top : top + height, left : left + width]
    half = width // 2
    a, b = image[:, : half - 4], image[:, half + 4 :]
    assert (a.max(axis=2) - a.min(axis=2) <= 2).all()  # the matte: grey
    greenish = (b[..., 1] > b[..., 0] + 40) & (b[..., 1] > b[..., 2] + 40)
    assert greenish.mean() > 0.2  # the input: its green screen
    page.eval_on_selector("#wipepos", "s => { s.value = 25; s.dispatchEvent(new Event('input')); }")
    assert "inset(0px 0px 0px 64px)" in page.get_attribute("#imgB", "style")


def test_a_render_from_the_page_writes_what_infer_writes(page, shots, tmp_path):
    from conftest import run_main

    from corridorkey_engine.cli import main

    select_clip(page, "shot")
    settle(page, lambda: (page.fill("#despeckle_size", "60"), page.press("#despeckle_size", "Tab")), "60")
    page.click("#render")
    page.wait_for_selector("#renderState[data-state=done]", timeout=120_000)
    assert page.inner_text("#renderState") == "keyed 4 frame(s)"
    assert page.get_attribute("#progress", "value") == "4"
    command = shlex.split(page.inner_text("#command"))
    assert command[2] == str(shots / "shots" / "shot") and "--despeckle-size" in command
    done = run_main(main, "corridorkey", [command[1], str(shots / "twins" / "shot"), *command[3:]])
    assert done.returncode == 0, done.stderr
    rendered = output_files(shots / "shots" / "shot")
    assert len(rendered) == 16 and rendered == output_files(shots / "twins" / "shot")
    screenshot(page, "preview-render.png", tmp_path)
    page.click("#save")
    page.wait_for_function("document.querySelector('#message').textContent.startsWith('settings saved')")
    assert "--despeckle-size 60" in (shots / "shots" / "shot" / "corridorkey-preview.json").read_text()


def test_cancel_leaves_only_whole_files(page, server, shots, tmp_path):
    from conftest import run_main

    from ckpt_formats.atomic import is_temp_file
    from corridorkey_engine.cli import main

    select_clip(page, "long")
    with server.session.lock:  # as if the viewer were keying a frame: the render waits for the engine
        page.click("#render")
        page.wait_for_selector("#renderState[data-state=running]")
        with page.expect_response(lambda r: "/api/render/cancel" in r.url and r.ok):
            page.click("#cancel")
    page.wait_for_selector("#renderState:not([data-state=running])", timeout=120_000)
    assert page.get_attribute("#renderState", "data-state") == "cancelled"
    clip = shots / "shots" / "long"
    files = output_files(clip)
    assert files and not [name for name in files if is_temp_file(clip / name)]
    frames = {name.split("/")[1].split(".")[0] for name in files}
    assert len(files) == 4 * len(frames) < 4 * 24  # each frame whole: its four outputs
    assert page.inner_text("#renderState").startswith(f"cancelled after {len(frames)} frame(s)")
    finished = run_main(main, "corridorkey", shlex.split(page.inner_text("#command"))[1:])
    assert f"keyed {24 - len(frames)} frames ({len(frames)} already done" in finished.stdout


def test_a_request_without_the_token_is_refused(browser, server):
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(server.url.split("?")[0])
    assert response.status == 403 and "token" in page.inner_text("body")
    response = page.goto(server.url.replace("token=", "token=x"))
    assert response.status == 403
    assert get(server.url)[0] == 200
    context.close()
