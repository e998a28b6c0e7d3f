"""End-to-end test of the reference consumer's catch-up: offline, it misses nothing.

    .venv/bin/python tests/e2e/catchup.py --bin target/debug [--only NAME]
    .venv/bin/python tests/e2e/catchup.py --bin target/release --figures

Like tests/e2e/faults.py (whose Rig it reuses, with guard.py's stanza builders): a real
Prosody on free loopback ports, the built `authz-server` CLI to provision the owner alice,
the consumer application FindMeNow (findmenow@localhost) and an access token, the built
`pubsub-guard run` as the component, and the built `consumer` binary with `--state`, run as
a person would run it. One slixmpp publisher (location@localhost) publishes, one item at a
time, waiting for each acknowledgement, so the node's archive holds the items in publish
order. Payloads are `<n xmlns='urn:example:catchup' v='N'/>`; the consumer must print the
values in publish order, each once.

  seed        the consumer prints live items; stopped (SIGTERM), it misses 30, then 1,000;
              started again it prints exactly those, in order, and says how many it
              recovered in how many pages (the second time with signed archive queries)
  gap         a node keeping 5 items; 12 published while the consumer is offline: it
              reports the 7 lost and prints the 5 held
  reconnect   Prosody restarts under a running consumer; the same process logs in again and
              prints every item published after the restart once, in order
  concurrent  a catch-up of 1,000 items while 200 more are published: all 1,200 once, in
              order

Each scenario gets its own folder, Prosody and database. Every wait has a deadline; on a
failure the guard's log tail and the consumer's stderr are printed. Exits 0 when every
scenario passes.

`--figures` (not part of the test command) measures how long the consumer takes to recover
1,000 and 10,000 missed items (from its start to the last item printed) and how many pages
it uses, and prints them.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import stat
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

from faults import Rig, run_scenarios  # noqa: E402
from prosody import stop_process  # noqa: E402
from guard import USERS, Consumer, check, publish_iq, published_id  # noqa: E402
from xmpp import Client  # noqa: E402

PAYLOAD_NS = "urn:example:catchup"
SEED, GAPPED, RESTART, BUSY = "/catchup/alice", "/gap/alice", "/restart/alice", "/busy/alice"
NODES = (SEED, GAPPED, RESTART, BUSY)
GAP_KEEPS = 5
PAGE = 250  # the consumer's default --page-size
# `consumer: recovered N items in P pages after ARCHIVEID`
RECOVERED = re.compile(r"^consumer: recovered (\d+) items in (\d+) pages after (.+)$", re.M)
NOTHING = re.compile(r"^consumer: nothing to recover after (.+)$", re.M)
GAP_LINE = re.compile(
    r"^consumer: gap: (\d+) items \(positions (\S+) to (\S+)\) were dropped by the node's retention "
    r"before they could be recovered; resuming from the oldest item held$", re.M)


def payload(n: int) -> str:
    return f"<n xmlns='{PAYLOAD_NS}' v='{n}'/>"


def value_of(line: str) -> int | None:
    """The number a printed payload carries, or None for a line that is not one."""
    try:
        element = ET.fromstring(line)
    except ET.ParseError:
        return None
    if element.tag != f"{{{PAYLOAD_NS}}}n" or element.get("v") is None:
        return None
    return int(element.get("v"))


def first_difference(got: list[int], want: list[int]) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"at position {i}: got {a}, expected {b} (got ...{got[max(0, i - 3):i + 4]}...)"
    if len(got) != len(want):
        return f"got {len(got)} values, expected {len(want)} (last got: {got[-5:]}, expected: {want[-5:]})"
    return "none"


# --------------------------------------------------------------------------- the consumer


class ConsumerProcess:
    """The built `consumer`, with --state, as a subprocess: its stdout lines are collected
    (with the time each arrived) by a thread, its stderr goes to a file per start."""

    def __init__(self, rig: "CatchupRig", node: str, token: Consumer, *extra: str) -> None:
        self.rig, self.node, self.token, self.extra = rig, node, token, extra
        self.state = rig.dir / f"state{node.replace('/', '-')}"
        self.process: subprocess.Popen | None = None
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.starts = 0
        self.started_at = 0.0
        self.stderr_path: Path | None = None
        self._reader: threading.Thread | None = None
        rig.consumers.append(self)

    def start(self, *more: str) -> None:
        """Starts it, with `more` arguments this time."""
        check(self.process is None, "the consumer is already running")
        self.starts += 1
        self.stderr_path = self.rig.dir / f"consumer{self.node.replace('/', '-')}-{self.starts}.err"
        with self.cond:
            self.lines = []
        err = open(self.stderr_path, "w")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [str(self.rig.bin / "consumer"), "--server", f"127.0.0.1:{self.rig.prosody.c2s_port}",
             "--jid", "findmenow@localhost", "--node", self.node, f"--consumer-key={self.token.key}",
             f"--token={self.token.token}", "--state", str(self.state), *self.extra, *more],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env={**os.environ, "XMPP_PASSWORD": USERS["findmenow"], "CONSUMER_SECRET": self.token.secret,
                 "TOKEN_SECRET": self.token.token_secret},
        )
        err.close()
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends `sig`, waits up to 10 s (then SIGKILL); returns the exit status."""
        process, self.process = self.process, None
        if process is None:
            return 0
        stop_process(process, sig)
        if self._reader is not None:
            self._reader.join(5)
        return process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path and self.stderr_path.exists() else ""

    def values(self) -> list[int]:
        with self.cond:
            return [value_of(line) for _, line in self.lines]

    def wait_lines(self, n: int, timeout: float) -> None:
        """Until `n` lines are printed in this run; fails after `timeout` s or if it exits."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.lines) < n:
                remaining = deadline - time.monotonic()
                check(remaining > 0, f"the consumer printed {len(self.lines)} of {n} lines within {timeout} s")
                check(self.process is not None and self.process.poll() is None,
                      f"the consumer exited ({self.process.poll() if self.process else None}) "
                      f"after {len(self.lines)} of {n} lines")
                self.cond.wait(min(remaining, 0.1))

    def quiet(self, within: float) -> bool:
        """True when no further line comes within `within` s."""
        with self.cond:
            count = len(self.lines)
            self.cond.wait_for(lambda: len(self.lines) > count, timeout=within)
            return len(self.lines) == count

    def wait_stderr(self, pattern: re.Pattern | str, timeout: float, after: int = 0) -> re.Match:
        """Until stderr matches `pattern` (from offset `after`); the match."""
        regex = re.compile(re.escape(pattern), re.M) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.stderr(), after)
            if found:
                return found
            check(time.monotonic() < deadline, f"no {regex.pattern!r} on the consumer's stderr within {timeout} s")
            check(self.running, f"the consumer exited ({self.process.poll() if self.process else None}) "
                                f"before printing {regex.pattern!r}")
            time.sleep(0.05)

    def position(self) -> str:
        """The archive id its state file holds for its node."""
        for line in self.state.read_text().splitlines():
            node, _, archive_id = line.partition("\t")
            if node == self.node:
                return archive_id
        raise AssertionError(f"{self.state} holds no position for {self.node}: {self.state.read_text()!r}")


# --------------------------------------------------------------------------- the rig


class CatchupRig(Rig):
    """faults.py's Rig with the nodes, the token, a publisher and the consumers of this test."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        super().__init__(bin_dir, workdir)
        self.consumers: list[ConsumerProcess] = []
        self.publisher: Client | None = None

    def provision_all(self, max_items: dict[str, int]) -> Consumer:
        """Owner alice, FindMeNow, one token for every node of this test, and the nodes."""
        self.cli("authz-server", "owner", "add", "alice", stdin="alice-password\n")
        app = self.fields(self.cli("authz-server", "consumer", "add", "--name", "FindMeNow",
                                   "--jid", "findmenow@localhost"))
        grant = self.fields(self.cli("authz-server", "token", "grant", "--owner", "alice",
                                     "--consumer", app["consumer_key"], "--scope", " ".join(NODES)))
        for node, keep in max_items.items():
            self.cli("pubsub-guard", "node", "create", node, "--owner", "alice",
                     "--publisher", "location@localhost", "--max-items", str(keep))
        return Consumer(app["consumer_key"], app["consumer_secret"], grant["oauth_token"], grant["oauth_token_secret"])

    def publish(self, node: str, numbers: range, client: Client | None = None) -> None:
        """Publishes `payload(n)` as item `n<N>` for each n, waiting for each acknowledgement."""
        if client is None:
            if self.publisher is None:
                self.publisher = self.client("location", resource="publisher")
            client = self.publisher
        for n in numbers:
            item = f"n{n}"
            got = published_id(client.send_iq_raw(publish_iq(node, payload(n), item), timeout=10))
            check(got == item, f"publish {n}: the service answered item {got}")

    def failure_report(self) -> str:
        parts = [f"---- guard log (tail) ----\n{self.log_tail()}"]
        for c in self.consumers:
            for start in range(1, c.starts + 1):
                path = self.dir / f"consumer{c.node.replace('/', '-')}-{start}.err"
                text = path.read_text(errors="replace") if path.exists() else "(none)"
                tail = "\n".join(text.splitlines()[-25:])
                parts.append(f"---- consumer {c.node}, run {start}: stderr (tail) ----\n{tail}")
        return "\n".join(parts)

    def close(self) -> None:
        for c in self.consumers:
            c.stop(signal.SIGKILL)
        super().close()


