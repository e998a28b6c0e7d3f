"""The guard's fault suite: outside readers of its SQLite file, SIGKILL and Prosody restarts
under load, a full disk.

    .venv/bin/python tests/e2e/faults.py --bin target/debug [--only NAME]

Like tests/e2e/guard.py (whose stanza builders and System it reuses): a real Prosody on free
loopback ports, the built `authz-server` CLI to provision owners, consumers and tokens (each
command a short process: no authorization server is left running), the built
`pubsub-guard run` as the component, slixmpp clients signing their `<oauth/>` in Python, and
Debian's `sqlite3` shell (scripts/setup-sqlite3) as the outside reader the README tells
operators to use. Each scenario gets its own folder, Prosody and database; nodes are created
with `--max-items 100000` so that retention never changes a count.

  outside_reader          the guard alone on the file; sqlite3 reads it and backs it up; every
                          acknowledged item visible to sqlite3, a CLI revocation ends the
                          subscription within 1 s, nothing lost to SIGKILL, the guard holds
                          its POSIX lock on the file (issue 10, case 1)
  sigkill_under_publish   SIGKILL in the middle of a pipelined stream of publishes: every
                          acknowledged item survives, in the file and through XMPP
  prosody_restart_under_load
                          Prosody restarts under the same stream: the guard and the publisher
                          reconnect; every publish on a live connection is answered
  disk_full               the database on a full 8 MB tmpfs (needs root): the refusal is
                          wait/resource-constraint, the guard stays connected and recovers

A scenario records every failed check and goes on where the next step still means something,
so one run shows every consequence; it fails with the list. Every wait has a deadline.
Exits 0 when every scenario passes; on a failure it prints the guard's log tail.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guard as g  # noqa: E402
from guard import (  # noqa: E402
    COMPONENT,
    EVENT,
    PUBSUB,
    USERS,
    Consumer,
    check,
    publish_iq,
    published_id,
    subscribe_iq,
    subscribed,
)
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher.base import MatcherBase  # noqa: E402
from xmpp import CLIENT_NS, Client, error_info  # noqa: E402

RSM = "http://jabber.org/protocol/rsm"
NODE = "/stream/alice"
MAX_ITEMS = "100000"
PAYLOAD_NS = "urn:example:faults"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
STORAGE_FULL = "the service's storage is full; nothing was stored; try again later"


def payload(n: int, size: int = 0) -> str:
    """A small payload element, padded to about `size` bytes when given."""
    pad = "x" * max(0, size - 40)
    return f"<n xmlns='{PAYLOAD_NS}' v='{n}'>{pad}</n>"


def sql_text(value: str) -> str:
    """An SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class Findings:
    """Soft assertions: each failed check is recorded and the scenario goes on."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.failures.append(message)
            print(f"  FAILED CHECK: {message}")
        return condition

    def raise_if_any(self) -> None:
        if self.failures:
            raise AssertionError(
                f"{len(self.failures)} check(s) failed:\n" + "\n".join(f"  - {f}" for f in self.failures)
            )


# --------------------------------------------------------------------------- the rig


class Rig(g.System):
    """guard.py's System plus what the faults need: the sqlite3 shell, the guard's locks and
    open files, its `connected` lines, provisioning of one node and one token."""

    # tracing's line for the handshake: "... INFO pubsub_guard::component: connected server=..."
    CONNECTED = re.compile(r": connected( |$)")

    def failure_report(self) -> str:
        """What a failed scenario prints after its traceback."""
        return f"---- guard log (tail) ----\n{self.log_tail()}"

    def sqlite(self, sql: str, db: Path | None = None) -> str:
        """`sqlite3 DB SQL` (a separate process, as an operator runs it); its output, stripped."""
        done = subprocess.run(
            ["sqlite3", "-bail", "-cmd", ".timeout 5000", str(db or self.db), sql],
            capture_output=True,
            text=True,
            timeout=30,
        )
        check(done.returncode == 0, f"sqlite3 {sql!r} failed (exit {done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def count(self, node: str = NODE, db: Path | None = None) -> int:
        return int(self.sqlite(f"SELECT count(*) FROM guard_items WHERE node = {sql_text(node)}", db))

    def stored_ids(self, node: str = NODE) -> set[str]:
        out = self.sqlite(f"SELECT id FROM guard_items WHERE node = {sql_text(node)}")
        return set(out.splitlines())

    def guard_locks(self) -> list[str]:
        """The /proc/locks lines of POSIX locks the guard process holds on the database's inode."""
        st = os.stat(self.db)
        inode = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        held = []
        with open("/proc/locks") as locks:
            for line in locks:
                # "1: POSIX  ADVISORY  READ 1234 fe:00:1001 1073741826 1073742335"; "->" marks waiters.
                fields = line.split()
                if len(fields) < 8 or fields[1] != "POSIX" or fields[4] != str(self.guard.pid):
                    continue
                major, minor, ino = fields[5].split(":")
                if (int(major, 16), int(minor, 16), int(ino)) == inode:
                    held.append(line.strip())
        return held

    def guard_deleted_files(self) -> list[str]:
        """The guard's open files that belong to the database and were unlinked (-wal, -shm)."""
        fd_dir = Path(f"/proc/{self.guard.pid}/fd")
        found = []
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(self.db)) and target.endswith(" (deleted)"):
                found.append(target)
        return sorted(found)

    def connected_lines(self) -> int:
        """How many times the guard logged `connected` (once per handshake)."""
        if not self.guard_log.exists():
            return 0
        return sum(1 for line in self.guard_log.read_text(errors="replace").splitlines() if self.CONNECTED.search(line))

    def wait_connected(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.connected_lines() < n:
            check(time.monotonic() < deadline, f"the guard logged `connected` {self.connected_lines()} time(s), "
                                                f"not {n}, within {timeout} s")
            time.sleep(0.05)

    def provision(self, node: str = NODE) -> tuple[Consumer, str]:
        """Owner alice, the consumer FindMeNow (findmenow@localhost), a token for `node`, and
        `node` itself (publisher location@localhost). Returns the token and its id."""
        self.cli("authz-server", "owner", "add", "alice", stdin="alice-password\n")
        app = self.fields(self.cli("authz-server", "consumer", "add", "--name", "FindMeNow",
                                   "--jid", "findmenow@localhost"))
        grant = self.fields(self.cli("authz-server", "token", "grant", "--owner", "alice",
                                     "--consumer", app["consumer_key"], "--scope", node))
        self.cli("pubsub-guard", "node", "create", node, "--owner", "alice",
                 "--publisher", "location@localhost", "--max-items", MAX_ITEMS)
        token = Consumer(app["consumer_key"], app["consumer_secret"], grant["oauth_token"],
                         grant["oauth_token_secret"])
        return token, grant["id"]

    def up(self) -> None:
        """Config, Prosody, the guard; returns once the guard answers disco#info."""
        self.write_guard_config()
        self.prosody.start()
        self.start_guard()
        probe = self.client("eve", resource="probe")
        self.wait_for_guard(probe)
        self.wait_connected(1, timeout=5)

    def subscriber(self, token: Consumer, resource: str = "test") -> Client:
        app = self.client("findmenow", resource=resource)
        subscribed(app.send_iq_raw(subscribe_iq(NODE, app.bare, token.oauth(app.jid))), NODE, app.bare)
        return app


def event_item_id(message: ET.Element) -> str | None:
    item = message.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item")
    return None if item is None else item.get("id")


def is_event_with(item_id: str) -> Callable[[ET.Element], bool]:
    return lambda m: m.get("from") == COMPONENT and event_item_id(m) == item_id


def answers(client: Client) -> list[str]:
    """Problems with disco#info and ping to the component (an empty list when both answer)."""
    problems = []
    for what, body in (("disco#info", f"<query xmlns='{DISCO_INFO}'/>"), ("ping", "<ping xmlns='urn:xmpp:ping'/>")):
        try:
            reply = client.send_iq_raw(f"<iq type='get' to='{COMPONENT}'>{body}</iq>")
        except TimeoutError as e:
            problems.append(f"{what}: {e}")
            continue
        if reply.get("type") != "result":
            problems.append(f"{what}: {error_info(reply)}")
    return problems


# --------------------------------------------------------------------------- a pipelined publisher


class _IqIdPrefix(MatcherBase):
    """Matches result and error IQs whose id starts with a prefix."""

    def match(self, stanza) -> bool:
        xml = stanza.xml
        return (xml.tag == f"{{{CLIENT_NS}}}iq" and xml.get("type") in ("result", "error")
                and (xml.get("id") or "").startswith(self._criteria))


class Stream(threading.Thread):
    """One publisher (`account`, by default location@localhost; resource stream) sending
    `total` publishes to `node` (NODE by default), at most
    `window` unanswered at once, and recording what became of each (the IQ id is the item
    id, `<prefix><n>`; the prefix is not a hex digit, so xmpp.Client's own ids never match).

    Outcomes: acked (a result naming the item), errors (item -> error dict), cut (unanswered
    when its client connection dropped), unanswered (no answer within `deadline` on a live
    connection, or by the end). An answer that comes after its item was counted cut or
    unanswered moves it to acked/errors and is counted in `late`. After an error the stream
    pauses `error_pause` s, as a publisher backing off would. With `reconnect`, a dropped
    connection is replaced by a new login (same resource) and the stream goes on.

    Runs in its own thread; the slixmpp loop of each client delivers the answers. Internals
    of xmpp.Client (`_call`, `_xmpp`) are used to send without waiting for each reply.
    """

    def __init__(self, rig: Rig, total: int, *, window: int = 20, deadline: float = 5.0,
                 error_pause: float = 0.02, reconnect: bool = False, prefix: str = "pub-",
                 time_limit: float = 60.0, node: str = NODE,
                 account: tuple[str, str] = ("location", USERS["location"])) -> None:
        super().__init__(name=f"stream-{prefix}", daemon=True)
        self.rig, self.total, self.window, self.deadline = rig, total, window, deadline
        self.node, self.account = node, account
        self.error_pause, self.reconnect, self.prefix, self.time_limit = error_pause, reconnect, prefix, time_limit
        self.cond = threading.Condition()
        self.sent: list[str] = []
        self.pending: dict[str, tuple[int, float]] = {}  # item -> (connection number, sent at)
        self.acked: list[str] = []
        self.errors: dict[str, dict] = {}
        self.cut: set[str] = set()
        self.unanswered: set[str] = set()
        self.late = 0
        self.anomalies: list[str] = []
        self.connection = 0  # the number of the current connection (1 = the first)
        self.live = False
        self.reconnects = 0
        self.acked_at_cut: int | None = None  # len(acked) when the first connection dropped
        self.last_error = 0.0
        self.failure: BaseException | None = None
        self.client: Client | None = None
        self._halt = threading.Event()

    # ----- from the test thread

    def acked_count(self) -> int:
        with self.cond:
            return len(self.acked)

    def wait_acked(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.acked) < n:
                check(self.failure is None and self.is_alive(), f"the publisher stopped: {self.failure!r}")
                remaining = deadline - time.monotonic()
                check(remaining > 0, f"only {len(self.acked)} of {n} publishes acknowledged after {timeout} s")
                self.cond.wait(min(remaining, 0.1))

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            self._halt.set()
            self.join(self.deadline + 5)
        check(not self.is_alive(), "the publisher did not stop")
        if self.failure is not None:
            raise AssertionError(f"the publisher failed: {self.failure!r}") from self.failure

    def summary(self) -> str:
        by_error: dict[str, int] = {}
        for info in self.errors.values():
            key = f"{info['type']}/{info['condition']} ({info['text']!r})"
            by_error[key] = by_error.get(key, 0) + 1
        errors = "; ".join(f"{n} x {key}" for key, n in sorted(by_error.items())) or "none"
        return (f"sent {len(self.sent)}, acked {len(self.acked)}, errored {len(self.errors)} [{errors}], "
                f"cut {len(self.cut)}, unanswered {len(self.unanswered)}, late answers {self.late}, "
                f"reconnects {self.reconnects}")

    # ----- the thread

    def run(self) -> None:
        try:
            self._connect()
            self._pump()
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.failure = e
        finally:
            with self.cond:
                self.unanswered |= set(self.pending)
                self.pending.clear()
                self.cond.notify_all()

    def _pump(self) -> None:
        stop_at = time.monotonic() + self.time_limit
        n = 0
        while True:
            with self.cond:
                now = time.monotonic()
                for item, (_, sent_at) in list(self.pending.items()):
                    if now - sent_at > self.deadline:
                        del self.pending[item]
                        self.unanswered.add(item)
                done_sending = n >= self.total or self._halt.is_set() or now > stop_at
                if done_sending:
                    if not self.pending:
                        return
                    self.cond.wait(0.05)
                    continue
                if self.live and (len(self.pending) >= self.window or now - self.last_error < self.error_pause):
                    self.cond.wait(0.01)
                    continue
                live = self.live
            if not live:
                if not self.reconnect:
                    return
                self._connect()
                continue
            item = f"{self.prefix}{n + 1:05d}"
            xml = publish_iq(self.node, payload(n + 1), item).replace("<iq ", f"<iq id='{item}' ", 1)
            if self._send(item, xml):
                n += 1

    def _connect(self) -> None:
        old, self.client = self.client, None
        if old is not None:
            try:
                old.disconnect()
            except Exception:  # noqa: BLE001 - the old connection is gone anyway
                pass
        deadline = time.monotonic() + 20
        while True:
            try:
                client = Client(*self.account, self.rig.prosody.c2s_port, resource="stream").connect(timeout=3)
                break
            except (ConnectionError, TimeoutError, OSError) as e:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"the publisher could not log in again within 20 s: {e}") from e
                time.sleep(0.1)
        self.rig.clients.append(client)
        with self.cond:
            self.connection += 1
            number = self.connection
            self.reconnects = number - 1
            self.live = True
        self.client = client

        def on_answer(stanza) -> None:
            self._answered(stanza.xml)

        def on_disconnected(_event) -> None:
            self._dropped(number)

        def attach() -> None:
            client._xmpp.register_handler(Callback(f"stream {number}", _IqIdPrefix(self.prefix), on_answer))
            client._xmpp.add_event_handler("disconnected", on_disconnected)

        client._call(attach)

    def _send(self, item: str, xml: str) -> bool:
        """Sends one publish on the current connection; False when it is down (not sent)."""
        client = self.client
        number = self.connection

        def send() -> bool:  # on the client's loop: pending before the answer can come
            xmpp = client._xmpp
            if xmpp is None or xmpp.transport is None:
                return False
            with self.cond:
                self.pending[item] = (number, time.monotonic())
                self.sent.append(item)
            xmpp.send_raw(xml)
            return True

        try:
            sent = client._call(send)
        except Exception:  # noqa: BLE001 - a loop that went away: the connection dropped
            sent = False
        if not sent:
            with self.cond:
                if number == self.connection:
                    self.live = False
        return sent

    def _answered(self, xml: ET.Element) -> None:
        item = xml.get("id")
        with self.cond:
            if item in self.pending:
                del self.pending[item]
            elif item in self.cut or item in self.unanswered:
                self.cut.discard(item)
                self.unanswered.discard(item)
                self.late += 1
            else:
                self.anomalies.append(f"an answer to {item!r}, which was not sent or was answered before")
                return
            if xml.get("type") == "result":
                got = xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item")
                if got is None or got.get("id") != item:
                    self.anomalies.append(f"the result for {item} names {None if got is None else got.get('id')!r}")
                self.acked.append(item)
            else:
                self.errors[item] = error_info(xml) or {"type": None, "condition": None, "text": None, "app": []}
                self.last_error = time.monotonic()
            self.cond.notify_all()

    def _dropped(self, number: int) -> None:
        with self.cond:
            if number != self.connection:
                return
            self.live = False
            if self.acked_at_cut is None:
                self.acked_at_cut = len(self.acked)
            for item, (conn, _) in list(self.pending.items()):
                if conn == number:
                    del self.pending[item]
                    self.cut.add(item)
            self.cond.notify_all()


