#!/usr/bin/env python3
"""Differential test of oauth-xmpp against oauthlib, the reference Python OAuth 1.0 code.

Usage (after scripts/setup-venv):

    .venv/bin/python scripts/differential.py --driver target/debug/examples/differential
    .venv/bin/python scripts/differential.py --only-generate --dump /tmp/cases.jsonl

It generates N deterministic pseudo-random cases, half HTTP requests (RFC 5849) and half
XMPP stanzas (XEP-0235), signs each with oauthlib, sends them all as JSON lines to the Rust
driver (oauth-xmpp/examples/differential.rs) and compares what the driver reports
(normalized parameters, signature base string, signature, verified) with oauthlib's
results byte for byte.  About 10% of the cases get a tampered copy (id suffix "-t") that
must not verify.

Driver input, one JSON object per line:
  {"id", "form": "http", "method", "uri", "headers": {..}, "body", "consumer_secret", "token_secret"}
  {"id", "form": "stanza", "stanza": "<iq ...>", "consumer_secret", "token_secret"}
Driver output, one line per input line, same order:
  {"id", "normalized", "base_string", "signature", "verified", "error"}

Before talking to the driver the script checks its own cases: oauthlib must collect from
each final HTTP request exactly the parameters the generator meant to send, an independent
RFC 5849 normalizer must agree with oauthlib's, oauthlib's own Client must sign the same
requests to the same signatures (where Client can express them), and every stanza must
parse back (xml.etree) to the values that were signed.  A generator inconsistency exits 2.

Things deliberately avoided because oauthlib is not a correct reference there:
  * '%' in oauth_* values sent in the query or body: oauthlib's collect_parameters
    percent-decodes oauth_* values from the query/body a second time.
  * leading/trailing whitespace and CR in stanza values (XML text is trimmed/normalized).
"""

import argparse
import json
import random
import string
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlparse
from xml.sax.saxutils import escape as xml_escape, quoteattr

try:
    from oauthlib.oauth1 import Client
    from oauthlib.oauth1.rfc5849 import parameters, signature, utils
except ImportError:
    sys.exit('%s: oauthlib is missing: run scripts/setup-venv and use .venv/bin/python' % sys.argv[0])

DEFAULT_SEED = 20080807  # XEP-0235 0.4 date; any fixed value will do
HMAC = 'HMAC-SHA1'
PLAINTEXT = 'PLAINTEXT'
FORM = 'application/x-www-form-urlencoded'
# oauth-xmpp refuses protocol parameter values longer than this many (decoded UTF-8) bytes
# (oauth_xmpp::params::MAX_PARAMETER_LEN, a documented limit that oauthlib does not have):
# oauth_* values, including PLAINTEXT signatures, are kept within it, and a few hit it exactly.
MAX_OAUTH_VALUE_BYTES = 1024

# ---------------------------------------------------------------- character pools

ALNUM = string.ascii_letters + string.digits
UNRESERVED = ALNUM + '-._~'
RESERVED = ":/?#[]@!$&'()*+,;="
OTHER_ASCII = ' %"<>\\^`{|}'
NA2 = 'éüñßøÅ©±µÿĀŁ'          # 2-byte UTF-8
NA3 = '€中文日本ห☺ሴ☃ﬀ'       # 3-byte UTF-8
NA4 = '😀𝄞🎉𠜎🀄💩'            # 4-byte UTF-8
TRICKY_LITERALS = [
    '+', '%', '&', '=', ' ', 'a+b', 'a b', '%20', '%2B', '%25', '100%', 'a&b=c', '==', '&&',
    '~', '*', "'", '"', '!', '(x)', 'a/b', '?', '#', '@', ':', ';', ',', '$', '[]', '{}',
    'é', '€', '😀', '+%2B%20 x', 'x=1&y=2', 'oauth_token=evil', 'a%2', '%zz', '%E2%82',
    'Ünïcödé ☃ 😀', '&amp;', '<b>', ']]>',
]
SECRETS = ['', 'kd94hf93k423kf44', 'pfkkdhi9sl3r4s00', 'consumersecret', 'tokensecret',
           'j49sk3j29djd', 'a&b=c%d+e f', 'sécret€😀', '~-._', '&', '%', ' ', 'dh893hdasih9']
NAMES = ['a', 'a2', 'a=', 'a ', 'A', 'a_', 'a-', 'a.', 'a~', 'a%', 'a+b', 'ab', 'a&b', 'a1',
         'b', 'b5', 'c@', 'c2', 'z', 'Z', 'oauth', 'OAuth_token', 'Oauth_nonce', 'realm', 'name',
         'x', 'é', '€', '😀', 'q', 'file', 'size', 'status', 'c', 'a3', 'a=b', '%41', '+']
HOSTS = ['example.com', 'Example.COM', 'photos.example.net', 'API.Example.ORG', 'localhost',
         '127.0.0.1', 'sp.EXAMPLE.net', 'a-b.example', 'xn--mnchen-3ya.example']
PATH_SEGMENTS = ['request', 'r%20v', 'X', 'photos', 'a b', 'caf%C3%A9', '%7Euser', '~user',
                 'a%2Fb', 'under_score', 'dash-ed', 'dot.ted', 'UPPER', "it's", '(x)', 'a+b',
                 'a=b', '%E2%82%AC', '%F0%9F%98%80', 'c%3a', '1', '@home', '!bang', 'x*y',
                 'a,b', '$d', ':colon']
