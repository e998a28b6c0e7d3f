"""End-to-end test of pubsub-guard through a real Prosody, with slixmpp clients.

    .venv/bin/python tests/e2e/guard.py --bin target/debug

Starts Prosody (Debian package, installed by scripts/setup-prosody) on free loopback ports
with a config in a temp folder, provisions owners, a consumer and tokens with the built
`authz-server` CLI, starts the built `pubsub-guard` against Prosody's component port, and
plays the scenarios of issue #4. Every `<oauth/>` signature here is computed on the Python
side (tests/e2e/xmpp.py: oauthlib's normalization and hashlib's HMAC), never by the
project's Rust signer, so a pass shows interop. Each scenario asserts the exact reply:
type, condition, application condition and text.

Exits 0 when every scenario passes; on a failure it prints the guard's log tail.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prosody import Prosody, stop_process  # noqa: E402
import xmpp  # noqa: E402
from xmpp import Client, error_info, new_nonce, now, oauth_element, sign_stanza  # noqa: E402

COMPONENT = "pubsub.localhost"
PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
OAUTH_ERRORS = "urn:xmpp:oauth:0:errors"
CLIENT = "jabber:client"
ATOM = "http://www.w3.org/2005/Atom"
GEORSS = "http://www.georss.org/georss"

USERS = {
    "findmenow": "findmenow-pass",  # the consumer application's XMPP account
    "location": "location-pass",  # the location service: the publisher
    "eve": "eve-pass",  # an account with no token
}


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_error(reply: ET.Element, kind: str, condition: str, app: str | None, text: str) -> None:
    """The reply is an IQ error with exactly this type, condition, app condition and text."""
    info = error_info(reply)
    check(reply.get("type") == "error" and info is not None, f"expected an error, got {ET.tostring(reply)!r}")
    expected = {"type": kind, "condition": condition, "text": text, "app": [app] if app else []}
    check(info == expected, f"error mismatch:\n  got      {info}\n  expected {expected}")


def expect_result(reply: ET.Element) -> None:
    check(reply.get("type") == "result", f"expected a result, got {ET.tostring(reply)!r}")


class System:
    """Prosody, the store (through the authz-server CLI) and the guard, in one temp folder."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin = bin_dir
        self.dir = workdir
        self.db = workdir / "authz.sqlite"
        self.prosody = Prosody(workdir / "prosody", users=USERS)
        self.guard: subprocess.Popen | None = None
        self.guard_log = workdir / "guard.log"
        self.clients: list[Client] = []

    # ----- the CLIs

    def cli(self, program: str, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(self.bin / program), "--database", str(self.db), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )
        check(done.returncode == 0, f"{program} {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def fields(self, output: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    # ----- the guard

    def write_guard_config(self) -> Path:
        path = self.dir / "guard.toml"
        path.write_text(
            f"""component = "{COMPONENT}"
secret = "{self.prosody.component_secret}"
server = "127.0.0.1:{self.prosody.component_port}"
database = "{self.db}"
max_stanza_bytes = 16384
keepalive_secs = 5
reconnect_max_secs = 1

[[template]]
pattern = "/location/{{owner}}"
publishers = ["location@localhost"]
max_items = 5

[[template]]
pattern = "/photos/{{owner}}"
publishers = ["location@localhost"]
"""
        )
        return path

    def start_guard(self) -> None:
        log = open(self.guard_log, "a")
        self.guard = subprocess.Popen(
            [str(self.bin / "pubsub-guard"), "--config", str(self.dir / "guard.toml"), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GUARD_LOG": "info"},
        )
        log.close()

    def stop_guard(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.guard, sig)
        self.guard = None

    def wait_for_guard(self, client: Client, timeout: float = 15) -> None:
        """Until the component answers disco#info (Prosody says remote-server-timeout while
        it is not connected)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = client.send_iq_raw(
                f"<iq type='get' to='{COMPONENT}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            )
            if reply.get("type") == "result":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the guard did not come up: {ET.tostring(reply)!r}\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        if not self.guard_log.exists():
            return "(no guard log)"
        return "\n".join(self.guard_log.read_text(errors="replace").splitlines()[-lines:])

    def client(self, name: str, resource: str = "test") -> Client:
        c = Client(name, USERS[name], self.prosody.c2s_port, resource=resource).connect()
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            try:
                c.disconnect()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self.stop_guard()
        self.prosody.stop()


class Consumer:
    """A consumer application's credentials, signing on the Python side."""

    def __init__(self, key: str, secret: str, token: str, token_secret: str) -> None:
        self.key, self.secret, self.token, self.token_secret = key, secret, token, token_secret

    def oauth(self, from_jid: str, *, timestamp: int | None = None, nonce: str | None = None,
              secret: str | None = None, sign_from: str | None = None, drop: str | None = None) -> str:
        params = {
            "oauth_consumer_key": self.key,
            "oauth_nonce": nonce or new_nonce(),
            "oauth_signature_method": "HMAC-SHA1",
            "oauth_timestamp": str(timestamp if timestamp is not None else now()),
            "oauth_token": self.token,
            "oauth_version": "1.0",
        }
        signature = sign_stanza("iq", sign_from or from_jid, COMPONENT, params,
                                secret if secret is not None else self.secret, self.token_secret)
        if drop:
            del params[drop]
        return oauth_element(params, signature)


def subscribe_iq(node: str, jid: str, oauth: str = "") -> str:
    return (f"<iq type='set' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'>"
            f"<subscribe node='{node}' jid='{jid}'/>{oauth}</pubsub></iq>")


def items_iq(node: str, oauth: str = "", max_items: int | None = None) -> str:
    limit = f" max_items='{max_items}'" if max_items is not None else ""
    return (f"<iq type='get' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'>"
            f"<items node='{node}'{limit}/>{oauth}</pubsub></iq>")


def location_entry(place: str, point: str) -> str:
    return (f"<entry xmlns='{ATOM}'><title>alice is at {place}</title>"
            f"<georss:point xmlns:georss='{GEORSS}'>{point}</georss:point></entry>")


def publish_iq(node: str, payload: str, item_id: str | None = None) -> str:
    id_attr = f" id='{item_id}'" if item_id else ""
    return (f"<iq type='set' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'>"
            f"<publish node='{node}'><item{id_attr}>{payload}</item></publish></pubsub></iq>")


def subscribed(reply: ET.Element, node: str, jid: str) -> str:
    """Asserts the reply is `<subscription node jid subscription='subscribed' subid/>`; returns subid."""
    expect_result(reply)
    sub = reply.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}subscription")
    check(sub is not None, f"no <subscription/> in {ET.tostring(reply)!r}")
    check(sub.get("node") == node and sub.get("jid") == jid and sub.get("subscription") == "subscribed",
          f"unexpected subscription {sub.attrib}")
    check(bool(sub.get("subid")), "no subid")
    return sub.get("subid")


def published_id(reply: ET.Element) -> str:
    expect_result(reply)
    item = reply.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item")
    check(item is not None and bool(item.get("id")), f"no item id in {ET.tostring(reply)!r}")
    return item.get("id")


def is_event_for(node: str):
    def match(m: ET.Element) -> bool:
        items = m.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
        return m.get("from") == COMPONENT and items is not None and items.get("node") == node
    return match


def is_subscription_none(m: ET.Element) -> bool:
    sub = m.find(f"{{{EVENT}}}event/{{{EVENT}}}subscription")
    return m.get("from") == COMPONENT and sub is not None and sub.get("subscription") == "none"


def event_entry(message: ET.Element) -> tuple[str, ET.Element]:
    item = message.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}item")
    check(item is not None, f"no item in {ET.tostring(message)!r}")
    entry = item.find(f"{{{ATOM}}}entry")
    check(entry is not None, f"no Atom entry in {ET.tostring(message)!r}")
    return item.get("id"), entry


