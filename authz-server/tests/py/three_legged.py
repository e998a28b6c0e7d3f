#!/usr/bin/env python3
"""An independent OAuth 1.0a consumer that runs the three-legged flow against authz-server.

The consumer side is requests-oauthlib's ``OAuth1Session`` (oauthlib signs every request);
the resource owner's browser is played by a plain ``requests.Session`` that signs in and
presses a button on the server's HTML authorize page.

Usage (after scripts/setup-venv; the server listening on 127.0.0.1:PORT):

    .venv/bin/python authz-server/tests/py/three_legged.py --base http://127.0.0.1:PORT \\
        --consumer-key KEY --consumer-secret SECRET --owner alice --password PASS \\
        --method HMAC-SHA1 [--scope "read write"] [--callback URL] [--deny]

Steps:
  (a) POST /oauth/request_token, signed, with ``oauth_callback`` (``--callback``, default
      http://127.0.0.1:9/callback, never fetched) and, with ``--scope``, a form body
      parameter ``scope`` (application/x-www-form-urlencoded, covered by the signature);
      the answer must carry ``oauth_callback_confirmed=true``.
  (b) the authorize URL: BASE/oauth/authorize?oauth_token=REQUEST_TOKEN.
  (c) as the owner: GET it (sign-in page), POST /login {name, password, next} -> 303 to
      ``next`` plus a session cookie, GET it again, read the form
      ``<form method="post" action="/oauth/authorize">`` (hidden ``oauth_token`` and
      ``csrf``, text ``scope``, buttons ``#approve``/``#deny``) with html.parser, and POST
      it back with ``decision=approve`` (or ``deny``) without following redirects: the
      server must answer 303 to the callback with ``oauth_token`` and ``oauth_verifier``
      (or ``oauth_problem=permission_denied``).
  (d) POST /oauth/access_token, signed with the request token and the verifier.

Output, one JSON line on stdout:
    {"request_token": ..., "verifier": ..., "access_token": ..., "access_token_secret": ...}
or with --deny (no access token is fetched):
    {"denied_location": "<Location header>"}

Every failure exits 1 with one line on stderr (HTTP status and body of an unexpected
response included); every request has a timeout.
"""

import argparse
import os
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

try:
    import requests
    from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_PLAINTEXT
    from requests_oauthlib import OAuth1Session
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit('three_legged.py: %s: run scripts/setup-venv and use .venv/bin/python' % exc)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from script_common import Failure, OneLineParser, one_line, run_main  # noqa: E402

PROG = 'three_legged.py'
TIMEOUT = 10  # seconds, for every HTTP request
BODY_LIMIT = 500  # characters of a response body quoted in an error line
METHODS = {'HMAC-SHA1': SIGNATURE_HMAC_SHA1, 'PLAINTEXT': SIGNATURE_PLAINTEXT}






def describe(resp):
    """'HTTP <status> <body>' of a response, for error lines."""
    return 'HTTP %d %s' % (resp.status_code, one_line(resp.text, BODY_LIMIT))


class FormParser(HTMLParser):
    """Collects every <form> of a page with its inputs and buttons.

    ``forms`` is a list of dicts: {"method", "action", "inputs": [attr dicts],
    "buttons": [attr dicts]}; attribute values are already entity-decoded by html.parser.
    Inputs and buttons outside any form are ignored.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self._current = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: (v if v is not None else '') for k, v in attrs}
        if tag == 'form':
            self._current = {
                'method': attrs.get('method', 'get').lower(),
                'action': attrs.get('action', ''),
                'inputs': [],
                'buttons': [],
            }
            self.forms.append(self._current)
        elif tag == 'input' and self._current is not None:
            self._current['inputs'].append(attrs)
        elif tag == 'button' and self._current is not None:
            self._current['buttons'].append(attrs)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == 'form':
            self._current = None


def parse_forms(html):
    """Return FormParser.forms for an HTML document."""
    parser = FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def find_form(forms, page_url, action_path):
    """The first POST form whose action resolves (against page_url) to path action_path."""
    for form in forms:
        if form['method'] == 'post' and urlsplit(urljoin(page_url, form['action'])).path == action_path:
            return form
    return None


def input_value(form, name, types=None):
    """Value of the form's input named ``name`` (optionally of one of ``types``), or None."""
    for attrs in form['inputs']:
        if attrs.get('name') == name and (types is None or attrs.get('type', 'text').lower() in types):
            return attrs.get('value', '')
    return None


