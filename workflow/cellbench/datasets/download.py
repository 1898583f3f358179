"""Fetching original dataset files: HTTP downloads, Kaggle competitions, safe extraction.

HTTP (:func:`fetch`)
    Streams the file with a progress bar into ``<name>.part`` next to the target,
    retries transient failures (connection errors, time-outs, HTTP 5xx/408/429) with
    exponential back-off, resumes a ``.part`` left by an interrupted attempt or an
    earlier run with an HTTP ``Range`` request, checks the SHA-256 against the value
    stored in the project (``datasets/checksums.yaml``), and only then moves the file
    into place with :func:`os.replace`. A checksum mismatch deletes the partial file
    and raises :class:`ChecksumError`: nothing is left behind.

Archives (:func:`safe_extract`)
    ZIP and TAR archives are checked *before* anything is written: entries with an
    absolute path, a ``..`` component, a drive letter, symbolic or hard links, or
    device/FIFO entries are refused with :class:`UnsafeArchiveError`. So is an archive
    that unpacks to more than ``CELLBENCH_MAX_EXTRACT_GB`` (default 50 GB) or more
    than ``CELLBENCH_MAX_EXTRACT_FILES`` entries (default 200,000), counted from its
    headers before anything is written (a zip bomb), or one that needs more space than
    the disk has free. While a ZIP is unpacked the bytes written are counted again, so
    an entry that unpacks to more than its header says is stopped. Extraction goes to
    a temporary folder inside the target which is moved into place on success; on any
    error (a full disk included) it is removed and nothing partial is left.

Kaggle (:func:`kaggle_download`)
    Uses the official ``kaggle`` package. Missing credentials and competition rules
    that were not accepted stop with :class:`KaggleSetupError`, whose message says
    where the token goes or which page to accept. A machine that cannot reach Kaggle
    (offline, DNS failure, firewall, proxy, time-out) stops with :class:`DownloadError`
    saying so, and how to download by hand and use ``source: local``. Credentials are never printed,
    logged or copied: messages only name files and environment variables, and any
    text coming back from the Kaggle library is scrubbed of the key first.

Downloaded archives are kept in a cache folder (``data/raw/.downloads/`` by default,
``CELLBENCH_DOWNLOAD_CACHE`` to move it) so that an interrupted download resumes and a
re-conversion does not download again; delete it to reclaim the space.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cellbench.io import CellbenchIOError, disk_full_error, size_text

__all__ = [
    "CHECKSUMS_FILE",
    "ChecksumError",
    "DEFAULT_MAX_EXTRACT_FILES",
    "DEFAULT_MAX_EXTRACT_GB",
    "DownloadError",
    "KaggleSetupError",
    "MAX_EXTRACT_FILES_ENV",
    "MAX_EXTRACT_GB_ENV",
    "RemoteFile",
    "UnsafeArchiveError",
    "cache_dir",
    "extract_limits",
    "extract_nested_zips",
    "fetch",
    "fetch_and_extract",
    "find_kaggle_credentials",
    "kaggle_download",
    "remote_files",
    "safe_extract",
    "sha256_file",
]

log = logging.getLogger(__name__)

#: Where the project stores the expected SHA-256 of every file it downloads over HTTP.
CHECKSUMS_FILE = Path(__file__).with_name("checksums.yaml")

#: Set to 1 to accept a download whose checksum the project does not know yet.
ALLOW_UNVERIFIED_ENV = "CELLBENCH_ALLOW_UNVERIFIED"

#: Largest total an archive may unpack to (GB, 10**9 bytes); raise it for a larger dataset.
MAX_EXTRACT_GB_ENV = "CELLBENCH_MAX_EXTRACT_GB"
#: Most entries (files and folders) an archive may hold; raise it for a larger dataset.
MAX_EXTRACT_FILES_ENV = "CELLBENCH_MAX_EXTRACT_FILES"
#: Defaults: several times the largest dataset cellbench downloads (CTC BF-C2DL-HSC,
#: about 7 GB unpacked; DSB 2018, about 30,000 files).
DEFAULT_MAX_EXTRACT_GB = 50.0
DEFAULT_MAX_EXTRACT_FILES = 200_000

_USER_AGENT = "cellbench-downloader/0.1 (+https://github.com/)"


class DownloadError(CellbenchIOError, RuntimeError):
    """A download failed; the message says what happened and what to do.

    A :class:`~cellbench.io.CellbenchIOError` (a file could not be obtained), so the
    command line prints the message instead of a traceback.
    """


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the checksum stored in the project."""


