"""Every error is one line naming the file: unreadable files, unavailable devices, full disks, refused
pickles; library warnings only with --verbose; nothing a file holds can drive the terminal."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_state_dict, write_pth, write_safetensors
from hub_testing import REPO, ST, leftovers, source
from shards_testing import RunsShell, WritesMarker

from ckpt_formats import CheckpointDownloadError, CheckpointLoadError, get_registry
from ckpt_formats._terminal import printable
from ckpt_formats.errors import DeviceUnavailableError
from ckpt_formats.hub import fetch


def cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "ckpt_formats.cli", *map(str, args)], capture_output=True, text=True, **kwargs
    )


def one_line_error(out) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.startswith("ckpt-formats: error: ") and out.stderr.count("\n") == 1, out.stderr
    return out.stderr


# -- OS errors while reading a candidate ---------------------------------------------------------------

needs_proc_mem = pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc/self/mem")


@needs_proc_mem
@pytest.mark.parametrize("name", ["model.safetensors", "model.pth", "pytorch_model.bin"])
def test_an_input_output_error_names_the_file(tmp_path, registry, name):
    # /proc/self/mem is a regular file whose offset 0 is never mapped: reading it fails with EIO, for real
    path = tmp_path / name
    path.symlink_to("/proc/self/mem")
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    assert (
        text.startswith(f"{path}: cannot read it (Input/output error; errno {errno.EIO})")
        and "\n" not in text
    )
    assert "corrupt" not in text
    if name == "model.safetensors":  # and through the command line (once: each run imports torch)
        assert str(path) in one_line_error(cli("resolve", tmp_path, "--load"))


def _without_root_file_access() -> None:
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that even root gets EACCES."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # PR_CAPBSET_DROP: the capabilities are gone after exec
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_permission_denied_names_the_file(name):
    folder = Path(tempfile.mkdtemp(prefix="ckf-eacces-"))
    try:
        path = write_safetensors(folder / name) if name.endswith(".safetensors") else write_pth(folder / name)
        path.chmod(0)
        out = cli("resolve", folder, "--load", preexec_fn=_without_root_file_access)
        text = one_line_error(out)
        assert f"{path}: cannot read it (Permission denied; errno {errno.EACCES})" in text
    finally:
        shutil.rmtree(folder)


# -- an unavailable device is said to be one, never a corrupt file -------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("make", [write_safetensors, write_pth])
def test_cuda_without_a_usable_gpu_is_reported_as_such(tmp_path, registry, make):
    path = make(tmp_path / ("model.safetensors" if make is write_safetensors else "model.pth"))
    with pytest.raises(DeviceUnavailableError) as err:
        registry.resolve(tmp_path, device="cuda")
    why = (
        f"CUDA is not available in this torch build (torch {torch.__version__}, no CUDA)"
        if torch.version.cuda is None
        else f"CUDA is not available: no NVIDIA driver or GPU found (torch {torch.__version__}, built for "
        f"CUDA {torch.version.cuda})"
    )
    assert str(err.value) == (
        f"{path}: not loaded onto cuda: {why}. Choose another device (device='cpu'; command line: "
        "--device cpu)"
    )


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_usable_gpu_is_one_line_from_the_cli(tmp_path):
    write_safetensors(tmp_path / "model.safetensors")
    assert "CUDA is not available" in one_line_error(cli("resolve", tmp_path, "--load", "--device", "cuda"))


@pytest.mark.gpu
def test_a_cuda_index_past_the_last_gpu(tmp_path, registry):
    write_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(DeviceUnavailableError, match="cuda:99 does not exist: this machine has"):
        registry.resolve(tmp_path, device="cuda:99")
    assert registry.resolve(tmp_path, device="cuda:0").state_dict["encoder.weight"].is_cuda


def test_other_unusable_devices(tmp_path, registry):
    write_safetensors(tmp_path / "model.safetensors")
    with pytest.raises(DeviceUnavailableError) as err:
        registry.resolve(tmp_path, device="gpu0")
    assert str(err.value) == (
        f"{tmp_path / 'model.safetensors'}: not loaded onto gpu0: 'gpu0' is not a device torch knows "
        "(RuntimeError: Invalid device string: 'gpu0'); use cpu, cuda, cuda:N or mps. Choose another device "
        "(device='cpu'; command line: --device cpu)"
    )
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceUnavailableError, match="MPS .* is not available"):
            registry.resolve(tmp_path, device="mps")


# -- disk full is an OSError with ENOSPC ----------------------------------------------------------------


def test_fetch_disk_full_is_an_oserror_with_enospc(hub, cache, tmp_path):
    hub.add_repo(REPO, {ST: b"x" * 100})
    hub.size_override[ST] = 7 * 10**18  # more than any disk has free
    with pytest.raises(OSError) as err:  # what a caller that knows nothing of ckpt_formats catches
        fetch(source(hub, cache), tmp_path / "ckpt", get_registry().formats(names=["safetensors"]))
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, CheckpointDownloadError)
    assert str(err.value).startswith(f"not enough disk space for {ST}") and "\n" not in str(err.value)
    assert leftovers(tmp_path / "ckpt") == []


CONVERT_WITH_A_SIZE_LIMIT = """
import resource, signal, sys
from ckpt_formats.convert import convert
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))  # writes past 16 KiB fail, as on a full disk
try:
    convert(sys.argv[1], sys.argv[2])
except OSError as exc:
    print(type(exc).__name__, exc.errno, exc)
