#!/usr/bin/env python3
"""Approve an OAuth 1.0a request token in a real browser: headless Chromium via chromedriver.

The resource owner's part of the three-legged flow, played by Debian's Chromium
(scripts/setup-chromium installs /usr/bin/chromium and /usr/bin/chromedriver). The
script speaks the W3C WebDriver protocol (JSON over HTTP) to chromedriver with
``requests``; no selenium.

Usage (after scripts/setup-venv and scripts/setup-chromium):

    .venv/bin/python authz-server/tests/py/browser_authorize.py \\
        --authorize-url 'http://127.0.0.1:PORT/oauth/authorize?oauth_token=TOKEN' \\
        --owner alice --password PASS --screenshot /tmp/authorize.png \\
        --expect-callback 'http://127.0.0.1:9/callback'

Steps:
  1. start ``/usr/bin/chromedriver --port=<free port>`` (its own process group) and wait,
     at most 15 s, until GET /status says ready;
  2. open a session: headless Chromium with a new temporary profile;
  3. open ``/login?next=%2F%09%2Fevil.example`` (a link a browser would follow to
     //evil.example once it strips the TAB), sign in, check that the browser is on this
     server's ``/apps``, and sign out (``#sign-out``); then navigate to --authorize-url, type
     --owner into ``#name`` and --password into ``#password``, click ``#sign-in``;
  4. wait (at most 15 s) until ``#approve`` exists, save a PNG screenshot of the page to
     --screenshot, click ``#approve``;
  5. wait (at most 15 s) until the browser's URL starts with --expect-callback (the consumer's
     callback, fixed when the request token was made; nothing needs to listen there, the
     page failing to load is expected), read via GET /session/{id}/url;
  6. print one JSON line: {"callback_url": ..., "oauth_token": ..., "oauth_verifier": ...,
     "after_crafted_sign_in": ...}.

With ``--revoke BASE`` instead (the consumer has exchanged the verifier meanwhile): open
BASE/apps, sign in, read what the page says the application received (``#received-ID``) and
was refused (``#refusals-ID``), save a screenshot of it (--screenshot, optional here), click
the Revoke button, wait until ``#none`` says no application is left, read the ``#revoked``
notice (when the last delivery under the grant happened), print {"revoked": true,
"received": ..., "refusals": ..., "notice": ...}.

The session is deleted, chromedriver (and any browser it left) is killed and the temporary
profile removed at the end, whatever happened. Every failure exits 1 with one line on
stderr; every wait is bounded.
"""

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import parse_qsl, urlsplit

try:
    import requests
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit('browser_authorize.py: %s: run scripts/setup-venv and use .venv/bin/python' % exc)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from script_common import Failure, OneLineParser, one_line, run_main  # noqa: E402

PROG = 'browser_authorize.py'
CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
ELEMENT_KEY = 'element-6066-11e4-a52e-4f735466cecf'  # W3C web element identifier
DRIVER_START_TIMEOUT = 15  # s until chromedriver's /status is ready
WAIT_TIMEOUT = 15  # s for #approve to appear and for the callback URL
POLL = 0.2  # s between polls
HTTP_TIMEOUT = 30  # s for one WebDriver command (page loads are capped lower, below)
PAGE_LOAD_TIMEOUT_MS = 15000
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'






