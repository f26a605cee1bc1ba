"""One writer per run folder: a lock file naming its holder, and recognising holders that died.

Two trainings writing one `output_dir` destroy each other's checkpoints (one renames the other's
staging folder away, rotation deletes the other's newest checkpoint). `RunLock(folder)` makes the
second writer fail at start instead:

* the lock is `folder/.theworld.lock`, a small JSON file (pid, host, process start time, when,
  command line, a random token). It is written whole under a temporary name and hard-linked into
  place, which fails if the lock exists: there is never a moment with an empty lock file.
* a lock whose holder is a process of *this* host that no longer runs (or whose pid now belongs to
  a process started later) is stale: it is taken over, with a warning naming the dead holder.
  The check and the takeover run under an `flock` on a guard file, so two processes finding the
  same stale lock cannot both take it.
* a lock held by another host cannot be checked from here: it is refused, and the message says
  which host and pid hold it and that the file may be deleted once that run is known to be gone.

`process_alive(pid, host, start)` is the same liveness test, for other files that name their
writer (the latent cache's temporary shards).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from theworld.errors import TheWorldUserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".theworld.lock"


class RunLockedError(TheWorldUserError):
    """Another live process holds the folder's lock (or one this host cannot check)."""


def this_host() -> str:
    """This machine's name, as written into lock and temporary file names ([A-Za-z0-9._-] only)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None where unknown.

    Recorded with a pid so that a pid reused by a later process is not mistaken for the holder.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the command name, which is in parentheses and may itself hold spaces
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, host: str | None, start: str | None = None) -> bool | None:
    """True if `pid` on `host` still runs, False if it does not, None if this host cannot tell (another host)."""
    if host is not None and host != this_host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return None
    if start is not None:
        current = process_start(pid)
        if current is not None and current != start:
            return False  # the pid was reused by a process started later
    return True


@dataclass
class LockHolder:
    pid: int
    host: str
    process_start: str | None
    since: float
    command: str
    token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on host {self.host} (since {when}: {self.command})"

    @classmethod
    def current(cls) -> LockHolder:
        return cls(
            pid=os.getpid(),
            host=this_host(),
            process_start=process_start(os.getpid()),
            since=time.time(),
            command=" ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300],
            token=secrets.token_hex(8),
        )


def read_holder(path: str | os.PathLike) -> LockHolder | None:
    """The holder a lock file names; None if the file is gone. Raises `RunLockedError` if unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockHolder(**{k: data[k] for k in LockHolder.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunLockedError(
            f"lock file {path} is unreadable ({err}); if no other run uses this folder, delete it"
        ) from None


@contextlib.contextmanager
def _guard(path: Path):
    """An exclusive flock on `path` (created if needed) for the duration; a plain no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


class RunLock:
    """`with RunLock(folder, what="training"):` one holder at a time; see the module docstring."""

    def __init__(self, folder: str | os.PathLike, what: str = "training") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.holder: LockHolder | None = None
        self._created_folder = False

    def _link(self, holder: LockHolder) -> bool:
        """Create the lock file with `holder`'s record in one step; False if a lock exists."""
        tmp = self.folder / f"{LOCK_NAME}.{holder.host}.{holder.pid}.{holder.token}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(asdict(holder), handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(asdict(holder), handle)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> RunLock:
        """Take the lock or raise `RunLockedError` naming the live holder; a dead holder's lock is taken over."""
        # A run that fails before writing anything leaves no folder behind (see `release`).
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        holder = LockHolder.current()
        if self._link(holder):
            self.holder = holder
            return self
        with _guard(self.folder / f"{LOCK_NAME}.guard"):
            current = read_holder(self.path)
            if current is not None:
                alive = process_alive(current.pid, current.host, current.process_start)
                if alive is None:
                    raise RunLockedError(
                        f"{self.folder} is locked by {current.describe()} for {self.what}; that host cannot be "
                        f"checked from {this_host()}. Use another folder, or, once that run is known to be gone, "
                        f"delete {self.path}"
                    )
                if alive:
                    raise RunLockedError(
                        f"{self.folder} is in use: {current.describe()} holds {self.path} for {self.what}. Wait for "
                        "it to finish or use another folder; two writers would destroy each other's checkpoints"
                    )
                logger.warning(
                    "%s: taking over the lock of %s, which no longer runs (it was killed or crashed)",
                    self.folder, current.describe(),
                )  # fmt: skip
                self.path.unlink(missing_ok=True)
            if not self._link(holder):  # cannot happen under the guard unless a writer ignores it
                raise RunLockedError(f"{self.folder}: another process took {self.path} at the same moment; retry")
        self.holder = holder
        return self

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self.holder is None:
            return
        try:
            current = read_holder(self.path)
        except RunLockedError:
            current = None
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)
            if self._created_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
        self.holder = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