"""


@pytest.mark.slow
def test_convert_disk_full_is_an_oserror_with_enospc(tmp_path):
    src = write_pth(tmp_path / "big.pth", {"w": torch.zeros(64_000)})  # 256 KB of tensor data
    out = tmp_path / "out" / "big.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", CONVERT_WITH_A_SIZE_LIMIT, str(src), str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    kind, code, message = proc.stdout.strip().split(" ", 2)
    assert (kind, int(code)) == ("ConversionNoSpaceError", errno.ENOSPC)
    assert message.startswith(f"{out}: not enough disk space to write it")
    assert list(out.parent.iterdir()) == []  # no output, no temporary


# -- a refused pickle names what it refused ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, refused", [(RunsShell, "posix.system"), (WritesMarker, "io.open")], ids=["system", "open"]
)
@pytest.mark.slow
@pytest.mark.parametrize("container", ["zip", "raw-protocol-2"])
def test_a_refused_pickle_names_the_global_without_torchs_advice(
    tmp_path, registry, payload, refused, container
):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    if container == "zip":
        torch.save({"w": torch.ones(1), "x": payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"x": payload(marker)}, protocol=2))
    with pytest.raises(CheckpointLoadError) as err:
        registry.resolve(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{path}: refused to unpickle (refused global {refused})") and "\n" not in text
    assert "weights_only" not in text and "will likely succeed" not in text
    stderr = one_line_error(cli("resolve", tmp_path, "--load"))
    assert f"refused global {refused}" in stderr
    assert not marker.exists()


# -- library warnings: logged, shown with --verbose only ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [4, 5])
def test_torchs_protocol_warning_is_logged_not_printed(tmp_path, registry, caplog, protocol):
    marker = tmp_path / "pwned"
    (tmp_path / "model.pth").write_bytes(pickle.dumps({"x": RunsShell(marker)}, protocol=protocol))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="ckpt_formats"):
        warnings.simplefilter("always")
        with pytest.raises(CheckpointLoadError, match="refused to unpickle"):
            registry.resolve(tmp_path)
    assert caught == []
    assert any(f"Detected pickle protocol {protocol}" in r.getMessage() for r in caplog.records)
    assert not marker.exists()
    if protocol == 5:
        return  # the command line once (each run imports torch)
    quiet = one_line_error(cli("resolve", tmp_path, "--load"))
    assert "Warning" not in quiet and "Detected pickle protocol" not in quiet
    verbose = cli("--verbose", "resolve", tmp_path, "--load")
    assert verbose.returncode == 1 and f"Detected pickle protocol {protocol}" in verbose.stderr
    assert not marker.exists()


# -- nothing a file holds reaches the terminal raw ------------------------------------------------------

HOSTILE_TEXT = "\x1b[2J\x1b[Hall clear\nckpt-formats: error: forged line\r\x07\x9b31m\u202etxt.exe"


@pytest.mark.slow
def test_inspect_escapes_metadata_keys_and_values(tmp_path):
    path = write_safetensors(
        tmp_path / "model.safetensors", metadata={"note": HOSTILE_TEXT, "\x1b]0;title\x07": "v"}
    )
    out = cli("inspect", path, "--summary")
    assert out.returncode == 0, out.stderr
    assert not [c for c in out.stdout if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
    assert "\u202e" not in out.stdout
    lines = out.stdout.splitlines()
    metadata = [line for line in lines if line.startswith("metadata:")]
    assert len(metadata) == 2 and len(lines) == 8  # file, format, tensors, parameters, bytes, dtypes + 2
    assert (
        "\\x1b[2J\\x1b[Hall clear\\nckpt-formats: error: forged line\\r\\x07\\x9b31m\\u202etxt.exe"
        in out.stdout
    )
    data = json.loads(cli("inspect", path, "--json").stdout)  # JSON keeps the exact text, escaped by JSON
    assert data["metadata"]["note"] == HOSTILE_TEXT


@pytest.mark.slow
def test_file_names_with_control_characters_stay_on_one_line(tmp_path):
    sd = tiny_state_dict()
    write_safetensors(tmp_path / "a\x1b[31mred\nwinner: fake.safetensors", sd)
    write_pth(tmp_path / "model.pth", sd)
    out = cli("resolve", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    winner = [line for line in out.stdout.splitlines() if line.startswith("winner:")]
    assert len(winner) == 1 and "a\\x1b[31mred\\nwinner: fake.safetensors" in winner[0]

    verbose = cli("--verbose", "resolve", tmp_path, "--load")  # the log records name the files too
    assert verbose.returncode == 0, verbose.stderr
    assert "\x1b" not in verbose.stderr
    assert all(line.split(" ")[0] in ("DEBUG", "INFO", "WARNING") for line in verbose.stderr.splitlines())

    bad = tmp_path / "sub"
    bad.mkdir()
    broken = bad / "x\nckpt-formats: error: forged.pth"
    broken.write_bytes(b"\x80\x02garbage")
    assert "x\\nckpt-formats: error: forged.pth" in one_line_error(cli("inspect", broken))


def test_printable_escapes_every_control_character():
    assert printable("plain é ✓ text") == "plain é ✓ text"
    assert printable("a\tb\nc\rd\x00e\x7ff\x85g\u2028h\u202ei\udcff") == (
        "a\\tb\\nc\\rd\\x00e\\x7ff\\x85g\\u2028h\\u202ei\\udcff"
    )
    assert textwrap.dedent(printable(Path("/x/\x1b[2Jy"))) == "/x/\\x1b[2Jy"