def expect_values(c: ConsumerProcess, want: list[int], what: str) -> None:
    got = c.values()
    check(got == want, f"{what}: the consumer printed other values than published; first difference "
                       f"{first_difference(got, want)}")


def go_live(r: CatchupRig, c: ConsumerProcess, node: str, numbers: range) -> None:
    """Starts the consumer for the first time, publishes `numbers` live, waits for them."""
    c.start()
    c.wait_stderr(f"consumer: subscribed to {node} as findmenow@localhost/consumer", timeout=15)
    c.wait_stderr(f"consumer: no earlier position for {node}; printing from now on", timeout=5)
    r.publish(node, numbers)
    c.wait_lines(len(numbers), timeout=15)
    expect_values(c, list(numbers), "live")
    # The consumer prints an item, then records it.
    deadline = time.monotonic() + 5
    while not c.state.exists():
        check(time.monotonic() < deadline, f"the consumer wrote no {c.state} within 5 s")
        time.sleep(0.05)
    mode = stat.S_IMODE(os.stat(c.state).st_mode)
    check(mode == 0o600, f"the state file is mode {mode:o}, not 600")


def offline(c: ConsumerProcess) -> str:
    """Stops the consumer with SIGTERM (it exits 0); returns the position it kept."""
    status = c.stop()
    check(status == 0, f"the consumer exited with {status} after SIGTERM, not 0")
    return c.position()