def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class WebDriver:
    """A minimal W3C WebDriver client for one chromedriver on 127.0.0.1."""

    def __init__(self, port):
        self.base = 'http://127.0.0.1:%d' % port
        self.http = requests.Session()
        self.session_id = None

    def command(self, method, path, payload=None, timeout=HTTP_TIMEOUT):
        """Send one command; return its "value", or raise Failure naming the WebDriver error."""
        url = self.base + path
        try:
            if method == 'GET' or method == 'DELETE':
                resp = self.http.request(method, url, timeout=timeout)
            else:
                resp = self.http.request(method, url, json=payload if payload is not None else {},
                                         timeout=timeout)
        except requests.RequestException as exc:
            raise Failure('WebDriver %s %s: %s' % (method, path, one_line(exc))) from exc
        try:
            value = resp.json().get('value')
        except ValueError:
            raise Failure('WebDriver %s %s: HTTP %d, not JSON: %s'
                          % (method, path, resp.status_code, one_line(resp.text))) from None
        if resp.status_code != 200 or (isinstance(value, dict) and 'error' in value):
            err = value if isinstance(value, dict) else {}
            raise Failure('WebDriver %s %s: HTTP %d %s: %s'
                          % (method, path, resp.status_code, err.get('error', '?'),
                             one_line(err.get('message', resp.text))))
        return value

    def wait_ready(self, proc, timeout=DRIVER_START_TIMEOUT):
        """Poll GET /status until ready (bounded); fail early if chromedriver exits."""
        deadline = time.monotonic() + timeout
        last = 'no answer'
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Failure('chromedriver exited with status %d before it was ready' % proc.returncode)
            try:
                resp = self.http.get(self.base + '/status', timeout=2)
                if resp.status_code == 200 and resp.json().get('value', {}).get('ready'):
                    return
                last = 'HTTP %d %s' % (resp.status_code, one_line(resp.text, 200))
            except (requests.RequestException, ValueError) as exc:
                last = one_line(exc, 200)
            time.sleep(POLL)
        raise Failure('chromedriver not ready on %s after %d s (%s)' % (self.base, timeout, last))

    def new_session(self, profile_dir):
        """Start headless Chromium with a fresh profile; remember the session id."""
        args = [
            '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            '--user-data-dir=' + profile_dir, '--window-size=1024,900',
        ]
        caps = {
            'capabilities': {
                'alwaysMatch': {
                    'browserName': 'chrome',
                    'pageLoadStrategy': 'normal',
                    'timeouts': {'pageLoad': PAGE_LOAD_TIMEOUT_MS, 'script': 5000, 'implicit': 0},
                    'goog:chromeOptions': {'binary': CHROMIUM, 'args': args},
                }
            }
        }
        value = self.command('POST', '/session', caps, timeout=60)
        self.session_id = value['sessionId']

    def delete_session(self):
        """Close the browser (best effort)."""
        if self.session_id is not None:
            try:
                self.command('DELETE', '/session/' + self.session_id, timeout=15)
            except Failure:
                pass
            self.session_id = None

    def s(self, method, path, payload=None):
        """A command inside the current session: path is relative to /session/{id}."""
        return self.command(method, '/session/%s%s' % (self.session_id, path), payload)

    def navigate(self, url):
        self.s('POST', '/url', {'url': url})

    def current_url(self):
        return self.s('GET', '/url')

    def find(self, css):
        """The element id for a CSS selector, or None if no element matches (now)."""
        try:
            value = self.s('POST', '/element', {'using': 'css selector', 'value': css})
        except Failure as exc:
            if 'no such element' in str(exc):
                return None
            raise
        return value[ELEMENT_KEY]

    def must_find(self, css, where):
        element = self.find(css)
        if element is None:
            raise Failure('%s: no element %s (page %s, title %r)'
                          % (where, css, self.current_url(), self.s('GET', '/title')))
        return element

    def wait_for(self, css, timeout=WAIT_TIMEOUT):
        """Poll (bounded) until an element matches css; return its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            element = self.find(css)
            if element is not None:
                return element
            time.sleep(POLL)
        raise Failure('no element %s after %d s (page %s, title %r)'
                      % (css, timeout, self.current_url(), self.s('GET', '/title')))

    def type_into(self, element, text):
        self.s('POST', '/element/%s/clear' % element)
        self.s('POST', '/element/%s/value' % element, {'text': text})

    def click(self, element):
        self.s('POST', '/element/%s/click' % element)

    def text(self, element):
        """The element's rendered text."""
        return self.s('GET', '/element/%s/text' % element)

    def screenshot(self, path):
        """Save the viewport as PNG to path."""
        png = base64.b64decode(self.s('GET', '/screenshot'))
        if not png.startswith(PNG_MAGIC):
            raise Failure('screenshot is not a PNG (%d bytes)' % len(png))
        try:
            with open(path, 'wb') as out:
                out.write(png)
        except OSError as exc:
            raise Failure('cannot write screenshot %s: %s' % (path, exc.strerror or exc)) from exc

    def wait_for_url(self, prefix, timeout=WAIT_TIMEOUT):
        """Poll (bounded) until the current URL starts with prefix; return it."""
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            url = self.current_url()
            if isinstance(url, str) and url.startswith(prefix):
                return url
            time.sleep(POLL)
        raise Failure('browser URL did not reach %r within %d s (last %r)' % (prefix, timeout, url))


