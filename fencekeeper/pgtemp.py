"""A throwaway PostgreSQL server run from the installed binaries, for the lab and for tests.

Why: some experiments need to stop, crash and restart PostgreSQL itself, which must never happen to a
shared server. `PgTemp` runs a private one: its own data directory, trust auth, TCP on 127.0.0.1 at a free
port, its unix socket inside the data directory, fsync on (so a crash behaves like a real one).

    with PgTemp() as pg:            # initdb + start; always stopped (and its temp dir removed) on exit
        url = pg.url                # postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
        pg.stop(mode="immediate")   # crash-like: no checkpoint, WAL recovery on the next start
        pg.start()

PostgreSQL refuses to run as root; as root every server command runs as the OS user `postgres` (through
`runuser`) and the data directory is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

StopMode = Literal["smart", "fast", "immediate"]

PG_LIB = Path("/usr/lib/postgresql")
_NEEDED = ("initdb", "pg_ctl", "postgres")
_OS_USER = "postgres"
_DB_USER = "postgres"
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL


class PgTempError(RuntimeError):
    """A throwaway server could not be set up, started or stopped; the message is one plain line."""


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding the server binaries, else the one on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(PG_LIB.glob("*/bin"), key=version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in _NEEDED):
            return candidate
    raise PgTempError(
        f"no PostgreSQL server binaries ({', '.join(_NEEDED)}) in {PG_LIB}/*/bin or on PATH; "
        "install the postgresql server package"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS's pick; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _reachable_by(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first existing ancestor of `path` that user `uid` cannot traverse, or None if there is none."""
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:  # we create it below, 0755 under the usual umask
            break
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return parent
    return None


def postgres_can_reach(path: str | os.PathLike[str]) -> bool:
    """Whether a PostgreSQL we start could keep its data at `path`: always as an ordinary user; as root
    (PostgreSQL then runs as `postgres`) only if every existing directory above it lets that user in."""
    if os.geteuid() != 0:
        return True
    try:
        user = pwd.getpwnam(_OS_USER)
    except KeyError:
        return False
    return _blocked_for(user, Path(path).absolute()) is None


def _blocked_for(user: pwd.struct_passwd, path: Path) -> Path | None:
    gids = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    return _reachable_by(path, user.pw_uid, gids)


