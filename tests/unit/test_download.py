"""Download machinery against a local HTTP server on 127.0.0.1, and the Kaggle error paths.

The server (threaded, HTTP/1.1, honours ``Range``) serves a good archive, a corrupt one
(checksum mismatch), an interrupted one (the first response is cut in half), malicious
archives (path traversal, absolute paths, links), and error statuses. Kaggle is faked:
no network, no real credentials.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from cellbench.config import DatasetConfig
from cellbench.datasets import download, get_dataset
from cellbench.datasets.base import ConvertedWriter
from PIL import Image

# --------------------------------------------------------------------------------------
# local server
# --------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((path, rng))
            srv.hits[path] = srv.hits.get(path, 0) + 1
            hit = srv.hits[path]
        mode = srv.modes.get(path, "normal")
        if mode == "error500" and hit <= 2:
            return self._status(500)
        data = srv.files.get(path)
        if data is None:
            return self._status(404)
        start = 0
        if rng and mode != "ignore_range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "cut_first" and hit == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        self.wfile.write(body)
        return None

    def _status(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.modes, httpd.requests, httpd.hits = {}, {}, [], {}
    httpd.lock = threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


GOOD = _zip_bytes({"dataset/a.txt": b"alpha" * 1000, "dataset/sub/b.bin": bytes(range(256)) * 400})


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------
# HTTP: good, corrupt, interrupted, resumed
# --------------------------------------------------------------------------------------


def test_good_archive_is_verified_and_extracted(server, tmp_path):
    server.files["/good.zip"] = GOOD
    dest = download.fetch(
        f"{server.url}/good.zip", tmp_path / "cache" / "good.zip", sha256=_sha(GOOD)
    )
    assert dest.read_bytes() == GOOD and not dest.with_name("good.zip.part").exists()
    raw = tmp_path / "raw"
    download.safe_extract(dest, raw)
    assert _listing(raw) == ["dataset", "dataset/a.txt", "dataset/sub", "dataset/sub/b.bin"]
    # a second fetch finds the verified file and does not download again
    download.fetch(f"{server.url}/good.zip", dest, sha256=_sha(GOOD))
    assert server.hits["/good.zip"] == 1


def test_corrupt_archive_raises_and_leaves_nothing(server, tmp_path):
    corrupt = bytearray(GOOD)
    corrupt[100] ^= 0xFF
    server.files["/corrupt.zip"] = bytes(corrupt)
    cache = tmp_path / "cache"
    with pytest.raises(download.ChecksumError, match="checksum mismatch.*deleted"):
        download.fetch(f"{server.url}/corrupt.zip", cache / "corrupt.zip", sha256=_sha(GOOD))
    assert _listing(cache) == []


def test_interrupted_download_is_resumed_with_range(server, tmp_path):
    server.files["/flaky.zip"] = GOOD
    server.modes["/flaky.zip"] = "cut_first"
    dest = download.fetch(
        f"{server.url}/flaky.zip", tmp_path / "flaky.zip", sha256=_sha(GOOD), backoff=0, timeout=5
    )
    assert dest.read_bytes() == GOOD
    (first, r1), (second, r2) = server.requests
    assert r1 is None and r2 == f"bytes={len(GOOD) // 2}-"


def test_part_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/big.zip"] = GOOD
    dest = tmp_path / "big.zip"
    dest.with_name("big.zip.part").write_bytes(GOOD[:1234])
    download.fetch(f"{server.url}/big.zip", dest, sha256=_sha(GOOD))
    assert dest.read_bytes() == GOOD
    assert server.requests == [("/big.zip", "bytes=1234-")]


def test_complete_part_file_is_accepted_after_416(server, tmp_path):
    server.files["/done.zip"] = GOOD
    dest = tmp_path / "done.zip"
    dest.with_name("done.zip.part").write_bytes(GOOD)
    download.fetch(f"{server.url}/done.zip", dest, sha256=_sha(GOOD))
    assert dest.read_bytes() == GOOD


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.files["/norange.zip"] = GOOD
    server.modes["/norange.zip"] = "ignore_range"
    dest = tmp_path / "norange.zip"
    dest.with_name("norange.zip.part").write_bytes(b"garbage" * 10)
    download.fetch(f"{server.url}/norange.zip", dest, sha256=_sha(GOOD))
    assert dest.read_bytes() == GOOD


def test_transient_server_errors_are_retried(server, tmp_path):
    server.files["/busy.zip"] = GOOD
    server.modes["/busy.zip"] = "error500"
    download.fetch(f"{server.url}/busy.zip", tmp_path / "busy.zip", sha256=_sha(GOOD), backoff=0)
    assert server.hits["/busy.zip"] == 3


def test_missing_file_is_not_retried(server, tmp_path):
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(f"{server.url}/nope.zip", tmp_path / "nope.zip", sha256="0" * 64, backoff=0)
    assert server.hits["/nope.zip"] == 1


def test_unknown_checksum_is_refused_unless_allowed(server, tmp_path, monkeypatch):
    server.files["/new.zip"] = GOOD
    dest = tmp_path / "new.zip"
    monkeypatch.delenv(download.ALLOW_UNVERIFIED_ENV, raising=False)
    with pytest.raises(download.ChecksumError, match=_sha(GOOD)):
        download.fetch(f"{server.url}/new.zip", dest, sha256=None)
    assert not dest.exists()
    monkeypatch.setenv(download.ALLOW_UNVERIFIED_ENV, "1")
    download.fetch(f"{server.url}/new.zip", dest, sha256=None)
    assert dest.read_bytes() == GOOD
    assert server.hits["/new.zip"] == 2  # the kept bytes were resumed, not downloaded again


# --------------------------------------------------------------------------------------
# Malicious archives
# --------------------------------------------------------------------------------------


def _zip_with_symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _tar_bytes(kind: str) -> bytes:
    buf = io.BytesIO()
    data = b"fine"
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = len(data)
        tf.addfile(ok, io.BytesIO(data))
        names = {"dotdot": "../evil.txt", "abs": "/tmp/evil.txt"}
        bad = tarfile.TarInfo(names.get(kind, "evil"))
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "ok.txt"
        elif kind == "device":
            bad.type = tarfile.CHRTYPE
        if bad.isfile():
            bad.size = len(data)
            tf.addfile(bad, io.BytesIO(data))
        else:
            tf.addfile(bad)
    return buf.getvalue()


MALICIOUS = {
    "zip_dotdot.zip": _zip_bytes({"ok.txt": b"fine", "../evil.txt": b"x"}),
    "zip_abs.zip": _zip_bytes({"ok.txt": b"fine", "/tmp/evil.txt": b"x"}),
    "zip_nested_dotdot.zip": _zip_bytes({"a/../../evil.txt": b"x"}),
    "zip_backslash.zip": _zip_bytes({"a\\..\\..\\evil.txt": b"x"}),
    "zip_symlink.zip": _zip_with_symlink(),
    "tar_dotdot.tar.gz": _tar_bytes("dotdot"),
    "tar_abs.tar.gz": _tar_bytes("abs"),
    "tar_symlink.tar.gz": _tar_bytes("symlink"),
    "tar_hardlink.tar.gz": _tar_bytes("hardlink"),
    "tar_device.tar.gz": _tar_bytes("device"),
}


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_malicious_archive_is_refused(server, tmp_path, name):
    data = MALICIOUS[name]
    server.files[f"/{name}"] = data
    archive = download.fetch(f"{server.url}/{name}", tmp_path / "cache" / name, sha256=_sha(data))
    target = tmp_path / "box" / "raw"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("already here")
    with pytest.raises(download.UnsafeArchiveError, match="refused"):
        download.safe_extract(archive, target)
    assert _listing(tmp_path / "box") == ["raw", "raw/keep.txt"]


# --------------------------------------------------------------------------------------
# Archive bombs: total size, entry count, free space, a full disk, forged headers
# --------------------------------------------------------------------------------------

BOMB_BYTES = 30_000_000  # zeros: a ZIP or TAR.GZ of a few tens of kB


def _zip_bomb(path: Path, n_bytes: int = BOMB_BYTES) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("small.txt", b"fine")
        with zf.open("zeros.bin", "w") as out:
            for _ in range(n_bytes // 1_000_000):
                out.write(bytes(1_000_000))
    return path


def _tar_bomb(path: Path, n_bytes: int = BOMB_BYTES) -> Path:
    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readinto(self, buffer) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

        def readable(self) -> bool:
            return True

    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = n_bytes
        tf.addfile(info, io.BufferedReader(Zeros(n_bytes)))
    return path


@pytest.fixture()
def box(tmp_path: Path) -> Path:
    """A raw folder that already holds a file: after a refusal it must hold only that."""
    target = tmp_path / "box" / "raw"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("already here")
    return target


@pytest.mark.parametrize("make", [_zip_bomb, _tar_bomb], ids=["zip", "tar.gz"])
def test_archive_bomb_is_refused_from_its_headers(tmp_path, box, monkeypatch, make):
    archive = make(tmp_path / ("bomb.zip" if make is _zip_bomb else "bomb.tar.gz"))
    assert archive.stat().st_size < 200_000  # a tiny download ...
    monkeypatch.setenv(download.MAX_EXTRACT_GB_ENV, "0.01")  # ... that unpacks to 30 MB
    written = []
    monkeypatch.setattr(download._Budget, "copy", lambda *a: written.append(a))
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: written.append(a))
    with pytest.raises(download.UnsafeArchiveError) as err:
        download.safe_extract(archive, box)
    text = str(err.value)
    assert str(archive) in text and "0.03 GB" in text and "0.01 GB" in text
    assert "zip bomb" in text and f"{download.MAX_EXTRACT_GB_ENV}=0.06)" in text
    assert written == []  # refused before anything was unpacked
    assert _listing(box.parent) == ["raw", "raw/keep.txt"]
    # a real dataset that large: raising the limit lets it through
    monkeypatch.undo()
    monkeypatch.setenv(download.MAX_EXTRACT_GB_ENV, "0.05")
    download.safe_extract(archive, box)
    assert (box / "zeros.bin").stat().st_size == BOMB_BYTES


def test_default_extract_limits_and_bad_settings(monkeypatch):
    monkeypatch.delenv(download.MAX_EXTRACT_GB_ENV, raising=False)
    monkeypatch.delenv(download.MAX_EXTRACT_FILES_ENV, raising=False)
    assert download.extract_limits() == (50_000_000_000, 200_000)
    monkeypatch.setenv(download.MAX_EXTRACT_GB_ENV, "lots")
    with pytest.raises(download.DownloadError, match="CELLBENCH_MAX_EXTRACT_GB='lots': not a"):
        download.extract_limits()
    monkeypatch.setenv(download.MAX_EXTRACT_GB_ENV, "2")
    monkeypatch.setenv(download.MAX_EXTRACT_FILES_ENV, "0")
    with pytest.raises(download.DownloadError, match="CELLBENCH_MAX_EXTRACT_FILES='0'"):
        download.extract_limits()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_too_many_entries_are_refused(tmp_path, box, monkeypatch, kind):
    entries = {f"d/f{i}.txt": b"x" for i in range(30)}
    if kind == "zip":
        archive = tmp_path / "many.zip"
        archive.write_bytes(_zip_bytes(entries))
    else:
        archive = tmp_path / "many.tar"
        with tarfile.open(archive, "w") as tf:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    monkeypatch.setenv(download.MAX_EXTRACT_FILES_ENV, "10")
    least = "at least 11" if kind == "tar" else "30"  # a TAR is read only up to the limit
    message = f"holds {least} entries, more than the 10"
    with pytest.raises(download.UnsafeArchiveError, match=message):
        download.safe_extract(archive, box)
    assert _listing(box.parent) == ["raw", "raw/keep.txt"]


def test_archive_larger_than_the_free_space_is_refused(tmp_path, box, monkeypatch):
    archive = tmp_path / "good.zip"
    archive.write_bytes(GOOD)
    usage = download.shutil.disk_usage(box)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(download.DownloadError, match=r"unpacks to .* has 1000 bytes free"):
        download.safe_extract(archive, box)
    assert _listing(box.parent) == ["raw", "raw/keep.txt"]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_disk_full_while_unpacking_names_the_archive_and_leaves_nothing(
    tmp_path, box, monkeypatch, kind
):
    import errno

    archive = tmp_path / f"good.{kind}"
    if kind == "zip":
        archive.write_bytes(GOOD)
    else:
        with tarfile.open(archive, "w") as tf:
            tf.add(download.__file__, arcname="dataset/a.py")
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and ".extract-" in str(path):
            handle.write(b"partial")
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return handle

    monkeypatch.setattr("builtins.open", full_disk_open)
    monkeypatch.setattr(tarfile, "bltn_open", full_disk_open, raising=False)
    with pytest.raises(download.DownloadError) as err:
        download.safe_extract(archive, box)
    assert str(archive) in str(err.value) and "the disk is full" in str(err.value)
    assert _listing(box.parent) == ["raw", "raw/keep.txt"]


def test_forged_or_damaged_entries_are_refused(tmp_path, box, monkeypatch):
    # an entry whose central-directory size is forged (10 bytes for 1 MB): stopped at 10
    # bytes, then refused as damaged, never a traceback
    data = bytearray(_zip_bytes({"zeros.bin": bytes(1_000_000)}))
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    forged = tmp_path / "forged.zip"
    forged.write_bytes(bytes(data))
    with pytest.raises(download.DownloadError, match="damaged archive"):
        download.safe_extract(forged, box)
    assert _listing(box.parent) == ["raw", "raw/keep.txt"]
    # should a reader ever hand out more than the header says, the count stops it: per
    # entry at its declared size, and over all entries at the limit
    budget = download._Budget(forged)
    with pytest.raises(download.UnsafeArchiveError, match="more than the 1,000 bytes its header"):
        budget.copy(io.BytesIO(bytes(5000)), io.BytesIO(), "zeros.bin", 1000)
    monkeypatch.setenv(download.MAX_EXTRACT_GB_ENV, "0.000002")  # 2000 bytes
    budget, out = download._Budget(forged), io.BytesIO()
    budget.copy(io.BytesIO(bytes(1500)), out, "a", 1500)
    with pytest.raises(download.UnsafeArchiveError, match="unpacks to more than 2e-06 GB"):
        budget.copy(io.BytesIO(bytes(1500)), out, "b", 1500)
    assert len(out.getvalue()) == 1500  # the chunk past the limit was never written
    monkeypatch.delenv(download.MAX_EXTRACT_GB_ENV)
    # a truncated TAR.GZ
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(_tar_bomb(tmp_path / "t.tar.gz", 2_000_000).read_bytes()[:800])
    with pytest.raises(download.DownloadError, match="damaged archive|neither a ZIP nor a TAR"):
        download.safe_extract(cut, box)
    assert _listing(box.parent) == ["raw", "raw/keep.txt"]


def test_a_refused_archive_leaves_no_new_target_folder(tmp_path, monkeypatch):
    archive = _zip_bomb(tmp_path / "bomb.zip", 3_000_000)
    monkeypatch.setenv(download.MAX_EXTRACT_GB_ENV, "0.001")
    with pytest.raises(download.UnsafeArchiveError):
        download.safe_extract(archive, tmp_path / "new" / "raw")
    assert not (tmp_path / "new" / "raw").exists()


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"not an archive")
    with pytest.raises(download.DownloadError, match="neither a ZIP nor a TAR"):
        download.safe_extract(path, tmp_path / "out")


# --------------------------------------------------------------------------------------
# A source end to end: checksums.yaml -> cache -> raw -> convert
# --------------------------------------------------------------------------------------


def test_bbbc039_download_and_convert_from_local_server(server, tmp_path, monkeypatch):
    shape = (20, 24)
    rng = np.random.default_rng(0)
    img = io.BytesIO()
    tifffile.imwrite(img, rng.integers(100, 4000, shape, dtype=np.uint16))
    mask = np.zeros((*shape, 4), np.uint8)
    mask[..., 3] = 255
    mask[2:8, 2:8, 0], mask[2:8, 8:14, 0], mask[12:18, 2:8, 0] = 1, 2, 1
    png = io.BytesIO()
    Image.fromarray(mask).save(png, format="PNG")
    stem = "IXMtest_A01_s1_w1ABC"
    archives = {
        "images.zip": _zip_bytes({f"images/{stem}.tif": img.getvalue()}),
        "masks.zip": _zip_bytes({f"masks/{stem}.png": png.getvalue()}),
        "metadata.zip": _zip_bytes({"metadata/test.txt": f"{stem}.png\n".encode()}),
    }
    table = {"bbbc039": {}}
    for name, data in archives.items():
        server.files[f"/bbbc/{name}"] = data
        table["bbbc039"][name] = {"url": f"{server.url}/bbbc/{name}", "sha256": _sha(data)}
    checksums = tmp_path / "checksums.yaml"
    checksums.write_text(yaml.safe_dump(table))
    monkeypatch.setattr(download, "CHECKSUMS_FILE", checksums)
    monkeypatch.setenv("CELLBENCH_DOWNLOAD_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "data" / "raw" / "bbbc039"
    raw.mkdir(parents=True)
    source = get_dataset(DatasetConfig(name="bbbc039", kind="bbbc039"))
    source.download(raw)
    assert sorted((tmp_path / "cache" / "bbbc039").iterdir()) == sorted(
        tmp_path / "cache" / "bbbc039" / n for n in archives
    )
    writer = ConvertedWriter(tmp_path / "out")
    source.convert(raw, writer)
    index = writer.finish()
    row = index.iloc[0]
    assert row["n_instances"] == 3 and row["official_split"] == "test" and row["group"] == "A01"


def test_checksums_file_lists_every_http_source():
    table = yaml.safe_load(download.CHECKSUMS_FILE.read_text())
    for key in (
        "ctc",
        "bbbc039",
        "bbbc009",
        "bbbc007",
        "bbbc018",
        "bbbc041",
        "livecell",
        "monuseg",
    ):
        assert table[key], key
        for name, entry in table[key].items():
            assert entry["url"].startswith("https://"), name
            assert entry["sha256"] is None or len(entry["sha256"]) == 64, name
    assert "DIC-C2DH-HeLa.zip" in table["ctc"]


# --------------------------------------------------------------------------------------
# Kaggle
# --------------------------------------------------------------------------------------

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture()
def no_kaggle_env(monkeypatch, tmp_path):
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


class _HTTPError(Exception):
    def __init__(self, status, text=""):
        super().__init__(text or f"{status} Client Error")
        self.response = type("R", (), {"status_code": status})()


class _FakeApi:
    def __init__(self, error=None, bundle: bytes | None = None):
        self.error, self.bundle, self.calls = error, bundle, []

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.calls.append(competition)
        if self.error:
            raise self.error
        Path(path, f"{competition}.zip").write_bytes(self.bundle)


def test_kaggle_missing_credentials_says_where_the_token_goes(no_kaggle_env, tmp_path):
    with pytest.raises(download.KaggleSetupError) as err:
        download.kaggle_download("data-science-bowl-2018", tmp_path / "c", api_factory=_FakeApi)
    msg = str(err.value)
    assert "kaggle.json" in msg and str(no_kaggle_env / ".kaggle" / "kaggle.json") in msg
    assert (
        "KAGGLE_USERNAME" in msg and "https://www.kaggle.com/settings" in msg and "chmod 600" in msg
    )


def test_kaggle_json_without_key(no_kaggle_env, tmp_path):
    (no_kaggle_env / ".kaggle").mkdir()
    (no_kaggle_env / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "me"}))
    with pytest.raises(download.KaggleSetupError, match="lacks 'username' and 'key'"):
        download.kaggle_download("x", tmp_path / "c", api_factory=_FakeApi)


@pytest.mark.parametrize("via", ["env", "file"])
def test_kaggle_rules_not_accepted_names_the_page_and_hides_the_key(
    no_kaggle_env, tmp_path, monkeypatch, caplog, capsys, via
):
    if via == "env":
        monkeypatch.setenv("KAGGLE_USERNAME", "someone")
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    else:
        (no_kaggle_env / ".kaggle").mkdir()
        (no_kaggle_env / ".kaggle" / "kaggle.json").write_text(
            json.dumps({"username": "someone", "key": SECRET})
        )
    caplog.set_level(logging.DEBUG)
    api = _FakeApi(error=_HTTPError(403, f"403 Forbidden key={SECRET}"))
    with pytest.raises(download.KaggleSetupError) as err:
        download.kaggle_download(
            "sartorius-cell-instance-segmentation", tmp_path / "c", api_factory=lambda: api
        )
    msg = str(err.value)
    assert "https://www.kaggle.com/competitions/sartorius-cell-instance-segmentation/rules" in msg
    assert "I Understand and Accept" in msg
    out = capsys.readouterr()
    for text in (
        msg,
        caplog.text,
        out.out,
        out.err,
        repr(err.value.__cause__),
        repr(err.value.__context__),
    ):
        assert SECRET not in text


def test_kaggle_invalid_token_and_other_errors(no_kaggle_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    with pytest.raises(download.KaggleSetupError, match="HTTP 401"):
        download.kaggle_download("c", tmp_path / "c", api_factory=lambda: _FakeApi(_HTTPError(401)))
    with pytest.raises(download.DownloadError) as err:
        download.kaggle_download(
            "c", tmp_path / "c", api_factory=lambda: _FakeApi(RuntimeError(f"boom {SECRET}"))
        )
    assert SECRET not in str(err.value) and "***" in str(err.value)


def test_kaggle_dsb_bundle_is_unpacked_and_converted(no_kaggle_env, tmp_path, monkeypatch):
    """The Kaggle bundle holds one ZIP per file; they are unpacked into the DSB layout."""
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    shape = (8, 10)
    image = np.zeros((*shape, 4), np.uint8)
    image[..., 3] = 255
    image[2:5, 2:5, :3] = 200
    mask = np.zeros(shape, np.uint8)
    mask[2:5, 2:5] = 255

    def png(arr):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue()

    iid, tid = "a" * 64, "b" * 64
    train = _zip_bytes({f"{iid}/images/{iid}.png": png(image), f"{iid}/masks/m1.png": png(mask)})
    test = _zip_bytes({f"{tid}/images/{tid}.png": png(image[..., :3])})
    solution = _zip_bytes(
        {
            "stage1_solution.csv": f"ImageId,EncodedPixels,Height,Width,Usage\n{tid},19 3 27 3 35 3,8,10,Public\n".encode()
        }
    )
    bundle = _zip_bytes(
        {"stage1_train.zip": train, "stage1_test.zip": test, "stage1_solution.csv.zip": solution}
    )
    api = _FakeApi(bundle=bundle)
    monkeypatch.setattr(download, "_make_kaggle_api", lambda: api)
    monkeypatch.setenv("CELLBENCH_DOWNLOAD_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "raw" / "dsb"
    raw.mkdir(parents=True)
    source = get_dataset(DatasetConfig(name="dsb", kind="dsb2018"))
    source.download(raw)
    assert api.calls == ["data-science-bowl-2018"]
    assert (raw / "stage1_train" / iid / "masks" / "m1.png").is_file()
    assert (raw / "stage1_solution.csv").is_file() and not list(raw.glob("*.zip"))
    writer = ConvertedWriter(tmp_path / "out")
    source.convert(raw, writer)
    index = writer.finish().set_index("id")
    assert index.loc[iid, "n_instances"] == 1 and index.loc[tid, "official_split"] == "test"
    assert index.loc[iid, "channels"] == 3  # alpha dropped


def _offline_error() -> Exception:
    """What the real client raises without a network: requests' ConnectionError wrapping
    urllib3's MaxRetryError(NameResolutionError), with the key in the request text."""
    requests = pytest.importorskip("requests")
    urllib3 = pytest.importorskip("urllib3")
    conn = urllib3.connection.HTTPSConnection("api.kaggle.com", 443)
    cause = urllib3.exceptions.NameResolutionError(
        "api.kaggle.com", conn, socket.gaierror(-2, "Name or service not known")
    )
    retries = urllib3.exceptions.MaxRetryError(None, f"/v1/download?key={SECRET}", cause)
    return requests.exceptions.ConnectionError(retries)


