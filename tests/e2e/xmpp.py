"""XMPP helpers for end-to-end tests that assert exact stanzas.

    from xmpp import Client, sign_stanza, oauth_element, new_nonce, now

    alice = Client("alice", "alicepass", server.c2s_port)     # server: a prosody.Prosody
    alice.connect()                                             # logged in, presence sent
    reply = alice.send_iq_raw("<iq type='get' to='localhost' id='d1'>"
                              "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    reply.get("type")                                           # 'result' or 'error'
    msg = alice.wait_message(lambda m: m.get("from") == "pubsub.localhost", timeout=5)
    alice.disconnect()

Stanzas come back as xml.etree.ElementTree elements exactly as the server sent them, with
namespace-qualified tags: the reply above is `{jabber:client}iq`, an error child is
`{jabber:client}error`, its condition `{urn:ietf:params:xml:ns:xmpp-stanzas}...`, a pubsub
event `{http://jabber.org/protocol/pubsub#event}event`.  Nothing is turned into an exception:
an IQ error reply is returned like a result.

The client is slixmpp (1.17) running on its own asyncio loop in a background thread; the
methods here block the calling (test) thread with timeouts.  It logs in over plain TCP to
127.0.0.1 (no TLS: Prosody's test config allows unencrypted SASL on loopback).

The signature helpers compute XEP-0235 signatures independently of the project's Rust code
(base string by hand, normalization and percent-encoding from oauthlib, HMAC from hashlib).
Run this file to check them against XEP-0235's own example:

    .venv/bin/python tests/e2e/xmpp.py
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import copy
import hashlib
import hmac
import queue
import re
import secrets
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Callable
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import slixmpp
from oauthlib.oauth1.rfc5849.signature import normalize_parameters
from oauthlib.oauth1.rfc5849.utils import escape
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase
from slixmpp.xmlstream.matcher.xpath import MatchXPath

CLIENT_NS = "jabber:client"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
OAUTH_NS = "urn:xmpp:oauth:0"

Predicate = Callable[[ET.Element], bool]


# --------------------------------------------------------------------------- messages


class MessageQueue(queue.Queue):
    """A queue.Queue of received <message/> elements that can also be searched.

    `get()`/`get_nowait()` behave as usual (oldest first).  `take(predicate, timeout)` removes
    and returns the oldest element matching `predicate`, leaving the others in order, and
    waits for one to arrive if none is queued yet.
    """

    def _put(self, item) -> None:
        super()._put(item)
        # queue.Queue wakes one waiter per put; take() waiters with a predicate that does not
        # match must not swallow the wake-up meant for someone else, so wake them all.
        self.not_empty.notify_all()

    def take(self, predicate: Predicate | None = None, timeout: float = 5.0) -> ET.Element | None:
        deadline = time.monotonic() + timeout
        with self.not_empty:
            while True:
                for index, item in enumerate(self.queue):
                    if predicate is None or predicate(item):
                        del self.queue[index]
                        self.not_full.notify()
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.not_empty.wait(remaining)

    def clear(self) -> None:
        with self.mutex:
            self.queue.clear()


# --------------------------------------------------------------------------- client


class _IqReply(MatcherBase):
    """Matches the result or error IQ carrying a given id (whatever its sender)."""

    def match(self, stanza) -> bool:
        xml = stanza.xml
        return (
            xml.tag == f"{{{CLIENT_NS}}}iq"
            and xml.get("id") == self._criteria
            and xml.get("type") in ("result", "error")
        )


class Client:
    """A logged-in user name@domain/resource, driven from synchronous test code.

    Client(name, password, c2s_port) -> connect() logs in to 127.0.0.1:c2s_port with SASL
    (SCRAM-SHA-1 or PLAIN, allowed without TLS here), binds `resource`, sends initial
    presence (priority 0, so messages to the bare JID are delivered to it) and returns once
    the server has processed that presence.  `name` may also be a bare JID.
    """

    def __init__(
        self,
        name: str,
        password: str,
        c2s_port: int,
        resource: str = "test",
        *,
        domain: str = "localhost",
        host: str = "127.0.0.1",
    ) -> None:
        self._bare = name if "@" in name else f"{name}@{domain}"
        self._password = password
        self._port = c2s_port
        self._host = host
        self._resource = resource
        self.messages = MessageQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._xmpp: slixmpp.ClientXMPP | None = None
        self._jid: str | None = None

    # ----------------------------------------------------------------- identity

    @property
    def jid(self) -> str:
        """The full JID the server bound (e.g. alice@localhost/test); valid after connect()."""
        if self._jid is None:
            raise RuntimeError("not connected")
        return self._jid

    @property
    def bare(self) -> str:
        return self._bare

    @property
    def connected(self) -> bool:
        return self._jid is not None

    # ----------------------------------------------------------------- loop plumbing

    def _run(self, coro, timeout: float):
        """Run a coroutine on the client's loop and wait for it from the calling thread."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"timed out after {timeout} s") from None

    def _call(self, fn, *args):
        """Run a plain function on the client's loop (slixmpp is not thread-safe)."""

        async def call():
            return fn(*args)

        return self._run(call(), timeout=10)

    # ----------------------------------------------------------------- connect

    def connect(self, timeout: float = 10) -> "Client":
        if self._jid is not None:
            raise RuntimeError(f"{self._jid} is already connected")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"xmpp-{self._bare}", daemon=True
        )
        self._thread.start()
        try:
            self._jid = self._run(self._login(timeout), timeout + 1)
        except BaseException:
            self._shutdown_loop()
            raise
        # Round trip after the presence: once this reply is back the server has processed
        # the presence (stanzas of one session are handled in order), so the client is
        # "online" for anything sent to its bare JID from now on.
        try:
            self.send_iq_raw(
                f"<iq type='get' to={quoteattr(self._bare.split('@')[1])}>"
                "<ping xmlns='urn:xmpp:ping'/></iq>",
                timeout=timeout,
            )
        except BaseException:
            self.disconnect()
            raise
        return self

    async def _login(self, timeout: float) -> str:
        # Built on the loop thread: slixmpp binds itself to the running loop.
        xmpp = slixmpp.ClientXMPP(
            f"{self._bare}/{self._resource}",
            self._password,
            plugin_config={
                "feature_mechanisms": {"unencrypted_plain": True, "unencrypted_scram": True}
            },
        )
        xmpp.enable_plaintext = True
        xmpp.enable_starttls = False
        xmpp.enable_direct_tls = False
        xmpp.whitespace_keepalive = False
        self._xmpp = xmpp

        # Every incoming <message/>, raw, copied before anything else can touch it.
        xmpp.register_handler(
            Callback(
                "e2e raw messages",
                MatchXPath(f"{{{CLIENT_NS}}}message"),
                lambda stanza: self.messages.put(copy.deepcopy(stanza.xml)),
            )
        )

        started = asyncio.get_running_loop().create_future()

        def finish(result=None, error=None):
            if not started.done():
                if error is not None:
                    started.set_exception(error)
                else:
                    started.set_result(result)

        xmpp.add_event_handler("session_start", lambda _: finish(result=True))
        xmpp.add_event_handler(
            "failed_all_auth",
            lambda _: finish(error=ConnectionError(f"{self._bare}: authentication failed")),
        )
        xmpp.add_event_handler(
            "connection_failed",
            lambda e: finish(error=ConnectionError(f"{self._bare}: connection failed: {e}")),
        )
        xmpp.add_event_handler(
            "disconnected",
            lambda reason: finish(error=ConnectionError(f"{self._bare}: disconnected: {reason}")),
        )

        xmpp.connect(self._host, self._port)
        try:
            await asyncio.wait_for(started, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"{self._bare}: no session on {self._host}:{self._port} after {timeout} s"
            ) from None
        finally:
            if not started.done() or started.exception() is not None:
                # Stop slixmpp's reconnect loop and drop the socket.
                xmpp.cancel_connection_attempt()
                xmpp.abort()

        xmpp.send_presence()
        return str(xmpp.boundjid.full)

    # ----------------------------------------------------------------- disconnect

    def disconnect(self, timeout: float = 5) -> None:
        """Close the stream (</stream:stream>) and stop the loop thread.  Idempotent."""
        if self._loop is None:
            return
        xmpp = self._xmpp
        if xmpp is not None and xmpp.transport is not None:

            async def close():
                await xmpp.disconnect(wait=timeout)

            try:
                self._run(close(), timeout + 1)
            except Exception:
                self._call(xmpp.abort)
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():

            async def cancel_tasks():
                # slixmpp keeps background tasks (its send loop, timers); finish them here so
                # nothing is left pending on a closed loop (that prints warnings at exit).
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            try:
                self._run(cancel_tasks(), timeout=5)
            except Exception:
                pass
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(10)
            if not loop.is_running():
                loop.close()
        self._loop = self._thread = self._xmpp = None
        self._jid = None

    def __enter__(self) -> "Client":
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.disconnect()

    # ----------------------------------------------------------------- sending

    def send_iq_raw(self, xml: str, timeout: float = 5) -> ET.Element:
        """Send an <iq> given as XML text and return the reply (type result OR error).

        The text is sent byte for byte, except that an id is added when the root has none.
        `from` is left to the server.  Raises TimeoutError when no reply arrives in time.
        """
        root = ET.fromstring(xml)
        if root.tag.rsplit("}", 1)[-1] != "iq":
            raise ValueError(f"not an <iq>: {xml[:80]!r}")
        iq_id = root.get("id")
        if iq_id is None:
            iq_id = uuid.uuid4().hex
            xml = re.sub(r"^(\s*<iq)\b", rf"\1 id='{iq_id}'", xml, count=1)

        reply: concurrent.futures.Future = concurrent.futures.Future()
        handler_name = f"e2e iq reply {iq_id} {uuid.uuid4().hex}"

        def on_reply(stanza) -> None:
            if not reply.done():
                reply.set_result(copy.deepcopy(stanza.xml))

        def send() -> None:
            # Register before sending: the reply cannot race past the handler.
            self._xmpp.register_handler(
                Callback(handler_name, _IqReply(iq_id), on_reply, once=True)
            )
            self._xmpp.send_raw(xml)

        self._call(send)
        try:
            return reply.result(timeout)
        except concurrent.futures.TimeoutError:
            self._call(self._xmpp.remove_handler, handler_name)
            raise TimeoutError(f"no reply to iq id={iq_id!r} within {timeout} s") from None

    # ----------------------------------------------------------------- receiving

    def wait_message(
        self, predicate: Predicate | None = None, timeout: float = 5
    ) -> ET.Element | None:
        """Remove and return the oldest received message matching predicate (waiting up to
        `timeout` seconds for one), or None.  Non-matching messages stay queued."""
        return self.messages.take(predicate, timeout)

    def no_message(self, predicate: Predicate | None = None, within: float = 1.0) -> bool:
        """True if no message matching predicate is queued or arrives within `within`
        seconds.  Consumes nothing (a matching message stays queued)."""
        deadline = time.monotonic() + within
        with self.messages.not_empty:
            while True:
                if any(predicate is None or predicate(m) for m in self.messages.queue):
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self.messages.not_empty.wait(remaining)


