"""Clean-up of temporary outputs: termination signals and stale temporaries of killed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellbench.cleanup import Terminated, install_termination_handlers
from cellbench.io import STALE_TEMP_AGE_S, _host, atomic_dir, atomic_path, read_json, write_json

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and PIDs")

_WRITER = """
import sys, time
from pathlib import Path
from cellbench.cleanup import install_termination_handlers
from cellbench.io import atomic_dir, atomic_path

if sys.argv[1] == "handlers":
    install_termination_handlers()
target = Path(sys.argv[2])
if sys.argv[3] == "dir":
    with atomic_dir(target) as tmp:
        (tmp / "part.txt").write_text("half written")
        print("READY", flush=True)
        time.sleep(60)
else:
    with atomic_path(target) as tmp:
        tmp.write_text("half written")
        print("READY", flush=True)
        time.sleep(60)
"""


def _default_signals() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_and_signal(mode: str, target: Path, kind: str, signum: int) -> int:
    """Start the writer, wait until it is inside the atomic block, signal it, return its status."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, mode, str(target), kind],
        stdout=subprocess.PIPE,
        text=True,
        # the child starts with default dispositions even when pytest runs under nohup
        # (an ignored SIGHUP stays ignored by design: see install_termination_handlers)
        preexec_fn=_default_signals,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        proc.send_signal(signum)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