@pytest.mark.parametrize(
    "error",
    [
        "requests",
        socket.gaierror(-3, "Temporary failure in name resolution"),
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=["requests", "gaierror", "timeout", "refused"],
)
def test_kaggle_offline_says_cannot_reach_and_how_to_download_by_hand(
    no_kaggle_env, tmp_path, monkeypatch, error
):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    error = _offline_error() if error == "requests" else error
    with pytest.raises(download.DownloadError) as err:
        download.kaggle_download(
            "data-science-bowl-2018", tmp_path / "c", api_factory=lambda: _FakeApi(error)
        )
    msg = str(err.value)
    assert msg.startswith("this machine cannot reach Kaggle")
    assert "on a machine with internet access" in msg
    assert "kaggle competitions download -c data-science-bowl-2018" in msg
    assert "'source: local' and 'path: <that folder>'" in msg
    assert SECRET not in msg and err.value.__context__ is None
    assert not isinstance(err.value, download.KaggleSetupError)


def test_kaggle_other_failures_are_not_called_offline(no_kaggle_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    with pytest.raises(download.DownloadError) as err:
        download.kaggle_download(
            "c", tmp_path / "c", api_factory=lambda: _FakeApi(OSError(28, "No space left"))
        )
    assert "cannot reach" not in str(err.value) and "No space left" in str(err.value)
    with pytest.raises(download.DownloadError) as err:  # an HTTP status is not "offline"
        download.kaggle_download("c", tmp_path / "c", api_factory=lambda: _FakeApi(_HTTPError(404)))
    assert "HTTP 404" in str(err.value) and "cannot reach" not in str(err.value)


def _params_with(tmp_path: Path, datasets: dict) -> Path:
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    params["datasets"].update(datasets)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_cli_download_offline_prints_the_message_not_a_traceback(
    no_kaggle_env, tmp_path, monkeypatch, capsys
):
    from cellbench.cli import main

    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setenv("CELLBENCH_DOWNLOAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CELLBENCH_DEBUG", raising=False)
    monkeypatch.setattr(download, "_make_kaggle_api", lambda: _FakeApi(_offline_error()))
    params = _params_with(tmp_path, {"dsb": {"kind": "dsb2018", "source": "download"}})
    out = tmp_path / "data" / "raw" / "dsb"
    code = main(["download", "--params", str(params), "--dataset", "dsb", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cellbench download: error: this machine cannot reach Kaggle" in err
    assert SECRET not in err and not out.exists()


def test_cli_convert_local_dataset_without_download(tmp_path, capsys):
    """`cellbench convert` on a `source: local` dataset reads `path:` (no download first)."""
    data = tmp_path / "mydata"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    labels = np.zeros((8, 8), np.uint16)
    labels[1:4, 1:4], labels[5:8, 5:8] = 1, 2
    tifffile.imwrite(data / "images" / "a.tif", np.ones((8, 8), np.uint8))
    tifffile.imwrite(data / "labels" / "a.tif", labels)
    params = _params_with(
        tmp_path, {"mine": {"kind": "folder", "source": "local", "path": str(data)}}
    )
    from cellbench.cli import main

    args = ["convert", "--params", str(params), "--dataset", "mine"]
    raw, out = tmp_path / "data" / "raw" / "mine", tmp_path / "data" / "converted" / "mine"
    assert main([*args, "--raw", str(raw), "--out", str(out)]) == 0
    assert "1 images, 2 instances" in capsys.readouterr().out
    missing = _params_with(
        tmp_path, {"mine": {"kind": "folder", "source": "local", "path": str(tmp_path / "gone")}}
    )
    code = main(
        [
            "convert",
            "--params",
            str(missing),
            "--dataset",
            "mine",
            "--raw",
            str(raw),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "datasets.mine.path" in err and "is not a folder" in err
