"""Smoke test of ejabberd as the front of several guards: N component connections as one
domain, each bare sender kept on one of them, and what happens when one goes away.

    .venv/bin/python tests/e2e/ejabberd_smoke.py          # scripts/setup-ejabberd first

It starts ejabberd (tests/e2e/ejabberd.py) from a temp folder with component_number=3,
connects three raw XEP-0114 connections as pubsub.localhost (comp-1, comp-2, comp-3, in that
order), each answering every IQ with a disco#info result that names it, and logs in 30
clients (user01..user30).  Then:

  1. spread     every client sends 3 disco#info IQs to pubsub.localhost.  Asserted: all 90
                are answered, a sender always lands on the same connection, each connection
                serves at least one sender, and what the connections saw agrees with the
                replies.  Printed: how the 30 senders spread, and whether erlang:phash2 of
                the bare JID predicts it (the slot of a sender, `phash2({U, S, <<>>}, 3)+1`,
                held by the k-th connection to arrive).
  2. spare      a 4th connection as pubsub.localhost: accepted or not, and does it get
                traffic?  (reported)
  3. one gone   comp-2 closes its stream; every client sends one IQ.  Asserted: the senders
                of the other slots are still answered by their own connection.  Reported,
                not asserted: what the senders of comp-2's slot get (an error, or nothing
                within DROP_WAIT s), and whether the spare takes the slot over.
  4. refill     a new connection comp-2b arrives: does it take the free slot?  Then its
                socket closes without </stream:stream>, as when its process dies: what do the
                senders of that slot get right away, and does comp-2c get the slot?  (reported)
  5. restart    ejabberd restarts (same ports, same accounts).  Reported: what an IQ gets
                before any component is back.  Then three connections and 30 logins again;
                asserted: every IQ answered, the accounts survived.  Reported: whether each
                sender kept its connection name.
  6. all gone   every connection closes; what an IQ gets then.  (reported)

Every wait is bounded; the run takes about 20 s.  Exits 1 with a message on a failed
assertion.  No guard binary is involved: this checks ejabberd's routing only.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from xml.sax.saxutils import quoteattr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ejabberd import LOOPBACK, Ejabberd  # noqa: E402
from xmpp import Client, error_info  # noqa: E402

CLIENTS = 30
COMPONENTS = 3
ROUNDS = 3
IQ_TIMEOUT = 5.0  # an IQ that should be answered
DROP_WAIT = 3.0  # how long an IQ that may be dropped is waited for
CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 5.0

DISCO_INFO = "http://jabber.org/protocol/disco#info"
COMPONENT_NS = "jabber:component:accept"
STREAM_NS = "http://etherx.jabber.org/streams"


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# --------------------------------------------------------------------------- components


class Component:
    """One raw XEP-0114 connection as `domain`, answering every IQ get/set with a disco#info
    result whose identity is named `name`.  It records the sender of each IQ it gets."""

    def __init__(self, name: str, port: int, domain: str, secret: str) -> None:
        self.name, self.port, self.domain, self.secret = name, port, domain, secret
        self.received: list[str] = []  # the `from` of every IQ, in order
        self.stream_error: str | None = None
        self.closed_by_server = threading.Event()
        self._sock: socket.socket | None = None
        self._parser: ET.XMLPullParser | None = None
        self._root: ET.Element | None = None
        self._depth = 0
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def _stanzas(self, data: bytes):
        """Feed bytes; yield ("stream", root) for the stream header and ("stanza", element)
        for each complete child of the root (depth 1), which is then dropped from the tree."""
        self._parser.feed(data)
        for event, element in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = element
                    yield "stream", element
            else:
                self._depth -= 1
                if self._depth == 1:
                    yield "stanza", element
                    self._root.remove(element)

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> float:
        """Open the stream and do the handshake; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        sock = socket.create_connection((LOOPBACK, self.port), timeout=timeout)
        self._sock = sock
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
            f"xmlns:stream='{STREAM_NS}' to={quoteattr(self.domain)}>"
        )
        stream_id = None
        while True:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"{self.name}: no handshake answer within {timeout} s") from None
            if not data:
                raise ConnectionError(f"{self.name}: server closed the stream during handshake")
            for kind, element in self._stanzas(data):
                if kind == "stream":
                    stream_id = element.get("id")
                    digest = hashlib.sha1(f"{stream_id}{self.secret}".encode()).hexdigest()
                    self._send(f"<handshake>{digest}</handshake>")
                elif local(element.tag) == "handshake":
                    sock.settimeout(0.2)
                    self._thread = threading.Thread(
                        target=self._read_loop, name=f"component-{self.name}", daemon=True
                    )
                    self._thread.start()
                    return time.monotonic() - started
                elif local(element.tag) == "error":
                    conditions = [local(child.tag) for child in element]
                    raise ConnectionError(f"{self.name}: stream error {conditions}")

    def _send(self, text: str) -> None:
        with self._send_lock:
            self._sock.sendall(text.encode())

    def _read_loop(self) -> None:
        while not self._stopping:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                for kind, element in self._stanzas(data):
                    self._handle(element)
            except ET.ParseError:
                break  # </stream:stream> from the server ends the document
        self.closed_by_server.set()

    def _handle(self, element: ET.Element) -> None:
        name = local(element.tag)
        if name == "error":
            self.stream_error = ",".join(local(child.tag) for child in element)
            return
        if name != "iq" or element.get("type") not in ("get", "set"):
            return
        sender = element.get("from", "")
        self.received.append(sender)
        self._send(
            f"<iq type='result' from={quoteattr(element.get('to') or self.domain)} "
            f"to={quoteattr(sender)} id={quoteattr(element.get('id', ''))}>"
            f"<query xmlns='{DISCO_INFO}'><identity category='pubsub' type='service' "
            f"name={quoteattr(self.name)}/></query></iq>"
        )

    def close(self) -> float | None:
        """Send </stream:stream> and wait for the server to close; the seconds that took,
        or None when it did not within CLOSE_TIMEOUT."""
        if self._sock is None:
            return None
        started = time.monotonic()
        try:
            self._send("</stream:stream>")
        except OSError:
            pass
        closed = self.closed_by_server.wait(CLOSE_TIMEOUT)
        elapsed = time.monotonic() - started
        self._shutdown()
        return elapsed if closed else None

    def abort(self) -> None:
        """Close the socket without ending the stream, as a process that dies would."""
        self._stopping = True
        if self._sock is not None:
            self._sock.close()
        self._shutdown()

    def _shutdown(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None and self._sock.fileno() != -1:
            self._sock.close()
        self._sock = self._thread = None


# --------------------------------------------------------------------------- clients


def login_all(server: Ejabberd, users: dict[str, str]) -> dict[str, Client]:
    clients = {name: Client(name, password, server.c2s_port) for name, password in users.items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        for future in [pool.submit(c.connect, 10) for c in clients.values()]:
            future.result()
    return clients


def disconnect_all(clients: dict[str, Client]) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda c: c.disconnect(timeout=2), clients.values()))


