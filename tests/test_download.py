"""The download path with no internet: a CIFAR-10-format archive built from the shared images, served
by a loopback HTTP server inside the test, fetched by the default data resolution (cpu.yaml with its
../shared folders absent) end to end; and every way a fetch fails: checksum mismatch, a download that
breaks off, a truncated local archive, no network, a cache folder that is not the official files.
Each failure is one DownloadError (one `error:` line from the CLI) and leaves nothing in the cache."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.__main__ import main
from pipeline.run.spec_load import load_spec
from pipeline.train import download
from pipeline.train.data import load_splits
from pipeline.train.download import LOCK_NAME, Archive, DownloadError

REPO = Path(__file__).resolve().parents[1]
NAME = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
FILES = ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def tgz(cifar10_dir: Path) -> tuple[bytes, dict[str, str]]:
    """cifar-10-python.tar.gz in the official layout, from the shared lossless images; and each file's md5."""
    buffer, md5s = io.BytesIO(), {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in FILES:
            raw = (cifar10_dir / FOLDER / name).read_bytes()
            md5s[name] = _md5(raw)
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue(), md5s


class _Handler(http.server.BaseHTTPRequestHandler):
    """/cifar-10-python.tar.gz: the archive; /altered: one byte changed; /truncated: half of it, then the
    connection closes although Content-Length promised all of it."""

    body = b""
    requests: list[str] = []  # noqa: RUF012 (one server per test run)

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        body = self.body
        if self.path == "/altered":
            body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
        elif self.path not in ("/truncated", f"/{NAME}"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # torchvision's redirect probe closes early
            self.wfile.write(body[: len(body) // 2] if self.path == "/truncated" else body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tgz: tuple[bytes, dict[str, str]]) -> Iterator[str]:
    """http://127.0.0.1:<port>: loopback only."""
    _Handler.body = tgz[0]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def official(monkeypatch: pytest.MonkeyPatch, tgz: tuple[bytes, dict[str, str]], server: str) -> Archive:
    """Make the loopback archive 'the official one': its URL, its md5 and its files' md5s."""
    archive = Archive(f"{server}/{NAME}", NAME, _md5(tgz[0]), FOLDER, tgz[1])
    monkeypatch.setitem(download.ARCHIVES, "cifar10", archive)
    monkeypatch.delenv("NB201_DATA", raising=False)
    return archive


def _nothing_left(cache: Path) -> None:
    """A failed fetch leaves the cache as it found it: no dataset folder, no archive, no temp folder."""
    assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == [LOCK_NAME]


def _cpu_spec(tmp_path: Path, **sets: object):
    """configs/cpu.yaml as `make evaluate` reads it where ../shared does not exist."""
    overrides = {"data_dir": [str(tmp_path / "shared" / "cifar10"), str(tmp_path / "shared" / "jpeg")]}
    overrides |= {"download.cache": str(tmp_path / "cache"), **sets}
    return load_spec(REPO / "configs" / "cpu.yaml", overrides)


def _load(spec):
    """What the driver does before Ray starts (pipeline.sweep.orchestrate._prepare)."""
    return load_splits(
        spec.dataset,
        spec.data_dir,
        download=spec.download,
        max_train=spec.max_train,
        max_eval=spec.max_eval,
        image_size=spec.image_size,
    )


def test_default_resolution_fetches_verifies_and_reuses(
    tmp_path: Path, official: Archive, cifar10_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _cpu_spec(tmp_path)
    assert spec.download.url is None  # the default URL (here: the loopback server)
    _Handler.requests.clear()
    data = _load(spec)
    assert f"/{NAME}" in _Handler.requests and "reading the fetched copy" in capsys.readouterr().err
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted([LOCK_NAME, FOLDER])  # no archive, no temp folder
    assert all(download.md5_of(cache / FOLDER / n) == m for n, m in official.files.items())
    # the same images, bit for bit, as reading the shared folder itself (and so the same data fingerprint)
    direct = load_splits("cifar10", cifar10_dir, image_size=16)
    assert torch.equal(data.train_x, direct.train_x) and torch.equal(data.eval["test"][1], direct.eval["test"][1])
    assert data.fingerprint == direct.fingerprint and len(data.train_y) == 4000  # under max_train=14000
    # a second run reads the verified cache: no request at all
    _Handler.requests.clear()
    assert _load(spec).fingerprint == data.fingerprint and _Handler.requests == []
    # a smaller cap takes the fixed seeded subset, as on a full CIFAR-10
    capped = _load(_cpu_spec(tmp_path, max_train=1000, max_eval=300))
    assert (len(capped.train_y), len(capped.eval["test"][1])) == (1000, 300)


def test_mirror_and_local_archive(tmp_path: Path, official: Archive, server: str, tgz: tuple[bytes, dict]) -> None:
    _Handler.requests.clear()
    mirrored = _load(_cpu_spec(tmp_path / "m", **{"download.url": f"{server}/{NAME}"}))
    assert _Handler.requests  # fetched from the mirror
    local = tmp_path / NAME
    local.write_bytes(tgz[0])
    offline = _cpu_spec(tmp_path / "a", **{"download.archive": str(local), "download.url": "http://127.0.0.1:9/x"})
    _Handler.requests.clear()
    assert _load(offline).fingerprint == mirrored.fingerprint and _Handler.requests == []  # no network used
    assert local.is_file()  # the user's archive is read, never moved or deleted


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"download.url": "/altered"}, "checksum mismatch"),
        ({"download.url": "/truncated"}, r"checksum mismatch: .*/truncated gave 7,\d+,\d+ bytes .*broke off"),
        ({"download.url": "http://127.0.0.1:9/" + NAME}, "no network"),  # port 9 (discard): connection refused
        ({"download.url": "/missing"}, "HTTP 404"),
    ],
    ids=["checksum-mismatch", "truncated-download", "no-network", "not-found"],
)
def test_failed_fetch_is_one_error_and_leaves_nothing(
    tmp_path: Path, official: Archive, server: str, sets: dict[str, str], message: str
) -> None:
    sets = {k: (server + v if v.startswith("/") else v) for k, v in sets.items()}
    with pytest.raises(DownloadError, match=message) as raised:
        _load(_cpu_spec(tmp_path, **sets))
    assert "\n" not in str(raised.value) and ("download.url" in str(raised.value) or "Fix" in str(raised.value))
    _nothing_left(tmp_path / "cache")


def test_truncated_local_archive(tmp_path: Path, official: Archive, tgz: tuple[bytes, dict]) -> None:
    half = tmp_path / NAME
    half.write_bytes(tgz[0][: len(tgz[0]) // 2])
    with pytest.raises(DownloadError, match=r"checksum mismatch: download.archive .* \(truncated"):
        _load(_cpu_spec(tmp_path, **{"download.archive": str(half)}))
    _nothing_left(tmp_path / "cache")


def test_cli_prints_one_error_line_before_any_training(
    tmp_path: Path, official: Archive, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--config", str(REPO / "configs" / "cpu.yaml"), "--results-dir", str(tmp_path / "results")]
    argv += ["--set", f"data_dir=[{tmp_path / 'absent'}]", "--set", f"download.cache={tmp_path / 'cache'}"]
    (tmp_path / "results").mkdir()
    assert main([*argv, "--set", f"download.url={server}/truncated"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: checksum mismatch: ") and "download.url" in err[-1]
    assert not [line for line in err if line.startswith("Traceback")]
    _nothing_left(tmp_path / "cache")
    assert list((tmp_path / "results").iterdir()) == []  # nothing trained, no run folder
    # an explicit --data-dir that does not exist is an error, not a download
    assert main([*argv, "--data-dir", str(tmp_path / "typo")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "cache" / FOLDER).exists()


def test_a_cache_that_is_not_the_official_files_is_never_overwritten(tmp_path: Path, official: Archive) -> None:
    mine = tmp_path / "cache" / FOLDER
    mine.mkdir(parents=True)
    (mine / "data_batch_1").write_bytes(b"my own file")
    with pytest.raises(DownloadError, match="is not the official"):
        _load(_cpu_spec(tmp_path))
    assert (mine / "data_batch_1").read_bytes() == b"my own file"