class UnsafeArchiveError(DownloadError):
    """An archive holds entries that would escape the target folder or are links, or it
    unpacks to more bytes or entries than the extraction limits allow."""


class KaggleSetupError(DownloadError):
    """Kaggle credentials are missing/invalid or the competition rules are not accepted."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch over HTTP.

    Attributes
    ----------
    url : where to get it.
    filename : the local file name (in the download cache).
    sha256 : expected SHA-256 (lower-case hex), or ``None`` when the project does not
        know it yet (then the download is refused unless ``CELLBENCH_ALLOW_UNVERIFIED=1``).
    size : expected size in bytes, if known (used for the progress bar only).
    extract : whether the file is an archive to unpack into the raw folder.
    """

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = True


# --------------------------------------------------------------------------------------
# checksums.yaml
# --------------------------------------------------------------------------------------


def _load_checksums() -> dict[str, Any]:
    try:
        data = yaml.safe_load(CHECKSUMS_FILE.read_text())
    except FileNotFoundError as exc:
        raise DownloadError(
            f"{CHECKSUMS_FILE} is missing from the installed package; reinstall cellbench "
            "(it must ship datasets/checksums.yaml)."
        ) from exc
    return data or {}


def remote_files(key: str, names: Iterable[str] | None = None) -> list[RemoteFile]:
    """The files listed for ``key`` in ``checksums.yaml`` (optionally only ``names``).

    Raises
    ------
    KeyError
        When ``key`` or one of ``names`` is not listed, naming the valid ones.
    """
    table = _load_checksums()
    if key not in table:
        raise KeyError(f"no download entry '{key}' in {CHECKSUMS_FILE}; known: {sorted(table)}")
    entries = table[key]
    wanted = list(entries) if names is None else list(names)
    files = []
    for name in wanted:
        if name not in entries:
            raise KeyError(f"'{name}' is not listed under '{key}' in {CHECKSUMS_FILE}")
        entry = entries[name] or {}
        files.append(
            RemoteFile(
                url=entry["url"],
                filename=name,
                sha256=(entry.get("sha256") or None),
                size=entry.get("size"),
                extract=entry.get("extract", True),
            )
        )
    return files


def cache_dir(raw_dir: Path) -> Path:
    """Folder that keeps downloaded archives (``CELLBENCH_DOWNLOAD_CACHE`` or ``<raw>/../.downloads``)."""
    env = os.environ.get("CELLBENCH_DOWNLOAD_CACHE")
    path = Path(env) if env else Path(raw_dir).resolve().parent / ".downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth retrying."""