# --------------------------------------------------------------------------- stanza helpers


def error_info(stanza: ET.Element) -> dict | None:
    """The <error/> of a stanza as a dict, or None when it has none:
    {"type": "cancel", "condition": "service-unavailable", "text": "..." or None,
     "app": ["{ns}name", ...]}   (app: children outside the stanzas namespace)."""
    error = stanza.find(f"{{{CLIENT_NS}}}error")
    if error is None:
        error = stanza.find("error")
    if error is None:
        return None
    info = {"type": error.get("type"), "condition": None, "text": None, "app": []}
    for child in error:
        if child.tag == f"{{{STANZAS_NS}}}text":
            info["text"] = child.text
        elif child.tag.startswith(f"{{{STANZAS_NS}}}"):
            info["condition"] = child.tag.split("}", 1)[1]
        else:
            info["app"].append(child.tag)
    return info


# --------------------------------------------------------------------------- XEP-0235


def sign_stanza(
    qname: str,
    from_jid: str,
    to_jid: str,
    params: dict,
    consumer_secret: str,
    token_secret: str,
    method: str = "HMAC-SHA1",
) -> str:
    """The XEP-0235 signature of a stanza, computed independently.

    base string = enc(qname) & enc(from & to) & enc(normalized)
      where normalized = RFC 5849 3.4.1.3.2 normalization of every oauth_* parameter
      except oauth_signature (each name and value percent-encoded, sorted, joined with & and =).
      (qname is iq/message/presence, which percent-encoding leaves unchanged.)
    key = enc(consumer_secret) & enc(token_secret)
    HMAC-SHA1: base64(HMAC-SHA1(key, base string)); PLAINTEXT: the key itself.

    `method` decides the algorithm; params["oauth_signature_method"] is only signed, so a
    test can sign a stanza whose declared method disagrees with the real one.
    """
    if method == "PLAINTEXT":
        return _key(consumer_secret, token_secret)
    if method != "HMAC-SHA1":
        raise ValueError(f"unsupported signature method {method!r}")
    return base64.b64encode(
        hmac.new(
            _key(consumer_secret, token_secret).encode("utf-8"),
            base_string(qname, from_jid, to_jid, params).encode("utf-8"),
            hashlib.sha1,
        ).digest()
    ).decode("ascii")