CALLBACKS = ['oob', 'http://printer.example.com/ready', 'https://client.example/cb?x=1&y=a b',
             'http://localhost:8080/oauth/callback', 'myapp://done', 'http://c.example/é?q=€']
CALLBACKS_PCT = ['http://client.example/cb?state=a%20b', 'https://x.example/%7Euser/cb']

# Resources of full JIDs: spaces, '&', '/', quotes, non-ASCII, no edge whitespace.
RESOURCES = ['bot', 'Home Office', 'a&b', 'res/with/slash', 'Ünïcödé', '😀 phone', "it's",
             'a<b>"c"', 'x=y&z', 'percent%20', '+plus', 'laptop', 'gajim.XY12', 'work/😀/é',
             'Tkabber 1.0 & co', '中文', 'R&D lab', 'a/b&c=d e']
LOCALS = ['alice', 'travelbot', 'bob-2', 'user.name', 'jürgen', 'x', 'juliet', 'δοκιμή']
DOMAINS = ['findmenow.tld', 'example.com', 'xmpp.example.org', 'capulet.lit', 'montague.lit']
SERVICES = ['feeds.worldgps.tld', 'pubsub.example.com', 'pubsub.capulet.lit', 'example.com']


def pct(s):
    """RFC 5849 section 3.6 percent-encoding, written independently of oauthlib."""
    out = []
    for b in s.encode('utf-8'):
        c = chr(b)
        out.append(c if c in UNRESERVED else '%%%02X' % b)
    return ''.join(out)


def independent_normalize(pairs):
    enc = sorted((pct(k), pct(v)) for k, v in pairs)
    return '&'.join(k + '=' + v for k, v in enc)


# ---------------------------------------------------------------- value generators

def rand_chars(rng, n, pools):
    pool_list = [p for p, _ in pools]
    weights = [w for _, w in pools]
    return ''.join(rng.choice(rng.choices(pool_list, weights)[0]) for _ in range(n))


def gen_value(rng, *, xml=False, allow_empty=True, allow_pct=True, long_ok=True):
    """A parameter value.  xml=True: text for an XML element (no edge whitespace, no CR)."""
    modes = ['alnum', 'literal', 'mixed', 'nonascii', 'long', 'empty', 'ctrl']
    weights = [22, 18, 34, 12, 4 if long_ok else 0, 6 if allow_empty else 0, 4]
    mode = rng.choices(modes, weights)[0]
    if mode == 'alnum':
        v = rand_chars(rng, rng.randint(1, 24), [(ALNUM, 1)])
    elif mode == 'literal':
        v = rng.choice(TRICKY_LITERALS)
        if rng.random() < 0.4:
            v = rand_chars(rng, rng.randint(1, 4), [(ALNUM, 1)]) + v + rand_chars(rng, rng.randint(1, 4), [(ALNUM, 1)])
    elif mode == 'mixed':
        v = rand_chars(rng, rng.randint(1, 20), [(UNRESERVED, 4), (RESERVED, 3), (OTHER_ASCII, 2),
                                                 (NA2, 1), (NA3, 1), (NA4, 1)])
    elif mode == 'nonascii':
        v = rand_chars(rng, rng.randint(1, 10), [(NA2, 1), (NA3, 1), (NA4, 1), (ALNUM, 1)])
    elif mode == 'long':
        v = rand_chars(rng, rng.randint(200, 500), [(UNRESERVED, 6), (RESERVED, 3), (OTHER_ASCII, 2),
                                                    (NA2, 1), (NA3, 1), (NA4, 1)])
    elif mode == 'empty':
        v = ''
    else:  # control characters inside (tab/LF are legal XML; DEL only over HTTP)
        ctrl = '\t\n' if xml else '\t\n\x7f\x01'
        v = rand_chars(rng, rng.randint(1, 6), [(ALNUM, 1)]) + rng.choice(ctrl) + \
            rand_chars(rng, rng.randint(1, 6), [(ALNUM, 1)])
    if not allow_pct:
        v = v.replace('%', 'P')
    if xml:
        v = v.replace('\r', '').strip()
        if not v:
            v = 'x'
    if not allow_empty and not v:
        v = 'v'
    return v


def utf8_len(s):
    return len(s.encode('utf-8'))


def fit(v, limit=MAX_OAUTH_VALUE_BYTES):
    """v cut to at most `limit` UTF-8 bytes (whole characters)."""
    while utf8_len(v) > limit:
        v = v[:-1]
    return v


def gen_token_like(rng, *, xml=False, allow_pct=True):
    """Consumer key / token / nonce / verifier: usually plain, sometimes tricky."""
    r = rng.random()
    if r < 0.55:
        return rand_chars(rng, rng.randint(8, 32), [(ALNUM, 1)])
    if r < 0.56:  # exactly MAX_OAUTH_VALUE_BYTES bytes, multi-byte characters included
        v = fit(rand_chars(rng, 400, [(ALNUM, 1), (NA2, 1), (NA3, 1), (NA4, 1)]), MAX_OAUTH_VALUE_BYTES - 3)
        return v + 'z' * (MAX_OAUTH_VALUE_BYTES - utf8_len(v))
    v = fit(gen_value(rng, xml=xml, allow_empty=False, allow_pct=allow_pct, long_ok=True))
    if xml:  # the cut may have left trailing whitespace
        v = v.rstrip() or 'v'
    return v