def _allow_unverified() -> bool:
    return os.environ.get(ALLOW_UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes")


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    opener: Callable[..., Any] | None = None,
) -> Path:
    """Download ``url`` to ``dest``: streamed, retried, resumable, verified, atomic.

    Parameters
    ----------
    url : HTTP(S) address.
    dest : final path; the partial download lives in ``dest + ".part"`` until verified.
    sha256 : expected checksum. ``None`` (unknown to the project) is refused after the
        download unless ``CELLBENCH_ALLOW_UNVERIFIED=1``; the message prints the
        checksum to add to ``checksums.yaml``.
    size : expected size in bytes, for the progress bar when the server sends none.
    retries : extra attempts after the first for transient failures; every attempt
        resumes from the bytes already on disk.
    backoff : seconds before the first retry, doubled after each.
    timeout : socket time-out per attempt, in seconds.
    opener : ``urllib.request.urlopen``-like callable (tests).

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    ChecksumError
        The bytes do not match ``sha256`` (the partial file is deleted).
    DownloadError
        The server refused the request, or every retry failed (the ``.part`` file is
        kept so that the next run resumes).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    if dest.is_file():
        if expected is None or sha256_file(dest) == expected:
            log.info("%s: already downloaded", dest.name)
            return dest
        log.warning("%s exists but its checksum differs; downloading again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    opener = opener or urllib.request.urlopen
    last_error: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                "%s: attempt %d failed (%s); retrying in %.1f s",
                dest.name,
                attempt,
                last_error,
                delay,
            )
            time.sleep(delay)
        try:
            _fetch_once(url, part, size, timeout, chunk_size, progress, opener)
            break
        except _Retryable as exc:
            last_error = exc.__cause__ or exc
    else:
        raise DownloadError(
            f"downloading {url} failed after {retries + 1} attempts ({last_error}). The "
            f"partial file {part} is kept; re-run to resume, or check the network / URL."
        )
    actual = sha256_file(part)
    if expected is None:
        if not _allow_unverified():
            raise ChecksumError(
                f"{url}: the project stores no checksum for {dest.name}, so the download "
                f"cannot be verified (its sha256 is {actual}; the bytes are kept in {part}). "
                f"Check this value against the data provider, add it to {CHECKSUMS_FILE}, "
                f"and re-run; or set {ALLOW_UNVERIFIED_ENV}=1 to accept it unverified."
            )
        log.warning("%s: accepted WITHOUT verification (sha256 %s)", dest.name, actual)
    elif actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url}: checksum mismatch for {dest.name} (expected sha256 {expected}, got "
            f"{actual}); the corrupt download was deleted. Re-run to download again; if it "
            "keeps failing the file on the server changed: check it with the data provider "
            f"before updating {CHECKSUMS_FILE}."
        )
    os.replace(part, dest)
    return dest


def _fetch_once(
    url: str,
    part: Path,
    size: int | None,
    timeout: float,
    chunk_size: int,
    progress: bool,
    opener: Callable[..., Any],
) -> None:
    """One attempt: resume ``part`` from its current length. Raises ``_Retryable``."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Range not satisfiable: the .part is already complete (or longer than the
            # file). Let the checksum decide; a wrong file is deleted there.
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            if total is None or total == have:
                return
            part.unlink(missing_ok=True)
            raise _Retryable("the partial file is longer than the remote file") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code}") from exc
        raise DownloadError(
            f"{url}: the server answered HTTP {exc.code} ({exc.reason}). Check the URL in "
            f"{CHECKSUMS_FILE}; if the provider moved the file, download it by hand and use "
            "'source: local' with 'path:' in params.yaml."
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(str(exc)) from exc
    with contextlib.closing(response):
        status = getattr(response, "status", 200)
        if have and status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
        else:
            if have:
                log.info("%s: server ignored the resume request; starting over", part.name)
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = have + remaining if remaining is not None else size
        received = 0
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name[: -len(".part")],
            disable=not progress,
            mininterval=0.5,
        )
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (TimeoutError, OSError, http.client.HTTPException) as exc:
                        raise _Retryable(f"connection lost after {have + received} bytes") from exc
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        if remaining is not None and received < remaining:
            raise _Retryable(f"connection closed after {have + received} of {total} bytes")


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str) -> int | None:
    # "bytes */200"
    try:
        total = value.rsplit("/", 1)[1]
        return int(total) if total != "*" else None
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: entry name contains a NUL byte; refused")
    norm = name.replace("\\", "/")
    path = PurePosixPath(norm)
    if norm.startswith("/") or path.is_absolute():
        raise UnsafeArchiveError(f"{archive}: entry '{name}' has an absolute path; refused")
    if len(norm) >= 2 and norm[1] == ":":
        raise UnsafeArchiveError(f"{archive}: entry '{name}' has a drive letter; refused")
    if any(part == ".." for part in path.parts):
        raise UnsafeArchiveError(f"{archive}: entry '{name}' escapes the target folder; refused")
    return path


def extract_limits() -> tuple[int, int]:
    """The largest total (bytes) and the most entries one archive may unpack to.

    From ``CELLBENCH_MAX_EXTRACT_GB`` (GB, 10**9 bytes; default
    :data:`DEFAULT_MAX_EXTRACT_GB`) and ``CELLBENCH_MAX_EXTRACT_FILES`` (default
    :data:`DEFAULT_MAX_EXTRACT_FILES`).

    Raises
    ------
    DownloadError
        A variable is set to something other than a positive number.
    """
    limits = []
    for env, default, kind in (
        (MAX_EXTRACT_GB_ENV, DEFAULT_MAX_EXTRACT_GB, float),
        (MAX_EXTRACT_FILES_ENV, DEFAULT_MAX_EXTRACT_FILES, int),
    ):
        text = os.environ.get(env, "").strip()
        try:
            value = kind(text) if text else default
        except ValueError:
            value = -1
        if not value > 0:
            example = "100" if kind is float else "500000"
            raise DownloadError(f"{env}={text!r}: not a positive number; e.g. {env}={example}")
        limits.append(value)
    return int(limits[0] * 1e9), int(limits[1])


