# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""A run lock: one scale run at a time per stack, and a lock left by a killed run is recovered.

The lock is a file that names its owner: the ansible-playbook process (pid, its start time from /proc so a
reused pid is not mistaken for the owner, and the host). It appears only with its owner written: the owner
goes to a file of its own, which is then hard-linked to the lock's name (link fails if the name exists).
A lock whose owner on this host is gone, or whose owner on another host let its lease run out, is stale:
it is taken over under a flock on a guard file, so of two runs recovering it exactly one wins. One whose
owner is alive makes the caller wait, up to a bound. The holder renews its lease by touching the lock file
(its mtime) every RENEW_EVERY_S: the tenfold.stack.scale_events callback does, in the ansible-playbook
process, for as long as the run holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

# A lock from another host whose holder has not renewed it for this long is stale; it renews every 20 s.
DEFAULT_LEASE_S = 120.0
RENEW_EVERY_S = 20.0


class LockError(RuntimeError):
    """The lock could not be had; the message says who holds it."""


@dataclass(frozen=True)
class Owner:
    pid: int
    start_ticks: int
    host: str
    since: float
    run: str = ""
    lease_s: float = DEFAULT_LEASE_S  # a holder on another host counts as alive this long after a renewal
    renewed: float = field(default=0.0, compare=False)  # its last renewal: the lock file's mtime, as read

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} since {when}" + (f" ({self.run})" if self.run else "")


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields are counted after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def owner_for(pid: int, run: str = "") -> Owner:
    ticks = process_start_ticks(pid)
    if ticks is None:
        raise LockError(f"process {pid} does not exist")
    return Owner(pid=pid, start_ticks=ticks, host=socket.gethostname(), since=time.time(), run=run)


def is_alive(owner: Owner, now: Callable[[], float] = time.time) -> bool:
    if owner.host != socket.gethostname():  # its process cannot be seen from here: trust the lease
        return now() < max(owner.since, owner.renewed) + owner.lease_s
    return process_start_ticks(owner.pid) == owner.start_ticks


def read_owner(path: str) -> Owner | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return Owner(**{**json.load(handle), "renewed": os.fstat(handle.fileno()).st_mtime})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return Owner(pid=-1, start_ticks=-1, host=socket.gethostname(), since=0.0, run="unreadable lock file")


@dataclass
class Outcome:
    acquired: bool
    recovered: Owner | None = None
    waited: float = 0.0

    def as_dict(self) -> dict:
        return {
            "acquired": self.acquired,
            "recovered_from": asdict(self.recovered) if self.recovered else None,
            "waited_s": round(self.waited, 2),
        }