def gen_secret(rng):
    r = rng.random()
    if r < 0.55:
        return rng.choice(SECRETS)
    if r < 0.9:
        return gen_value(rng, allow_empty=True)
    return rand_chars(rng, rng.randint(1, 40), [(RESERVED, 2), (NA2, 1), (NA3, 1), (NA4, 1), (ALNUM, 2)])


def fit_plaintext_secrets(cs, ts):
    """Shorten the secrets until the PLAINTEXT signature fits MAX_OAUTH_VALUE_BYTES."""
    while len(utils.escape(cs) + '&' + utils.escape(ts)) > MAX_OAUTH_VALUE_BYTES:
        if len(cs) >= len(ts):
            cs = cs[:-1]
        else:
            ts = ts[:-1]
    return cs, ts


def gen_timestamp(rng):
    if rng.random() < 0.9:  # 2001-09-09 .. 2038-01-19
        return str(rng.randint(1000000000, 2**31 - 1))
    return str(rng.randint(2**31, 9999999999))  # still 10 digits, past 2038 (and 2106)


def gen_pairs(rng, n):
    """n non-oauth parameters with tricky names and repeated names."""
    pairs = []
    for _ in range(n):
        r = rng.random()
        if pairs and r < 0.15:      # repeated name, same value
            pairs.append(rng.choice(pairs))
        elif pairs and r < 0.35:    # repeated name, different value
            pairs.append((rng.choice(pairs)[0], gen_value(rng)))
        else:
            name = rng.choice(NAMES) if rng.random() < 0.7 else gen_value(rng, allow_empty=False, long_ok=False)
            if name.startswith('oauth_'):
                name = 'x' + name
            pairs.append((name, gen_value(rng)))
    return pairs


# ---------------------------------------------------------------- form encoding

def encode_component(rng, s):
    """Percent-encode one name or value in one of several valid ways."""
    style = rng.choices(['quote', 'quote_plus', 'safe', 'lower'], [40, 35, 15, 10])[0]
    if style == 'quote':
        return quote(s, safe='')
    if style == 'quote_plus':
        return quote_plus(s, safe='')
    if style == 'safe':   # sub-delims and friends left raw (all legal in a query)
        return quote(s, safe="/:@!$'()*,?")
    enc = quote(s, safe='')
    out, i = [], 0
    while i < len(enc):      # lower-case hex digits of the escapes
        if enc[i] == '%':
            out.append(enc[i:i + 3].lower())
            i += 3
        else:
            out.append(enc[i])
            i += 1
    return ''.join(out)


def encode_pairs(rng, pairs):
    """application/x-www-form-urlencoded, varying the encoder (urlencode and per-pair)."""
    if not pairs:
        return ''
    r = rng.random()
    if r < 0.25:
        return urlencode(pairs, quote_via=quote)
    if r < 0.45:
        return urlencode(pairs)  # quote_plus
    parts = []
    for k, v in pairs:
        if v == '' and rng.random() < 0.3:
            parts.append(encode_component(rng, k))  # "name" without "=": empty value
        else:
            parts.append(encode_component(rng, k) + '=' + encode_component(rng, v))
    return '&'.join(parts)


# ---------------------------------------------------------------- HTTP cases

def is_form(headers):
    for k, v in headers.items():
        if k.lower() == 'content-type':
            return v.split(';')[0].strip().lower() == FORM
    return False