def _gb(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.3g} GB"


def _check_totals(
    archive: Path, target: Path, n_entries: int, n_bytes: int, *, partial: bool = False
) -> None:
    """Refuse, before anything is written, an archive beyond the limits or the free space.

    ``partial``: the counts are those read so far (a TAR is not read to its end).
    """
    max_bytes, max_entries = extract_limits()
    least = "at least " if partial else ""
    fix = (
        "A zip bomb looks like this; nothing was extracted. If this really is the dataset, "
        "set {env} to a larger value (e.g. {env}={value}) and run again."
    )
    if n_entries > max_entries:
        raise UnsafeArchiveError(
            f"{archive}: holds {least}{n_entries:,} entries, more than the {max_entries:,} "
            f"cellbench unpacks from one archive ({MAX_EXTRACT_FILES_ENV}). "
            + fix.format(env=MAX_EXTRACT_FILES_ENV, value=2 * n_entries)
        )
    if n_bytes > max_bytes:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to {least}{_gb(n_bytes)} ({archive.stat().st_size:,} bytes "
            f"packed, counted from its headers), more than the {_gb(max_bytes)} cellbench "
            f"unpacks from one archive ({MAX_EXTRACT_GB_ENV}). "
            + fix.format(env=MAX_EXTRACT_GB_ENV, value=f"{2 * n_bytes / 1e9:.3g}")
        )
    try:
        free = shutil.disk_usage(target).free
    except OSError:
        return
    if n_bytes > free:
        raise DownloadError(
            f"{archive}: unpacks to {size_text(n_bytes)} but the disk holding {target} has "
            f"{size_text(free)} free; nothing was extracted. Free some space, or move the "
            "data folder to a larger disk, and run again."
        )


#: What the archive modules raise for damaged data (a forged size ends as a bad CRC).
_DAMAGED = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