def check_entry(entry: ET.Element, place: str, point: str) -> None:
    check(entry.findtext(f"{{{ATOM}}}title") == f"alice is at {place}", "title changed in transit")
    check(entry.findtext(f"{{{GEORSS}}}point") == point, "georss:point changed in transit")


# --------------------------------------------------------------------------- scenarios


def provision(s: System) -> tuple[Consumer, Consumer, str]:
    s.cli("authz-server", "owner", "add", "alice", stdin="alice-password\n")
    s.cli("authz-server", "owner", "add", "bob", stdin="bob-password\n")
    app = s.fields(s.cli("authz-server", "consumer", "add", "--name", "FindMeNow", "--jid", "findmenow@localhost"))
    grant = s.fields(s.cli("authz-server", "token", "grant", "--owner", "alice", "--consumer",
                           app["consumer_key"], "--scope", "/location/alice /photos/alice"))
    alice_token = Consumer(app["consumer_key"], app["consumer_secret"], grant["oauth_token"], grant["oauth_token_secret"])
    # A second token, for the revocation scenario (revoking it must not touch the first).
    grant2 = s.fields(s.cli("authz-server", "token", "grant", "--owner", "alice", "--consumer",
                            app["consumer_key"], "--scope", "/photos/alice"))
    photos_token = Consumer(app["consumer_key"], app["consumer_secret"], grant2["oauth_token"], grant2["oauth_token_secret"])
    s.cli("pubsub-guard", "node", "create", "/location/alice", "--owner", "alice", "--publisher", "location@localhost")
    s.cli("pubsub-guard", "node", "create", "/location/bob", "--owner", "bob", "--publisher", "location@localhost")
    s.cli("pubsub-guard", "node", "create", "/news", "--open", "--publisher", "location@localhost")
    return alice_token, photos_token, grant2["id"]