def gen_http_plan(rng):
    p = {}
    p['placement'] = rng.choices(['header', 'query', 'body'], [45, 30, 25])[0]
    if p['placement'] == 'body':
        p['method'] = rng.choice(['POST', 'POST', 'PUT', 'PATCH'])
        p['body_kind'] = 'form'
    else:
        p['method'] = rng.choice(['GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH',
                                  'PROPFIND'])
        if p['method'] in ('POST', 'PUT', 'PATCH'):
            p['body_kind'] = rng.choices(['form', 'none', 'json', 'text'], [55, 30, 8, 7])[0]
        else:
            p['body_kind'] = 'none'
    if rng.random() < 0.03:
        p['method'] = p['method'].lower()  # the base string upper-cases it
    scheme = rng.choice(['http', 'https'])
    scheme = rng.choice([scheme, scheme, scheme.upper(), scheme.capitalize()])
    host = rng.choice(HOSTS)
    port = rng.choices([None, 80, 443, 8080, 8443, 1], [40, 20, 20, 10, 7, 3])[0]
    netloc = host if port is None else '%s:%d' % (host, port)
    r = rng.random()
    if r < 0.15:
        path = ''
    elif r < 0.22:
        path = '/'
    else:
        path = '/' + '/'.join(rng.choice(PATH_SEGMENTS) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.1:
            path += '/'
    p['uri_base'] = '%s://%s%s' % (scheme, netloc, path)
    p['query_pairs'] = gen_pairs(rng, rng.choice([0, 0, 1, 2, 3, 5]))
    p['body_pairs'] = gen_pairs(rng, rng.choice([0, 1, 2, 3, 4])) if p['body_kind'] == 'form' else []
    if p['query_pairs'] and p['body_pairs'] and rng.random() < 0.4:
        # the same name in query and body, sometimes with the same value too
        k, v = rng.choice(p['query_pairs'])
        p['body_pairs'].append((k, v if rng.random() < 0.5 else gen_value(rng)))
    p['trailing_qmark'] = not p['query_pairs'] and rng.random() < 0.05
    ct = FORM
    if rng.random() < 0.12:
        ct = rng.choice([FORM + '; charset=utf-8', FORM + ';charset=UTF-8', 'Application/X-WWW-Form-Urlencoded'])
    p['content_type'] = {'form': ct, 'json': 'application/json', 'text': 'text/plain',
                         'none': None}[p['body_kind']]
    p['lower_header_names'] = rng.random() < 0.05
    p['realm'] = rng.choice([None, None, None, 'Example', 'http://sp.example.com/', 'photos'])
    p['oauthlib_query_placement'] = rng.random() < 0.5
    p['subseed'] = rng.getrandbits(32)

    allow_pct = p['placement'] == 'header'
    p['method_sig'] = HMAC if rng.random() < 0.8 else PLAINTEXT
    oauth = [('oauth_consumer_key', gen_token_like(rng, allow_pct=allow_pct)),
             ('oauth_nonce', gen_token_like(rng, allow_pct=allow_pct)),
             ('oauth_timestamp', gen_timestamp(rng)),
             ('oauth_signature_method', p['method_sig'])]
    if rng.random() < 0.7:
        oauth.append(('oauth_token', gen_token_like(rng, allow_pct=allow_pct)))
    if rng.random() < 0.6:
        oauth.append(('oauth_version', '1.0'))
    if rng.random() < 0.15:
        cbs = CALLBACKS + (CALLBACKS_PCT if allow_pct else [])
        oauth.append(('oauth_callback', rng.choice(cbs)))
    if rng.random() < 0.15:
        oauth.append(('oauth_verifier', gen_token_like(rng, allow_pct=allow_pct)))
    rng.shuffle(oauth)
    p['oauth'] = oauth
    p['consumer_secret'] = gen_secret(rng)
    has_token = any(k == 'oauth_token' for k, _ in oauth)
    p['token_secret'] = gen_secret(rng) if has_token else ''
    if p['method_sig'] == PLAINTEXT:
        p['consumer_secret'], p['token_secret'] = fit_plaintext_secrets(p['consumer_secret'], p['token_secret'])
    return p


def build_http(p, oauth_pairs):
    """Render the request; oauth_pairs go where the plan says.  Deterministic per plan."""
    rng = random.Random(p['subseed'])
    headers = {}
    q = encode_pairs(rng, p['query_pairs'])
    body = ''
    if p['body_kind'] == 'form':
        body_pairs = list(p['body_pairs'])
        if p['placement'] == 'body':
            body_pairs = parameters.prepare_form_encoded_body(oauth_pairs, body_pairs)
        body = encode_pairs(rng, body_pairs)
    elif p['body_kind'] == 'json':
        body = json.dumps({'a': 'b&c=d', 'oauth_token': 'not-a-param', 'n': [1, 2]})
    elif p['body_kind'] == 'text':
        body = 'a=b&c=d&oauth_token=not-a-param'
    if p['content_type']:
        headers['Content-Type'] = p['content_type']
    uri = p['uri_base']
    if q:
        uri += '?' + q
    elif p['trailing_qmark']:
        uri += '?'
    if p['placement'] == 'query':
        if p['oauthlib_query_placement']:
            uri = parameters.prepare_request_uri_query(oauth_pairs, uri)
        else:
            oq = encode_pairs(rng, oauth_pairs)
            base, sep, query = uri.partition('?')
            uri = base + '?' + (query + '&' + oq if query else oq)
    elif p['placement'] == 'header':
        headers = parameters.prepare_headers(oauth_pairs, headers, realm=p['realm'])
    if p['lower_header_names']:
        headers = {k.lower(): v for k, v in headers.items()}
    return p['method'], uri, headers, body


def sign(method_sig, base_string, cs, ts):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        if method_sig == HMAC:
            return signature.sign_hmac_sha1(base_string, cs, ts)
        return signature.sign_plaintext(cs, ts)


def oauthlib_http(p, method, uri, headers, body):
    """oauthlib's view of a request as sent."""
    params = signature.collect_parameters(
        uri_query=urlparse(uri).query,
        body=body if is_form(headers) else None,
        headers=headers, exclude_oauth_signature=True, with_realm=False)
    normalized = signature.normalize_parameters(params)
    base = signature.signature_base_string(method, signature.base_string_uri(uri), normalized)
    return params, normalized, base, sign(p['method_sig'], base, p['consumer_secret'], p['token_secret'])


def http_input(cid, p, req):
    method, uri, headers, body = req
    return {'id': cid, 'form': 'http', 'method': method, 'uri': uri, 'headers': headers,
            'body': body, 'consumer_secret': p['consumer_secret'], 'token_secret': p['token_secret']}


class GeneratorError(Exception):
    pass


def check_limits(cid, oauth_pairs):
    for k, v in oauth_pairs:
        if utf8_len(v) > MAX_OAUTH_VALUE_BYTES:
            raise GeneratorError('%s: %s is %d bytes long' % (cid, k, utf8_len(v)))


def check_http_consistency(cid, p, collected, normalized):
    intended = list(p['query_pairs']) + list(p['body_pairs']) + list(p['oauth'])
    if sorted(collected) != sorted(intended):
        raise GeneratorError('%s: oauthlib collected %r, generator meant %r' % (cid, sorted(collected), sorted(intended)))
    if independent_normalize(intended) != normalized:
        raise GeneratorError('%s: independent normalization differs from oauthlib: %r vs %r'
                             % (cid, independent_normalize(intended), normalized))


def client_cross_check(p, sig):
    """Sign the same request with oauthlib.oauth1.Client; None if Client cannot express it."""
    o = dict(p['oauth'])
    if o.get('oauth_version') != '1.0' or p['body_kind'] in ('json', 'text'):
        return None
    if p['body_kind'] == 'form' and p['content_type'] != FORM:
        return None
    if p['method'] != p['method'].upper() or p['lower_header_names']:
        return None
    stype = {'header': 'AUTH_HEADER', 'query': 'QUERY', 'body': 'BODY'}[p['placement']]
    rng = random.Random(p['subseed'])
    q = encode_pairs(rng, p['query_pairs'])
    uri = p['uri_base'] + ('?' + q if q else '')
    body = headers = None
    if p['body_kind'] == 'form':
        body = encode_pairs(rng, p['body_pairs'])
        headers = {'Content-Type': FORM}
    client = Client(o['oauth_consumer_key'], client_secret=p['consumer_secret'],
                    resource_owner_key=o.get('oauth_token'),
                    resource_owner_secret=p['token_secret'] if 'oauth_token' in o else None,
                    callback_uri=o.get('oauth_callback'), signature_method=p['method_sig'],
                    signature_type=stype, verifier=o.get('oauth_verifier'), realm=p['realm'],
                    nonce=o['oauth_nonce'], timestamp=o['oauth_timestamp'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        s_uri, s_headers, s_body = client.sign(uri, p['method'], body=body, headers=headers)
    if stype == 'AUTH_HEADER':
        got = dict(utils.parse_authorization_header(s_headers['Authorization']))['oauth_signature']
        got = utils.unescape(got)
    else:
        src = urlparse(s_uri).query if stype == 'QUERY' else s_body
        got = dict(parse_qsl(src, keep_blank_values=True))['oauth_signature']
    return got == sig


def gen_http_case(rng, cid, stats):
    p = gen_http_plan(rng)
    # 1. the request as it will be sent, without the signature; sign it
    unsigned = build_http(p, p['oauth'])
    _, normalized0, base0, sig = oauthlib_http(p, *unsigned)
    # 2. the request as sent; recompute everything from it
    signed = build_http(p, p['oauth'] + [('oauth_signature', sig)])
    collected, normalized, base, sig2 = oauthlib_http(p, *signed)
    if (normalized, base, sig2) != (normalized0, base0, sig):
        raise GeneratorError('%s: signature placement changed the base string' % cid)
    check_http_consistency(cid, p, collected, normalized)
    check_limits(cid, p['oauth'] + [('oauth_signature', sig)])
    ok = client_cross_check(p, sig)
    if ok is False:
        raise GeneratorError('%s: oauthlib Client signs this request differently' % cid)
    if ok:
        stats['client_checked'] += 1
    case = {'input': http_input(cid, p, signed),
            'expected': {'normalized': normalized, 'base_string': base, 'signature': sig, 'verified': True}}
    return case, p, sig


def tamper_signature(rng, sig, method_sig):
    if method_sig == PLAINTEXT:
        if len(sig) < MAX_OAUTH_VALUE_BYTES:
            return 'x' + sig
        return ('x' if sig[0] != 'x' else 'y') + sig[1:]
    i = rng.randrange(0, min(26, len(sig)))  # not the last data char: its low bits are padding
    c = rng.choice([ch for ch in ALNUM if ch != sig[i]])
    return sig[:i] + c + sig[i + 1:]


def tweak(rng, v, digits=False):
    if digits:
        i = rng.randrange(len(v))
        return v[:i] + str((int(v[i]) + 1) % 10) + v[i + 1:]
    if utf8_len(v) >= MAX_OAUTH_VALUE_BYTES:  # stay within the limit: change the last character
        return v[:-1] + ('x' if v[-1] != 'x' else 'y')
    return v + rng.choice('xyz')


def tamper_http(rng, cid, p, sig):
    p = dict(p)
    kind = 'sig' if p['method_sig'] == PLAINTEXT or rng.random() < 0.5 else 'param'
    oauth = list(p['oauth'])
    if kind == 'sig':
        sent_sig = tamper_signature(rng, sig, p['method_sig'])
    else:
        sent_sig = sig
        targets = ['oauth_nonce', 'oauth_timestamp'] + (['query'] if p['query_pairs'] else []) + \
                  (['body'] if p['body_pairs'] else [])
        t = rng.choice(targets)
        if t in ('query', 'body'):
            key = t + '_pairs'
            pairs = list(p[key])
            i = rng.randrange(len(pairs))
            pairs[i] = (pairs[i][0], tweak(rng, pairs[i][1]))
            p[key] = pairs
        else:
            oauth = [(k, tweak(rng, v, digits=(k == 'oauth_timestamp')) if k == t else v) for k, v in oauth]
            p['oauth'] = oauth
    check_limits(cid, oauth + [('oauth_signature', sent_sig)])
    req = build_http(p, oauth + [('oauth_signature', sent_sig)])
    collected, normalized, base, expect_sig = oauthlib_http(p, *req)
    check_http_consistency(cid, p, collected, normalized)
    if expect_sig == sent_sig:
        raise GeneratorError('%s: tampering did not change the signature' % cid)
    return {'input': http_input(cid, p, req),
            'expected': {'normalized': normalized, 'base_string': base, 'signature': expect_sig,
                         'verified': False}}


# ---------------------------------------------------------------- stanza cases

def gen_jid(rng, full):
    j = rng.choice(LOCALS) + '@' + rng.choice(DOMAINS)
    return j + '/' + rng.choice(RESOURCES) if full else j


def gen_stanza_plan(rng):
    p = {'qname': rng.choice(['iq', 'iq', 'message', 'presence'])}
    p['from'] = gen_jid(rng, True)
    r = rng.random()
    p['to'] = rng.choice(SERVICES) if r < 0.6 else gen_jid(rng, r < 0.8)
    p['method_sig'] = HMAC if rng.random() < 0.8 else PLAINTEXT
    oauth = [('oauth_consumer_key', gen_token_like(rng, xml=True)),
             ('oauth_nonce', gen_token_like(rng, xml=True)),
             ('oauth_signature_method', p['method_sig']),
             ('oauth_timestamp', gen_timestamp(rng)),
             ('oauth_token', gen_token_like(rng, xml=True))]
    if rng.random() < 0.6:
        oauth.append(('oauth_version', '1.0'))
    p['oauth'] = oauth
    p['consumer_secret'] = gen_secret(rng)
    p['token_secret'] = gen_secret(rng)
    if p['method_sig'] == PLAINTEXT:
        p['consumer_secret'], p['token_secret'] = fit_plaintext_secrets(p['consumer_secret'], p['token_secret'])
    p['id'] = rand_chars(rng, rng.randint(3, 10), [(ALNUM, 1)])
    p['shuffle'] = rng.random() < 0.4
    p['pretty'] = rng.random() < 0.3
    p['charrefs'] = rng.random() < 0.15
    p['subseed'] = rng.getrandbits(32)
    return p


def xml_text(rng, v, charrefs):
    s = xml_escape(v)
    if charrefs:  # some characters as numeric character references
        s = ''.join('&#x%X;' % ord(c) if (ord(c) > 127 or c in '+=') and rng.random() < 0.5 else c for c in s)
    return s


def build_stanza(p, oauth_pairs):
    rng = random.Random(p['subseed'])
    pairs = sorted(oauth_pairs) if not p['shuffle'] else rng.sample(oauth_pairs, len(oauth_pairs))
    nl = '\n    ' if p['pretty'] else ''
    children = ''.join('%s<%s>%s</%s>' % (nl, k, xml_text(rng, v, p['charrefs']), k) for k, v in pairs)
    oauth_el = "<oauth xmlns='urn:xmpp:oauth:0'>%s%s</oauth>" % (children, '\n  ' if p['pretty'] else '')
    attrs = 'from=%s to=%s' % (quoteattr(p['from']), quoteattr(p['to']))
    q = p['qname']
    if q == 'iq':
        bare = p['from'].split('/', 1)[0]
        return ("<iq xmlns='jabber:client' type='set' id=%s %s>"
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'>%s<subscribe node='/location/alice' jid=%s/>%s%s%s</pubsub></iq>"
                % (quoteattr(p['id']), attrs, nl, quoteattr(bare), nl, oauth_el, '\n' if p['pretty'] else ''))
    if q == 'message':
        return ("<message xmlns='jabber:client' type='normal' id=%s %s>%s<body>Where are you? &amp; &lt;3</body>%s%s</message>"
                % (quoteattr(p['id']), attrs, nl, nl, oauth_el))
    return ("<presence xmlns='jabber:client' id=%s %s>%s<status>on the road</status>%s%s</presence>"
            % (quoteattr(p['id']), attrs, nl, nl, oauth_el))


def oauthlib_stanza(p, oauth_pairs):
    params = [(k, v) for k, v in oauth_pairs if k != 'oauth_signature']
    normalized = signature.normalize_parameters(params)
    base = p['qname'] + '&' + utils.escape(p['from'] + '&' + p['to']) + '&' + utils.escape(normalized)
    return normalized, base, sign(p['method_sig'], base, p['consumer_secret'], p['token_secret'])


def check_stanza_roundtrip(cid, p, xml, oauth_pairs, normalized):
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise GeneratorError('%s: stanza is not well-formed XML (%s): %s' % (cid, e, xml))
    if root.tag != '{jabber:client}' + p['qname']:
        raise GeneratorError('%s: root is %s' % (cid, root.tag))
    if (root.get('from'), root.get('to')) != (p['from'], p['to']):
        raise GeneratorError('%s: from/to do not round-trip: %r' % (cid, root.attrib))
    els = list(root.iter('{urn:xmpp:oauth:0}oauth'))
    if len(els) != 1:
        raise GeneratorError('%s: %d <oauth/> elements' % (cid, len(els)))
    got = sorted((c.tag.split('}', 1)[1], c.text or '') for c in els[0])
    if got != sorted(oauth_pairs):
        raise GeneratorError('%s: oauth children do not round-trip: %r vs %r' % (cid, got, sorted(oauth_pairs)))
    if independent_normalize([kv for kv in oauth_pairs if kv[0] != 'oauth_signature']) != normalized:
        raise GeneratorError('%s: independent normalization differs from oauthlib' % cid)


def stanza_input(cid, p, xml):
    return {'id': cid, 'form': 'stanza', 'stanza': xml,
            'consumer_secret': p['consumer_secret'], 'token_secret': p['token_secret']}


def gen_stanza_case(rng, cid):
    p = gen_stanza_plan(rng)
    normalized, base, sig = oauthlib_stanza(p, p['oauth'])
    pairs = p['oauth'] + [('oauth_signature', sig)]
    xml = build_stanza(p, pairs)
    check_stanza_roundtrip(cid, p, xml, pairs, normalized)
    check_limits(cid, pairs)
    case = {'input': stanza_input(cid, p, xml),
            'expected': {'normalized': normalized, 'base_string': base, 'signature': sig, 'verified': True}}
    return case, p, sig


def tamper_stanza(rng, cid, p, sig):
    p = dict(p)
    kind = 'sig' if p['method_sig'] == PLAINTEXT or rng.random() < 0.5 else 'param'
    if kind == 'sig':
        sent_sig = tamper_signature(rng, sig, p['method_sig'])
    else:
        sent_sig = sig
        t = rng.choice(['oauth_nonce', 'oauth_timestamp', 'oauth_token', 'to'])
        if t == 'to':
            p['to'] = 'x' + p['to']
        else:
            p['oauth'] = [(k, tweak(rng, v, digits=(k == 'oauth_timestamp')) if k == t else v)
                          for k, v in p['oauth']]
    normalized, base, expect_sig = oauthlib_stanza(p, p['oauth'])
    pairs = p['oauth'] + [('oauth_signature', sent_sig)]
    check_limits(cid, pairs)
    xml = build_stanza(p, pairs)
    check_stanza_roundtrip(cid, p, xml, pairs, normalized)
    if expect_sig == sent_sig:
        raise GeneratorError('%s: tampering did not change the signature' % cid)
    return {'input': stanza_input(cid, p, xml),
            'expected': {'normalized': normalized, 'base_string': base, 'signature': expect_sig,
                         'verified': False}}


# ---------------------------------------------------------------- known-answer checks

def known_answers():
    """The XEP-0235 example and RFC 5849 section 1.2 / 3.4.1 examples, through our helpers."""
    p = {'qname': 'iq', 'from': 'travelbot@findmenow.tld/bot', 'to': 'feeds.worldgps.tld',
         'method_sig': HMAC, 'consumer_secret': 'consumersecret', 'token_secret': 'tokensecret'}
    oauth = [('oauth_consumer_key', '0685bd9184jfhq22'), ('oauth_nonce', '4572616e48616d6d65724c61686176'),
             ('oauth_signature_method', 'HMAC-SHA1'), ('oauth_timestamp', '1218137833'),
             ('oauth_token', 'ad180jjd733klru7'), ('oauth_version', '1.0')]
    assert oauthlib_stanza(p, oauth)[2] == '9PQkM4YKgaM067wqrDGshXOwDW0=', 'XEP-0235 example'
    # RFC 5849 section 1.2 (photos.example.net, HMAC-SHA1)
    hp = {'method_sig': HMAC, 'consumer_secret': 'kd94hf93k423kf44', 'token_secret': 'pfkkdhi9sl3r4s00'}
    hdr = ('OAuth realm="Photos", oauth_consumer_key="dpf43f3p2l4k3l03", oauth_token="nnch734d00sl2jdk", '
           'oauth_signature_method="HMAC-SHA1", oauth_timestamp="1191242096", oauth_nonce="kllo9940pd9333jh", '
           'oauth_version="1.0", oauth_signature="tR3%2BTy81lMeYAr%2FFid0kMTYa%2FWM%3D"')
    sig = oauthlib_http(hp, 'GET', 'http://photos.example.net/photos?file=vacation.jpg&size=original',
                        {'Authorization': hdr}, '')[3]
    assert sig == 'tR3+Ty81lMeYAr/Fid0kMTYa/WM=', 'RFC 5849 section 1.2 example: %s' % sig


# ---------------------------------------------------------------- driver and comparison

FIELDS = ('normalized', 'base_string', 'signature', 'verified')


def generate(n, seed):
    rng = random.Random(seed)
    forms = ['http'] * ((n + 1) // 2) + ['stanza'] * (n // 2)
    rng.shuffle(forms)
    cases = []
    stats = {'http': 0, 'stanza': 0, 'tampered': 0, 'client_checked': 0}
    for i, form in enumerate(forms):
        cid = 'c%d' % i
        if form == 'http':
            case, p, sig = gen_http_case(rng, cid, stats)
        else:
            case, p, sig = gen_stanza_case(rng, cid)
        stats[form] += 1
        cases.append(case)
        if rng.random() < 0.10:
            tamper = tamper_http if form == 'http' else tamper_stanza
            cases.append(tamper(rng, cid + '-t', p, sig))
            stats['tampered'] += 1
    return cases, stats


def run_driver(driver, cases, timeout):
    data = ''.join(json.dumps(c['input'], ensure_ascii=False) + '\n' for c in cases).encode('utf-8')
    try:
        proc = subprocess.Popen([driver], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return None, 'cannot start driver %s: %s' % (driver, e)
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return out, 'driver timed out after %ss; stderr tail:\n%s' % (timeout, err.decode('utf-8', 'replace')[-2000:])
    if proc.returncode != 0:
        return out, 'driver exited with status %s; stderr tail:\n%s' % (proc.returncode, err.decode('utf-8', 'replace')[-2000:])
    return out, None


def compare(cases, out_bytes):
    lines = out_bytes.decode('utf-8', 'replace').splitlines() if out_bytes else []
    passed, failures = 0, []
    for idx, case in enumerate(cases):
        cid = case['input']['id']
        if idx >= len(lines):
            failures.append((cid, 'missing', None, None, case))
            continue
        try:
            got = json.loads(lines[idx])
        except ValueError as e:
            failures.append((cid, 'unparsable output line (%s)' % e, lines[idx], None, case))
            continue
        if not isinstance(got, dict) or got.get('id') != cid:
            failures.append((cid, 'id', got.get('id') if isinstance(got, dict) else got, cid, case))
            continue
        bad = [(f, got.get(f), case['expected'][f]) for f in FIELDS if got.get(f) != case['expected'][f]]
        if bad:
            for f, ours, theirs in bad:
                failures.append((cid, f, ours, theirs, case, got.get('error')))
        else:
            passed += 1
    extra = len(lines) - len(cases)
    failed_ids = {f[0] for f in failures}
    return passed, len(failed_ids), failures, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--driver', help='path of the Rust driver (oauth-xmpp example "differential")')
    ap.add_argument('--cases', type=int, default=2500, help='number of cases (default 2500), plus ~10%% tampered copies')
    ap.add_argument('--seed', type=int, default=DEFAULT_SEED, help='random seed (default %(default)s)')
    ap.add_argument('--dump', metavar='FILE', help='write the driver input lines to FILE (so `driver < FILE` '
                    'replays them) and oauthlib\'s expected results to FILE.expected')
    ap.add_argument('--only-generate', action='store_true', help='generate and self-check; do not run the driver')
    ap.add_argument('--only-ids', metavar='IDS', help='comma-separated case ids to send (e.g. c17,c18-t)')
    ap.add_argument('--timeout', type=float, default=600, help='driver timeout in seconds (default 600)')
    ap.add_argument('--show', type=int, default=10, help='disagreements printed in full (default 10)')
    args = ap.parse_args()
    if not args.only_generate and not args.driver:
        ap.error('--driver is required unless --only-generate is given')

    try:
        known_answers()
        cases, stats = generate(args.cases, args.seed)
    except (GeneratorError, AssertionError) as e:
        print('differential: generator self-check failed: %s' % e, file=sys.stderr)
        return 2
    if args.only_ids:
        wanted = set(args.only_ids.split(','))
        cases = [c for c in cases if c['input']['id'] in wanted]

    if args.dump:
        with open(args.dump, 'w', encoding='utf-8') as f:
            for c in cases:
                f.write(json.dumps(c['input'], ensure_ascii=False) + '\n')
        with open(args.dump + '.expected', 'w', encoding='utf-8') as f:
            for c in cases:
                f.write(json.dumps(dict(id=c['input']['id'], **c['expected']), ensure_ascii=False) + '\n')

    print('differential: %d cases (%d http, %d stanza, %d tampered; seed %d); self-checks passed '
          '(%d http cases also re-signed identically by oauthlib.Client)'
          % (len(cases), stats['http'], stats['stanza'], stats['tampered'], args.seed, stats['client_checked']))
    if args.only_generate:
        return 0

    out, problem = run_driver(args.driver, cases, args.timeout)
    if out is None:
        print('differential: %s' % problem, file=sys.stderr)
        print('differential: 0 passed, %d failed' % len(cases))
        return 1
    passed, failed, failures, extra = compare(cases, out)
    for f in failures[:args.show]:
        cid, field, ours, theirs, case = f[:5]
        print('--- %s: %s' % (cid, field))
        if field != 'missing':
            print('  ours:     %s' % json.dumps(ours, ensure_ascii=False))
            print('  oauthlib: %s' % json.dumps(theirs, ensure_ascii=False))
            if len(f) > 5 and f[5] is not None:
                print('  error:    %s' % json.dumps(f[5], ensure_ascii=False))
        print('  input:    %s' % json.dumps(case['input'], ensure_ascii=False))
    if len(failures) > args.show:
        print('... %d more disagreements' % (len(failures) - args.show))
    if problem:
        print('differential: %s' % problem, file=sys.stderr)
    if extra > 0:
        print('differential: driver printed %d extra lines' % extra, file=sys.stderr)
    print('differential: %d passed, %d failed' % (passed, failed))
    return 0 if failed == 0 and not problem and extra <= 0 else 1


if __name__ == '__main__':
    sys.exit(main())