@pytest.fixture
def saved_handlers() -> Iterator[None]:
    """Restore this process's SIGTERM / SIGHUP handlers after a test installs ours."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


# --------------------------------------------------------------------------------------
# termination signals
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dir", "file"])
@pytest.mark.parametrize("existing", [False, True])
def test_sigterm_removes_temporaries_and_exits_143(tmp_path: Path, kind: str, existing) -> None:
    target = tmp_path / ("out" if kind == "dir" else "out.json")
    if existing and kind == "dir":
        with atomic_dir(target) as tmp:
            write_json(tmp / "v.json", {"v": 1})
    elif existing:
        write_json(target, {"v": 1})
    assert _run_and_signal("handlers", target, kind, signal.SIGTERM) == 128 + signal.SIGTERM
    assert _leftovers(tmp_path) == []
    if not existing:
        assert not target.exists()
    elif kind == "dir":
        assert [p.name for p in target.iterdir()] == ["v.json"]
        assert read_json(target / "v.json") == {"v": 1}
    else:
        assert read_json(target) == {"v": 1}


def test_sighup_exits_129(tmp_path: Path) -> None:
    assert _run_and_signal("handlers", tmp_path / "out", "dir", signal.SIGHUP) == 129
    assert _leftovers(tmp_path) == []


def test_without_handlers_the_next_write_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    target = tmp_path / "out"
    status = _run_and_signal("none", target, "dir", signal.SIGTERM)
    assert status == -signal.SIGTERM  # died at once: no clean-up ran ...
    (left,) = _leftovers(tmp_path)
    assert left.startswith(f".out.{_host()}.") and left.endswith(".tmp")
    with atomic_dir(target) as tmp:  # ... so the next write to the same target does it
        (tmp / "a.txt").write_text("1")
    assert _leftovers(tmp_path) == []
    assert [p.name for p in target.iterdir()] == ["a.txt"]


def test_handlers_raise_terminated_idempotently(saved_handlers) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert install_termination_handlers() == ("SIGTERM", "SIGHUP")
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)  # else the os.kill below would end pytest itself
    assert install_termination_handlers() == ("SIGTERM", "SIGHUP")
    assert signal.getsignal(signal.SIGTERM) is handler
    with pytest.raises(Terminated) as err:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; never reached
    assert isinstance(err.value, SystemExit)
    assert err.value.code == 143 and err.value.signum == signal.SIGTERM
    assert str(err.value) == "stopped by SIGTERM (exit status 143)"


def test_handlers_respect_nohup_and_threads(saved_handlers) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does
    result: list[tuple[str, ...]] = []
    worker = threading.Thread(target=lambda: result.append(install_termination_handlers()))
    worker.start()
    worker.join()
    assert result == [()]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert install_termination_handlers() == ("SIGTERM",)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


# --------------------------------------------------------------------------------------
# stale temporaries
# --------------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_names_carry_host_and_pid(tmp_path: Path) -> None:
    prefix = f".x.json.{_host()}.{os.getpid()}."
    with atomic_path(tmp_path / "x.json") as tmp:
        assert tmp.name.startswith(prefix) and tmp.name.endswith(".tmp")
    with atomic_dir(tmp_path / "d") as tmp:
        assert tmp.name.startswith(f".d.{_host()}.{os.getpid()}.")


def test_stale_temporary_of_dead_process_is_removed(tmp_path: Path) -> None:
    host, dead = _host(), _dead_pid()
    stale_dir = tmp_path / f".scores.{host}.{dead}.k3j9x_2a.tmp"
    stale_dir.mkdir()
    (stale_dir / "half.csv").write_text("a,b\n")
    stale_file = tmp_path / f".scores.{host}.{dead}.q8w7e6r5.tmp"
    stale_file.write_text("x")
    keep = {
        ".hidden": "a user's hidden file",
        ".scores.tmp": "not our pattern",
        ".scores.abcd1234.tmp": "the old naming, no host and PID",
        f".scores.{host}.{os.getpid()}.abcd1234.tmp": "this (live) process",
        f".scores.{host}.{os.getppid()}.abcd1234.tmp": "a live process",
        f".scores.elsewhere.{dead}.abcd1234.tmp": "another host: its PIDs mean nothing here",
        f".scores.csv.{host}.{dead}.abcd1234.tmp": "another target (scores.csv)",
        f".other.{host}.{dead}.abcd1234.tmp": "another target (other)",
    }
    for name in keep:
        (tmp_path / name).write_text("keep")
    with atomic_dir(tmp_path / "scores") as tmp:
        (tmp / "a.txt").write_text("1")
    assert not stale_dir.exists() and not stale_file.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, "scores"])


def test_week_old_temporaries_go_whatever_the_host(tmp_path: Path) -> None:
    old = tmp_path / ".r.json.elsewhere.123.abcd1234.tmp"
    young = tmp_path / ".r.json.elsewhere.123.efgh5678.tmp"
    for path in (old, young):
        path.write_text("x")
    week = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(old, (week, week))
    write_json(tmp_path / "r.json", {"v": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young.name, "r.json"])


def test_result_moved_aside_by_a_killed_swap_is_put_back(tmp_path: Path) -> None:
    host, dead = _host(), _dead_pid()
    moved = tmp_path / f".model.{host}.{dead}.abcd1234.old"  # killed between the two renames
    moved.mkdir()
    (moved / "weights.pt").write_text("previous model")
    half = tmp_path / f".model.{host}.{dead}.efgh5678.tmp"
    half.mkdir()
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model"):
        raise RuntimeError("this run fails too")
    assert (tmp_path / "model" / "weights.pt").read_text() == "previous model"
    assert _leftovers(tmp_path) == []
    stale = tmp_path / f".model.{host}.{dead}.ijkl9012.old"  # target present: just deleted
    stale.mkdir()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.pt").write_text("new model")
    assert (tmp_path / "model" / "weights.pt").read_text() == "new model"
    assert _leftovers(tmp_path) == []


def test_termination_between_the_swap_renames_puts_the_old_result_back(
    tmp_path: Path, monkeypatch
) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights.pt").write_text("previous model")
    real_replace = os.replace

    def replace(src, dst):  # the signal lands right after the old result was moved aside
        real_replace(src, dst)
        if str(dst).endswith(".old"):
            raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Terminated), atomic_dir(target) as tmp:
        (tmp / "weights.pt").write_text("new model")
    monkeypatch.undo()
    assert (target / "weights.pt").read_text() == "previous model"
    assert _leftovers(tmp_path) == []