def base_string(qname: str, from_jid: str, to_jid: str, params: dict) -> str:
    """The XEP-0235 signature base string (see sign_stanza)."""
    pairs = [
        (name, str(value))
        for name, value in params.items()
        if name.startswith("oauth_") and name != "oauth_signature"
    ]
    normalized = normalize_parameters(pairs)
    return "&".join([escape(qname), escape(f"{from_jid}&{to_jid}"), escape(normalized)])


def _key(consumer_secret: str, token_secret: str) -> str:
    return f"{escape(consumer_secret or '')}&{escape(token_secret or '')}"


def oauth_element(params: dict, signature: str, ns: str = OAUTH_NS) -> str:
    """<oauth xmlns=ns> with one child per parameter (in the given order) plus
    <oauth_signature>, values XML-escaped.  A signature of None leaves that child out."""
    children = [(name, str(value)) for name, value in params.items() if name != "oauth_signature"]
    if signature is not None:
        children.append(("oauth_signature", signature))
    body = "".join(f"<{name}>{xml_escape(value)}</{name}>" for name, value in children)
    return f"<oauth xmlns={quoteattr(ns)}>{body}</oauth>"


def new_nonce() -> str:
    return secrets.token_hex(16)


def now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------- self test


def _self_test() -> None:
    """Check the signer against XEP-0235 0.7's example (/work/shared/vectors, xep0235-*)."""
    params = {
        "oauth_consumer_key": "0685bd9184jfhq22",
        "oauth_nonce": "4572616e48616d6d65724c61686176",
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": "1218137833",
        "oauth_token": "ad180jjd733klru7",
        "oauth_version": "1.0",
    }
    args = ("iq", "travelbot@findmenow.tld/bot", "feeds.worldgps.tld", params)
    assert base_string(*args) == (
        "iq&travelbot%40findmenow.tld%2Fbot%26feeds.worldgps.tld&oauth_consumer_key%3D"
        "0685bd9184jfhq22%26oauth_nonce%3D4572616e48616d6d65724c61686176%26"
        "oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1218137833%26"
        "oauth_token%3Dad180jjd733klru7%26oauth_version%3D1.0"
    ), base_string(*args)
    signature = sign_stanza(*args, "consumersecret", "tokensecret")
    assert signature == "9PQkM4YKgaM067wqrDGshXOwDW0=", signature
    # Order of the given params and an oauth_signature among them change nothing.
    shuffled = dict(reversed(list(params.items())), oauth_signature="ignored")
    resigned = sign_stanza("iq", args[1], args[2], shuffled, "consumersecret", "tokensecret")
    assert resigned == signature
    # XEP-0235 0.5/0.6's printed signature (from and to swapped) must NOT be reproduced.
    assert signature != "Z0F5zmPWwbunk5dc2hNBn1NgBj4="
    assert sign_stanza("iq", args[2], args[1], params, "consumersecret", "tokensecret") == (
        "Z0F5zmPWwbunk5dc2hNBn1NgBj4="
    )
    assert (
        sign_stanza(*args, "consumersecret", "tokensecret", method="PLAINTEXT")
        == "consumersecret&tokensecret"
    )
    assert sign_stanza(*args, "a&b", "", method="PLAINTEXT") == "a%26b&"

    # The element parses back to the same values, signature last, escaping intact.
    element = ET.fromstring(oauth_element(dict(params, oauth_nonce="<&'\">"), signature))
    assert element.tag == f"{{{OAUTH_NS}}}oauth"
    values = {child.tag.split("}", 1)[1]: child.text for child in element}
    assert values["oauth_nonce"] == "<&'\">" and values["oauth_signature"] == signature
    assert list(values)[-1] == "oauth_signature" and len(values) == 7

    assert len(new_nonce()) == 32 and len(str(now())) == 10
    print("xmpp.py self-test: ok (XEP-0235 example signature 9PQkM4YKgaM067wqrDGshXOwDW0=)")


if __name__ == "__main__":
    _self_test()