def start_chromedriver(port, log_path):
    """Start chromedriver on 127.0.0.1:port in its own process group, output to log_path."""
    for path in (CHROMEDRIVER, CHROMIUM):
        if not os.access(path, os.X_OK):
            raise Failure('%s is missing: run scripts/setup-chromium '
                          '(Debian: apt-get install chromium chromium-driver)' % path)
    log = open(log_path, 'wb')
    try:
        return subprocess.Popen(
            [CHROMEDRIVER, '--port=%d' % port, '--allowed-ips=127.0.0.1'],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_chromedriver(proc):
    """Terminate chromedriver and whatever is left in its process group (bounded)."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)  # the group we created with start_new_session
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            # The leader is gone; still sweep its group once for stray browser processes.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except subprocess.TimeoutExpired:
            continue


def sign_in(driver, args):
    """Types the owner's name and password into the sign-in form on the page and submits it."""
    name = driver.must_find('#name', 'sign-in page')
    password = driver.must_find('#password', 'sign-in page')
    driver.type_into(name, args.owner)
    driver.type_into(password, args.password)
    driver.click(driver.must_find('#sign-in', 'sign-in page'))


def open_redirect_refused(driver, base):
    """Step 3a: a sign-in link whose next= a browser would read as //evil.example (the TAB
    is stripped by the browser's URL parser) must land on this server's /apps; then sign out."""
    driver.navigate(base + '/login?next=%2F%09%2Fevil.example')
    return base + '/apps'


def authorize(driver, args):
    """Steps 3 to 5 and the revocation; returns (URL after the crafted sign-in, callback URL)."""
    parts = urlsplit(args.authorize_url)
    base = '%s://%s' % (parts.scheme, parts.netloc)
    want = open_redirect_refused(driver, base)
    sign_in(driver, args)
    driver.wait_for('#sign-out')
    landed = driver.current_url()
    if landed != want:
        raise Failure('sign-in with next=/<TAB>/evil.example landed on %r, not %r' % (landed, want))
    driver.click(driver.must_find('#sign-out', 'applications page'))
    driver.wait_for('#sign-in')

    driver.navigate(args.authorize_url)
    sign_in(driver, args)
    approve = driver.wait_for('#approve')
    driver.screenshot(args.screenshot)
    driver.click(approve)
    return landed, driver.wait_for_url(args.expect_callback)


def revoke(driver, args):
    """--revoke: sign in on the applications page, read what it says the one application
    received and was refused (and save a screenshot of it with --screenshot), press its
    Revoke button, wait for ``#none`` and read the ``#revoked`` notice."""
    driver.navigate(args.revoke + '/apps')
    sign_in(driver, args)
    button = driver.wait_for('button[id^="revoke-"]')
    shown = {
        'received': driver.text(driver.must_find('span[id^="received-"]', 'applications page')),
        'refusals': driver.text(driver.must_find('p[id^="refusals-"]', 'applications page')),
    }
    if args.screenshot:
        driver.screenshot(args.screenshot)
    driver.click(button)
    driver.wait_for('#none')
    shown['notice'] = driver.text(driver.must_find('#revoked', 'page after the revoke'))
    shown['revoked'] = True
    return shown


def run(args):
    """Start chromedriver and a browser, authorize, clean up; return the dict to print."""
    tmp = tempfile.mkdtemp(prefix='browser-authorize-')
    proc = None
    driver = None
    try:
        port = free_port()
        log_path = os.path.join(tmp, 'chromedriver.log')
        proc = start_chromedriver(port, log_path)
        driver = WebDriver(port)
        try:
            driver.wait_ready(proc)
        except Failure as exc:
            with open(log_path, 'rb') as log:
                tail = log.read().decode('utf-8', 'replace').strip().splitlines()[-1:]
            raise Failure('%s%s' % (exc, ' (chromedriver said: %s)' % one_line(tail[0]) if tail else '')) from None
        profile = os.path.join(tmp, 'profile')
        os.mkdir(profile)
        driver.new_session(profile)
        if args.revoke:
            return revoke(driver, args)
        landed, url = authorize(driver, args)
    finally:
        if driver is not None:
            driver.delete_session()
        stop_chromedriver(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if not query.get('oauth_token') or not query.get('oauth_verifier'):
        raise Failure('callback URL %r lacks oauth_token or oauth_verifier' % url)
    return {'callback_url': url, 'oauth_token': query['oauth_token'],
            'oauth_verifier': query['oauth_verifier'], 'after_crafted_sign_in': landed}



def main(argv=None):
    """Parse arguments, run, print one JSON line; exit 1 with one stderr line on failure."""
    ap = OneLineParser(prog=PROG, description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--authorize-url',
                    help="full URL of the server's authorize page, with oauth_token")
    ap.add_argument('--revoke', metavar='BASE',
                    help='instead: sign in at BASE/apps and revoke the one application')
    ap.add_argument('--owner', required=True, help='resource owner name typed into #name')
    ap.add_argument('--password', required=True, help='password typed into #password')
    ap.add_argument('--screenshot',
                    help='PNG file for the authorize page (with --revoke: the applications page)')
    ap.add_argument('--expect-callback',
                    help="prefix of the consumer's callback URL the browser must reach")
    args = ap.parse_args(argv)
    needed = ('revoke',) if args.revoke else ('authorize_url', 'expect_callback', 'screenshot')
    for name in needed:
        value = getattr(args, name)
        if not value:
            ap.error('--%s is required' % name.replace('_', '-'))
        if name != 'screenshot' and not value.startswith(('http://', 'https://')):
            ap.error('--%s must be an http(s) URL' % name.replace('_', '-'))

    # SIGTERM (e.g. a test runner's timeout) unwinds through the finally blocks too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    return run_main(PROG, run, args)


if __name__ == '__main__':
    sys.exit(main())
