"""Every code block in docs/ is checked, so the docs cannot drift from the code.

* ```python blocks run: the blocks of one file share a namespace and run in order, in a child process whose
  working directory is a fresh temporary folder (on ``sys.path``), with ``HF_ENDPOINT`` pointing at a local
  fake Hub that serves ``nikopueringer/CorridorKey_v1.0`` (a tiny checkpoint) and a private ``HF_HOME``.
  ``python file=NAME`` writes the block to ``NAME`` in that folder instead (a module the next blocks import).
  A block whose first line is ``# docs-test: skip: REASON`` is skipped; the reason is required (and is
  visible to readers). A failure names the doc file and the line, and the traceback uses the doc's lines.
* ```console and ```bash blocks: each ``ckpt-formats ...`` / ``corridorkey ...`` command line (``$ `` prompt
  in console blocks, ``\\`` continuations joined, comments, pipes and ``VAR=value`` prefixes handled) must be
  accepted by the real argparse parser of that command (flags must exist).
* ```toml and ```json blocks must parse.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`]*)$")
SKIP = re.compile(r"^#\s*docs-test:\s*skip\b:?\s*(?P<reason>.*)$")
CLIS = ("ckpt-formats", "corridorkey")


@dataclass(frozen=True)
class Block:
    doc: str  # the path shown in messages, e.g. docs/hub.md
    line: int  # 1-based line of the block's first code line
    lang: str
    options: dict[str, str]
    code: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks_of(text: str, doc: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, with their language, options and first line."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        words = match.group("info").split()
        lang = words[0].lower() if words else ""
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        start, i = i + 1, i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence[:3]):
            i += 1
        body = [ln[len(indent) :] if ln.startswith(indent) else ln.lstrip() for ln in lines[start:i]]
        found.append(Block(doc, start + 1, lang, options, "\n".join(body) + "\n"))
        i += 1
    return found


def doc_blocks(path: Path) -> list[Block]:
    return blocks_of(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


# -- python blocks ------------------------------------------------------------------------------------------

DRIVER = r"""
import json, sys, traceback
from pathlib import Path

sys.path.insert(0, ".")
namespace = {"__name__": "__main__"}
for block in json.loads(Path(sys.argv[1]).read_text()):
    where = f"{block['doc']}:{block['line']}"
    try:
        if block["file"]:
            compile(block["code"], block["file"], "exec")  # a syntax error shows here, with the doc's lines
            target = Path(block["file"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block["code"])
            continue
        padded = "\n" * (block["line"] - 1) + block["code"]  # tracebacks point at the doc's own lines
        exec(compile(padded, block["doc"], "exec"), namespace)
    except BaseException:
        print(f"DOCS-TEST FAILED at {where}:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"ran {where}", file=sys.stderr)
"""


def python_plan(blocks: list[Block]) -> tuple[list[dict], list[str]]:
    """The python blocks to run (as the driver's JSON) and the skip messages; a reasonless skip fails."""
    plan, skipped = [], []
    for block in blocks:
        if block.lang not in ("python", "py"):
            continue
        first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
        skip = SKIP.match(first)
        if skip:
            reason = skip.group("reason").strip()
            assert reason, f"{block.where}: a skipped block must say why (# docs-test: skip: REASON)"
            skipped.append(f"{block.where}: {reason}")
            continue
        plan.append(
            {"doc": block.doc, "line": block.line, "file": block.options.get("file"), "code": block.code}
        )
    return plan, skipped


def run_python_blocks(blocks: list[Block], workdir: Path, env: dict[str, str]) -> list[str]:
    """Run the python blocks in a child process in ``workdir``; fail naming the doc file and line."""
    plan, skipped = python_plan(blocks)
    if not plan:
        return skipped
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir.parent / "docs-plan.json").write_text(json.dumps(plan))
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(workdir.parent / "docs-plan.json")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        failed = re.search(r"DOCS-TEST FAILED at (\S+):", proc.stderr)
        where = failed.group(1) if failed else plan[0]["doc"]
        pytest.fail(f"{where}: code block failed\n{proc.stderr[-6000:]}", pytrace=False)
    return skipped


@pytest.fixture
def docs_env(hub, tmp_path):
    """The child's environment: the fake hub with the CorridorKey repository, a private cache, the CPU."""
    from hub_testing import PTH, REPO, ST, pth_bytes, safetensors_bytes

    hub.add_repo(REPO, {ST: safetensors_bytes(), PTH: pth_bytes()})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "CKPT_FORMATS_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        CORRIDORKEY_DEVICE="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]),
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize("doc", [d for d in DOCS if python_plan(doc_blocks(d))[0]], ids=lambda d: d.name)
def test_python_blocks_run(doc, docs_env, tmp_path):
    skipped = run_python_blocks(doc_blocks(doc), tmp_path / "cwd", docs_env)
    for message in skipped:
        print(f"skipped {message}")


# -- command lines ------------------------------------------------------------------------------------------


