"""Driver of scripts/bench-burst: the burst load test of issue 10 ("bursts drop stanzas").

    .venv/bin/python scripts/burst_guard.py [--bin DIR] [--subscribers N] [--publishes M]
        [--in-flight K] [--iqs Q] [--window W] [--quick] [--assert]

Starts Prosody (N subscriber accounts and a publisher; its own pubsub is the baseline) and
pubsub-guard from DIR (default target/release) on free loopback ports, provisions a protected
node and one token with the authz-server and pubsub-guard CLIs, then runs DIR/pubsub-burst
twice: `fanout` (N subscribers, M publishes of a 2 KB Atom entry, K in flight, to the guard
then to the baseline) and `iqs` (Q disco#info IQs back to back, at most W unanswered; 0: no
limit). It samples the guard's memory (VmRSS every 100 ms, and VmHWM, reset before each mode
where the kernel allows) and prints a summary. Only counts decide the outcome: with --assert
it exits 2 if the guard lost, duplicated or refused anything, or stopped or reconnected during
the run; the baseline's figures are printed, never asserted. Setup failures exit 1.

Sizes: the default is the issue's case (1,000 subscribers, 100 publishes, 50 in flight;
200,000 IQs); --quick is a smaller burst for the test command, still well past what the
guard can hold in memory at once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from prosody import Prosody  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from guard_setup import (  # noqa: E402
    provision, raise_file_limit, run_streaming, start_component, status_kb,
)

PASSWORD = "burst-password"
NODE = "/location/burst"
FULL = {"subscribers": 1000, "publishes": 100, "in_flight": 50, "iqs": 200_000, "window": 0}
QUICK = {"subscribers": 400, "publishes": 50, "in_flight": 50, "iqs": 50_000, "window": 0}
# Every wait inside pubsub-burst ends after this long without progress, and the whole mode
# after its deadline; the driver's own timeouts are a margin above that.
IDLE_SECS = 15
DEADLINE_SECS = 600
# Sockets other than the subscribers' (the publisher, Prosody's listeners and files, the
# guard's component connection): the file descriptor limit must leave room for them.
SPARE_FILES = 256


def fail(message: str) -> None:
    print(f"burst-guard: {message}", file=sys.stderr)
    sys.exit(1)


def reset_peak(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux: 5 > /proc/PID/clear_refs); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's VmRSS every 100 ms in a thread; peak() is the largest since reset()."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            rss = status_kb(self._pid, "VmRSS")
            if rss is None:
                return
            with self._lock:
                self._peak = max(self._peak, rss)

    def reset(self) -> None:
        with self._lock:
            self._peak = status_kb(self._pid, "VmRSS") or 0

    def peak(self) -> int:
        with self._lock:
            return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.0f} MB"


def run_burst(bin_dir: Path, server: Prosody, env: dict[str, str], mode: list[str]) -> tuple[int, list[dict[str, str]]]:
    """Runs pubsub-burst (its output passes through); returns its status and summary lines."""
    command = [str(bin_dir / "pubsub-burst"), "--xmpp", f"127.0.0.1:{server.c2s_port}",
               "--guard", server.component, *mode, "--assert",
               "--idle-secs", str(IDLE_SECS), "--deadline-secs", str(DEADLINE_SECS)]
    return run_streaming(command, env, DEADLINE_SECS + 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=REPO / "target" / "release",
                        help="where the binaries are (default target/release)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the test command's size: {QUICK} (flags given override it)")
    parser.add_argument("--subscribers", type=int)
    parser.add_argument("--publishes", type=int)
    parser.add_argument("--in-flight", type=int)
    parser.add_argument("--iqs", type=int, help="0: skip the IQ burst")
    parser.add_argument("--window", type=int, help="unanswered IQs at most (0: no limit)")
    parser.add_argument("--kind", choices=("disco", "ping"), default="disco",
                        help="the IQ of the IQ burst: disco#info (default; its large reply is "
                             "what overflowed the guard's queue) or ping")
    parser.add_argument("--assert", dest="check", action="store_true",
                        help="exit 2 if the guard lost anything")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    for key, value in size.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bin_dir = args.bin.resolve()
    for program in ("authz-server", "pubsub-guard", "pubsub-burst"):
        if not (bin_dir / program).is_file():
            fail(f"{bin_dir / program} is missing (cargo build --release --locked -p authz-server "
                 "-p pubsub-guard -p demo --bins)")
    raise_file_limit(args.subscribers + SPARE_FILES, "burst-guard")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="burst-guard-") as tmp:
        work = Path(tmp)
        db = work / "authz.sqlite"
        users = {"publisher": PASSWORD, **{f"sub{i}": PASSWORD for i in range(1, args.subscribers + 1)}}
        server = Prosody(work / "prosody", users=users)
        setup = provision(bin_dir, work, db, server, "burst", NODE, who="burst-guard")
        app, grant, config = setup.app, setup.grant, setup.config
        guard_log = work / "guard.log"
        env = {**os.environ, "BURST_PASSWORD": PASSWORD,
               "CONSUMER_SECRET": app["consumer_secret"],
               "TOKEN_SECRET": grant["oauth_token_secret"]}
        guard = sampler = None
        rows: list[tuple[str, str]] = []
        failures: list[str] = []
        try:
            server.start()
            guard = start_component(
                [str(bin_dir / "pubsub-guard"), "--config", str(config), "run"],
                {**os.environ, "GUARD_SECRET": server.component_secret, "GUARD_LOG": "info"},
                guard_log, "burst-guard",
            )
            sampler = RssSampler(guard.pid)
            print(f"burst-guard: Prosody and the guard up in {time.monotonic() - started:.1f} s "
                  f"({len(users)} accounts); guard RSS {mb(status_kb(guard.pid, 'VmRSS'))}", flush=True)

            modes = [("fanout", ["fanout", "--node", NODE, "--subscribers", str(args.subscribers),
                                 "--publishes", str(args.publishes), "--in-flight", str(args.in_flight),
                                 f"--consumer-key={app['consumer_key']}",
                                 f"--token={grant['oauth_token']}"])]
            if args.iqs > 0:
                modes.append(("iqs", ["iqs", "--iqs", str(args.iqs), "--window", str(args.window), "--kind", args.kind]))
            for label, mode in modes:
                before = status_kb(guard.pid, "VmRSS")
                hwm_reset = reset_peak(guard.pid)
                sampler.reset()
                mode_started = time.monotonic()
                status, summaries = run_burst(bin_dir, server, env, mode)
                seconds = time.monotonic() - mode_started
                after = status_kb(guard.pid, "VmRSS")
                hwm = status_kb(guard.pid, "VmHWM")
                if status not in (0, 2) or not summaries:
                    fail(f"pubsub-burst {label} failed (exit {status})")
                if status == 2:
                    failures.append(f"{label}: the guard lost stanzas")
                for s in summaries:
                    if s["mode"] == "fanout":
                        name = "pubsub-guard" if s["service"] == "guard" else "Prosody mod_pubsub"
                        rows.append((f"{label}: {name}",
                                     f"{s['received']}/{s['expected']} delivered ({s['lost']} lost, "
                                     f"{s['duplicates']} duplicates); publish results "
                                     f"{s['results']}/{s['publishes']} ({s['errors']} errors, "
                                     f"{int(s['unanswered']) + int(s['unsent'])} lost)"))
                    else:
                        rows.append((f"{label}: pubsub-guard",
                                     f"{s['replies']}/{s['iqs']} replies ({s['results']} results, "
                                     f"{s['errors']} errors, {s['missing']} missing)"))
                rows.append((f"{label}: guard RSS",
                             f"{mb(before)} before, {mb(after)} after, peak {mb(sampler.peak())} "
                             f"sampled, VmHWM {mb(hwm)}{'' if hwm_reset else ' (not reset: since start)'}"))
                rows.append((f"{label}: time", f"{seconds:.1f} s"))
                if guard.poll() is not None:
                    failures.append(f"the guard exited (status {guard.returncode}) during {label}")
                    break
        finally:
            if sampler is not None:
                sampler.stop()
            if guard is not None:
                guard.terminate()
                try:
                    guard.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    guard.kill()
                    guard.wait()
            server.stop()
        text = guard_log.read_text(errors="replace")
        reconnects = text.count("disconnected")
        dropped = sum(1 for line in text.splitlines() if "dropped" in line)
        if reconnects:
            failures.append(f"the guard lost its connection to Prosody {reconnects} times")
        rows.append(("guard log", f"{reconnects} disconnections, {dropped} lines about dropped stanzas"))
        rows.append(("total time", f"{time.monotonic() - started:.1f} s"))

    print("\nburst-guard summary "
          f"({args.subscribers} subscribers, {args.publishes} publishes, {args.in_flight} in flight; "
          f"{args.iqs} IQs, window {args.window or 'none'}):")
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if failures:
        print("burst-guard: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 2 if args.check else 0
    print("burst-guard: nothing lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