def recovered(c: ConsumerProcess, count: int, pages: int, after: str, timeout: float) -> None:
    """Waits for `count` lines and the exact summary line."""
    c.wait_lines(count, timeout=timeout)
    line = f"consumer: recovered {count} items in {pages} pages after {after}"
    found = RECOVERED.search(c.stderr()) or c.wait_stderr(RECOVERED, timeout=5)
    check(found.group(0) == line, f"the consumer said {found.group(0)!r}, expected {line!r}")


# --------------------------------------------------------------------------- scenarios


def seed(r: CatchupRig) -> None:
    """The seed's case: offline while 30 items are published, then while 1,000 are."""
    token = r.provision_all({SEED: 100000})
    r.up()
    c = ConsumerProcess(r, SEED, token)
    go_live(r, c, SEED, range(1, 4))

    # The second time its archive queries carry their own signed <oauth/> too.
    for missed, more in ((range(4, 34), ()), (range(34, 1034), ("--sign-queries",))):
        after = offline(c)
        started = time.monotonic()
        r.publish(SEED, missed)
        print(f"  offline at {after}: {len(missed)} published in {time.monotonic() - started:.1f} s")
        c.start(*more)
        recovered(c, len(missed), math.ceil(len(missed) / PAGE), after, timeout=60)
        check(c.quiet(within=1.0), f"the consumer printed more than the {len(missed)} it missed")
        expect_values(c, list(missed), "catch-up")
        print(f"  {len(missed)} recovered in {c.lines[-1][0] - c.started_at:.2f} s from the consumer's start")

    # Live again after the catch-up, and the state follows.
    r.publish(SEED, range(1034, 1036))
    c.wait_lines(1002, timeout=10)
    expect_values(c, list(range(34, 1036)), "live after the catch-up")
    check(c.quiet(within=0.5), "an item was printed twice after the catch-up")
    # Nothing missed: a restart says so and prints nothing.
    after = offline(c)
    c.start()
    line = c.wait_stderr(NOTHING, timeout=15).group(0)
    check(line == f"consumer: nothing to recover after {after}", f"the consumer said {line!r}")
    check(c.quiet(within=1.0), f"with nothing missed the consumer printed {c.values()}")