def acquire(
    path: str,
    me: Owner,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Take the lock, waiting up to `timeout` seconds for a live owner to let go."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    start = clock()
    recovered: Owner | None = None
    while True:
        if _link_new(path, me):
            return Outcome(acquired=True, recovered=recovered, waited=clock() - start)
        holder = read_owner(path)
        if holder is None:
            continue  # released between our link and our read
        if _same(holder, me):
            return Outcome(acquired=True, waited=clock() - start)  # ours already (re-entrant)
        if not is_alive(holder):
            if _take_over(path, holder, me):
                return Outcome(acquired=True, recovered=holder, waited=clock() - start)
            continue  # another run recovered it first: look again at who holds it now
        if clock() - start >= timeout:
            raise LockError(
                f"another run holds {path}: {holder.describe()}; it did not finish within {timeout:g}s. "
                "Try again when it has finished."
            )
        sleep(0.5)


def release(path: str, me: Owner) -> bool:
    """Remove the lock if it is ours. Returns whether it was."""
    holder = read_owner(path)
    if holder is None or not _same(holder, me):
        return False
    os.unlink(path)
    return True


def renew(path: str, me: Owner) -> bool:
    """Renew the lease of our lock (its mtime). False when the lock is not ours any more."""
    holder = read_owner(path)
    if holder is None or not _same(holder, me):
        return False
    try:
        os.utime(path)  # never recreates a lock released meanwhile
    except FileNotFoundError:
        return False
    return True


def keep_renewing(path: str, me: Owner, every: float = RENEW_EVERY_S) -> threading.Event:
    """Renew the lease every `every` seconds in a daemon thread until the lock is not ours or the returned
    event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every) and renew(path, me):
            pass

    threading.Thread(target=loop, name="tenfold-lock-lease", daemon=True).start()
    return stop


def _same(a: Owner, b: Owner) -> bool:
    return (a.pid, a.start_ticks, a.host) == (b.pid, b.start_ticks, b.host)


def _link_new(path: str, me: Owner, replace: bool = False) -> bool:
    """Make the lock with `me` written in it, all at once; False when a lock is there already.

    `replace`: put ours in place of the lock that is there (a rename: the name is never free meanwhile).
    """
    fd, temp = tempfile.mkstemp(prefix=".lock-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(me), handle)
        os.chmod(temp, 0o644)
        if replace:
            os.rename(temp, path)
            return True
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _take_over(path: str, stale: Owner, me: Owner) -> bool:
    """Replace the stale lock by ours if it is still that one: one recovering run at a time (a flock)."""
    with open(path + ".guard", "a", encoding="utf-8") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        current = read_owner(path)
        if current != stale or current is None or is_alive(current):
            return False  # another run took it, or its holder renewed it meanwhile
        # Still the stale one: its dead owner cannot release it, and new runs cannot link over it.
        return _link_new(path, me, replace=True)


def playbook_pid(start: int | None = None) -> int:
    """The ansible-playbook process this code runs under (walking up from `start`, default our parent).

    A module runs a few processes below ansible-playbook, and the worker processes that ansible-playbook
    forks for each task carry its command line too: the run is the topmost of them, not the nearest.
    """
    pid = start or os.getppid()
    found = None
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if any(os.path.basename(arg) in ("ansible-playbook", "ansible-runner") for arg in argv[:2]):
            found = pid
        pid = parent
    if found is None:
        raise LockError("not running under ansible-playbook: cannot tell which run would own the lock")
    return found


def owner_from(params: dict, pid: int | None) -> Owner:
    """The run that owns the lock: `params["owner"]` as given (a run on another host: its action plugin names
    its ansible-playbook process there), else the ansible-playbook process `pid` on this host."""
    given = params.get("owner")
    if not given:
        if pid is None:
            raise LockError("no owner given and not running under ansible-playbook")
        return owner_for(pid, run=params.get("run") or "")
    try:
        return Owner(**{k: v for k, v in given.items() if k != "renewed"})
    except TypeError as exc:
        raise LockError(f"owner must name a run (pid, start_ticks, host, since, run): {exc}") from exc


def run(params: dict, check_mode: bool, pid: int | None) -> tuple[dict, str | None]:
    """What the tenfold.stack.lock module and its action plugin do with their arguments: (result, warning or
    None).

    `params`: path, state (acquired, released or renewed), timeout, run, owner; `pid`: the ansible-playbook
    run that owns the lock when `owner` is not given. Raises LockError (with the path) when the lock cannot
    be had.
    """
    if check_mode:
        return {
            "changed": False,
            "acquired": False,
            "released": False,
            "recovered_from": None,
            "waited_s": 0.0,
        }, None
    state = params.get("state", "acquired")
    try:
        me = owner_from(params, pid)
        if state == "released":
            released = release(params["path"], me)
            return {"changed": released, "released": released}, None
        if state == "renewed":
            return {"changed": False, "renewed": renew(params["path"], me)}, None
        outcome = acquire(params["path"], me, timeout=float(params.get("timeout", 120)))
    except (LockError, OSError) as exc:
        raise LockError(f"scale lock {params['path']}: {exc}") from exc
    warning = None
    if outcome.recovered:
        warning = f"recovered the lock left by a run that is gone: {outcome.recovered.describe()}"
    # The lock file and owner let the scale-events callback renew the lease while the run goes on. Not "path":
    # a module's result with a path that exists gets the file's attributes, its "owner" among them.
    return {"changed": True, **outcome.as_dict(), "lock": params["path"], "owner": asdict(me)}, warning