# --------------------------------------------------------------------------- scenarios


def outside_reader(r: Rig) -> None:
    """The guard alone on the file; sqlite3 reads it and backs it up while it runs."""
    token, token_id = r.provision()
    r.up()
    app = r.subscriber(token)
    loc = r.client("location")
    f = Findings()

    locks = r.guard_locks()
    print(f"  the guard (pid {r.guard.pid}) holds {len(locks)} POSIX lock(s) on the database's inode")
    f.check(len(locks) >= 1,
            f"the guard holds {len(locks)} POSIX locks on {r.db.name}'s inode (want >= 1: an open WAL-mode "
            "connection keeps a shared lock there; without it the next outside reader to close takes the "
            "exclusive lock, checkpoints and deletes the -wal under the guard)")

    # The outside reader and the backup the README tells operators to make.
    check(r.count() == 0, "items before any publish")
    backup = r.dir / "backup.sqlite"
    r.sqlite(f".backup {sql_text(str(backup))}")
    check(r.sqlite("PRAGMA integrity_check", backup) == "ok", "the backup fails its integrity check")
    in_backup = r.sqlite(f"SELECT count(*) FROM guard_subscriptions WHERE node = {sql_text(NODE)}", backup)
    check(in_backup == "1", f"the backup holds {in_backup} subscriptions, not 1")
    wal = Path(f"{r.db}-wal")
    deleted = r.guard_deleted_files()
    print(f"  after sqlite3's read and .backup: {wal.name} exists: {wal.exists()}; "
          f"the guard's open deleted files: {deleted or 'none'}")
    f.check(not deleted, f"the guard keeps writing to database files that sqlite3 unlinked: {deleted}")

    # (a) every acknowledged item is visible to an outside reader at once.
    n_items = 300
    acked, first_gap = 0, None
    for n in range(1, n_items + 1):
        item = f"a{n:04d}"
        check(published_id(loc.send_iq_raw(publish_iq(NODE, payload(n), item))) == item, f"{item}: another id")
        acked += 1
        visible = r.count()
        if visible != acked and first_gap is None:
            first_gap = (acked, visible)
    visible = r.count()
    print(f"  (a) {acked} publishes acknowledged; sqlite3 sees {visible}"
          + (f" (first gap: after {first_gap[0]} acked it saw {first_gap[1]})" if first_gap else ""))
    f.check(first_gap is None and visible == acked,
            f"(a) sqlite3 does not see every acknowledged item: {acked} acked, {visible} visible at the end"
            + (f"; first gap after {first_gap[0]} acked: {first_gap[1]} visible" if first_gap else ""))

    backup_after = r.dir / "backup-after.sqlite"
    r.sqlite(f".backup {sql_text(str(backup_after))}")
    in_backup = r.count(db=backup_after)
    print(f"  a .backup after the publishes holds {in_backup} of {acked} items")
    f.check(in_backup == acked, f"(a) a .backup after {acked} acknowledged publishes holds {in_backup} items")
    locks = r.guard_locks()
    f.check(len(locks) >= 1, f"after the publishes the guard holds {len(locks)} POSIX locks on the database's inode")

    # (b) a revocation by the CLI reaches the subscriber within 1 s.
    app.messages.clear()
    started = time.monotonic()
    r.cli("authz-server", "token", "revoke", "--id", token_id)
    ended = app.wait_message(g.is_subscription_none, timeout=3)
    latency = time.monotonic() - started
    if ended is None:
        print("  (b) no subscription='none' event within 3 s of the revocation")
        f.check(False, "(b) the CLI's revocation did not reach the subscriber within 3 s")
    else:
        print(f"  (b) revocation reached the subscriber in {latency * 1000:.0f} ms")
        f.check(latency < 1.0, f"(b) the revocation took {latency:.2f} s (limit 1 s)")

    # (c) SIGKILL loses nothing that was acknowledged.
    r.stop_guard(signal.SIGKILL)
    after_kill = r.count()
    integrity = r.sqlite("PRAGMA integrity_check")
    print(f"  (c) after SIGKILL sqlite3 sees {after_kill} of {acked} acknowledged items; integrity_check: {integrity}")
    f.check(after_kill == acked, f"(c) after SIGKILL {after_kill} items are stored, {acked} were acknowledged")
    f.check(integrity == "ok", f"(c) integrity_check after SIGKILL: {integrity!r}")
    f.raise_if_any()


