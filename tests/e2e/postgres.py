"""A throwaway PostgreSQL server on 127.0.0.1 for end-to-end tests, in a temp folder.

Usage:

    from postgres import Postgres

    with Postgres() as pg:          # initdb, start, CREATE DATABASE test: about 1 s
        pg.url()                    # postgres://guard@127.0.0.1:PORT/test
        pg.new_database("fleet")    # another empty database; its URL
        pg.psql("test", "select 1") # '1'
    # stopped (pg_ctl -m immediate stop) and the folder removed

The Python twin of the testkit-postgres crate (testkit-postgres/src), with the same facts
(/work/shared/notes/postgresql.md):
  * Debian installs the server programs in /usr/lib/postgresql/VERSION/bin, not on PATH; the
    highest version with an initdb is used.  None: "PostgreSQL is missing: run
    scripts/setup-postgres (scripts/test does)".
  * initdb and postgres refuse to run as root.  As root the folder is given to user postgres
    and the server programs run through `runuser -u postgres --`.
  * The cluster is made with `initdb -A trust -U guard`: user guard, no password.  Fine on
    loopback for tests, never for a deployment.  The server listens on 127.0.0.1 only, on a
    free port (up to three are tried if another process takes the one picked before the
    server binds it), with its Unix socket in the folder; default settings (fsync on).
  * The server programs run under a watchdog: a small `sh` in a process group of its own
    that reads a pipe from this process.  The kernel closes that pipe however this process
    ends (exit, exception, SIGKILL), and the watchdog then runs `pg_ctl -m immediate stop`
    (SIGKILL to the postmaster if that fails within 10 s) and removes the folder.  stop()
    closes the pipe itself and waits, so nothing runs once it returns.  Immediate, not fast:
    a fast stop's checkpoint syncs every file written, and the data is deleted anyway.

Run this file to check it on this machine: start, `psql -c 'select 1'`, stop, nothing left.

    .venv/bin/python tests/e2e/postgres.py
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEBIAN_ROOT = Path("/usr/lib/postgresql")
MISSING = "PostgreSQL is missing: run scripts/setup-postgres (scripts/test does)"
USER = "guard"  # the user initdb creates; every URL connects as it
DATABASE = "test"  # the database start() creates and url() names
PORT_ATTEMPTS = 3
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL
STOP_WAIT = 20.0  # the watchdog's own bounds (10 s for the immediate stop) plus a margin
PSQL_TIMEOUT = 30.0

# The watchdog script, the same as testkit-postgres's (see the file for its arguments and
# commands).
WATCHDOG = (Path(__file__).resolve().parents[2] / "testkit-postgres" / "src" / "watchdog.sh").read_text()


class PostgresError(RuntimeError):
    """The cluster could not be made, started or queried; the message names the step and
    holds the end of its output or of the server's log."""


def bin_dir(root: Path = DEBIAN_ROOT) -> Path:
    """The bin folder of the highest installed version that has an initdb."""
    found = []
    for entry in root.glob("*") if root.is_dir() else []:
        if re.fullmatch(r"\d+(\.\d+)*", entry.name) and (entry / "bin" / "initdb").is_file():
            found.append((tuple(int(p) for p in entry.name.split(".")), entry / "bin"))
    if not found:
        raise PostgresError(MISSING)
    return max(found)[1]


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