def scenario_1_subscribe_and_receive(s: System, token: Consumer, app: Client, loc: Client) -> None:
    subscribed(app.send_iq_raw(subscribe_iq("/location/alice", app.bare, token.oauth(app.jid))),
               "/location/alice", app.bare)
    item_id = published_id(loc.send_iq_raw(publish_iq("/location/alice", location_entry("the Ferry Building", "37.7955 -122.3937"))))
    event = app.wait_message(is_event_for("/location/alice"), timeout=5)
    check(event is not None, "the subscriber got no event")
    got_id, entry = event_entry(event)
    check(got_id == item_id, f"event item id {got_id} != published {item_id}")
    check_entry(entry, "the Ferry Building", "37.7955 -122.3937")
    # A publisher-chosen id is kept.
    check(published_id(loc.send_iq_raw(publish_iq("/location/alice", location_entry("home", "1 2"), "fixed-id"))) == "fixed-id",
          "item id not kept")
    check(app.wait_message(is_event_for("/location/alice"), timeout=5) is not None, "no second event")


def scenario_2_refusals(s: System, token: Consumer, app: Client) -> None:
    node, jid = "/location/alice", app.bare
    expect_error(app.send_iq_raw(subscribe_iq(node, jid)), "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}token-required",
                 "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token")
    expect_error(app.send_iq_raw(subscribe_iq(node, jid, token.oauth(app.jid, secret="wrong-secret"))),
                 "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}invalid-signature",
                 "the HMAC-SHA1 signature does not match: checked over qname&enc(from&to)&enc(parameters) "
                 "with the full and the bare from JID, keyed with the consumer and token secrets")
    # The same stanza twice: the second is a replay.
    nonce = new_nonce()
    stanza = subscribe_iq(node, jid, token.oauth(app.jid, nonce=nonce))
    subscribed(app.send_iq_raw(stanza), node, jid)
    expect_error(app.send_iq_raw(stanza), "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}invalid-nonce",
                 f'nonce "{nonce}" was already used with this consumer, token and timestamp')
    # A stale timestamp names the window.
    stale = now() - 3600
    reply = app.send_iq_raw(subscribe_iq(node, jid, token.oauth(app.jid, timestamp=stale)))
    texts = [f"timestamp {stale} is {3600 + d} s behind this server's clock; the window is ±300 s" for d in (0, 1, 2)]
    info = error_info(reply)
    check(info is not None and info["text"] in texts, f"stale timestamp: {info}")
    expect_error(reply, "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}invalid-nonce", info["text"])
    # Another owner's node.
    expect_error(app.send_iq_raw(subscribe_iq("/location/bob", jid, token.oauth(app.jid))), "auth", "forbidden", None,
                 'node "/location/bob" is not covered by this token')
    # An unknown consumer.
    stranger = Consumer("no-such-consumer", "x", token.token, token.token_secret)
    expect_error(app.send_iq_raw(subscribe_iq(node, jid, stranger.oauth(app.jid))), "auth", "not-authorized",
                 f"{{{OAUTH_ERRORS}}}invalid-consumer-key", 'consumer key "no-such-consumer" is not known here')
    # A Fire-Eagle-era signature over the bare JID is accepted.
    subscribed(app.send_iq_raw(subscribe_iq(node, jid, token.oauth(app.jid, sign_from=app.bare))), node, jid)
    # A malformed element.
    expect_error(app.send_iq_raw(subscribe_iq(node, jid, token.oauth(app.jid, drop="oauth_nonce"))),
                 "modify", "bad-request", f"{{{OAUTH_ERRORS}}}missing-parameter",
                 "the required parameter oauth_nonce is missing")
    # Subscribing someone else.
    expect_error(app.send_iq_raw(subscribe_iq(node, "eve@localhost", token.oauth(app.jid))), "modify", "bad-request",
                 f"{{{PUBSUB_ERRORS}}}invalid-jid",
                 f'the subscribed JID "eve@localhost" must have the bare JID of the sender, {app.bare}')
    # An open node needs no token.
    subscribed(app.send_iq_raw(subscribe_iq("/news", jid)), "/news", jid)