def command_lines(block: Block) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` of each ckpt-formats/corridorkey command in a console or bash block."""
    found, pending, first = [], "", 0
    for offset, raw in enumerate(block.code.splitlines()):
        line = raw.rstrip()
        if not pending:
            if block.lang == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            first = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            pytest.fail(f"{block.doc}:{first}: cannot split {text!r}: {exc}", pytrace=False)
        # shell variables stand for a sample value (a frame number, a path); the flags are what is checked
        words = [re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "1", w) for w in words]
        for cut in ("|", "||", "&&", ";", ">", "2>", "&"):
            words = words[: words.index(cut)] if cut in words else words
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if words and Path(words[0]).name in CLIS:
            found.append((first, words))
    return found


def parser_for(program: str):
    if program == "ckpt-formats":
        from ckpt_formats.cli import build_parser
    else:
        from corridorkey_engine.cli import build_parser
    return build_parser()


def check_command(where: str, argv: list[str], capsys) -> None:
    program, args = Path(argv[0]).name, argv[1:]
    try:
        parser_for(program).parse_args(args)
    except SystemExit as exc:
        err = capsys.readouterr().err.strip().splitlines()
        if exc.code not in (0, None):
            pytest.fail(f"{where}: `{shlex.join(argv)}` is rejected by {program}: {err[-1] if err else exc}")
    capsys.readouterr()


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_command_lines_are_accepted_by_the_parser(doc, capsys):
    for block in doc_blocks(doc):
        if block.lang in ("console", "bash", "sh", "shell"):
            for line, argv in command_lines(block):
                check_command(f"{block.doc}:{line}", argv, capsys)
        elif block.lang == "toml":
            import tomllib  # Python 3.11+, like this test suite

            try:
                tomllib.loads(block.code)
            except tomllib.TOMLDecodeError as exc:
                pytest.fail(f"{block.where}: toml block does not parse: {exc}", pytrace=False)
        elif block.lang == "json":
            try:
                json.loads(block.code)
            except ValueError as exc:
                pytest.fail(f"{block.where}: json block does not parse: {exc}", pytrace=False)


# -- the checker itself can fail, and says where -------------------------------------------------------------

SAMPLE = """# Sample

```python
x = 1
```

Text.

```python
assert x == 2, "x is not 2"
```

```console
$ ckpt-formats resolve weights/ \\
    --no-such-flag   # a flag that does not exist
output line
$ echo hi | ckpt-formats list --json
```
"""


def test_a_failing_python_block_is_reported_with_its_file_and_line(tmp_path):
    blocks = blocks_of(SAMPLE, "docs/sample.md")
    with pytest.raises(pytest.fail.Exception) as failure:
        run_python_blocks(blocks, tmp_path / "cwd", dict(os.environ))
    message = str(failure.value)
    assert message.startswith("docs/sample.md:10: code block failed")
    assert 'File "docs/sample.md", line 10' in message and "x is not 2" in message


def test_a_bad_flag_is_reported_with_its_file_and_line(capsys):
    block = blocks_of(SAMPLE, "docs/sample.md")[2]
    commands = command_lines(block)
    assert commands == [(14, ["ckpt-formats", "resolve", "weights/", "--no-such-flag"])]
    with pytest.raises(
        pytest.fail.Exception, match=r"docs/sample.md:14: .* unrecognized arguments: --no-such-flag"
    ):
        check_command("docs/sample.md:14", commands[0][1], capsys)


def test_a_skip_needs_a_reason_and_file_blocks_become_modules(tmp_path):
    blocks = blocks_of("```python\n# docs-test: skip\nimport cuda\n```\n", "docs/s.md")
    with pytest.raises(AssertionError, match="docs/s.md:2: a skipped block must say why"):
        python_plan(blocks)
    text = (
        "```python\n# docs-test: skip: needs an NVIDIA GPU\nraise SystemExit(3)\n```\n"
        "```python file=pkg/mod.py\nVALUE = 41\n```\n"
        "```python\nfrom pkg.mod import VALUE\nassert VALUE + 1 == 42\n```\n"
    )
    skipped = run_python_blocks(blocks_of(text, "docs/s.md"), tmp_path / "cwd", dict(os.environ))
    assert skipped == ["docs/s.md:2: needs an NVIDIA GPU"]
    assert (tmp_path / "cwd" / "pkg" / "mod.py").read_text() == "VALUE = 41\n"


def test_every_doc_is_found():
    assert {"plugin-authors.md", "engine.md", "hub.md", "registry.md"} <= {d.name for d in DOCS}
    assert python_plan(doc_blocks(ROOT / "docs" / "plugin-authors.md"))[0]


def test_the_plugin_in_plugin_authors_md_is_the_example_plugin_itself():
    real = ROOT / "plugins" / "examples" / "ckpt_formats_npz" / "src" / "ckpt_formats_npz" / "__init__.py"
    shown = [b for b in doc_blocks(ROOT / "docs" / "plugin-authors.md") if b.options.get("file")]
    assert shown[0].options["file"] == "ckpt_formats_npz.py"
    assert shown[0].code == real.read_text(encoding="utf-8"), f"{shown[0].where}: copy {real.name} again"