def has_button(form, name, value, ident):
    """Whether the form has <button name=.. value=.. id=..>."""
    return any(
        b.get('name') == name and b.get('value') == value and b.get('id') == ident
        for b in form['buttons']
    )


def path_and_query(url):
    """'/path?query' of an absolute URL."""
    parts = urlsplit(url)
    return parts.path + ('?' + parts.query if parts.query else '')


def check_callback_redirect(resp, callback, request_token, deny):
    """Check the 303 answer to the decision POST and return (Location, its query dict).

    The Location must be the callback URL (same scheme, host, port and path, its own query
    parameters kept) with ``oauth_token`` = the request token and either ``oauth_verifier``
    (approve) or ``oauth_problem=permission_denied`` (deny).
    """
    if resp.status_code != 303:
        raise Failure('POST /oauth/authorize (decision=%s): expected 303, got %s'
                      % ('deny' if deny else 'approve', describe(resp)))
    location = resp.headers.get('Location')
    if not location:
        raise Failure('POST /oauth/authorize: 303 without a Location header')
    got, want = urlsplit(location), urlsplit(callback)
    if (got.scheme, got.netloc, got.path) != (want.scheme, want.netloc, want.path):
        raise Failure('POST /oauth/authorize: Location %r is not the callback %r' % (location, callback))
    pairs = parse_qsl(got.query, keep_blank_values=True)
    for pair in parse_qsl(want.query, keep_blank_values=True):
        if pair not in pairs:
            raise Failure('POST /oauth/authorize: Location %r lost the callback query parameter %r'
                          % (location, pair[0]))
    query = dict(pairs)
    if query.get('oauth_token') != request_token:
        raise Failure('POST /oauth/authorize: Location %r: oauth_token is not the request token %r'
                      % (location, request_token))
    if deny:
        if query.get('oauth_problem') != 'permission_denied':
            raise Failure('POST /oauth/authorize: Location %r lacks oauth_problem=permission_denied' % location)
        if 'oauth_verifier' in query:
            raise Failure('POST /oauth/authorize: Location %r of a denial carries an oauth_verifier' % location)
    elif not query.get('oauth_verifier'):
        raise Failure('POST /oauth/authorize: Location %r lacks oauth_verifier' % location)
    return location, query