def scenario_3_revocation(s: System, photos: Consumer, photos_id: str, app: Client, loc: Client) -> None:
    node = "/photos/alice"
    # The node comes from the template on first publish.
    published_id(loc.send_iq_raw(publish_iq(node, "<photo xmlns='urn:example:photo' href='p1.jpg'/>")))
    app2 = s.client("findmenow", resource="photos")
    subscribed(app2.send_iq_raw(subscribe_iq(node, app2.jid, photos.oauth(app2.jid))), node, app2.jid)
    # The node sends its last item to a new subscriber (on_sub, profile N14), with its
    # archive id and when it was published.
    last = app2.wait_message(is_event_for(node), timeout=3)
    check(last is not None and b"p1.jpg" in ET.tostring(last), "the last item was not sent on subscribe")
    check(last.find("{urn:xmpp:sid:0}stanza-id") is not None and last.find("{urn:xmpp:delay}delay") is not None,
          f"the last item lacks its stanza-id or delay: {ET.tostring(last)!r}")
    app2.messages.clear()
    started = time.monotonic()
    s.cli("authz-server", "token", "revoke", "--id", photos_id)
    ended = app2.wait_message(is_subscription_none, timeout=3)
    elapsed = time.monotonic() - started
    check(ended is not None, "no subscription='none' event after revocation")
    sub = ended.find(f"{{{EVENT}}}event/{{{EVENT}}}subscription")
    check(sub.get("node") == node and sub.get("jid") == app2.jid, f"wrong subscription ended: {sub.attrib}")
    check(elapsed < 1.0, f"the end of the subscription took {elapsed:.2f} s (limit 1 s)")
    print(f"  revocation reached the subscriber in {elapsed * 1000:.0f} ms")
    published_id(loc.send_iq_raw(publish_iq(node, "<photo xmlns='urn:example:photo' href='p2.jpg'/>")))
    check(app2.no_message(is_event_for(node), within=1.5), "an item was delivered after the revocation")
    listed = s.cli("pubsub-guard", "subscription", "list", "--node", node)
    check(listed == "", f"subscription still listed: {listed!r}")
    # A token that expires ends its subscription the same way (the guard logs expiries).
    grant = s.fields(s.cli("authz-server", "token", "grant", "--owner", "alice", "--consumer", photos.key,
                           "--scope", node, "--expires-in", "2"))
    short = Consumer(photos.key, photos.secret, grant["oauth_token"], grant["oauth_token_secret"])
    subscribed(app2.send_iq_raw(subscribe_iq(node, app2.jid, short.oauth(app2.jid))), node, app2.jid)
    check(app2.wait_message(is_subscription_none, timeout=5) is not None, "no subscription='none' after the token expired")
    # Revoking a consumer ends the subscriptions of all its tokens.
    other = s.fields(s.cli("authz-server", "consumer", "add", "--name", "OtherApp"))
    grant = s.fields(s.cli("authz-server", "token", "grant", "--owner", "alice", "--consumer", other["consumer_key"],
                           "--scope", node))
    other_token = Consumer(other["consumer_key"], other["consumer_secret"], grant["oauth_token"], grant["oauth_token_secret"])
    subscribed(app2.send_iq_raw(subscribe_iq(node, app2.jid, other_token.oauth(app2.jid))), node, app2.jid)
    s.cli("authz-server", "consumer", "revoke", other["consumer_key"])
    check(app2.wait_message(is_subscription_none, timeout=3) is not None, "no subscription='none' after the consumer was revoked")
    expect_error(app2.send_iq_raw(subscribe_iq(node, app2.jid, other_token.oauth(app2.jid))), "auth", "not-authorized",
                 f"{{{OAUTH_ERRORS}}}invalid-consumer-key", f'consumer key "{other["consumer_key"]}" has been revoked')
    # The other token's subscription is untouched.
    check(app.bare in s.cli("pubsub-guard", "subscription", "list", "--node", "/location/alice"),
          "revoking one token ended another's subscription")