def all_items(client, node: str, page: int = 500) -> tuple[int, list[str]]:
    """Every item id of `node`, oldest first, paged with RSM (profile N10); and the pages used."""
    ids: list[str] = []
    after = ""
    for pages in range(1, 10_000):
        cursor = f"<after>{after}</after>" if after else ""
        reply = client.send_iq_raw(
            f"<iq type='get' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'><items node='{node}'/>"
            f"<set xmlns='{RSM}'><max>{page}</max>{cursor}</set></pubsub></iq>", timeout=20)
        g.expect_result(reply)
        got = [item.get("id") for item in reply.iter(f"{{{PUBSUB}}}item")]
        if not got:
            return pages, ids
        ids += got
        after = got[-1]
    raise AssertionError(f"{node}: still paging after 10,000 pages")


def sigkill_under_publish(r: Rig) -> None:
    """SIGKILL in the middle of a pipelined stream; every acknowledged item survives."""
    token, _ = r.provision()
    r.up()
    app = r.subscriber(token)
    stream = Stream(r, total=2000, window=20, deadline=3.0)
    stream.start()
    stream.wait_acked(500, timeout=60)
    r.stop_guard(signal.SIGKILL)
    killed_at = stream.acked_count()
    r.start_guard()
    stream.finish(timeout=90)
    r.wait_connected(2, timeout=10)

    acked = set(stream.acked)
    stored = r.stored_ids()
    loc = r.client("location", resource="check")
    pages, in_order = all_items(loc, NODE)
    retrieved = set(in_order)
    # A result goes out after the item's notifications, on the same stream: every
    # acknowledged item reached the subscriber, and nothing uncommitted did.
    delivered = delivered_ids(app, until=acked, timeout=10)
    unacked_stored = stored - acked
    print(f"  SIGKILL after {killed_at} acknowledged; {stream.summary()}")
    print(f"  stored {len(stored)} (sqlite3), retrieved {len(retrieved)} (XMPP, {pages} pages), delivered {len(delivered)}, "
          f"stored but never acknowledged {len(unacked_stored)}")
    f = Findings()
    f.check(not stream.anomalies, f"answers that do not fit: {stream.anomalies[:5]}")
    f.check(acked <= stored, f"{len(acked - stored)} acknowledged items are not stored: {sorted(acked - stored)[:10]}")
    f.check(acked <= retrieved, f"{len(acked - retrieved)} acknowledged items are not retrievable: "
                                f"{sorted(acked - retrieved)[:10]}")
    f.check(retrieved == stored, f"XMPP gives {len(retrieved)} items, sqlite3 {len(stored)}")
    f.check(len(in_order) == len(retrieved), f"{len(in_order) - len(retrieved)} items came twice "
                                             f"over {pages} pages")
    f.check(not (stored & set(stream.errors)),
            f"items refused with an error are stored: {sorted(stored & set(stream.errors))[:10]}")
    f.check(unacked_stored <= stream.unanswered,
            f"stored items that were neither acknowledged nor left unanswered: {sorted(unacked_stored - stream.unanswered)[:10]}")
    f.check(acked <= delivered, f"{len(acked - delivered)} acknowledged items never reached the subscriber: "
                                f"{sorted(acked - delivered)[:10]}")
    f.check(delivered <= stored, f"items delivered but not stored: {sorted(delivered - stored)[:10]}")
    f.check(len(acked) > killed_at, "nothing was acknowledged after the restart")
    f.raise_if_any()