class _Budget:
    """Bytes written while unpacking one archive, checked against its headers and the limit."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.limit = extract_limits()[0]
        self.written = 0

    def copy(self, src: Any, dst: Any, name: str, declared: int) -> None:
        """Copy one entry, stopping as soon as it exceeds its declared size or the limit."""
        done = 0
        while chunk := src.read(1 << 20):
            done += len(chunk)
            self.written += len(chunk)
            if done > declared:
                raise UnsafeArchiveError(
                    f"{self.archive}: entry '{name}' unpacks to more than the {declared:,} "
                    "bytes its header declares (a forged header, as in a zip bomb); refused, "
                    "nothing was extracted"
                )
            if self.written > self.limit:
                raise UnsafeArchiveError(
                    f"{self.archive}: unpacks to more than {_gb(self.limit)} "
                    f"({MAX_EXTRACT_GB_ENV}); refused, nothing was extracted"
                )
            dst.write(chunk)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = []
    for info in zf.infolist():
        _check_member_name(info.filename, archive)
        kind = stat.S_IFMT((info.external_attr >> 16) & 0xFFFF)
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(
                f"{archive}: entry '{info.filename}' is a symbolic link; refused"
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(
                f"{archive}: entry '{info.filename}' is not a plain file; refused"
            )
        members.append(info)
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """The entries, checked; read one by one so that a bomb is stopped at the limits.

    A TAR entry's header size is exactly what extraction writes (tarfile copies that
    many bytes), so the running totals here bound what is written.
    """
    max_bytes, max_entries = extract_limits()
    members, total = [], 0
    for info in tf:
        _check_member_name(info.name, archive)
        if info.issym() or info.islnk():
            raise UnsafeArchiveError(f"{archive}: entry '{info.name}' is a link; refused")
        if not (info.isfile() or info.isdir()):
            raise UnsafeArchiveError(f"{archive}: entry '{info.name}' is not a plain file; refused")
        members.append(info)
        total += info.size if info.isfile() else 0
        if len(members) > max_entries or total > max_bytes:  # stop reading the bomb here
            _check_totals(archive, target, len(members), total, partial=True)
    return members


def safe_extract(archive: Path, target: Path) -> list[Path]:
    """Extract a ZIP or TAR(.gz/.bz2/.xz) archive into ``target``, refusing unsafe entries.

    Every entry is checked before anything is written, and so are the totals: at
    most ``CELLBENCH_MAX_EXTRACT_GB`` GB and ``CELLBENCH_MAX_EXTRACT_FILES`` entries
    (:func:`extract_limits`), and no more than the disk has free. Then the archive is
    unpacked into a temporary folder inside ``target``, counting the bytes written
    (an entry that unpacks to more than its header declares is stopped), and its
    top-level entries are moved into place. On any error the temporary folder is
    removed and ``target`` keeps only what it held before (a ``target`` this call
    created is removed again).

    Returns
    -------
    list of pathlib.Path
        The top-level paths created in ``target``.

    Raises
    ------
    UnsafeArchiveError
        An entry is absolute, contains ``..``, is a link, device or FIFO; or the
        archive unpacks to more bytes or entries than the limits (a zip bomb).
    DownloadError
        The file is not a ZIP/TAR archive or is damaged, needs more space than is
        free, or the disk became full while unpacking (the message names the archive).
    """
    archive, target = Path(archive), Path(target)
    made_target = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    done = False
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(archive, zf)
                files = [i for i in members if not i.is_dir()]
                _check_totals(archive, target, len(members), sum(i.file_size for i in files))
                budget = _Budget(archive)
                for info in members:
                    out = tmp.joinpath(*_check_member_name(info.filename, archive).parts)
                    if not out.resolve().is_relative_to(tmp.resolve()):
                        raise UnsafeArchiveError(
                            f"{archive}: entry '{info.filename}' escapes; refused"
                        )
                    if info.is_dir():
                        out.mkdir(parents=True, exist_ok=True)
                        continue
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        budget.copy(src, dst, info.filename, info.file_size)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = _tar_members(archive, tf, target)
                files = [i for i in members if i.isfile()]
                _check_totals(archive, target, len(members), sum(i.size for i in files))
                tf.extractall(tmp, members=members, filter="data")
        else:
            raise DownloadError(f"{archive} is neither a ZIP nor a TAR archive")
        created = []
        for entry in sorted(tmp.iterdir()):
            final = target / entry.name
            if final.exists():
                if final.is_dir() and entry.is_dir():
                    _merge_dirs(entry, final)
                    created.append(final)
                    continue
                raise DownloadError(f"{final} already exists; remove it and re-run the download")
            os.replace(entry, final)
            created.append(final)
        done = True
        return created
    except _DAMAGED as exc:
        raise DownloadError(
            f"{archive}: damaged archive, cannot be unpacked ({type(exc).__name__}: {exc}); "
            "nothing was extracted. Delete it (it is in the download cache) and run again to "
            "download it anew."
        ) from exc
    except OSError as exc:
        full = disk_full_error(exc, target)
        if full is not None:
            raise DownloadError(f"{archive}: cannot be unpacked: {full}") from exc
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        raise DownloadError(
            f"{archive}: cannot be unpacked into {target} ({type(exc).__name__}: "
            f"{exc.strerror or exc}{': ' + names if names else ''}); nothing was extracted"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_target and not done:
            with contextlib.suppress(OSError):
                target.rmdir()  # only when empty


def _merge_dirs(src: Path, dst: Path) -> None:
    for entry in src.iterdir():
        final = dst / entry.name
        if final.is_dir() and entry.is_dir():
            _merge_dirs(entry, final)
        elif final.exists():
            raise DownloadError(f"{final} already exists; remove it and re-run the download")
        else:
            os.replace(entry, final)


def extract_nested_zips(folder: Path) -> None:
    """Unpack the ZIPs inside an extracted Kaggle bundle, then delete them.

    ``stage1_train.zip`` whose entries have no common top folder is unpacked into
    ``stage1_train/``; ``x.csv.zip`` holding only ``x.csv`` is unpacked next to it.
    """
    for inner in sorted(Path(folder).glob("*.zip")):
        with zipfile.ZipFile(inner) as zf:
            names = [n.replace("\\", "/") for n in zf.namelist() if not n.startswith("__MACOSX")]
        stem = inner.name[: -len(".zip")]
        tops = {n.split("/", 1)[0] for n in names}
        flat = all("/" not in n.rstrip("/") for n in names)
        if tops == {stem} or (flat and stem.endswith((".csv", ".json", ".txt"))):
            safe_extract(inner, folder)
        else:
            safe_extract(inner, folder / stem)
        inner.unlink()


def fetch_and_extract(key: str, raw_dir: Path, names: Iterable[str] | None = None) -> None:
    """Fetch the files listed under ``key`` in ``checksums.yaml`` and unpack them into ``raw_dir``.

    Archives stay in the download cache (:func:`cache_dir`); plain files (``extract:
    false``, e.g. a JSON annotation file) are copied into ``raw_dir``.
    """
    cache = cache_dir(raw_dir) / key
    for remote in remote_files(key, names):
        path = fetch(remote.url, cache / remote.filename, sha256=remote.sha256, size=remote.size)
        if remote.extract:
            safe_extract(path, raw_dir)
        else:
            shutil.copy2(path, Path(raw_dir) / remote.filename)


# --------------------------------------------------------------------------------------
# Kaggle
# --------------------------------------------------------------------------------------

_KAGGLE_TOKEN_HELP = (
    "Create a Kaggle API token: log in at https://www.kaggle.com, open Settings "
    "(https://www.kaggle.com/settings), section 'API', click 'Create New Token'. Save the "
    "downloaded kaggle.json as ~/.kaggle/kaggle.json (or in the folder named by "
    "KAGGLE_CONFIG_DIR) and make it private: chmod 600 ~/.kaggle/kaggle.json. Alternatively "
    "export KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN) in the environment that "
    "runs the pipeline. Then re-run the download."
)


def _kaggle_config_dirs() -> list[Path]:
    env = os.environ.get("KAGGLE_CONFIG_DIR")
    if env:
        return [Path(env).expanduser()]
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle", xdg / "kaggle"]


def find_kaggle_credentials() -> str:
    """Say where Kaggle credentials come from, without reading them out.

    Returns
    -------
    str
        A description such as ``"environment (KAGGLE_USERNAME/KAGGLE_KEY)"`` or the
        path of ``kaggle.json``.

    Raises
    ------
    KaggleSetupError
        No credentials, or a ``kaggle.json`` that is unreadable or lacks keys.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME/KAGGLE_KEY)"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    for folder in _kaggle_config_dirs():
        path = folder / "kaggle.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise KaggleSetupError(
                    f"{path} exists but is not readable JSON ({type(exc).__name__}). Replace it "
                    f"with a fresh token. {_KAGGLE_TOKEN_HELP}"
                ) from None
            if not (isinstance(data, dict) and data.get("username") and data.get("key")):
                raise KaggleSetupError(
                    f"{path} lacks 'username' and 'key'. Replace it with a fresh token. "
                    f"{_KAGGLE_TOKEN_HELP}"
                )
            return str(path)
        token = folder / "access_token"
        if token.is_file() and token.stat().st_size:
            return str(token)
    where = " or ".join(str(d / "kaggle.json") for d in _kaggle_config_dirs())
    raise KaggleSetupError(
        f"Kaggle credentials not found (looked for {where} and the "
        f"KAGGLE_USERNAME/KAGGLE_KEY environment variables). {_KAGGLE_TOKEN_HELP}"
    )