def scenario_4_restarts(s: System, token: Consumer, app: Client, loc: Client) -> tuple[Client, Client]:
    # A stanza accepted before the crash...
    nonce = new_nonce()
    stanza = subscribe_iq("/location/alice", app.bare, token.oauth(app.jid, nonce=nonce))
    subscribed(app.send_iq_raw(stanza), "/location/alice", app.bare)
    before = s.cli("pubsub-guard", "subscription", "list")
    s.stop_guard(signal.SIGKILL)
    s.start_guard()
    s.wait_for_guard(app)
    # ...is still a replay after it: nonces live in the shared store (profile P4).
    expect_error(app.send_iq_raw(stanza), "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}invalid-nonce",
                 f'nonce "{nonce}" was already used with this consumer, token and timestamp')
    check(s.cli("pubsub-guard", "subscription", "list") == before, "subscriptions changed across SIGKILL")
    reply = app.send_iq_raw(items_iq("/location/alice"))
    expect_result(reply)
    ids = [i.get("id") for i in reply.iter(f"{{{PUBSUB}}}item")]
    check("fixed-id" in ids, f"items lost across SIGKILL: {ids}")
    app.messages.clear()
    published_id(loc.send_iq_raw(publish_iq("/location/alice", location_entry("the office", "3 4"))))
    check(app.wait_message(is_event_for("/location/alice"), timeout=5) is not None, "no delivery after the guard restart")

    # Prosody restarts: the guard reconnects by itself; clients log in again.
    s.prosody.restart()
    for c in s.clients:
        c.disconnect()
    s.clients.clear()
    app = s.client("findmenow")
    loc = s.client("location")
    s.wait_for_guard(app, timeout=20)
    published_id(loc.send_iq_raw(publish_iq("/location/alice", location_entry("the park", "5 6"))))
    event = app.wait_message(is_event_for("/location/alice"), timeout=5)
    check(event is not None, "no delivery after the Prosody restart")
    check_entry(event_entry(event)[1], "the park", "5 6")
    return app, loc