def delivered_ids(client: Client, until: set[str], timeout: float) -> set[str]:
    """The item ids of the events `client` received, waiting up to `timeout` s for `until`."""
    got: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if until <= got and client.messages.empty():
            return got
        if remaining <= 0:
            return got
        message = client.wait_message(lambda m: m.get("from") == COMPONENT, timeout=min(remaining, 0.2))
        if message is not None and event_item_id(message) is not None:
            got.add(event_item_id(message))


def prosody_restart_under_load(r: Rig) -> None:
    """Prosody restarts under a pipelined stream; the guard and the publisher reconnect."""
    token, _ = r.provision()
    r.up()
    r.subscriber(token)
    # The cut is told by the disconnection, not by the deadline: a long one costs nothing.
    stream = Stream(r, total=1200, window=20, deadline=10.0, reconnect=True)
    stream.start()
    stream.wait_acked(300, timeout=60)
    restart_started = time.monotonic()
    r.prosody.restart()
    print(f"  Prosody restarted in {time.monotonic() - restart_started:.1f} s, after {stream.acked_count()} acknowledged")
    r.wait_connected(2, timeout=15)
    print(f"  the guard logged `connected` again {time.monotonic() - restart_started:.1f} s after the restart began")
    stream.finish(timeout=90)

    # After the guard is back: the subscriber logs in again (another resource) and subscribes
    # again, as a client that lost its session might; subscriptions are one per (node, bare
    # JID), so a publish reaches it exactly once.
    for c in list(r.clients):
        if c is not stream.client:
            c.disconnect()
    app = r.subscriber(token, resource="again")
    loc = r.client("location", resource="after")
    item = published_id(loc.send_iq_raw(publish_iq(NODE, payload(0), "after-restart")))
    got = app.wait_message(is_event_with(item), timeout=5)
    duplicate = got is not None and not app.no_message(is_event_with(item), within=0.5)

    acked = set(stream.acked) | {item}
    stored = r.stored_ids()
    subscriptions = r.sqlite(f"SELECT count(*) FROM guard_subscriptions WHERE node = {sql_text(NODE)}")
    unacked_stored = stored - acked
    print(f"  {stream.summary()}; acked before the cut {stream.acked_at_cut}; stored {len(stored)} "
          f"(with the one after the restart), stored but never acknowledged {len(unacked_stored)}")
    f = Findings()
    f.check(not stream.anomalies, f"answers that do not fit: {stream.anomalies[:5]}")
    f.check(acked <= stored, f"{len(acked - stored)} acknowledged items are not stored: {sorted(acked - stored)[:10]}")
    f.check(unacked_stored <= stream.cut,
            f"stored items that were neither acknowledged nor cut: {sorted(unacked_stored - stream.cut)[:10]}")
    f.check(not stream.unanswered, f"{len(stream.unanswered)} publishes sent on a live connection got no answer "
                                   f"within {stream.deadline} s: {sorted(stream.unanswered)[:10]}")
    f.check(not (stored & set(stream.errors)), f"items answered with an error are stored: {sorted(stored & set(stream.errors))[:10]}")
    f.check(stream.reconnects == 1, f"the publisher logged in {stream.reconnects + 1} times, not 2")
    f.check(stream.acked_at_cut is not None and len(acked) > stream.acked_at_cut,
            "nothing was acknowledged after the publisher reconnected")
    f.check(r.connected_lines() == 2, f"the guard logged `connected` {r.connected_lines()} times, not 2")
    f.check(r.guard.poll() is None, "the guard process exited")
    f.check(got is not None, "the subscriber did not receive the item published after the restart")
    f.check(not duplicate, "the subscriber received the item published after the restart twice")
    f.check(subscriptions == "1", f"{subscriptions} subscriptions to {NODE}, not 1 (one per node and bare JID)")
    f.raise_if_any()