class PgTemp:
    """One private PostgreSQL server: `init()`, `start()`, `stop()`, `restart()`, `close()`.

    `data_dir` is where initdb puts the cluster (it must not exist or be empty); by default a fresh
    temporary directory that `close()` removes. A given `data_dir` is left in place for its owner.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.bin_dir = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        missing = [name for name in _NEEDED if not os.access(self.bin_dir / name, os.X_OK)]
        if missing:
            raise PgTempError(f"{self.bin_dir} lacks the PostgreSQL binaries {', '.join(missing)}")
        self._temp_root: Path | None = None
        if data_dir is None:
            self._temp_root = Path(tempfile.mkdtemp(prefix="fencekeeper-pg-"))
            data_dir = self._temp_root / "data"
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.timeout = timeout
        self._as_root = os.geteuid() == 0
        self._initialized = (self.data_dir / "PG_VERSION").exists()

    # -- properties --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the `postgres` database (asyncpg driver)."""
        return f"postgresql+asyncpg://{_DB_USER}@127.0.0.1:{self._port()}/postgres"

    @property
    def log_file(self) -> Path:
        """The server's log (pg_ctl -l): the first place to look when it does not start."""
        return self.data_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (from postmaster.pid), else None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, owned by someone else
            pass
        return pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def init(self) -> None:
        """initdb the data directory (once): trust auth, UTF8, C locale, superuser `postgres`."""
        if self._initialized:
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise PgTempError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        owner = self._os_user() if self._as_root else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if owner is not None:
            for path in filter(None, (self._temp_root, self.data_dir)):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            ["-D", str(self.data_dir), "-U", _DB_USER, "-A", "trust", "-E", "UTF8", "--locale=C"],
            what="initdb",
        )
        self._initialized = True

    def start(self) -> None:
        """Start the server (initdb first if needed) and wait until it accepts connections."""
        self.init()
        if self.running:
            return
        if len(str(self.data_dir)) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH or "'" in str(self.data_dir):
            raise PgTempError(f"{self.data_dir} is too long or quoted to hold the server's unix socket")
        fixed = self.port is not None
        for _attempt in range(1 if fixed else 3):
            port = self._port()
            options = " ".join(
                [
                    f"-p {port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories='{self.data_dir}'",
                    "-c fsync=on",
                    "-c synchronous_commit=on",
                    "-c full_page_writes=on",
                ]
            )
            log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
            ctl = ["start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w"]
            result = self._run(
                "pg_ctl", [*ctl, "-t", str(int(self.timeout)), "-o", options], what="start", check=False
            )
            if result.returncode == 0:
                return
            why = self._log_tail(log_start) or result.stderr.strip()
            if not fixed and "already in use" in why:
                self.port = None  # another process took the port between our pick and the bind: pick again
                continue
            break
        raise PgTempError(f"PostgreSQL did not start on port {self.port}: {why}")

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server; `immediate` is crash-like (no shutdown checkpoint, WAL recovery on next start)."""
        if not self.running:
            return
        args = ["stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(self.timeout))]
        result = self._run("pg_ctl", args, what="stop", check=False)
        if result.returncode != 0 and self.running:
            raise PgTempError(f"PostgreSQL did not stop ({mode}): {result.stderr.strip() or result.stdout}")

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (in `mode`) and start again on the same port and data directory."""
        self.stop(mode)
        self.start()

    def close(self) -> None:
        """Stop whatever runs, harder each time it refuses, then remove the temp dir we created."""
        try:
            # A cluster about to be deleted needs no shutdown checkpoint: immediate is enough, and faster.
            modes: tuple[StopMode, ...] = ("immediate",) if self._temp_root else ("fast", "immediate")
            for mode in modes:
                try:
                    self.stop(mode)
                    break
                except PgTempError:
                    continue
            pid = self.pid
            if pid is not None:  # pg_ctl could not stop it: kill the postmaster; backends follow it
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while self.running and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            if self._temp_root is not None:
                shutil.rmtree(self._temp_root, ignore_errors=True)

    def __enter__(self) -> PgTemp:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------------------

    def _port(self) -> int:
        if self.port is None:
            self.port = free_port()
        return self.port

    def _os_user(self) -> pwd.struct_passwd:
        """As root: the OS user that runs PostgreSQL, checked able to reach the data directory."""
        try:
            user = pwd.getpwnam(_OS_USER)
        except KeyError:
            raise PgTempError(f"running as root needs the OS user {_OS_USER!r} to run PostgreSQL") from None
        if shutil.which("runuser") is None:
            raise PgTempError("running as root needs `runuser` (util-linux) to run PostgreSQL as postgres")
        # Our own temp root is handed over below, so only the directories above it must let postgres in.
        blocked = _blocked_for(user, self._temp_root or self.data_dir)
        if blocked is not None:
            raise PgTempError(
                f"the OS user {_OS_USER} cannot reach {self.data_dir}: {blocked} is not traversable "
                "(pick a data directory elsewhere, or set TMPDIR to a world-traversable directory)"
            )
        return user

    def _run(
        self, program: str, args: list[str], *, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", _OS_USER, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no stray PGPORT/PGDATA
        try:
            result = subprocess.run(
                command,
                cwd="/",
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout + 10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PgTempError(f"{what} of {self.data_dir} took longer than {self.timeout:.0f}s") from None
        if check and result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise PgTempError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
        return result

    def _log_tail(self, since: int = 0) -> str:
        """The last FATAL/ERROR line (else the last line) that the server logged after byte `since`."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(since)
                lines = log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if "FATAL" in line or "ERROR" in line]
        return (errors or lines or [""])[-1].strip()