def ask(client: Client, component: str, timeout: float) -> tuple[str, str | None]:
    """One disco#info IQ to the component: ("answered", connection name),
    ("error", condition) or ("no reply", None)."""
    try:
        reply = client.send_iq_raw(
            f"<iq type='get' to={quoteattr(component)}><query xmlns='{DISCO_INFO}'/></iq>",
            timeout=timeout,
        )
    except TimeoutError:
        return "no reply", None
    if reply.get("type") == "error":
        info = error_info(reply) or {}
        return "error", f"{info.get('type')}/{info.get('condition')}"
    identity = reply.find(f"{{{DISCO_INFO}}}query/{{{DISCO_INFO}}}identity")
    return "answered", identity.get("name") if identity is not None else "?"


def ask_all(clients: dict[str, Client], component: str, timeout: float) -> dict[str, tuple]:
    """ask() from every client at once; {name: outcome}."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(clients)) as pool:
        futures = {name: pool.submit(ask, c, component, timeout) for name, c in clients.items()}
        return {name: f.result() for name, f in futures.items()}


def summary(outcomes: dict[str, tuple]) -> str:
    """Counts of outcomes: "answered by comp-1: 9, no reply: 13"."""
    labels = {"answered": "answered by {}", "error": "error {}", "no reply": "no reply"}
    counts = Counter(labels[kind].format(detail) for kind, detail in outcomes.values())
    return ", ".join(f"{what}: {n}" for what, n in sorted(counts.items()))


def phash2_slots(names: list[str], domain: str, n: int) -> dict[str, int] | None:
    """erlang:phash2({User, Server, <<>>}, n) + 1 for each name, computed by erl (the
    ljid ejabberd hashes for type bare_source); None when erl is not there."""
    erl = shutil.which("erl")
    if erl is None:
        return None
    terms = ",".join(f'<<"{name}">>' for name in names)
    program = (
        f"[io:format(\"~b~n\", [erlang:phash2({{U, <<\"{domain}\">>, <<>>}}, {n}) + 1])"
        f" || U <- [{terms}]], halt()."
    )
    try:
        result = subprocess.run(
            [erl, "-noshell", "-eval", program], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return None
    slots = result.stdout.split()
    if result.returncode != 0 or len(slots) != len(names):
        return None
    return dict(zip(names, map(int, slots)))


# --------------------------------------------------------------------------- the run


def run() -> None:
    t0 = time.monotonic()
    users = {f"user{i:02d}": f"pw-{i:02d}" for i in range(1, CLIENTS + 1)}
    components: list[Component] = []
    clients: dict[str, Client] = {}

    with tempfile.TemporaryDirectory(prefix="ejabberd-smoke-") as tmp:
        server = Ejabberd(Path(tmp) / "ejabberd", users=users, component_number=COMPONENTS)
        try:
            started = time.monotonic()
            server.start()
            up = re.search(r"(ejabberd \S+) is started in the node (\S+) in ([\d.]+)s",
                           server.log_path.read_text())  # fmt: skip
            if up:
                print(f"{up[1]}, node {up[2]} (started in {up[3]} s by its own count)")
            print(
                f"ejabberd up with {CLIENTS} accounts in {time.monotonic() - started:.2f} s "
                f"(c2s {server.c2s_port}, component {server.component_port}, "
                f"component_number {server.component_number})"
            )

            def connect(name: str) -> Component:
                comp = Component(
                    name, server.component_port, server.component, server.component_secret
                )
                took = comp.connect()
                components.append(comp)
                print(f"  {name} connected as {server.component} in {took * 1000:.0f} ms")
                return comp

            comps = [connect(f"comp-{k}") for k in range(1, COMPONENTS + 1)]
            started = time.monotonic()
            clients = login_all(server, users)
            print(f"{CLIENTS} clients logged in in {time.monotonic() - started:.2f} s")

            # 1. spread ---------------------------------------------------------------
            print(f"\n1. spread: {ROUNDS} disco#info IQs from each client to {server.component}")
            landed: dict[str, list[str]] = defaultdict(list)
            started = time.monotonic()
            for _ in range(ROUNDS):
                for name, (kind, detail) in ask_all(clients, server.component, IQ_TIMEOUT).items():
                    check(kind == "answered", f"{name}'s IQ was not answered: {kind} {detail}")
                    landed[name].append(detail)
            print(f"  {CLIENTS * ROUNDS} IQs answered in {time.monotonic() - started:.2f} s")
            for name, seen in landed.items():
                check(len(set(seen)) == 1, f"{name} landed on more than one component: {seen}")
            home = {name: seen[0] for name, seen in landed.items()}
            by_comp: dict[str, list[str]] = defaultdict(list)
            for name, comp in sorted(home.items()):
                by_comp[comp].append(name)
            for comp in comps:
                senders = by_comp.get(comp.name, [])
                print(f"  {comp.name}: {len(senders):2d} senders  {' '.join(senders)}")
                check(senders, f"{comp.name} got no sender at all")
                seen_bare = Counter(jid.split("/")[0].split("@")[0] for jid in comp.received)
                check(
                    set(seen_bare) == set(senders) and all(n == ROUNDS for n in seen_bare.values()),
                    f"{comp.name} saw senders {dict(seen_bare)}, the replies said {senders}",
                )
            print(f"  each sender kept to one component over its {ROUNDS} IQs: yes")
            slots = phash2_slots(list(users), server.domain, COMPONENTS)
            if slots is not None:
                predicted = sum(home[n] == f"comp-{slots[n]}" for n in users)
                print(
                    f"  erlang:phash2({{User, <<\"localhost\">>, <<>>}}, {COMPONENTS}) + 1 = the "
                    f"k-th connection: predicts {predicted}/{CLIENTS} senders"
                )

            # 2. spare ----------------------------------------------------------------
            print(f"\n2. spare: a 4th connection as {server.component}")
            try:
                spare = connect("spare")
            except (ConnectionError, TimeoutError) as e:
                spare = None
                print(f"  refused: {e}")
            if spare is not None:
                outcomes = ask_all(clients, server.component, IQ_TIMEOUT)
                print(f"  one IQ from each client: {summary(outcomes)}; "
                      f"the spare got {len(spare.received)}")

            # 3. one gone -------------------------------------------------------------
            gone = comps[1]
            orphans = by_comp[gone.name]
            print(f"\n3. one gone: {gone.name} closes its stream "
                  f"({len(orphans)} senders on its slot)")
            took = gone.close()
            check(took is not None, f"ejabberd did not close {gone.name}'s stream")
            print(f"  ejabberd closed {gone.name}'s stream {took * 1000:.0f} ms after "
                  "</stream:stream>")
            components.remove(gone)
            others = components + ([spare] if spare else [])
            seen_before = {c.name: len(c.received) for c in others}
            started = time.monotonic()
            outcomes = ask_all(clients, server.component, DROP_WAIT)
            waited = time.monotonic() - started
            for name, (kind, detail) in outcomes.items():
                if name not in orphans:
                    check(
                        (kind, detail) == ("answered", home[name]),
                        f"{name} (on {home[name]}) got {kind} {detail} after {gone.name} left",
                    )
            orphan_outcomes = {n: outcomes[n] for n in orphans}
            print(f"  the other {CLIENTS - len(orphans)} senders: still answered by their own "
                  "component")
            print(f"  the {len(orphans)} senders of {gone.name}'s slot: {summary(orphan_outcomes)} "
                  f"(waited up to {DROP_WAIT:.0f} s each, {waited:.1f} s in all)")
            time.sleep(0.5)  # an IQ delivered late would show up in the count below
            rerouted = {
                c.name: sum(
                    jid.split("@")[0] in orphans for jid in c.received[seen_before[c.name]:]
                )
                for c in others
            }
            print(f"  IQs of those senders that reached another connection (spare included): "
                  f"{sum(rerouted.values())}")
            dropped = sum(kind == "no reply" for kind, _ in orphan_outcomes.values())
            errors = [d for kind, d in orphan_outcomes.values() if kind == "error"]
            log_hits = [
                line for line in server.log_path.read_text().splitlines()
                if "[error]" in line or "[warning]" in line
            ]
            print(f"  dropped without an error reply: {dropped}/{len(orphans)}; "
                  f"error replies: {errors or 'none'}; "
                  f"warning/error lines in ejabberd.log: {len(log_hits)}")

            # 4. refill ---------------------------------------------------------------
            print(f"\n4. refill: a new connection comp-2b as {server.component}")
            refill = connect("comp-2b")
            outcomes = ask_all(clients, server.component, DROP_WAIT)
            orphan_outcomes = {n: outcomes[n] for n in orphans}
            print(f"  the {len(orphans)} senders of the freed slot: {summary(orphan_outcomes)}")
            print(f"  all {CLIENTS}: {summary(outcomes)}; comp-2b got {len(refill.received)}")

            print("\n   crash: comp-2b's socket closes without </stream:stream>")
            refill.abort()
            components.remove(refill)
            started = time.monotonic()
            outcomes = ask_all({n: clients[n] for n in orphans}, server.component, DROP_WAIT)
            print(f"  the {len(orphans)} senders of its slot, asking at once: {summary(outcomes)} "
                  f"({time.monotonic() - started:.1f} s)")
            connect("comp-2c")
            outcomes = ask_all({n: clients[n] for n in orphans}, server.component, DROP_WAIT)
            print(f"  then, with comp-2c connected: {summary(outcomes)}")

            # 5. restart --------------------------------------------------------------
            print("\n5. restart ejabberd (same ports, same accounts)")
            started = time.monotonic()
            server.stop()
            stopped_in = time.monotonic() - started
            server.start()
            restart_in = time.monotonic() - started
            print(f"  stopped in {stopped_in:.2f} s, back in {restart_in:.2f} s")
            for comp in components:
                noticed = comp.closed_by_server.wait(CLOSE_TIMEOUT)
                check(noticed, f"{comp.name}'s connection was still open after the restart")
                comp._shutdown()
            print(f"  every component connection was closed by the stop: yes ({len(components)})")
            components.clear()
            disconnect_all(clients)
            clients = {}
            probe = login_all(server, {"user01": users["user01"]})
            kind, detail = ask(probe["user01"], server.component, DROP_WAIT)
            print(f"  an IQ before any component is back: {kind}{' ' + detail if detail else ''}")
            disconnect_all(probe)
            comps = [connect(f"comp-{k}") for k in range(1, COMPONENTS + 1)]
            started = time.monotonic()
            clients = login_all(server, users)
            print(f"  {CLIENTS} clients logged in again in {time.monotonic() - started:.2f} s "
                  "(the accounts survived)")
            outcomes = ask_all(clients, server.component, IQ_TIMEOUT)
            for name, (kind, detail) in outcomes.items():
                check(kind == "answered", f"after the restart {name}'s IQ got {kind} {detail}")
            same = sum(outcomes[n][1] == home[n] for n in users)
            print(f"  one IQ from each: all {CLIENTS} answered; same component name as before: "
                  f"{same}/{CLIENTS}")

            # 6. all gone -------------------------------------------------------------
            print("\n6. all gone: every component closes its stream")
            for comp in list(components):
                comp.close()
                components.remove(comp)
            kind, detail = ask(clients["user01"], server.component, DROP_WAIT)
            print(f"  an IQ then: {kind}{' ' + detail if detail else ''}")
        finally:
            disconnect_all(clients)
            for comp in components:
                comp._shutdown()
            started = time.monotonic()
            server.stop()
            print(f"\nejabberd stopped in {time.monotonic() - started:.2f} s")

    print(f"ejabberd smoke: ok in {time.monotonic() - t0:.1f} s")


def main() -> int:
    try:
        run()
    except CheckFailed as e:
        print(f"\nejabberd smoke: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
