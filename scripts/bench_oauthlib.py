#!/usr/bin/env python3
"""Time oauthlib checking the XEP-0235 example signature (the Python baseline for
oauth-xmpp's verify benchmark).

Run: .venv/bin/python scripts/bench_oauthlib.py [--number N] [--repeat R]

One check = normalize the six oauth params (signature.normalize_parameters), build the
XEP-0235 base string  qname & escape(from & to) & escape(normalized), compute HMAC-SHA1
with oauthlib's sign_hmac_sha1 and compare with hmac.compare_digest.  Prints
`oauthlib_verify_ns <nanoseconds per check>` (best of the repeats) and a human line.
"""

import argparse
import hmac
import sys
import timeit
import warnings

try:
    import oauthlib
    from oauthlib.oauth1.rfc5849 import signature, utils
except ImportError:
    sys.exit('%s: oauthlib is missing: run scripts/setup-venv and use .venv/bin/python' % sys.argv[0])

PARAMS = [
    ('oauth_consumer_key', '0685bd9184jfhq22'),
    ('oauth_nonce', '4572616e48616d6d65724c61686176'),
    ('oauth_signature_method', 'HMAC-SHA1'),
    ('oauth_timestamp', '1218137833'),
    ('oauth_token', 'ad180jjd733klru7'),
    ('oauth_version', '1.0'),
]
QNAME = 'iq'
FROM = 'travelbot@findmenow.tld/bot'
TO = 'feeds.worldgps.tld'
CONSUMER_SECRET = 'consumersecret'
TOKEN_SECRET = 'tokensecret'
EXPECTED = '9PQkM4YKgaM067wqrDGshXOwDW0='

# sign_hmac_sha1 is deprecated in oauthlib 3.2+/4.x and warns on every call; silence the
# warning once here (the filter lookup per call is still part of the measured cost).
warnings.simplefilter('ignore', DeprecationWarning)


def check(presented=EXPECTED):
    normalized = signature.normalize_parameters(PARAMS)
    base = QNAME + '&' + utils.escape(FROM + '&' + TO) + '&' + utils.escape(normalized)
    sig = signature.sign_hmac_sha1(base, CONSUMER_SECRET, TOKEN_SECRET)
    return hmac.compare_digest(sig.encode('ascii'), presented.encode('ascii'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--number', type=int, default=20000, help='checks per repeat (default 20000)')
    ap.add_argument('--repeat', type=int, default=7, help='repeats; the best is reported (default 7)')
    args = ap.parse_args()

    normalized = signature.normalize_parameters(PARAMS)
    base = QNAME + '&' + utils.escape(FROM + '&' + TO) + '&' + utils.escape(normalized)
    sig = signature.sign_hmac_sha1(base, CONSUMER_SECRET, TOKEN_SECRET)
    if sig != EXPECTED:
        print('bench_oauthlib: oauthlib computed %s, expected %s' % (sig, EXPECTED), file=sys.stderr)
        return 1
    if not check() or check('9PQkM4YKgaM067wqrDGshXOwDW0x'):
        print('bench_oauthlib: check() does not accept/reject as it should', file=sys.stderr)
        return 1

    timeit.Timer(check).timeit(number=min(2000, args.number))  # warm-up
    times = timeit.Timer(check).repeat(repeat=args.repeat, number=args.number)
    ns = min(times) / args.number * 1e9
    print('oauthlib_verify_ns %.0f' % ns)
    print('oauthlib %s checks the XEP-0235 example signature in %.1f µs per check '
          '(best of %d x %d, Python %s)' % (
              oauthlib.__version__, ns / 1000, args.repeat, args.number,
              sys.version.split()[0]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