def disk_full(r: Rig) -> None:
    """The database on a full tmpfs: the exact refusal, the guard stays, and recovers."""
    mnt = r.dir / "small-disk"
    mnt.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                                 capture_output=True, text=True, timeout=30)
        why = mounted.stderr.strip() or f"exit {mounted.returncode}"
    except OSError as e:
        mounted, why = None, str(e)
    check(mounted is not None and mounted.returncode == 0,
          f"cannot mount an 8 MB tmpfs for the database (this scenario needs root, or CAP_SYS_ADMIN): {why}")
    try:
        r.db = mnt / "authz.sqlite"
        _disk_full(r, mnt)
    finally:
        r.close()
        unmounted = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=30)
        if unmounted.returncode != 0:
            print(f"  umount {mnt}: {unmounted.stderr.strip()}; detaching it (umount -l)")
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(path: Path) -> int:
    """Writes `path` until the filesystem is full (ENOSPC); returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as out:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            for _ in range((16 << 20) // chunk):  # bounded: more than the 8 MB there are
                try:
                    written += out.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        os.fsync(out.fileno())
    return written


def _disk_full(r: Rig, mnt: Path) -> None:
    token, _ = r.provision()
    r.up()
    app = r.subscriber(token)
    loc = r.client("location")
    f = Findings()
    guard_pid, connected = r.guard.pid, r.connected_lines()
    acked_early = 0
    for n in range(1, 11):
        item = f"e{n:04d}"
        check(published_id(loc.send_iq_raw(publish_iq(NODE, payload(n, 2048), item))) == item, f"{item}: another id")
        acked_early += 1

    filler = mnt / "filler"
    print(f"  the filler took {_fill(filler)} bytes; the tmpfs is full")
    acked_full, refusal, refused_id = 0, None, None
    for n in range(1, 5001):
        item = f"b{n:04d}"
        reply = loc.send_iq_raw(publish_iq(NODE, payload(n, 2048), item))
        if reply.get("type") != "result":
            refusal, refused_id = error_info(reply), item
            break
        check(published_id(reply) == item, f"{item}: another id")
        acked_full += 1
    print(f"  {acked_full} publishes of 2 KB acknowledged on the full disk, then: {refusal}")
    check(refusal is not None, f"no refusal after {acked_full} publishes of 2 KB on a full 8 MB tmpfs")
    wanted = {"type": "wait", "condition": "resource-constraint", "text": STORAGE_FULL, "app": []}
    f.check(refusal == wanted, f"the refusal on a full disk is {refusal}, not {wanted}")
    f.check(app.no_message(is_event_with(refused_id), within=0.5), "the refused item was delivered to the subscriber")
    f.check(r.guard.poll() is None and r.guard.pid == guard_pid, "the guard process exited on the full disk")
    f.check(r.connected_lines() == connected, f"the guard reconnected on the full disk "
                                              f"({r.connected_lines()} `connected` lines, was {connected})")
    problems = answers(loc)
    f.check(not problems, f"the guard does not answer on the full disk: {problems}")

    filler.unlink()
    acked_after = 0
    for n in range(1, 6):
        item = f"c{n:04d}"
        reply = loc.send_iq_raw(publish_iq(NODE, payload(n, 2048), item))
        if not f.check(reply.get("type") == "result", f"publish {item} after freeing the disk: {error_info(reply)}"):
            break
        acked_after += 1
        f.check(app.wait_message(is_event_with(item), timeout=5) is not None,
                f"the subscriber did not receive {item}, published after freeing the disk")
    stored = r.count()
    acked = acked_early + acked_full + acked_after
    print(f"  after freeing the disk: {acked_after} of 5 publishes acknowledged; stored {stored}, "
          f"acknowledged in all {acked} ({acked_early} before the fill + {acked_full} on the full disk + {acked_after} after)")
    f.check(stored == acked, f"{stored} items stored, {acked} acknowledged "
                             f"({acked_early} before the fill + {acked_full} on the full disk + {acked_after} after)")
    f.check(r.connected_lines() == connected, f"the guard logged `connected` {r.connected_lines()} times, was {connected}")
    f.raise_if_any()


# --------------------------------------------------------------------------- main

SCENARIOS: dict[str, Callable[[Rig], None]] = {
    "outside_reader": outside_reader,
    "sigkill_under_publish": sigkill_under_publish,
    "prosody_restart_under_load": prosody_restart_under_load,
    "disk_full": disk_full,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=Path("target/debug"), help="folder with the built binaries")
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run this scenario alone")
    args = parser.parse_args()
    names = [args.only] if args.only else list(SCENARIOS)
    return run_scenarios("faults", SCENARIOS, names, lambda tmp: Rig(args.bin.resolve(), tmp))


def run_scenarios(suite: str, scenarios: dict, names: list[str], make_rig: Callable[[Path], "Rig"]) -> int:
    """Runs each named scenario on a rig of its own in a temp folder (`make_rig`), prints ok or
    FAIL with the time and, on a failure, the traceback and the rig's `failure_report()`; goes
    on with the next. 0 when every one passed."""
    failed = []
    suite_started = time.monotonic()
    for name in names:
        print(f"== {name}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{suite}-{name}-") as tmp:
            r = make_rig(Path(tmp))
            try:
                scenarios[name](r)
                print(f"ok {name} ({time.monotonic() - started:.1f} s)")
            except Exception:  # noqa: BLE001 - report and go on with the next scenario
                traceback.print_exc()
                print(r.failure_report(), file=sys.stderr)
                print(f"FAIL {name} ({time.monotonic() - started:.1f} s)")
                failed.append(name)
            finally:
                r.close()
    print(f"{suite}: {len(names) - len(failed)} of {len(names)} scenarios passed in "
          f"{time.monotonic() - suite_started:.1f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