class Postgres:
    """One PostgreSQL server of its own on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self._bin: Path | None = None
        self._dir: Path | None = None
        self._port: int | None = None
        self._watchdog: subprocess.Popen | None = None

    # ----------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        self._check_running()
        return self._port

    @property
    def dir(self) -> Path:
        """The cluster's folder: data/, server.log and the Unix socket."""
        self._check_running()
        return self._dir

    @property
    def running(self) -> bool:
        return self._watchdog is not None and self._watchdog.poll() is None

    def url(self, database: str = DATABASE) -> str:
        """postgres://guard@127.0.0.1:PORT/DATABASE."""
        return f"postgres://{USER}@127.0.0.1:{self.port}/{database}"

    def _check_running(self) -> None:
        if not self.running:
            raise PostgresError("the PostgreSQL server is not running (start() it first)")

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> "Postgres":
        """initdb, pg_ctl -w start on a free port, CREATE DATABASE test.  Raises PostgresError."""
        if self.running:
            raise PostgresError(f"already running on port {self._port}")
        self._bin = bin_dir()
        self._dir = Path(tempfile.mkdtemp(prefix="postgres-e2e-"))
        socket_path = f"{self._dir}/.s.PGSQL.65535"
        if not re.fullmatch(r"[A-Za-z0-9/._-]+", str(self._dir)) or len(socket_path) > MAX_SOCKET_PATH:
            shutil.rmtree(self._dir)
            raise PostgresError(
                f"the temp folder {self._dir} cannot hold the server's socket or pass through "
                "its command line; set TMPDIR to a short plain path such as /tmp"
            )
        runuser, owner = "", ""
        if os.getuid() == 0:
            shutil.chown(self._dir, user="postgres")
            runuser = next(
                (p for p in ("/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser") if Path(p).is_file()),
                None,
            )
            if runuser is None:
                shutil.rmtree(self._dir)
                raise PostgresError("as root the server must run as user postgres, and runuser is missing")
            owner = "postgres"
        self._watchdog = subprocess.Popen(
            ["/bin/sh", "-c", WATCHDOG, "postgres-e2e-watchdog", str(self._bin), str(self._dir), runuser, owner],
            cwd=self._dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C to the test's process group does not reach it
        )
        atexit.register(self.stop)
        try:
            if not self._ask("init"):
                raise PostgresError(f"initdb failed:\n{tail(self._dir / 'initdb.out')}")
            self._start_server()
            self.psql("postgres", f"CREATE DATABASE {DATABASE}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ask(self, command: str) -> bool:
        self._watchdog.stdin.write(command + "\n")
        self._watchdog.stdin.flush()
        answer = self._watchdog.stdout.readline().strip()
        if answer not in ("ok", "fail"):
            raise PostgresError(f"the watchdog answered {answer!r} to {command!r}")
        return answer == "ok"

    def _start_server(self) -> None:
        log = self._dir / "server.log"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port()
            before = log.stat().st_size if log.exists() else 0
            if self._ask(f"start {port}"):
                self._port = port
                return
            log_tail = tail(log, before)
            if "could not bind" not in log_tail or attempt == PORT_ATTEMPTS:
                raise PostgresError(
                    f"pg_ctl start on port {port} failed:\n{tail(self._dir / 'pg_ctl.out')}\n"
                    f"server.log:\n{log_tail}"
                )

    def stop(self) -> None:
        """Closes the watchdog's pipe (it stops the server and removes the folder) and waits
        up to STOP_WAIT s.  Safe to call more than once."""
        watchdog, self._watchdog = self._watchdog, None
        atexit.unregister(self.stop)
        if watchdog is None:
            return
        try:
            watchdog.stdin.close()
        except OSError:
            pass
        try:
            watchdog.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            print(f"postgres.py: the watchdog (pid {watchdog.pid}) is still stopping the server "
                  f"after {STOP_WAIT} s; leaving it to finish", file=sys.stderr)
        watchdog.stdout.close()

    def __enter__(self) -> "Postgres":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------------------- SQL

    def psql(self, database: str, sql: str) -> str:
        """Runs `sql` in `database` with the server's psql (no ~/.psqlrc, stop at the first
        error, unaligned rows, no headers); its output without the final newline."""
        self._check_running()
        target = f"postgres://{USER}@127.0.0.1:{self._port}/{database}?connect_timeout=10"
        done = subprocess.run(
            [str(self._bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", target, "-c", sql],
            capture_output=True,
            text=True,
            timeout=PSQL_TIMEOUT,
        )
        if done.returncode != 0:
            raise PostgresError(f"psql {target} -c {sql!r} failed (exit {done.returncode}): {done.stderr.strip()}")
        return done.stdout.removesuffix("\n")

    def new_database(self, name: str) -> str:
        """CREATE DATABASE name (1 to 63 of a-z, 0-9 and _, not starting with a digit); its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise PostgresError(f"database name {name!r}: use 1 to 63 characters of a-z, 0-9 and _, "
                                "starting with a letter or _")
        self.psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)


# --------------------------------------------------------------------------- self test


def _postmasters(folder: Path) -> list[str]:
    """The command lines of running processes that name `folder` (the server, the watchdog)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def _self_test() -> None:
    started = time.monotonic()
    pg = Postgres().start()
    up = time.monotonic() - started
    folder, port = pg.dir, pg.port
    assert pg.url() == f"postgres://guard@127.0.0.1:{port}/test", pg.url()
    one = subprocess.run(["psql", "-X", "-A", "-t", "-d", pg.url(), "-c", "select 1"],
                         capture_output=True, text=True, timeout=PSQL_TIMEOUT)
    assert one.returncode == 0 and one.stdout.strip() == "1", (one.returncode, one.stdout, one.stderr)
    assert pg.psql("test", "select current_user") == "guard"
    assert pg.new_database("fleet") == f"postgres://guard@127.0.0.1:{port}/fleet"
    assert pg.psql("fleet", "select 1 + 1") == "2"
    assert _postmasters(folder), "no process runs from the cluster's folder"
    listening = socket.create_connection(("127.0.0.1", port), timeout=2)
    listening.close()
    stopping = time.monotonic()
    pg.stop()
    down = time.monotonic() - stopping
    left = _postmasters(folder)
    assert not left, f"still running after stop(): {left}"
    assert not folder.exists(), f"{folder} is still there"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        raise AssertionError(f"port {port} still accepts connections")
    except ConnectionRefusedError:
        pass
    pg.stop()  # a second stop() is harmless
    print(f"postgres.py self-test: ok (up in {up:.2f} s on port {port}, psql 'select 1' = 1, "
          f"stopped in {down:.2f} s, nothing left)")


if __name__ == "__main__":
    _self_test()