def _secrets() -> list[str]:
    """Values that must never appear in a message (the Kaggle key and token)."""
    values = [os.environ.get(k, "") for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    for folder in _kaggle_config_dirs():
        with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
            values.append(str(json.loads((folder / "kaggle.json").read_text()).get("key", "")))
        with contextlib.suppress(OSError):
            values.append((folder / "access_token").read_text().strip())
    return [v for v in values if len(v) >= 6]


def _redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def _http_status(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _make_kaggle_api() -> Any:
    """Authenticate the official Kaggle client (imported lazily: importing it has side effects)."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:  # pragma: no cover - kaggle is a dependency
        raise KaggleSetupError(
            "the 'kaggle' package is not installed; install it with: pip install kaggle"
        ) from exc
    api = KaggleApi()
    with contextlib.redirect_stdout(_NullWriter()):
        try:
            api.authenticate()
        except SystemExit:  # the client exits when it finds no usable credentials
            raise KaggleSetupError(
                f"Kaggle refused the credentials found. {_KAGGLE_TOKEN_HELP}"
            ) from None
    return api


class _NullWriter:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def kaggle_download(
    competition: str,
    dest_dir: Path,
    *,
    api_factory: Callable[[], Any] | None = None,
) -> Path:
    """Download all files of a Kaggle competition into ``dest_dir`` as ``<competition>.zip``.

    Parameters
    ----------
    competition : the competition slug, e.g. ``data-science-bowl-2018``.
    dest_dir : folder for the downloaded bundle (the download cache).
    api_factory : returns an authenticated Kaggle client (tests pass a fake).

    Returns
    -------
    pathlib.Path
        The downloaded ZIP.

    Raises
    ------
    KaggleSetupError
        No credentials (says where the token goes), invalid credentials (HTTP 401), or
        competition rules not accepted (HTTP 403, names the rules page to accept).
    DownloadError
        The machine cannot reach Kaggle (says how to download by hand and use
        ``source: local``), or any other failure, with the Kaggle message scrubbed of
        secrets.
    """
    source = find_kaggle_credentials()
    log.info("Kaggle credentials: %s", source)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    failure: DownloadError | None = None
    try:
        api = (api_factory or _make_kaggle_api)()
        api.competition_download_files(competition, path=str(dest_dir), quiet=False)
    except KaggleSetupError:
        raise
    except Exception as exc:  # the client raises many types; classify by HTTP status
        failure = _kaggle_failure(exc, competition, source)
    if failure is not None:
        # Raised outside the handler so the original exception (whose text or request
        # may carry credentials) is not even attached as context.
        raise failure
    bundle = dest_dir / f"{competition}.zip"
    if not bundle.is_file():
        zips = sorted(dest_dir.glob("*.zip"))
        if len(zips) != 1:
            raise DownloadError(f"Kaggle download of '{competition}' left no archive in {dest_dir}")
        bundle = zips[0]
    return bundle


def _kaggle_failure(exc: BaseException, competition: str, source: str) -> DownloadError:
    """Turn an exception of the Kaggle client into an actionable, secret-free error."""
    status = _http_status(exc)
    if status == 403:
        rules = f"https://www.kaggle.com/competitions/{competition}/rules"
        return KaggleSetupError(
            f"Kaggle refused to serve '{competition}' (HTTP 403 Forbidden): the competition "
            f"rules have not been accepted for this account. Log in to Kaggle with the "
            f"account of the token ({source}), open {rules}, click 'I Understand and "
            "Accept', then re-run the download."
        )
    if status == 401:
        return KaggleSetupError(
            f"Kaggle rejected the credentials from {source} (HTTP 401 Unauthorized): the "
            f"token is wrong or expired. {_KAGGLE_TOKEN_HELP}"
        )
    if status == 404:
        return DownloadError(
            f"Kaggle has no competition '{competition}' (HTTP 404); check the name."
        )
    if status is None and _is_unreachable(exc):
        return DownloadError(_unreachable_message(exc, competition))
    return DownloadError(
        f"Kaggle download of '{competition}' failed: {type(exc).__name__}: {_redact(str(exc))}"
    )


#: Exception class names (anywhere in the class hierarchy) that mean the network is not
#: reachable: Python's own, ``requests``' and ``urllib3``'s.
_UNREACHABLE_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectTimeout",
        "ConnectTimeoutError",
        "MaxRetryError",
        "NameResolutionError",
        "NewConnectionError",
        "ProxyError",
        "ReadTimeout",
        "SSLError",
        "Timeout",
        "TimeoutError",
        "URLError",
        "gaierror",
        "timeout",
    }
)


def _exception_chain(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """``exc``, its causes / contexts and the exceptions held in its ``reason`` or args."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < limit:
        item = todo.pop()
        if any(item is s for s in seen):
            continue
        seen.append(item)
        linked = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return seen


def _is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (from the Kaggle client) means Kaggle's servers could not be reached."""
    for item in _exception_chain(exc):
        if isinstance(item, ConnectionError | TimeoutError):
            return True
        if any(cls.__name__ in _UNREACHABLE_NAMES for cls in type(item).__mro__):
            return True
    return False


def _unreachable_message(exc: BaseException, competition: str) -> str:
    detail = _redact(str(exc))
    if len(detail) > 240:
        detail = detail[:240] + " ..."
    return (
        f"this machine cannot reach Kaggle, so the competition '{competition}' cannot be "
        f"downloaded ({type(exc).__name__}: {detail}). It is offline, or a firewall or proxy "
        "blocks www.kaggle.com / api.kaggle.com (cluster compute nodes often have no "
        "internet). Fix: on a machine with internet access, download the data by hand "
        f"(kaggle competitions download -c {competition}, or from "
        f"https://www.kaggle.com/competitions/{competition}/data), unpack it, copy the folder "
        "to this machine, and set 'source: local' and 'path: <that folder>' for this dataset "
        "in params.yaml."
    )