def owner_decides(base, authorize_url, owner, password, callback, request_token, deny):
    """Step (c): sign in as the owner, press approve (or deny); return check_callback_redirect()."""
    browser = requests.Session()
    browser.headers['User-Agent'] = 'three_legged.py (authz-server test)'

    # The authorize page before signing in: a sign-in form.
    resp = browser.get(authorize_url, timeout=TIMEOUT, allow_redirects=False)
    if resp.status_code != 200:
        raise Failure('GET %s (signed out): expected 200, got %s' % (authorize_url, describe(resp)))
    login_form = find_form(parse_forms(resp.text), authorize_url, '/login')
    if login_form is None:
        raise Failure('GET %s (signed out): no <form method="post" action="/login">: %s'
                      % (authorize_url, describe(resp)))

    # Sign in. Hidden inputs of the sign-in form (if it has any, e.g. a CSRF token) are
    # sent back as they are; name, password and next are ours.
    fields = {a['name']: a.get('value', '') for a in login_form['inputs']
              if a.get('type', 'text').lower() == 'hidden' and a.get('name')}
    nxt = path_and_query(authorize_url)
    fields.update({'name': owner, 'password': password, 'next': nxt})
    login_url = base + '/login'
    resp = browser.post(login_url, data=fields, timeout=TIMEOUT, allow_redirects=False)
    if resp.status_code != 303:
        raise Failure('POST /login: expected 303, got %s' % describe(resp))
    location = resp.headers.get('Location', '')
    if urljoin(login_url, location) != urljoin(login_url, nxt):
        raise Failure('POST /login: 303 to %r, expected next=%r' % (location, nxt))
    if not resp.cookies:
        raise Failure('POST /login: 303 without a Set-Cookie (headers: %s)' % one_line(dict(resp.headers)))

    # The authorize page once signed in: the decision form.
    resp = browser.get(authorize_url, timeout=TIMEOUT, allow_redirects=False)
    if resp.status_code != 200:
        raise Failure('GET %s (signed in): expected 200, got %s' % (authorize_url, describe(resp)))
    form = find_form(parse_forms(resp.text), authorize_url, '/oauth/authorize')
    if form is None:
        raise Failure('GET %s (signed in): no <form method="post" action="/oauth/authorize"> '
                      '(session cookie not accepted?): %s' % (authorize_url, describe(resp)))
    page_token = input_value(form, 'oauth_token', ('hidden',))
    csrf = input_value(form, 'csrf', ('hidden',))
    scope = input_value(form, 'scope', ('text',))
    if page_token != request_token:
        raise Failure('authorize page: hidden oauth_token %r is not the request token %r'
                      % (page_token, request_token))
    if not csrf:
        raise Failure('authorize page: no (or empty) hidden input "csrf": %s' % describe(resp))
    if scope is None:
        raise Failure('authorize page: no text input "scope": %s' % describe(resp))
    for value in ('approve', 'deny'):
        if not has_button(form, 'decision', value, value):
            raise Failure('authorize page: no <button name="decision" value="%s" id="%s">: %s'
                          % (value, value, describe(resp)))

    decision = 'deny' if deny else 'approve'
    resp = browser.post(
        urljoin(authorize_url, form['action']),
        data={'oauth_token': page_token, 'csrf': csrf, 'scope': scope, 'decision': decision},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    return check_callback_redirect(resp, callback, request_token, deny)


def run(args):
    """The whole flow; returns the dict to print."""
    base = args.base.rstrip('/')
    oauth = OAuth1Session(
        args.consumer_key,
        client_secret=args.consumer_secret,
        callback_uri=args.callback,
        signature_method=METHODS[args.method],
    )

    # (a) Temporary credentials. fetch_request_token() hands its keyword arguments to
    # Session.post(), so data= becomes a form-encoded POST body, which oauthlib signs.
    kwargs = {'timeout': TIMEOUT}
    if args.scope is not None:
        kwargs['data'] = {'scope': args.scope}
    try:
        request = oauth.fetch_request_token(base + '/oauth/request_token', **kwargs)
    except Exception as exc:  # TokenRequestDenied carries 'code N, response was ...'
        raise Failure('POST /oauth/request_token: %s' % one_line(exc)) from exc
    if request.get('oauth_callback_confirmed') != 'true':
        raise Failure('POST /oauth/request_token: oauth_callback_confirmed is %r, not "true" (answer %r)'
                      % (request.get('oauth_callback_confirmed'), request))
    request_token = request['oauth_token']
    if not request.get('oauth_token_secret'):
        raise Failure('POST /oauth/request_token: no oauth_token_secret in %r' % request)

    # (b) The URL the owner is sent to.
    authorize_url = oauth.authorization_url(base + '/oauth/authorize')

    # (c) The owner's decision.
    location, query = owner_decides(base, authorize_url, args.owner, args.password,
                                    args.callback, request_token, args.deny)
    if args.deny:
        return {'denied_location': location}

    # (d) Token credentials.
    returned = oauth.parse_authorization_response(location)
    verifier = returned['oauth_verifier']
    try:
        access = oauth.fetch_access_token(base + '/oauth/access_token', timeout=TIMEOUT)
    except Exception as exc:
        raise Failure('POST /oauth/access_token: %s' % one_line(exc)) from exc
    if not access.get('oauth_token') or not access.get('oauth_token_secret'):
        raise Failure('POST /oauth/access_token: no oauth_token/oauth_token_secret in %r' % access)
    if access['oauth_token'] == request_token:
        raise Failure('POST /oauth/access_token: the access token equals the request token')
    return {
        'request_token': request_token,
        'verifier': verifier,
        'access_token': access['oauth_token'],
        'access_token_secret': access['oauth_token_secret'],
    }



def main(argv=None):
    """Parse arguments, run the flow, print one JSON line; exit 1 with one stderr line on failure."""
    ap = OneLineParser(prog=PROG, description=__doc__.split('\n\n')[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--base', required=True, help='server root, e.g. http://127.0.0.1:PORT')
    ap.add_argument('--consumer-key', required=True)
    ap.add_argument('--consumer-secret', required=True)
    ap.add_argument('--owner', required=True, help='resource owner name for /login')
    ap.add_argument('--password', required=True, help="resource owner's password")
    ap.add_argument('--method', required=True, choices=sorted(METHODS), help='signature method')
    ap.add_argument('--scope', help='space separated scopes, sent as body parameter "scope"')
    ap.add_argument('--callback', default='http://127.0.0.1:9/callback',
                    help='oauth_callback (never fetched; default %(default)s)')
    ap.add_argument('--deny', action='store_true', help='press deny instead of approve')
    args = ap.parse_args(argv)
    if not args.base.startswith(('http://', 'https://')):
        ap.error('--base must be an http(s) URL')
    return run_main(PROG, run, args, expected=(requests.RequestException,))


if __name__ == '__main__':
    sys.exit(main())