def gap(r: CatchupRig) -> None:
    """A node that keeps 5 items; 12 published while the consumer is offline."""
    token = r.provision_all({GAPPED: GAP_KEEPS})
    r.up()
    c = ConsumerProcess(r, GAPPED, token)
    go_live(r, c, GAPPED, range(1, 3))
    after = offline(c)
    r.publish(GAPPED, range(3, 15))
    c.start()
    c.wait_lines(GAP_KEEPS, timeout=30)
    found = c.wait_stderr(GAP_LINE, timeout=5)
    lost, first, last = int(found.group(1)), found.group(2), found.group(3)
    print(f"  {found.group(0)}")
    check(lost == 12 - GAP_KEEPS, f"the gap is {lost} items, not {12 - GAP_KEEPS}")
    if first.isdigit() and last.isdigit():
        check(int(last) - int(first) + 1 == lost,
              f"positions {first} to {last} are {int(last) - int(first) + 1} items, the gap says {lost}")
    summary = c.wait_stderr(RECOVERED, timeout=5)
    check(summary.start() > found.start(), "the recovered line came before the gap line")
    want = f"consumer: recovered {GAP_KEEPS} items in 1 pages after {after}"
    check(summary.group(0) == want, f"the consumer said {summary.group(0)!r}, expected {want!r}")
    check(c.quiet(within=1.0), "the consumer printed more than the items held")
    expect_values(c, list(range(15 - GAP_KEEPS, 15)), "after the gap")


def reconnect(r: CatchupRig) -> None:
    """Prosody restarts under a running consumer; it reconnects by itself."""
    token = r.provision_all({RESTART: 100000})
    r.up()
    c = ConsumerProcess(r, RESTART, token)
    go_live(r, c, RESTART, range(1, 3))
    pid = c.process.pid
    subscribed = f"consumer: subscribed to {RESTART} as findmenow@localhost/consumer"
    first = c.wait_stderr(subscribed, timeout=1)
    restart_started = time.monotonic()
    # Prosody stays down until the consumer has failed three times and waits 4 s before
    # its next attempt; items published in that window must come through the catch-up.
    r.prosody.stop()
    c.wait_stderr(re.compile(r"reconnecting in 4\.0 s \(attempt 4 of 30\)$", re.M), timeout=15)
    before = c.position()
    r.prosody.start()
    # The old publisher's stream died with Prosody.
    old, r.publisher = r.publisher, None
    if old is not None:
        old.disconnect()
    r.wait_connected(2, timeout=20)
    r.publish(RESTART, range(3, 13))
    away = not re.compile(re.escape(subscribed)).search(c.stderr(), first.end())
    print(f"  Prosody and the guard back in {time.monotonic() - restart_started:.1f} s; 10 published "
          + ("while the consumer was away" if away else "after the consumer was back (too slow to test the catch-up)"))
    c.wait_stderr(subscribed, timeout=30, after=first.end())
    if away:
        # Those 10 come from the archive, before the next ones are published.
        c.wait_lines(12, timeout=30)
        line = c.wait_stderr(RECOVERED, timeout=5).group(0)
        want = f"consumer: recovered 10 items in 1 pages after {before}"
        check(line == want, f"the consumer said {line!r}, expected {want!r}")
    r.publish(RESTART, range(13, 23))
    c.wait_lines(22, timeout=60)
    check(c.quiet(within=1.0), "the consumer printed more than was published")
    expect_values(c, list(range(1, 23)), "across the restart")
    check(c.running and c.process.pid == pid, "the consumer process did not survive the restart")
    err = c.stderr()
    summary = RECOVERED.search(err) or NOTHING.search(err)
    check(summary is not None, f"no catch-up summary after the reconnection:\n{err}")
    print("  " + "\n  ".join(line for line in err.splitlines() if "reconnect" in line or "recover" in line))


