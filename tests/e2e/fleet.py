"""End-to-end test of a fleet: one ejabberd in front of three pubsub-guard processes that share
one component name (pubsub.localhost) and one database.

    .venv/bin/python tests/e2e/fleet.py --bin target/debug [--only NAME]
        [--database postgres|sqlite] [--shared-cursor]
    .venv/bin/python tests/e2e/fleet.py --bin target/release --figures

ejabberd (tests/e2e/ejabberd.py, Debian's, installed by scripts/setup-ejabberd) hashes each bare
sender JID onto one of `component_number` slots and gives each slot to one component
connection, the k-th to arrive holding slot k (tests/e2e/ejabberd_smoke.py checks this).  So the
guards are started one after the other, each once the one before has logged `connected`, and
guard-k serves the senders whose slot, `erlang:phash2({User, <<"localhost">>, <<>>}, 3) + 1`
(computed with erl), is k.  Requests go to the guard of their sender; the notifications of a
publish go out from the guard that stored it, whoever the subscribers are.  Everything else is
what tests/e2e/faults.py does (whose rig plumbing, publisher stream and scenario runner this
reuses, with guard.py's stanza builders and signing consumer): the built `authz-server` CLI
provisions the owner alice, one consumer application (FleetApp, any JID) and its tokens, the
built `pubsub-guard` CLI creates the nodes, and slixmpp clients sign their `<oauth/>` in Python.

  exactly_once    30 subscribers on all three slots subscribe to a protected node with a
                  signed <oauth/> (asserted: each guard logged `subscribed` exactly as often as
                  its slot has subscribers); a publisher on slot 1 publishes 50 items; each
                  subscriber receives each item exactly once; an items request sent through
                  guard-2 and one through guard-3 return the 50
  sigkill         three publishers, one per slot, publish continuously for 10 s (pipelined,
                  5 in flight, each answer awaited 6 s) to a node with 6 subscribers; guard-2
                  gets SIGKILL mid-stream; the publishers of slots 1 and 3 keep getting
                  results, every one of their publishes is answered; guard-2 is started again
                  (as a supervisor would: until a new connection takes its slot, ejabberd drops
                  every stanza of that slot without an error); the publishes left unanswered
                  are retried with the same item id.  Asserted: every acknowledged item is
                  stored and retrievable, and reached each subscriber exactly once; an item
                  retried after the kill at least once, at most twice (the first copy when the
                  killed guard had stored it and sent its notifications but not its result)
  revocation      one token behind the subscriptions of 30 subscribers (all slots): revoked
                  with `authz-server token revoke`, each receives <subscription
                  subscription='none'/> within 1.0 s (the times are printed), exactly once,
                  whichever guard sent it; then the same with guard-3 killed, and no notice a
                  second time when guard-3 starts again (its own change-log cursor, or with
                  --shared-cursor the one it shares with the others)

Each scenario gets its own folder, ejabberd, database and guards; the three take about 5, 15
and 6 s here (debug build, 2 cores).  Every wait has a deadline.
On a failure the traceback is followed by the tail of every guard's log.  Exits 0 when every
scenario passes.

Database: `--database postgres` (the default, a fleet's engine) starts a throwaway PostgreSQL
(tests/e2e/postgres.py) and gives its URL, postgres://guard@127.0.0.1:PORT/test, as `database`
to the CLIs and the guards.  `--database sqlite` has every guard and authz-server open one
SQLite file instead (WAL, busy timeout): it works, but SQLite's busy timeout retries instead of
queueing, so a guard can wait seconds for the lock while the others commit back to back (seen:
a 5.0 s pause of one guard under the sigkill scenario's load).  Each guard gets `instance =
"guard-K"` in its config (a change-log cursor of its own); `--shared-cursor` leaves the key
out, so that all share the single guard's cursor.

`--figures` (not part of the test command) measures deliveries per second with 1, 2 and 3
guards behind one ejabberd (component_number = the number of guards), each time 10 nodes with
the same 100 subscribers and one publisher per node, the publishers spread over the slots, and
prints the medians of `--runs` runs with the ratio to one guard.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guard as g  # noqa: E402
from ejabberd import Ejabberd  # noqa: E402
from ejabberd_smoke import disconnect_all, login_all, phash2_slots  # noqa: E402
from faults import Rig, Stream, all_items, payload, run_scenarios  # noqa: E402
from prosody import stop_process  # noqa: E402
from guard import COMPONENT, PUBSUB, Consumer, check, items_iq, publish_iq, published_id, subscribe_iq, subscribed  # noqa: E402
from xmpp import Client  # noqa: E402

GUARDS = 3
SUBSCRIBERS = 30
PUBLISHERS = 30  # pub01..pub30: enough to find several on every slot for 1, 2 and 3 guards
OWNER = "alice"
DOMAIN = "localhost"
MAX_ITEMS = "100000"  # retention never changes a count here

GUARD_START_TIMEOUT = 15.0
DELIVERY_TIMEOUT = 20.0
QUIET = 0.5  # how long after the last expected delivery a duplicate is waited for
REVOCATION_LIMIT = 1.0


def subscriber_names(n: int = SUBSCRIBERS) -> list[str]:
    return [f"sub{i:03d}" for i in range(1, n + 1)]


def publisher_names(n: int = PUBLISHERS) -> list[str]:
    return [f"pub{i:02d}" for i in range(1, n + 1)]


def password(name: str) -> str:
    return f"{name}-pass"


_slots: dict[int, dict[str, int]] = {}  # n -> {name: slot}, filled by slots()


def slots(names: list[str], n: int) -> dict[str, int]:
    """The slot (1..n) ejabberd hashes each bare JID name@localhost onto (one erl run for
    the names not asked about before)."""
    known = _slots.setdefault(n, {})
    new = [name for name in names if name not in known]
    if new:
        found = phash2_slots(new, DOMAIN, n)
        check(found is not None, "erl (Erlang, which ejabberd brings) is needed to compute the slots")
        known.update(found)
    return {name: known[name] for name in names}


def one_per_slot(names: list[str], n: int, count: int) -> list[str]:
    """`count` of `names`, taken round-robin over the n slots (slot 1 first)."""
    by_slot = {s: [name for name in names if slots(names, n)[name] == s] for s in range(1, n + 1)}
    picked = []
    while len(picked) < count:
        s = len(picked) % n + 1
        check(by_slot[s], f"not enough names on slot {s} of {n} among {len(names)}")
        picked.append(by_slot[s].pop(0))
    return picked


# --------------------------------------------------------------------------- the fleet


class Guard:
    """One `pubsub-guard run` process of the fleet, with its own config and log file."""

    def __init__(self, fleet: "Fleet", number: int) -> None:
        self.fleet, self.number = fleet, number
        self.name = f"guard-{number}"
        self.config = fleet.dir / f"{self.name}.toml"
        self.log = fleet.dir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def write_config(self) -> None:
        server = self.fleet.prosody
        instance = f"instance = {json.dumps(self.name)}\n" if self.fleet.instance_names else ""
        self.config.write_text(
            f"component = {json.dumps(COMPONENT)}\n"
            f"secret = {json.dumps(server.component_secret)}\n"
            f'server = "127.0.0.1:{server.component_port}"\n'
            f"database = {json.dumps(str(self.fleet.db))}\n"
            f"{instance}"
            "keepalive_secs = 5\n"
            "reconnect_max_secs = 1\n"
        )
        self.config.chmod(0o600)  # it holds the component secret

    def start(self) -> None:
        """Starts the process and waits until it has logged `connected` once more."""
        check(not self.running, f"{self.name} is already running")
        before = self.connected_lines()
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"==== fleet.py: start {self.starts} of {self.name}\n")
            log.flush()
            self.process = subprocess.Popen(
                [str(self.fleet.bin / "pubsub-guard"), "--config", str(self.config), "run"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GUARD_LOG": "info"},
            )
        deadline = time.monotonic() + GUARD_START_TIMEOUT
        while self.connected_lines() <= before:
            check(self.process.poll() is None, f"{self.name} exited with {self.process.returncode} at start")
            check(time.monotonic() < deadline, f"{self.name} did not log `connected` within {GUARD_START_TIMEOUT} s")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        stop_process(process, sig)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def count(self, pattern: str) -> int:
        """How many of its log lines match the regular expression `pattern`."""
        regex = re.compile(pattern)
        return sum(1 for line in self.lines() if regex.search(line))

    def connected_lines(self) -> int:
        return sum(1 for line in self.lines() if Rig.CONNECTED.search(line))

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.lines()[-n:]) or "(empty)"


class Fleet(Rig):
    """ejabberd with component_number = `guards`, that many guards on one database, and the
    CLIs.  Built on faults.Rig (guard.System): the XMPP server keeps the attribute name
    `prosody` that System's helpers and faults.Stream use, and `db` is what the CLIs and the
    guards get as their database (a path, or a PostgreSQL URL)."""

    def __init__(self, bin_dir: Path, workdir: Path, *, guards: int = GUARDS, database: str = "sqlite",
                 instance_names: bool = False, subscribers: int = SUBSCRIBERS) -> None:
        # Not System.__init__: that makes a Prosody.
        self.bin, self.dir = bin_dir, workdir
        self.clients: list[Client] = []
        self.guard = None  # System's single guard: none here
        self.guard_log = workdir / "guard-1.log"
        self.instance_names = instance_names
        self.postgres = None
        if database == "postgres":
            from postgres import Postgres

            self.postgres = Postgres().start()
            self.db: Path | str = self.postgres.url()
        else:
            self.db = workdir / "authz.sqlite"
        self.subscriber_names = subscriber_names(subscribers)
        self.users = {name: password(name) for name in self.subscriber_names + publisher_names() + ["probe"]}
        self.prosody = Ejabberd(workdir / "ejabberd", users=self.users, component_number=guards)
        self.guards = [Guard(self, k) for k in range(1, guards + 1)]

    # ----- provisioning

    def provision(self, nodes: list[str], publishers: list[str]) -> tuple[Consumer, str]:
        """Owner alice, the consumer FleetApp (any JID may use it), a token for `nodes`,
        and each node (owner alice, `publishers`, no last item on subscribe).  Returns the
        token and its id."""
        self.cli("authz-server", "owner", "add", OWNER, stdin="alice-password\n")
        app = self.fields(self.cli("authz-server", "consumer", "add", "--name", "FleetApp"))
        grant = self.fields(self.cli("authz-server", "token", "grant", "--owner", OWNER,
                                     "--consumer", app["consumer_key"], "--scope", " ".join(nodes)))
        for node in nodes:
            self.cli("pubsub-guard", "node", "create", node, "--owner", OWNER, "--max-items", MAX_ITEMS,
                     "--send-last-published-item", "never",
                     *[arg for p in publishers for arg in ("--publisher", f"{p}@{DOMAIN}")])
        token = Consumer(app["consumer_key"], app["consumer_secret"], grant["oauth_token"], grant["oauth_token_secret"])
        return token, grant["id"]

    def grant(self, token: Consumer, nodes: list[str]) -> tuple[Consumer, str]:
        """Another token of the same consumer, for `nodes`."""
        grant = self.fields(self.cli("authz-server", "token", "grant", "--owner", OWNER,
                                     "--consumer", token.key, "--scope", " ".join(nodes)))
        return Consumer(token.key, token.secret, grant["oauth_token"], grant["oauth_token_secret"]), grant["id"]

    # ----- running

    def up(self) -> None:
        """ejabberd, then the guards one at a time (so guard-k holds slot k)."""
        self.prosody.start()
        for guard in self.guards:
            guard.write_config()
            guard.start()

    def login(self, names: list[str]) -> dict[str, Client]:
        clients = login_all(self.prosody, {name: self.users[name] for name in names})
        self.clients += clients.values()
        return clients

    def client(self, name: str, resource: str = "test") -> Client:
        c = Client(name, self.users[name], self.prosody.c2s_port, resource=resource).connect()
        self.clients.append(c)
        return c

    def subscribe_all(self, clients: dict[str, Client], node: str, token: Consumer) -> None:
        def one(c: Client) -> None:
            subscribed(c.send_iq_raw(subscribe_iq(node, c.bare, token.oauth(c.jid)), timeout=10), node, c.bare)

        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            for future in [pool.submit(one, c) for c in clients.values()]:
                future.result()

    def slot_of(self, name: str) -> int:
        return slots(list(self.users), len(self.guards))[name]

    def failure_report(self) -> str:
        parts = [f"---- {guard.name} log (tail; {guard.log}) ----\n{guard.tail()}" for guard in self.guards]
        parts.append(f"---- ejabberd: {self.prosody.log_path} ----")
        return "\n".join(parts)

    def close(self) -> None:
        disconnect_all({str(i): c for i, c in enumerate(self.clients)})
        self.clients.clear()
        for guard in self.guards:
            guard.stop()
        self.prosody.stop()
        if self.postgres is not None:
            self.postgres.stop()


# --------------------------------------------------------------------------- deliveries


def drain(client: Client, node: str, counts: Counter) -> None:
    """Counts the item ids of the events from `node` queued at `client` (and drops them)."""
    is_event = g.is_event_for(node)
    while True:
        try:
            message = client.messages.get_nowait()
        except queue.Empty:
            return
        if is_event(message):
            for item in message.iter(f"{{{g.EVENT}}}item"):
                counts[item.get("id")] += 1


def deliveries(clients: dict[str, Client], node: str, expected: set[str], timeout: float = DELIVERY_TIMEOUT,
               quiet: float = QUIET) -> dict[str, Counter]:
    """For each subscriber, how often it received each item id of `node`: waits until every
    one has every id of `expected` (at most `timeout` s), then `quiet` s more for duplicates."""
    counts = {name: Counter() for name in clients}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, c in clients.items():
            drain(c, node, counts[name])
        if all(expected <= set(got) for got in counts.values()):
            break
        time.sleep(0.05)
    time.sleep(quiet)
    for name, c in clients.items():
        drain(c, node, counts[name])
    return counts


def exactly_once_problems(counts: dict[str, Counter], expected: set[str]) -> list[str]:
    """What differs from `expected` received once by each subscriber (an empty list if nothing)."""
    problems = []
    for name, got in counts.items():
        missing = sorted(expected - set(got))
        twice = sorted(i for i in expected if got[i] > 1)
        extra = sorted(set(got) - expected)
        if missing or twice or extra:
            problems.append(f"{name}: missing {len(missing)} {missing[:5]}, more than once {len(twice)} "
                            f"{[(i, got[i]) for i in twice[:5]]}, unexpected {extra[:5]}")
    return problems


def slot_summary(fleet: Fleet, names: list[str]) -> str:
    spread = Counter(fleet.slot_of(n) for n in names)
    return ", ".join(f"slot {s}: {spread[s]}" for s in range(1, len(fleet.guards) + 1))


# --------------------------------------------------------------------------- scenarios


def exactly_once(f: Fleet) -> None:
    """30 subscribers on the three slots, 50 items from a publisher on slot 1."""
    node, items = "/fleet/alice", 50
    publisher = one_per_slot(publisher_names(), GUARDS, 1)[0]
    token, _ = f.provision([node], [publisher])
    f.up()
    started = time.monotonic()
    subs = f.login(f.subscriber_names)
    f.subscribe_all(subs, node, token)
    print(f"  {len(subs)} subscribers ({slot_summary(f, list(subs))}) subscribed in "
          f"{time.monotonic() - started:.1f} s")
    logged = {guard.name: guard.count(r"INFO .*: subscribed") for guard in f.guards}
    wanted = {f"guard-{s}": sum(f.slot_of(n) == s for n in subs) for s in range(1, GUARDS + 1)}
    print(f"  `subscribed` lines in the guards' logs: {logged}")
    check(logged == wanted, f"the guards logged `subscribed` {logged} times, the slots say {wanted}")
    check(all(wanted.values()), f"a slot has no subscriber: {wanted}")
    others = sum(f.slot_of(n) != f.slot_of(publisher) for n in subs)
    print(f"  the publisher {publisher} is on slot {f.slot_of(publisher)}; {others} subscribers are on other slots")

    pub = f.client(publisher)
    ids = [f"x{n:03d}" for n in range(1, items + 1)]
    started = time.monotonic()
    for n, item in enumerate(ids, 1):
        check(published_id(pub.send_iq_raw(publish_iq(node, payload(n), item))) == item, f"{item}: another id")
    counts = deliveries(subs, node, set(ids))
    took = time.monotonic() - started
    problems = exactly_once_problems(counts, set(ids))
    check(not problems, f"{len(problems)} subscribers did not get each item exactly once:\n  " + "\n  ".join(problems[:10]))
    print(f"  {items} items published and {len(subs) * items} deliveries, each exactly once, in {took:.1f} s")
    published = {guard.name: guard.count(r"INFO .*: published") for guard in f.guards}
    check(published == {f"guard-{s}": items if s == f.slot_of(publisher) else 0 for s in range(1, GUARDS + 1)},
          f"`published` lines per guard: {published}")

    # The archive read through the other guards.
    for s in range(1, GUARDS + 1):
        if s == f.slot_of(publisher):
            continue
        reader = next(c for name, c in subs.items() if f.slot_of(name) == s)
        reply = reader.send_iq_raw(items_iq(node))
        g.expect_result(reply)
        got = [i.get("id") for i in reply.iter(f"{{{PUBSUB}}}item")]
        check(sorted(got) == ids, f"items through guard-{s} ({reader.bare}): {len(got)} ids, {got[:5]}...")
        print(f"  an items request from {reader.bare} (slot {s}, guard-{s}) returns the {len(got)} items")


def sigkill(f: Fleet) -> None:
    """SIGKILL guard-2 under three publish streams, one per slot; start it again."""
    node, victim = "/stream/alice", 2
    publishers = one_per_slot(publisher_names(), GUARDS, GUARDS)
    sub_names = one_per_slot(f.subscriber_names, GUARDS, 6)
    token, _ = f.provision([node], publishers)
    f.up()
    subs = f.login(sub_names)
    f.subscribe_all(subs, node, token)
    # The deadline is longer than the store's busy timeout (5 s): a guard whose write waits
    # that long for the SQLite lock the other guards keep taking answers with an error, which
    # is asserted absent, and otherwise late, which is printed (longest pause).
    streams = {f.slot_of(p): Stream(f, total=100_000, window=5, deadline=6.0, prefix=f"{p}-", node=node,
                                    account=(p, f.users[p]), time_limit=10.0) for p in publishers}
    print(f"  publishers {', '.join(f'{p} (slot {f.slot_of(p)})' for p in publishers)}; "
          f"{len(subs)} subscribers ({slot_summary(f, sub_names)})")
    for stream in streams.values():
        stream.start()
    for stream in streams.values():
        stream.wait_acked(30, timeout=20)

    before = {s: st.acked_count() for s, st in streams.items()}
    f.guards[victim - 1].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(2.0)
    during = {s: st.acked_count() - before[s] for s, st in streams.items()}
    f.guards[victim - 1].start()
    print(f"  guard-{victim} killed after {before} acknowledged (by slot); in the {time.monotonic() - killed_at:.1f} s "
          f"until it was connected again: {during} more")
    for s, n in during.items():
        if s != victim:
            check(n > 0, f"the publisher of slot {s} got no result while guard-{victim} was down")
    restarted = {s: st.acked_count() for s, st in streams.items()}
    for stream in streams.values():
        stream.finish(timeout=30)
    check(streams[victim].acked_count() > restarted[victim],
          f"the publisher of slot {victim} got no result after guard-{victim} was started again")
    print("  longest pause between two `published` lines of each guard: "
          + ", ".join(f"{guard.name} {longest_pause(guard, 'published'):.2f} s" for guard in f.guards)
          + f" (guard-{victim}'s includes its outage)")

    # Retry what was left unanswered, with the same item id (the killed guard's slot dropped it).
    retried: set[str] = set()
    for s, stream in streams.items():
        print(f"  slot {s}: {stream.summary()}")
    for s, stream in streams.items():
        check(not stream.anomalies, f"slot {s}: answers that do not fit: {stream.anomalies[:5]}")
        check(not stream.errors, f"slot {s}: error answers: {list(stream.errors.items())[:5]}")
        check(not stream.cut, f"slot {s}: the publisher's connection dropped")
        if s != victim:
            check(not stream.unanswered, f"slot {s} (guard-{s} stayed up): {len(stream.unanswered)} publishes "
                                         f"unanswered: {sorted(stream.unanswered)[:5]}")
        for item in sorted(stream.unanswered):
            n = int(item.rsplit("-", 1)[1])
            check(published_id(stream.client.send_iq_raw(publish_iq(node, payload(n), item), timeout=10)) == item,
                  f"the retry of {item}: another id")
            retried.add(item)
    acked = {item for st in streams.values() for item in st.acked}
    expected = acked | retried
    print(f"  {len(acked)} publishes acknowledged, {len(retried)} retried with the same id after the restart")

    pages, in_order = all_items(subs[sub_names[0]], node)
    stored = set(in_order)
    check(len(in_order) == len(stored), f"{len(in_order) - len(stored)} items came twice over {pages} pages")
    check(expected <= stored, f"{len(expected - stored)} acknowledged items are not stored: {sorted(expected - stored)[:10]}")
    sent = {item for st in streams.values() for item in st.sent}
    check(stored <= sent, f"stored items nobody sent: {sorted(stored - sent)[:10]}")

    counts = deliveries(subs, node, expected)
    once = acked - retried
    problems = exactly_once_problems({n: Counter({i: c[i] for i in c if i in once}) for n, c in counts.items()}, once)
    check(not problems, "acknowledged items not delivered exactly once:\n  " + "\n  ".join(problems[:10]))
    twice = Counter()
    for name, got in counts.items():
        for item in retried:
            check(1 <= got[item] <= 2, f"{name} received the retried {item} {got[item]} times")
            twice[item] += got[item] == 2
        check(set(got) <= stored, f"{name} received items that are not stored: {sorted(set(got) - stored)[:5]}")
    doubled = sorted(i for i, n in twice.items() if n)
    print(f"  each subscriber got each of the {len(once)} items acknowledged the first time exactly once; "
          f"retried items received twice (stored by guard-{victim} before it died): {doubled or 'none'}")


def revocation(f: Fleet) -> None:
    """Revocation of one token behind subscribers on every slot, then with guard-3 down."""
    first, second, down = "/revoke/alice", "/revoke2/alice", 3
    token, token_id = f.provision([first, second], [publisher_names()[0]])
    token2, token2_id = f.grant(token, [second])
    f.up()
    subs = f.login(f.subscriber_names)
    f.subscribe_all(subs, first, token)
    f.subscribe_all(subs, second, token2)

    def measure(token_id: str, node: str) -> dict[str, float | None]:
        for c in subs.values():
            c.messages.clear()
        arrived: dict[str, float | None] = {}
        ready = threading.Barrier(len(subs) + 1)

        def wait(name: str, c: Client) -> None:
            ready.wait()
            got = c.wait_message(g.is_subscription_none, timeout=3)
            arrived[name] = None if got is None else time.monotonic()
            if got is not None:
                sub = got.find(f"{{{g.EVENT}}}event/{{{g.EVENT}}}subscription")
                check(sub.get("node") == node and sub.get("jid") == c.bare, f"{name}: the wrong one ended: {sub.attrib}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(subs)) as pool:
            futures = [pool.submit(wait, name, c) for name, c in subs.items()]
            ready.wait()
            started = time.monotonic()
            f.cli("authz-server", "token", "revoke", "--id", token_id)
            for future in futures:
                future.result()
        return {name: None if at is None else at - started for name, at in arrived.items()}

    def report(what: str, took: dict[str, float | None], node: str, ended_before: dict[str, int]) -> None:
        lost = sorted(n for n, t in took.items() if t is None)
        check(not lost, f"{what}: {len(lost)} subscribers got no subscription='none' within 3 s: {lost[:10]}")
        by_slot = {s: sorted(t for n, t in took.items() if f.slot_of(n) == s) for s in range(1, GUARDS + 1)}
        print(f"  {what}: subscription='none' reached the {len(took)} subscribers in "
              f"{min(took.values()) * 1000:.0f} to {max(took.values()) * 1000:.0f} ms "
              f"(median {statistics.median(took.values()) * 1000:.0f} ms); by the subscriber's slot: "
              + "; ".join(f"slot {s} max {max(v) * 1000:.0f} ms" for s, v in by_slot.items()))
        print("    each, in ms: " + " ".join(f"{n}={t * 1000:.0f}" for n, t in sorted(took.items())))
        slow = {n: round(t, 3) for n, t in took.items() if t >= REVOCATION_LIMIT}
        check(not slow, f"{what}: {len(slow)} subscribers waited {REVOCATION_LIMIT} s or more: {slow}")
        ended = {guard.name: ended_lines(guard, node) - ended_before[guard.name]
                 for guard in f.guards}
        print(f"    notices sent, by guard: {ended}")
        check(sum(ended.values()) == len(subs), f"{what}: the guards logged {ended} ended subscriptions, not {len(subs)}")

    def ended_counts(node: str) -> dict[str, int]:
        return {guard.name: ended_lines(guard, node) for guard in f.guards}

    def second_notices() -> list[str]:
        time.sleep(QUIET)
        return [name for name, c in subs.items() if not c.no_message(g.is_subscription_none, within=0)]

    report("all guards up", measure(token_id, first), first, {guard.name: 0 for guard in f.guards})
    again = second_notices()
    check(not again, f"{len(again)} subscribers got subscription='none' a second time: {again[:10]}")

    f.guards[down - 1].stop(signal.SIGKILL)
    before = ended_counts(second)
    report(f"guard-{down} killed", measure(token2_id, second), second, before)
    cursor_before = cursor(f)
    f.guards[down - 1].start()
    time.sleep(1.0 - QUIET)  # with second_notices()'s wait: five change-log polls of the restarted guard
    again = second_notices()
    print(f"  guard-{down} started again (the change-log cursors were {cursor_before}, are {cursor(f)}): "
          f"notices sent a second time: {len(again)}")
    check(not again, f"after guard-{down} started again, {len(again)} subscribers got subscription='none' "
                     f"a second time: {again[:10]}")
    listed = f.cli("pubsub-guard", "subscription", "list")
    check(listed.strip() == "", f"subscriptions left after both revocations: {listed[:500]!r}")


def longest_pause(guard: Guard, message: str) -> float:
    """The longest time between two consecutive log lines of the guard with this message."""
    stamps = [time.mktime(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + line[19:].split("Z", 1)[0])
              for line in guard.lines() if f": {message} " in line]
    return max((b - a for a, b in zip(stamps, stamps[1:])), default=0.0)


def ended_lines(guard: Guard, node: str) -> int:
    """How many `subscription ended` lines for `node` the guard logged (tracing quotes the node)."""
    return guard.count(rf'subscription ended.* node="?{re.escape(node)}"?(\s|$)')


def cursor(f: Fleet) -> str:
    """The guards' change-log cursor rows."""
    sql = "SELECT key || '=' || value FROM guard_state WHERE key LIKE 'change_cursor%' ORDER BY key"
    if f.postgres is not None:
        rows = f.postgres.psql("test", sql)
    else:
        try:
            rows = f.sqlite(sql)
        except (AssertionError, OSError):  # the sqlite3 shell is missing (scripts/setup-sqlite3)
            return "?"
    return rows.replace("\n", ", ") or "none"


