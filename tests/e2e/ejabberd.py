"""A private ejabberd XMPP server on 127.0.0.1 for end-to-end tests of several guards.

Usage:

    from ejabberd import Ejabberd

    with Ejabberd(tmp_path, users={"alice": "alicepass"}, component_number=3) as server:
        server.c2s_port        # clients log in here (plain text, loopback only)
        server.component_port  # the pubsub components (XEP-0114) connect here, 3 of them
        server.register("carol", "carolpass")    # while stopped: created at the next start()
        server.register_many({"sub1": "pw", "sub2": "pw"})   # new names: one import
        server.restart()       # same ports, same accounts

The shape is that of prosody.Prosody; the difference is the load balancing.  Several
connections may authenticate as the same component (`pubsub.localhost`), and ejabberd shares
the stanzas to it between them with

    domain_balancing:
      pubsub.localhost:
        type: bare_source
        component_number: N

Each bare sender JID is hashed onto one of N slots (erlang:phash2({User, Server, <<>>}, N)),
and each slot holds one component connection, so a sender always reaches the same guard.
EXACTLY `component_number` components must be connected.  ejabberd 23.01 does not spread the
slots over the connections it has: a slot whose component is not connected (never was, or
went away) drops every stanza hashed to it without any error reply, and an (N+1)th connection
is accepted but gets no slot and no traffic.  A component that connects while a slot is free
takes that slot.  (Checked by tests/e2e/ejabberd_smoke.py; see
/work/shared/notes/ejabberd-fleet.md.)

Everything ejabberd needs lives in `workdir`: the config (ejabberd.yml), the ejabberdctl
config (ejabberdctl.cfg), the Mnesia folder (spool/, accounts live there), the pid file, the
logs (ejabberd.log, error.log, crash.log) and the process's own stdout/stderr
(ejabberd.stdout).  Nothing under /etc/ejabberd or /var/lib/ejabberd is read or written.

Facts this relies on (measured with Debian's ejabberd 23.01, see
/work/shared/notes/xmpp-servers.md and ejabberd-fleet.md):
  * `ejabberdctl --config F --ctl-config F --spool D --logs D foreground-quiet` runs the node
    in the foreground (the full log still goes to ejabberd.log).  ejabberdctl runs only as
    root or as user `ejabberd`, and as root it re-runs itself through `su ejabberd`; here the
    process is started as user `ejabberd` directly (so no su sits in between), with HOME set
    to `workdir` (the Erlang cookie is written there).  So when we are root, `workdir` is
    given to user ejabberd, and every folder above it must let that user through.
  * `ERL_DIST_PORT` in ejabberdctl.cfg makes the node listen for ejabberdctl on that port
    (bound to 127.0.0.1 here) instead of registering with epmd, so no epmd is started and
    nothing stays bound after stop().
  * The node is up ~0.7 s after launch; the log then shows, one line per listener:
        ... [info] <0.334.0>@ejabberd_listener:init/4:160 Start accepting TCP connections
            at 127.0.0.1:47001 for ejabberd_c2s
        ... Start accepting TCP connections at 127.0.0.1:47002 for ejabberd_service
  * A port already in use makes ejabberd exit ("Failed to open socket at ...: address
    already in use"); the ports are still checked before launch for a clear message.
  * SIGTERM to the beam process (its pid is in the pid file) stops it cleanly in about 1 s.
  * Accounts live in Mnesia, so they can only be created while the node runs: users given to
    the constructor, or to register()/register_many() while the server is stopped, are
    created by the next start().  `ejabberdctl register` takes ~0.4 s an account, so
    register_many() imports them all at once from an XEP-0227 file (`import_piefxis`).
    Registering an existing name replaces its password, as with Prosody.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import tempfile
import time
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prosody import DOMAIN, LOOPBACK, LoopbackServer, port_is_free  # noqa: E402
# The system user Debian's ejabberdctl insists on (its INSTALLUSER).
EJABBERD_USER = "ejabberd"
ERLANG_NODE = "ejabberd@localhost"

# How long start() waits for the listeners, stop() for a clean exit, and one ejabberdctl
# command for its answer.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CTL_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


class EjabberdError(RuntimeError):
    """ejabberd could not be configured, started or stopped; the message has the log tail."""


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """`count` different free ports, none in `taken`: all sockets stay bound while picking."""
    sockets = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
            if port not in taken:
                ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def _yaml(value: str) -> str:
    """A YAML double-quoted scalar (a JSON string literal is one)."""
    return json.dumps(value)


class Ejabberd(LoopbackServer):
    """One ejabberd node with the host "localhost" and one external component domain that
    `component_number` component connections share (see the module docstring: exactly that
    many must be connected, or the senders hashed to an empty slot get no answer at all).
    With component_number=1 there is no domain_balancing: one plain component connection.
    `extra_components` are more component domains with the same secret, one plain
    connection each, on a listener of their own (`extra_component_port`): with 23.01, two
    components on one listener's `hosts` each got about half of the other's stanzas (a
    connection serves every domain of its listener), so the extras get a listener apart
    (scripts/bench_guard.py's null-pubsub next to the guard)."""

    NAME = "ejabberd"

    def __init__(
        self,
        workdir: Path,
        component: str = "pubsub.localhost",
        component_secret: str = "component-secret",
        users: dict[str, str] | None = None,
        *,
        component_number: int = 3,
        extra_components: tuple[str, ...] = (),
        c2s_port: int | None = None,
        component_port: int | None = None,
        dist_port: int | None = None,
        log_level: str = "info",
    ) -> None:
        if component_number < 1:
            raise ValueError(f"component_number must be at least 1 (got {component_number})")
        self._workdir = Path(workdir).resolve()
        self._component = component
        self._component_secret = component_secret
        self._component_number = component_number
        # More component domains with the same secret, on a listener of their own.
        self._extra_components = tuple(extra_components)
        given = [p for p in (c2s_port, component_port, dist_port) if p is not None]
        if len(set(given)) != len(given):
            raise ValueError(f"c2s, component and dist ports must differ (got {given})")
        extra = 1 if self._extra_components else 0
        picked = iter(_free_ports(3 + extra - len(given), set(given)))
        self._c2s_port = c2s_port if c2s_port is not None else next(picked)
        self._component_port = component_port if component_port is not None else next(picked)
        self._dist_port = dist_port if dist_port is not None else next(picked)
        self._extra_component_port = next(picked) if extra else None
        self._log_level = log_level

        # Who runs ejabberdctl: as root, user ejabberd; as user ejabberd, ourselves.
        try:
            account = pwd.getpwnam(EJABBERD_USER)
        except KeyError:
            raise EjabberdError(
                f"no user {EJABBERD_USER!r}: is ejabberd installed? (scripts/setup-ejabberd)"
            ) from None
        self._as_root = os.getuid() == 0
        if not self._as_root and os.getuid() != account.pw_uid:
            raise EjabberdError(
                f"Debian's ejabberdctl runs only as root or as user {EJABBERD_USER!r} "
                f"(this is uid {os.getuid()})"
            )
        self._uid, self._gid = account.pw_uid, account.pw_gid

        self._process: subprocess.Popen | None = None
        self._beam: int | None = None  # the beam.smp pid, once start() has read it
        self._stdout = None  # the open file the process writes its stdout/stderr to
        # Accounts to create at the next start() (Mnesia needs the node running).
        self._pending_users: dict[str, str] = {}

        self._workdir.mkdir(parents=True, exist_ok=True)
        (self._workdir / "spool").mkdir(exist_ok=True)
        self.config_path.write_text(self._config_text())
        self.ctl_config_path.write_text(self._ctl_config_text())
        if self._as_root:
            self._hand_over_workdir()

        self._pending_users.update(users or {})

    # ----------------------------------------------------------------- properties

    @property
    def config_path(self) -> Path:
        return self._workdir / "ejabberd.yml"

    @property
    def ctl_config_path(self) -> Path:
        return self._workdir / "ejabberdctl.cfg"

    @property
    def spool_path(self) -> Path:
        return self._workdir / "spool"

    @property
    def pid_path(self) -> Path:
        return self._workdir / "ejabberd.pid"

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port ejabberdctl talks to (127.0.0.1 only)."""
        return self._dist_port

    @property
    def extra_component_port(self) -> int | None:
        """Where the `extra_components` connect (None without any)."""
        return self._extra_component_port

    @property
    def component_number(self) -> int:
        """How many component connections must be connected as `component`."""
        return self._component_number

    @property
    def pid(self) -> int | None:
        """The running server's (beam.smp) process id, or None."""
        if not self.running:
            return None
        return self._beam or self._process.pid

    # ----------------------------------------------------------------- config

    def _config_text(self) -> str:
        """ejabberd.yml: c2s and one component listener on loopback, nothing else."""
        c2s, comp = self._c2s_port, self._component_port
        component, secret = _yaml(self._component), _yaml(self._component_secret)
        balancing = f"""
# Several connections as {self._component} share its stanzas; each bare sender JID keeps
# to one of {self._component_number} slots.  ejabberd 23.01 crashes every component
# handshake when component_number is missing, and drops the stanzas of a slot that has no
# connected component.
domain_balancing:
  {component}:
    type: bare_source
    component_number: {self._component_number}
"""
        extra = ""
        if self._extra_components:
            hosts = "".join(f"      {_yaml(name)}:\n        password: {secret}\n"
                            for name in self._extra_components)
            extra = f"""  -
    port: {self._extra_component_port}
    ip: "{LOOPBACK}"
    module: ejabberd_service
    backlog: 1024
    hosts:
{hosts}"""
        if self._component_number == 1:
            # ejabberd refuses component_number 1 ("Expected integer from 2 to 1000"); one
            # connection is its plain, unbalanced component.
            balancing = ""
        return f"""\
# Written by tests/e2e/ejabberd.py for one test run; see that file.
hosts:
  - {_yaml(DOMAIN)}
loglevel: {self._log_level}
log_rotate_count: 0
hide_sensitive_log_data: false
# No TLS anywhere: clients log in with SASL over plain TCP on 127.0.0.1.
certfiles: []
acme:
  auto: false
default_db: mnesia
auth_method: internal
# No server-to-server traffic at all (there is no s2s listener either).
s2s_access: none

listen:
  -
    port: {c2s}
    ip: "{LOOPBACK}"
    module: ejabberd_c2s
    backlog: 1024
    starttls: false
    starttls_required: false
  -
    port: {comp}
    ip: "{LOOPBACK}"
    module: ejabberd_service
    backlog: 1024
    hosts:
      {component}:
        password: {secret}
{extra}{balancing}
# No shaper rules: ejabberd's listeners then apply none (the stock config limits c2s to
# 3000 B/s).
modules:
  mod_admin_extra: {{}}   # ejabberdctl change_password
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
"""

    def _ctl_config_text(self) -> str:
        """ejabberdctl.cfg: node name, distribution port on loopback, pid file."""
        return f"""\
# Written by tests/e2e/ejabberd.py for one test run; see that file.
ERLANG_NODE={ERLANG_NODE}
# A fixed distribution port: no epmd is started, and nothing stays bound after stop.
ERL_DIST_PORT={self._dist_port}
ERL_OPTIONS="-kernel inet_dist_use_interface {{127,0,0,1}} -env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH={self.pid_path}
EJABBERD_BYPASS_WARNINGS=true
"""

    def _hand_over_workdir(self) -> None:
        """As root: give `workdir` to user ejabberd and let that user reach it.

        A folder above `workdir` that user ejabberd cannot pass through is given search
        permission for others (o+x: pass through, not list) when it is a temp folder we
        own, such as tempfile.TemporaryDirectory()'s 0700 folder; any other raises."""
        for path in [self._workdir, *self._workdir.rglob("*")]:
            os.chown(path, self._uid, self._gid, follow_symlinks=False)
        temp_root = Path(tempfile.gettempdir()).resolve()
        for parent in self._workdir.parents:
            info = parent.stat()
            if info.st_mode & stat.S_IXOTH or info.st_uid == self._uid:
                continue
            if info.st_gid == self._gid and info.st_mode & stat.S_IXGRP:
                continue
            if temp_root in parent.parents and info.st_uid == os.getuid():
                parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
                continue
            raise EjabberdError(
                f"user {EJABBERD_USER} cannot reach {self._workdir}: {parent} is mode "
                f"{stat.S_IMODE(info.st_mode):o} (put the workdir under {temp_root})"
            )

    # ----------------------------------------------------------------- ejabberdctl

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> subprocess.CompletedProcess:
        """Run `ejabberdctl ARGS...` against this node (as user ejabberd); returns the
        completed process whatever its exit code.  Needs the server running."""
        return subprocess.run(
            self._ctl_command(*args),
            cwd=self._workdir,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._as_ejabberd(),
        )

    def _ctl_command(self, *args: str) -> list[str]:
        w = str(self._workdir)
        return [
            "ejabberdctl",
            "--config", str(self.config_path),
            "--ctl-config", str(self.ctl_config_path),
            "--spool", str(self.spool_path),
            "--logs", w,
            *args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERL_", "EJABBERD"))}
        # The Erlang cookie goes to $HOME/.erlang.cookie; keep it in the workdir.
        env["HOME"] = str(self._workdir)
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        return env

    def _as_ejabberd(self) -> dict:
        """Popen keywords that run the child as user ejabberd (only needed as root)."""
        if not self._as_root:
            return {}
        return {"user": self._uid, "group": self._gid, "extra_groups": []}

    def _check_ctl(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            raise EjabberdError(
                f"ejabberdctl {what} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    # ----------------------------------------------------------------- users

    def register(self, name: str, password: str) -> None:
        """Create (or re-password) name@localhost.  While the server is stopped the account
        is created by the next start()."""
        if not self.running:
            self._pending_users[name] = password
            return
        result = self.ctl("register", name, DOMAIN, password)
        if result.returncode != 0 and "conflict" in result.stdout + result.stderr:
            result = self.ctl("change_password", name, DOMAIN, password)
            self._check_ctl(result, f"change_password {name} {DOMAIN}")
            return
        self._check_ctl(result, f"register {name} {DOMAIN}")

    def register_many(self, users: dict[str, str]) -> None:
        """register() for each name, fast: the new names in one `import_piefxis` call (an
        XEP-0227 file), the existing ones re-passworded one by one (~0.4 s each).  While the
        server is stopped the accounts are created by the next start()."""
        if not self.running:
            self._pending_users.update(users)
            return
        if not users:
            return
        listed = self.ctl("registered_users", DOMAIN)
        self._check_ctl(listed, f"registered_users {DOMAIN}")
        existing = set(listed.stdout.split())
        new = {name: pw for name, pw in users.items() if name.lower() not in existing}
        for name, password in users.items():
            if name not in new:
                self.register(name, password)
        if not new:
            return
        lines = "".join(
            f"    <user name={quoteattr(name)} password={quoteattr(password)}/>\n"
            for name, password in new.items()
        )
        piefxis = self._workdir / "import-users.xml"
        piefxis.write_text(
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            "<server-data xmlns='urn:xmpp:pie:0'>\n"
            f"  <host jid={quoteattr(DOMAIN)}>\n{lines}  </host>\n"
            "</server-data>\n"
        )
        try:
            if self._as_root:
                os.chown(piefxis, self._uid, self._gid)
            self._check_ctl(self.ctl("import_piefxis", str(piefxis)), "import_piefxis")
        finally:
            piefxis.unlink(missing_ok=True)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Launch ejabberd, wait until both listeners are up, then create the accounts
        given so far.  Raises EjabberdError."""
        if self.running:
            raise EjabberdError(f"ejabberd is already running (pid {self.pid})")
        for what, port in (
            ("c2s", self._c2s_port),
            ("component", self._component_port),
            ("Erlang distribution", self._dist_port),
            *([("extra component", self._extra_component_port)] if self._extra_components else []),
        ):
            if not port_is_free(port):
                raise EjabberdError(f"{what} port {port} on {LOOPBACK} is already in use")

        self.pid_path.unlink(missing_ok=True)  # a stale one would name another process
        # Only log lines written after this launch count (restart() reuses the log file).
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._stdout = open(self.stdout_path, "ab")
        self._process = subprocess.Popen(
            self._ctl_command("foreground-quiet"),
            cwd=self._workdir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            # Its own process group: stop() can end everything it started, and only that.
            start_new_session=True,
            **self._as_ejabberd(),
        )
        # A test that dies without stop() must not leave a server behind.
        atexit.register(self.stop)

        wanted = [
            re.compile(
                rf"Start accepting TCP connections at {re.escape(LOOPBACK)}:{port} "
                rf"for {module}$",
                re.M,
            )
            for module, port in (
                ("ejabberd_c2s", self._c2s_port),
                ("ejabberd_service", self._component_port),
                *([("ejabberd_service", self._extra_component_port)] if self._extra_components else []),
            )
        ]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            log = self._read_log(log_offset)
            if "Failed to start ejabberd application" in log:
                self._kill_after_failed_start()
                raise EjabberdError(f"ejabberd failed to start\n{self._tail()}")
            if all(pattern.search(log) for pattern in wanted):
                self._beam = self._beam_pid()
                if self._beam is not None:
                    break
            if self._process.poll() is not None:
                code = self._process.returncode
                self._kill_after_failed_start()
                raise EjabberdError(
                    f"ejabberd exited with code {code} during start\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                self._kill_after_failed_start()
                raise EjabberdError(
                    f"ejabberd's listeners were not up after {START_TIMEOUT} s\n{self._tail()}"
                )
            time.sleep(POLL_INTERVAL)

        pending, self._pending_users = self._pending_users, {}
        try:
            self.register_many(pending)
        except BaseException:
            self._pending_users = pending
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM to the node, wait up to 10 s, then SIGKILL to its process group.  Safe to
        call more than once."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                beam = self._beam if self._beam is not None else self._beam_pid()
                try:
                    if beam is not None:
                        os.kill(beam, signal.SIGTERM)
                    else:
                        os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._kill_group(process)
                    process.wait()
            # Whatever of the group outlived ejabberdctl's shell (it should be nothing).
            self._kill_group(process)
            self._process = self._beam = None
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        atexit.unregister(self.stop)

    # ----------------------------------------------------------------- helpers

    def _beam_pid(self) -> int | None:
        """The pid in the pid file, if that process is the child of our ejabberdctl."""
        process = self._process
        if process is None:
            return None
        try:
            pid = int(self.pid_path.read_text().strip())
            # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if int(fields[1]) == process.pid else None

    @staticmethod
    def _kill_group(process: subprocess.Popen) -> None:
        """SIGKILL whatever is left in the process group start() created."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_after_failed_start(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            self._kill_group(process)
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
        for path in (self.log_path, self._workdir / "error.log", self.stdout_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                parts.append(f"--- last lines of {path} ---\n{tail}")
        return "\n".join(parts) or f"(no output in {self._workdir})"