def concurrent(r: CatchupRig) -> None:
    """A catch-up of 1,000 items while 200 more are published."""
    token = r.provision_all({BUSY: 100000})
    r.up()
    c = ConsumerProcess(r, BUSY, token)
    go_live(r, c, BUSY, range(1, 2))
    offline(c)
    r.publish(BUSY, range(2, 1002))
    second = r.client("location", resource="second")
    failure: list[BaseException] = []

    def keep_publishing() -> None:
        try:
            for n in range(1002, 1202):
                r.publish(BUSY, range(n, n + 1), client=second)
                time.sleep(0.005)
        except BaseException as e:  # noqa: BLE001 - reported below
            failure.append(e)

    publisher = threading.Thread(target=keep_publishing, name="busy publisher", daemon=True)
    publisher.start()
    c.start()
    c.wait_lines(1200, timeout=90)
    publisher.join(30)
    check(not publisher.is_alive(), "the second publisher did not finish")
    check(not failure, f"the second publisher failed: {failure!r}")
    check(c.quiet(within=1.0), "the consumer printed more than the 1,200 items")
    expect_values(c, list(range(2, 1202)), "catch-up under publishing")
    summary = c.wait_stderr(RECOVERED, timeout=5)
    count = int(summary.group(1))
    check(count >= 1000, f"only {count} items came through the catch-up")
    print(f"  {summary.group(0)}; {1200 - count} came live after it")


SCENARIOS: dict[str, Callable[[CatchupRig], None]] = {
    "seed": seed,
    "gap": gap,
    "reconnect": reconnect,
    "concurrent": concurrent,
}


# --------------------------------------------------------------------------- figures


def figures(bin_dir: Path) -> int:
    """Time to recover 1,000 and 10,000 missed items, and the pages used."""
    rows = []
    for missed in (1000, 10000):
        with tempfile.TemporaryDirectory(prefix=f"catchup-figures-{missed}-") as tmp:
            r = CatchupRig(bin_dir, Path(tmp))
            try:
                token = r.provision_all({SEED: 100000})
                r.up()
                c = ConsumerProcess(r, SEED, token)
                go_live(r, c, SEED, range(0, 1))
                offline(c)
                published = time.monotonic()
                r.publish(SEED, range(1, missed + 1))
                published = time.monotonic() - published
                c.start()
                c.wait_lines(missed, timeout=600)
                took = c.lines[-1][0] - c.started_at
                summary = c.wait_stderr(RECOVERED, timeout=5)
                expect_values(c, list(range(1, missed + 1)), "figures")
                rows.append((missed, int(summary.group(2)), took, published))
            except Exception:  # noqa: BLE001 - report and stop
                traceback.print_exc()
                print(r.tails(), file=sys.stderr)
                return 1
            finally:
                r.close()
    print(f"catch-up figures ({bin_dir}, --page-size {PAGE}; from the consumer's start to the last item printed):")
    for missed, pages, took, published in rows:
        print(f"  {missed:>6} items: {pages:>3} pages, {took:6.2f} s ({missed / took:,.0f} items/s); "
              f"publishing them one by one took {published:.1f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=Path("target/debug"), help="folder with the built binaries")
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run this scenario alone")
    parser.add_argument("--figures", action="store_true", help="measure catch-up times instead of testing")
    args = parser.parse_args()
    bin_dir = args.bin.resolve()
    if args.figures:
        return figures(bin_dir)
    names = [args.only] if args.only else list(SCENARIOS)
    return run_scenarios("catchup", SCENARIOS, names, lambda tmp: CatchupRig(bin_dir, tmp))


if __name__ == "__main__":
    sys.exit(main())
