"""A private Prosody XMPP server on 127.0.0.1 for end-to-end tests.

Usage:

    from prosody import Prosody

    with Prosody(tmp_path, users={"alice": "alicepass", "bob": "bobpass"}) as server:
        server.c2s_port        # clients log in here (plain text, loopback only)
        server.component_port  # the pubsub component (XEP-0114) connects here
        server.register("carol", "carolpass")   # also works while the server runs
        server.register_many({"sub1": "pw", "sub2": "pw"})   # thousands in a second
        server.restart()       # same ports, same data

Everything Prosody needs lives in `workdir`: the config (prosody.cfg.lua), the data folder
(accounts), the pid file, the log (prosody.log, level "info" unless told otherwise), the
process's own stdout/stderr (prosody.stdout) and an empty certs/ folder.  Nothing under
/etc/prosody is read or written.

Facts this relies on (measured with Debian's Prosody 0.12.3, see
/work/shared/notes/xmpp-servers.md):
  * `prosody --config FILE -F` runs in the foreground; the listeners are up ~100 ms later and
    the log then shows, one line per listener:
        Nov 28 20:18:40 portmanager<TAB>info<TAB>Activated service 'c2s' on [127.0.0.1]:47222
        Nov 28 20:18:40 portmanager<TAB>info<TAB>Activated service 'component' on [127.0.0.1]:47347
  * A port already in use does NOT stop Prosody (it only logs "Failed to open server port"),
    so the ports are checked before launch and that log line is treated as a failure.
  * As root, Prosody needs `run_as_root = true` (without it 0.12.3 keeps running but its
    shutdown crashes).  The line is written only when we are root.
  * SIGTERM stops it cleanly in about 1-2 s.
  * `prosodyctl --config FILE register NAME HOST PASS` writes the account file directly
    (file storage), so it works before start and while the server runs: the next login
    reads the new account.  Registering an existing name silently replaces its password.
  * It takes ~85 ms an account (a Lua start each time), so register_many() writes the same
    file itself for plain names and passwords: data/localhost/accounts/NAME.dat, the Lua table
    mod_auth_internal_hashed stores (SCRAM-SHA-1: iteration_count 10000, a uuid salt,
    stored_key = hex SHA1(HMAC(salted, "Client Key")), server_key = hex HMAC(salted,
    "Server Key"), salted = PBKDF2-HMAC-SHA1(password, salt, 10000)), checked against
    prosodyctl's own file byte for byte and by logging in.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

DOMAIN = "localhost"
LOOPBACK = "127.0.0.1"
TEMPLATE = Path(__file__).resolve().parents[2] / "scripts" / "prosody.cfg.lua.in"

# mod_auth_internal_hashed's default_iteration_count in Prosody 0.12.
SCRAM_ITERATIONS = 10000
# Names and passwords register_many() writes itself: nodeprep and Prosody's file-name
# encoding leave such names unchanged, and SASLprep such passwords.
_PLAIN_NAME = re.compile(r"[a-z0-9]+")
_PLAIN_PASSWORD = re.compile(r"[\x20-\x7e]+")

# How long start() waits for the listeners, and stop() for a clean exit.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


class ProsodyError(RuntimeError):
    """Prosody could not be configured, started or stopped; the message has the log tail."""


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 10) -> int | None:
    """Sends `sig` to `process` unless it has exited, waits up to `wait` s (then SIGKILL), and
    returns its exit status (None for no process)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like Prosody itself: a port in TIME_WAIT after a restart is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _two_free_ports() -> tuple[int, int]:
    """Two different free ports: keep the first socket bound while picking the second."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
        first.bind((LOOPBACK, 0))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
            second.bind((LOOPBACK, 0))
            return first.getsockname()[1], second.getsockname()[1]


def _lua(value: str) -> str:
    """A Lua double-quoted string literal."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _scram_record(password: str, salt: str) -> str:
    """The account file mod_auth_internal_hashed writes (Prosody 0.12, SCRAM-SHA-1)."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), SCRAM_ITERATIONS)
    stored_key = hashlib.sha1(hmac.new(salted, b"Client Key", "sha1").digest()).hexdigest()
    server_key = hmac.new(salted, b"Server Key", "sha1").hexdigest()
    return (
        "return {\n"
        f'\t["iteration_count"] = {SCRAM_ITERATIONS};\n'
        f'\t["stored_key"] = "{stored_key}";\n'
        f'\t["server_key"] = "{server_key}";\n'
        f'\t["salt"] = "{salt}";\n'
        "};\n"
    )


class LoopbackServer:
    """What every XMPP server the tests start on loopback from a temp folder has: its folder,
    its ports, its domain, one external component, and its process (`_process`); subclasses
    give `start()` and `stop()`. `NAME` names its log files."""

    NAME = "server"
    _workdir: Path
    _c2s_port: int
    _component_port: int
    _component: str
    _component_secret: str
    _process: subprocess.Popen | None

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self._workdir / f"{self.NAME}.log"

    @property
    def stdout_path(self) -> Path:
        return self._workdir / f"{self.NAME}.stdout"

    @property
    def c2s_port(self) -> int:
        return self._c2s_port

    @property
    def component_port(self) -> int:
        return self._component_port

    @property
    def domain(self) -> str:
        return DOMAIN

    @property
    def component(self) -> str:
        return self._component

    @property
    def component_secret(self) -> str:
        return self._component_secret

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def restart(self) -> None:
        """stop() then start() on the same ports, with the same data and accounts."""
        self.stop()
        self.start()

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Prosody(LoopbackServer):
    """One Prosody process with a VirtualHost "localhost" and one external component."""

    NAME = "prosody"

    def __init__(
        self,
        workdir: Path,
        component: str = "pubsub.localhost",
        component_secret: str = "component-secret",
        users: dict[str, str] | None = None,
        *,
        c2s_port: int | None = None,
        component_port: int | None = None,
        log_level: str = "info",
    ) -> None:
        self._workdir = Path(workdir).resolve()
        self._component = component
        self._component_secret = component_secret
        if c2s_port is None and component_port is None:
            c2s_port, component_port = _two_free_ports()
        elif c2s_port is None or component_port is None:
            other = component_port if c2s_port is None else c2s_port
            picked = free_port()
            while picked == other:
                picked = free_port()
            c2s_port = picked if c2s_port is None else c2s_port
            component_port = picked if component_port is None else component_port
        if c2s_port == component_port:
            raise ValueError(f"c2s and component ports must differ (both {c2s_port})")
        self._c2s_port = c2s_port
        self._component_port = component_port
        self._log_level = log_level

        self._process: subprocess.Popen | None = None
        self._stdout = None  # the open file the process writes its stdout/stderr to

        self._workdir.mkdir(parents=True, exist_ok=True)
        (self._workdir / "data").mkdir(exist_ok=True)
        (self._workdir / "certs").mkdir(exist_ok=True)
        self.config_path.write_text(self._config_text())

        self.register_many(users or {})

    # ----------------------------------------------------------------- properties

    @property
    def config_path(self) -> Path:
        return self._workdir / "prosody.cfg.lua"

    @property
    def pid(self) -> int | None:
        """The running server's process id, or None."""
        return self._process.pid if self.running else None

    # ----------------------------------------------------------------- config

    def _config_text(self) -> str:
        """scripts/prosody.cfg.lua.in (shared with ./quickstart), filled in."""
        w = self._workdir
        values = {
            "DIR": str(w),
            "DATA": str(w / "data"),
            "LOG_LEVEL": self._log_level,
            "RUN_AS_ROOT": "run_as_root = true" if os.getuid() == 0 else "",
            "C2S_PORT": str(self._c2s_port),
            "COMPONENT_PORT": str(self._component_port),
            "COMPONENT": self._component,
            "COMPONENT_SECRET": self._component_secret,
        }
        text = TEMPLATE.read_text()
        for name, value in values.items():
            # Values land inside Lua double-quoted strings (or are whole lines/numbers).
            literal = value if name in ("RUN_AS_ROOT", "C2S_PORT", "COMPONENT_PORT") else _lua(value)[1:-1]
            text = text.replace(f"@{name}@", literal)
        return text

    # ----------------------------------------------------------------- users

    def register(self, name: str, password: str) -> None:
        """Create (or re-password) name@localhost; works whether or not the server runs."""
        result = subprocess.run(
            ["prosodyctl", "--config", str(self.config_path), "register", name, DOMAIN, password],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise ProsodyError(
                f"prosodyctl register {name} {DOMAIN} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def register_many(self, users: dict[str, str]) -> None:
        """register() for each name, fast: plain names (a-z, 0-9) with printable ASCII
        passwords get their account file written directly (one PBKDF2 per distinct password,
        so accounts with the same password share a salt); any other goes through prosodyctl.
        Works whether or not the server runs (the next login reads the file)."""
        plain = {
            name: password
            for name, password in users.items()
            if _PLAIN_NAME.fullmatch(name) and _PLAIN_PASSWORD.fullmatch(password)
        }
        for name, password in users.items():
            if name not in plain:
                self.register(name, password)
        if not plain:
            return
        accounts = self._workdir / "data" / DOMAIN / "accounts"
        for folder in (accounts.parent, accounts):
            folder.mkdir(mode=0o750, exist_ok=True)
        records = {p: _scram_record(p, str(uuid.uuid4())) for p in set(plain.values())}
        for name, password in plain.items():
            # Written aside and renamed, as Prosody does: a login never reads half a file.
            scratch = accounts / f"{name}.dat~"
            scratch.write_text(records[password])
            scratch.chmod(0o640)
            os.replace(scratch, accounts / f"{name}.dat")

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Launch Prosody and wait until both listeners are up.  Raises ProsodyError."""
        if self.running:
            raise ProsodyError(f"Prosody is already running (pid {self._process.pid})")
        for what, port in (("c2s", self._c2s_port), ("component", self._component_port)):
            if not port_is_free(port):
                raise ProsodyError(
                    f"{what} port {port} on {LOOPBACK} is already in use; Prosody would start "
                    "without that listener"
                )

        # Only log lines written after this launch count (restart() reuses the log file).
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._stdout = open(self.stdout_path, "ab")
        self._process = subprocess.Popen(
            ["prosody", "--config", str(self.config_path), "-F"],
            cwd=self._workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
        )
        # A test that dies without stop() must not leave a server behind.
        atexit.register(self.stop)

        wanted = [
            re.compile(
                rf"Activated service '{service}' on \[{re.escape(LOOPBACK)}\]:{port}$", re.M
            )
            for service, port in (("c2s", self._c2s_port), ("component", self._component_port))
        ]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            log = self._read_log(log_offset)
            if "Failed to open server port" in log:
                self._kill_after_failed_start()
                raise ProsodyError(f"Prosody could not open a port\n{self._tail()}")
            if all(pattern.search(log) for pattern in wanted):
                return
            if self._process.poll() is not None:
                code = self._process.returncode
                self._kill_after_failed_start()
                raise ProsodyError(f"Prosody exited with code {code} during start\n{self._tail()}")
            if time.monotonic() > deadline:
                self._kill_after_failed_start()
                raise ProsodyError(
                    f"Prosody's listeners were not up after {START_TIMEOUT} s\n{self._tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL.  Safe to call more than once."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._process = None
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        atexit.unregister(self.stop)

    # ----------------------------------------------------------------- helpers

    def _kill_after_failed_start(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.stop()

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _tail(self, lines: int = 30) -> str:
        parts = []
        for label, path in (("prosody.log", self.log_path), ("prosody.stdout", self.stdout_path)):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                parts.append(f"--- last lines of {path} ---\n{tail}")
        return "\n".join(parts) or f"(no output in {self._workdir})"
