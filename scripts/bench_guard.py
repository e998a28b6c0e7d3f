"""Driver of scripts/bench-guard: Prosody (with its own pubsub as the baseline) and the
release pubsub-guard on free loopback ports, then target/release/pubsub-bench.

    .venv/bin/python scripts/bench_guard.py [--subscribers N] [--items M] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from prosody import Prosody  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from guard_setup import provision  # noqa: E402

BIN = REPO / "target" / "release"
PASSWORD = "bench-password"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        work = Path(tmp)
        db = work / "authz.sqlite"
        users = {"publisher": PASSWORD, **{f"sub{i}": PASSWORD for i in range(1, args.subscribers + 1)}}
        server = Prosody(work / "prosody", users=users)
        setup = provision(BIN, work, db, server, "bench", "/location/bench", who="bench-guard")
        app, grant, config = setup.app, setup.grant, setup.config
        guard = None
        try:
            server.start()
            log = open(work / "guard.log", "w")
            guard = subprocess.Popen(
                [str(BIN / "pubsub-guard"), "--config", str(config), "run"],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "GUARD_SECRET": server.component_secret, "GUARD_LOG": "info"},
            )
            deadline = time.monotonic() + 15
            while "connected" not in (work / "guard.log").read_text():
                if time.monotonic() > deadline or guard.poll() is not None:
                    sys.exit("bench-guard: the guard did not connect:\n" + (work / "guard.log").read_text())
                time.sleep(0.05)
            done = subprocess.run(
                [str(BIN / "pubsub-bench"), "--xmpp", f"127.0.0.1:{server.c2s_port}",
                 "--subscribers", str(args.subscribers), "--items", str(args.items),
                 "--runs", str(args.runs), f"--consumer-key={app['consumer_key']}",
                 f"--token={grant['oauth_token']}"],
                env={**os.environ, "BENCH_PASSWORD": PASSWORD,
                     "CONSUMER_SECRET": app["consumer_secret"],
                     "TOKEN_SECRET": grant["oauth_token_secret"]},
                timeout=1800,
            )
            return done.returncode
        finally:
            if guard is not None:
                guard.terminate()
                guard.wait(timeout=10)
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