SCENARIOS = {"exactly_once": exactly_once, "sigkill": sigkill, "revocation": revocation}


# --------------------------------------------------------------------------- figures


def cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user + system) the processes used so far; a gone process counts 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def postgres_pids(f: Fleet) -> list[int]:
    """The PostgreSQL server of the fleet: the postmaster and every process it started."""
    if f.postgres is None:
        return []
    try:
        master = int((f.postgres.dir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [master, *children]


def cpu_by_part(f: Fleet) -> dict[str, float]:
    """CPU seconds so far of the guards, ejabberd, PostgreSQL and this test process."""
    return {
        "guards": cpu_seconds([g.process.pid for g in f.guards if g.process is not None]),
        "ejabberd": cpu_seconds([f.prosody.pid] if f.prosody.pid else []),
        "postgres": cpu_seconds(postgres_pids(f)),
        "clients": time.process_time(),
    }


def figures(bin_dir: Path, runs: int, database: str, instance_names: bool, nodes: int = 10,
            subscribers: int = 100, items: int = 50) -> None:
    """Deliveries per second with 1, 2 and 3 guards (see the module docstring)."""
    names = [f"node{k:02d}" for k in range(1, nodes + 1)]
    results: dict[int, list[float]] = {}
    for n in (1, 2, 3):
        with tempfile.TemporaryDirectory(prefix=f"fleet-figures-{n}-") as tmp:
            f = Fleet(bin_dir, Path(tmp), guards=n, database=database, instance_names=instance_names,
                      subscribers=subscribers)
            try:
                node_names = [f"/{name}/alice" for name in names]
                token, _ = f.provision(node_names, publisher_names())
                f.up()
                subs = f.login(f.subscriber_names)
                for node in node_names:
                    f.subscribe_all(subs, node, token)
                pubs = one_per_slot(publisher_names(), n, nodes)
                pub_clients = f.login(pubs)
                expected = nodes * items * len(subs)
                results[n] = []
                for run in range(1, runs + 1):
                    for c in subs.values():
                        c.messages.clear()

                    def publish(k: int) -> None:
                        c = pub_clients[pubs[k]]
                        for i in range(1, items + 1):
                            item = f"r{run}-{i:04d}"
                            check(published_id(c.send_iq_raw(publish_iq(node_names[k], payload(i), item), timeout=30)) == item,
                                  f"{item}: another id")

                    cpu_before = cpu_by_part(f)
                    started = time.monotonic()
                    with concurrent.futures.ThreadPoolExecutor(max_workers=nodes) as pool:
                        for future in [pool.submit(publish, k) for k in range(nodes)]:
                            future.result()
                    deadline = time.monotonic() + 120
                    while sum(c.messages.qsize() for c in subs.values()) < expected:
                        check(time.monotonic() < deadline, f"{n} guards, run {run}: "
                              f"{sum(c.messages.qsize() for c in subs.values())} of {expected} deliveries after 120 s")
                        time.sleep(0.01)
                    took = time.monotonic() - started
                    cpu = {k: (v - cpu_before[k]) / took for k, v in cpu_by_part(f).items()}
                    results[n].append(expected / took)
                    shares = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                    print(f"  {n} guard(s), run {run}: {expected} deliveries in {took:.2f} s = {expected / took:.0f}/s"
                          f" (cores busy: {shares})", flush=True)
            finally:
                f.close()
    base = statistics.median(results[1])
    print(f"\ndeliveries per second ({nodes} nodes x {subscribers} subscribers, {items} items per node "
          f"a run, publishers spread over the slots; median of {runs} runs; binaries in {bin_dir})")
    print(f"{'guards':>6}  {'median/s':>9}  {'vs 1 guard':>10}  runs")
    for n, values in results.items():
        median = statistics.median(values)
        print(f"{n:>6}  {median:>9.0f}  {median / base:>9.2f}x  {' '.join(f'{v:.0f}' for v in values)}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=Path("target/debug"), help="folder with the built binaries")
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run this scenario alone")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres",
                        help="a throwaway PostgreSQL (default), or one SQLite file for all")
    parser.add_argument("--shared-cursor", action="store_true",
                        help='leave `instance` out of the guards\' configs (one change-log cursor for all)')
    parser.add_argument("--figures", action="store_true", help="measure deliveries/s with 1, 2 and 3 guards")
    parser.add_argument("--runs", type=int, default=3, help="runs per fleet size for --figures")
    args = parser.parse_args()
    bin_dir = args.bin.resolve()
    if args.figures:
        figures(bin_dir, args.runs, args.database, not args.shared_cursor)
        return 0
    names = [args.only] if args.only else list(SCENARIOS)
    print(f"database: {args.database}; instance names: {'yes' if not args.shared_cursor else 'no'}")
    return run_scenarios("fleet", SCENARIOS, names,
                         lambda tmp: Fleet(bin_dir, tmp, database=args.database, instance_names=not args.shared_cursor))


if __name__ == "__main__":
    sys.exit(main())