def scenario_5_items_unsubscribe_unknown(s: System, token: Consumer, app: Client, loc: Client) -> None:
    node = "/location/alice"
    # With a live token behind the subscription: the newest max_items.
    reply = app.send_iq_raw(items_iq(node, max_items=2))
    expect_result(reply)
    items = reply.findall(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items/{{{PUBSUB}}}item")
    check(len(items) == 2, f"max_items=2 gave {len(items)} items")
    check_entry(items[-1].find(f"{{{ATOM}}}entry"), "the park", "5 6")
    # Without a subscription and without a token.
    eve = s.client("eve")
    expect_error(eve.send_iq_raw(items_iq(node)), "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}token-required",
                 "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token")
    # With its own signed request instead of a subscription.
    unsubscribed_app = s.client("findmenow", resource="fresh")
    expect_result(unsubscribed_app.send_iq_raw(items_iq(node, token.oauth(unsubscribed_app.jid))))
    # Unsubscribe needs no token; a second time it is not subscribed.
    expect_result(app.send_iq_raw(
        f"<iq type='set' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'><unsubscribe node='{node}' jid='{app.bare}'/></pubsub></iq>"))
    expect_error(app.send_iq_raw(
        f"<iq type='set' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'><unsubscribe node='{node}' jid='{app.bare}'/></pubsub></iq>"),
        "cancel", "unexpected-request", f"{{{PUBSUB_ERRORS}}}not-subscribed", f'{app.bare} is not subscribed to "{node}"')
    expect_error(app.send_iq_raw(items_iq(node)), "auth", "not-authorized", f"{{{OAUTH_ERRORS}}}token-required",
                 "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token")
    # Retract, with its notification to an open node's subscriber.
    item = published_id(loc.send_iq_raw(publish_iq("/news", "<headline xmlns='urn:example:news'>hi</headline>")))
    app.messages.clear()
    expect_result(loc.send_iq_raw(
        f"<iq type='set' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'><retract node='/news'><item id='{item}'/></retract></pubsub></iq>"))
    retract = app.wait_message(lambda m: m.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}retract") is not None, timeout=5)
    check(retract is not None and retract.find(f".//{{{EVENT}}}retract").get("id") == item, "no retract notification")
    # Only publishers publish.
    expect_error(eve.send_iq_raw(publish_iq("/news", "<x xmlns='urn:x'/>")), "auth", "forbidden", None,
                 'eve@localhost may not publish to "/news"')
    # Unknown IQs get an error, never silence.
    expect_error(app.send_iq_raw(f"<iq type='get' to='{COMPONENT}'><query xmlns='jabber:iq:version'/></iq>"),
                 "cancel", "service-unavailable", None,
                 "this service does not handle <query xmlns='jabber:iq:version'/> in an IQ get")
    expect_error(app.send_iq_raw(f"<iq type='set' to='{COMPONENT}'><pubsub xmlns='{PUBSUB}'><create node='/x'/></pubsub></iq>"),
                 "cancel", "feature-not-implemented", f"{{{PUBSUB_ERRORS}}}unsupported",
                 'this service does not implement the pubsub feature "create-nodes"')
    # A missing node answers as a protected one does to an asker without a token (profile N6).
    token_required = ("auth", "not-authorized", f"{{{OAUTH_ERRORS}}}token-required",
                      "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> "
                      "element with an access token")
    expect_error(eve.send_iq_raw(items_iq("/nowhere")), *token_required)
    expect_error(eve.send_iq_raw(items_iq("/location/alice")), *token_required)
    for node in ("/nowhere", "/location/alice"):
        expect_error(eve.send_iq_raw(f"<iq type='get' to='{COMPONENT}'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/></iq>"),
                     "cancel", "item-not-found", None, f'there is no node "{node}"')
    # Oversized stanzas are refused and the service goes on.
    big = "x" * 20000
    reply = loc.send_iq_raw(publish_iq("/news", f"<big xmlns='urn:x'>{big}</big>"))
    info = error_info(reply)
    check(info is not None and info["condition"] == "policy-violation" and info["type"] == "modify"
          and "this service's limit is 16384" in (info["text"] or ""), f"oversized: {info}")
    # disco#info advertises the OAuth feature (profile N5).
    reply = app.send_iq_raw(f"<iq type='get' to='{COMPONENT}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    features = {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
    check({"urn:xmpp:oauth:0", PUBSUB, f"{PUBSUB}#subscribe", f"{PUBSUB}#publish"} <= features, f"features: {features}")


def delivered_to(s: System, token_id: str, node: str) -> int:
    """How many items `authz-server token ledger` says the grant pushed to node."""
    for line in s.cli("authz-server", "token", "ledger", token_id).splitlines():
        fields = line.split("\t")
        if fields[0] == "delivered" and fields[1] == node:
            return int(fields[2].split()[0])
    return 0


def scenario_6_the_ledger(s: System, token: Consumer, app: Client, loc: Client) -> None:
    """The audit ledger as the real guard writes it: the refusals of scenario 2, one more
    delivery counted exactly, an admin's ending of the subscription reaching the subscriber,
    and a chain that verifies."""
    node = "/location/alice"
    refused = [line.split("\t") for line in s.cli("authz-server", "audit", "show", "--kind", "refused").splitlines()]
    mine = [f for f in refused if f[3] == app.jid and f[7] == node]
    check(any(f[8].startswith("subscribe refused: not-authorized (token-required): ") for f in mine),
          f"no token-required refusal in the ledger: {mine}")
    check(any(f[8].startswith("subscribe refused: not-authorized (invalid-signature): ") and f[5] == token.key
              for f in mine), f"no invalid-signature refusal naming the consumer: {mine}")
    token_id = next(line.split("\t")[0] for line in s.cli("authz-server", "token", "list").splitlines()
                    if line.split("\t")[1] == token.token)
    # Scenario 5 unsubscribed: subscribe again, and take the last item sent on subscribing.
    before = delivered_to(s, token_id, node)
    check(before >= 2, f"the ledger counts {before} deliveries to {node}")
    subscribed(app.send_iq_raw(subscribe_iq(node, app.bare, token.oauth(app.jid))), node, app.bare)
    check(app.wait_message(is_event_for(node), timeout=5) is not None, "no last item on subscribing")
    check(delivered_to(s, token_id, node) == before + 1, "the last item sent on subscribing was not counted")
    before += 1
    published_id(loc.send_iq_raw(publish_iq(node, location_entry("the ledger", "3 4"))))
    check(app.wait_message(is_event_for(node), timeout=5) is not None, "no event for the ledger's item")
    check(delivered_to(s, token_id, node) == before + 1, "the delivery was not counted once")
    # An admin ends the subscription: the subscriber is told, the grant stays.
    ended = s.cli("pubsub-guard", "subscription", "end", "--node", node, "--consumer", token.key)
    check(ended.startswith("1 subscription(s) to end"), f"subscription end said {ended!r}")
    check(app.wait_message(is_subscription_none, timeout=5) is not None, "no subscription='none' after subscription end")
    check(s.cli("pubsub-guard", "subscription", "list", "--node", node) == "", "the subscription is still listed")
    subscribed(app.send_iq_raw(subscribe_iq(node, app.bare, token.oauth(app.jid))), node, app.bare)
    verified = s.cli("authz-server", "audit", "verify")
    check(verified.startswith("the ledger's ") and " entries chain" in verified, f"audit verify said {verified!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=Path("target/debug"), help="folder with the built binaries")
    args = parser.parse_args()
    bin_dir = args.bin.resolve()
    # The Python signer must reproduce XEP-0235's own example before it judges the guard.
    xmpp._self_test()
    with tempfile.TemporaryDirectory(prefix="guard-e2e-") as tmp:
        s = System(bin_dir, Path(tmp))
        try:
            token, photos, photos_id = provision(s)
            s.write_guard_config()
            s.prosody.start()
            s.start_guard()
            app = s.client("findmenow")
            loc = s.client("location")
            s.wait_for_guard(app)
            # guard.toml holds the secret and is world-readable here: the guard says so.
            check("the config file holds the component secret and others can read it"
                  in s.guard_log.read_text(), "no warning about the readable secret")
            steps = [
                ("1 subscribe with a token, publish, receive", lambda: scenario_1_subscribe_and_receive(s, token, app, loc)),
                ("2 refusals", lambda: scenario_2_refusals(s, token, app)),
                ("3 revocation", lambda: scenario_3_revocation(s, photos, photos_id, app, loc)),
            ]
            for name, step in steps:
                step()
                print(f"ok scenario {name}")
            app, loc = scenario_4_restarts(s, token, app, loc)
            print("ok scenario 4 SIGKILL and Prosody restart")
            scenario_5_items_unsubscribe_unknown(s, token, app, loc)
            print("ok scenario 5 items, unsubscribe, unknown IQs")
            scenario_6_the_ledger(s, token, app, loc)
            print("ok scenario 6 the audit ledger: refusals, deliveries, an admin's ending, the chain")
        except Exception:  # noqa: BLE001 - report and fail
            traceback.print_exc()
            print("---- guard log (tail) ----\n" + s.log_tail(), file=sys.stderr)
            return 1
        finally:
            s.close()
    print("guard e2e: all scenarios passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
