"""Driver of scripts/bench-fanout (scripts/bench-guard is its alias): the guard against the
XMPP server's own limits, in one run.

    .venv/bin/python scripts/bench_guard.py [--bin DIR] [--quick] [--runs R] [--json FILE]
        [--sizes 1,100,1000] [--deliveries D] [--subscribe-sizes 100,1000,5000,20000]
        [--ejabberd auto|yes|no]

Behind one Prosody on free loopback ports, four pubsub services take turns:

  guard           pubsub-guard (release build), signed subscribes, a protected node
  null            null-pubsub: answers at once, fans out from a template (the server's
                  routing limit: what any component can reach through it)
  prosody-memory  Prosody's mod_pubsub with storage = "memory"
  prosody-file    Prosody's mod_pubsub with its default file storage

and DIR/pubsub-bench measures, for each size, with a warm-up and R runs per case:

  deliveries/s    K subscribers per node (each its own account and connection), publishes
                  back to back; from the first publish to the last delivery; every delivery
                  counted (--sizes; D deliveries a run, 2,000 publishes at most)
  subscribe IQs/s N distinct subscriber JIDs on a fresh node, from 50 connections, 200 in
                  flight (--subscribe-sizes)

With ejabberd installed (scripts/setup-ejabberd) the deliveries are measured again through
ejabberd for the guard and the null component. During every run the CPU time of Prosody (or
ejabberd), the guard, null-pubsub, pubsub-bench and the whole machine is read from
/proc/PID/stat (utime + stime over the run's wall time: cores kept busy).

It prints a table of medians with each target's ratio to the null component and to Prosody's
file storage, and writes it all to --json FILE. --quick is the test command's size (1 run,
tiny sizes, under a minute). Figures are never asserted; the exit status is 2 when anything
was lost (a delivery, a publish or a subscribe without its result), 1 when the setup failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from prosody import Prosody, stop_process  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from guard_setup import provision, raise_file_limit, run_streaming, start_component  # noqa: E402

WHO = "bench-fanout"
PASSWORD = "bench-password"
OWNER = "bench"
SCOPE = "/bench/"
NULL = "null-pubsub.localhost"
PROSODY_MEMORY = "native-pubsub-memory.localhost"
PROSODY_FILE = "native-pubsub.localhost"
# Connections that send the subscribes of the subscribe IQs/s cases, and how many in flight.
SENDERS = 50
WINDOW = 200

FULL = {"sizes": [1, 100, 1000], "deliveries": 50_000, "subscribe_sizes": [100, 1000, 5000, 20_000],
        "runs": 3}
QUICK = {"sizes": [1, 10], "deliveries": 200, "subscribe_sizes": [20, 100], "runs": 1}
# Publishes a run, at least and at most (1 subscriber per node gets the most).
ITEMS = (10, 2000)
# Sockets besides the subscribers' (listeners, components, the publisher, files).
SPARE_FILES = 256
# Per mode: a run that gets nothing for this many seconds has lost what is missing; a run
# stops at the second figure (a subscribes run then reports the rate until then: Prosody's
# mod_pubsub writes a node's whole subscriber list on every subscribe, so its subscribes
# slow down with the node's size).
LIMITS = {"deliveries": (15, 300), "subscribes": (60, 180)}
# The longest one pubsub-bench invocation may take (each of its runs has its own limits).
BENCH_TIMEOUT = 3 * 3600


def fail(message: str) -> None:
    print(f"{WHO}: {message}", file=sys.stderr)
    sys.exit(1)


def items_for(size: int, deliveries: int) -> int:
    return max(ITEMS[0], min(ITEMS[1], deliveries // max(size, 1)))


def node(mode: str, size: int) -> str:
    """The guard's node of a case (the other targets use the same name)."""
    return f"{SCOPE}{mode}-{size}"


def run_bench(bin_dir: Path, server, env: dict[str, str], processes: dict[str, int],
              targets: list[str], mode: list[str], runs: int) -> tuple[int, list[dict[str, str]]]:
    """Runs pubsub-bench (its output passes through); returns its status and summary lines."""
    idle, limit = LIMITS[mode[0]]
    command = [str(bin_dir / "pubsub-bench"), "--xmpp", f"127.0.0.1:{server.c2s_port}",
               "--runs", str(runs), "--clock-ticks", str(os.sysconf("SC_CLK_TCK")),
               "--idle-secs", str(idle), "--run-secs", str(limit),
               f"--consumer-key={env['BENCH_CONSUMER_KEY']}", f"--token={env['BENCH_TOKEN']}"]
    for target in targets:
        command += ["--target", target]
    for name, pid in processes.items():
        command += ["--cpu", f"{name}={pid}"]
    return run_streaming(command + mode, env, BENCH_TIMEOUT)


def prosody_targets(mode: str, size: int) -> list[str]:
    n = node(mode, size)
    return [f"guard=pubsub.localhost,{n},sign", f"null={NULL},{n},sign",
            f"prosody-memory={PROSODY_MEMORY},{n},create", f"prosody-file={PROSODY_FILE},{n},create"]


def storage_check(server: Prosody) -> dict[str, bool]:
    """Whether each of Prosody's pubsub components wrote anything under its data folder
    (Prosody's file storage names a host's folder with %2d for '-' and %2e for '.')."""
    def wrote(host: str) -> bool:
        folder = server.workdir / "data" / host.replace("-", "%2d").replace(".", "%2e")
        return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))
    return {"prosody-file wrote files": wrote(PROSODY_FILE),
            "prosody-memory wrote files": wrote(PROSODY_MEMORY)}


class Phase:
    """One XMPP server with the guard and null-pubsub connected to it."""

    def __init__(self, label: str, bin_dir: Path, work: Path, server, targets_of, cases: list) -> None:
        self.label, self.bin_dir, self.work, self.server = label, bin_dir, work, server
        self.targets_of, self.cases = targets_of, cases
        self.guard = self.null = None

    def start(self, nodes: list[str]) -> dict[str, str]:
        db = self.work / "authz.sqlite"
        setup = provision(self.bin_dir, self.work, db, self.server, OWNER, nodes[0], who=WHO,
                          scope=SCOPE, more_nodes=nodes[1:])
        self.server.start()
        secret = self.server.component_secret
        self.guard = start_component(
            [str(self.bin_dir / "pubsub-guard"), "--config", str(setup.config), "run"],
            {**os.environ, "GUARD_SECRET": secret, "GUARD_LOG": "info"}, self.work / "guard.log", WHO)
        # ejabberd serves null-pubsub on a listener of its own (see tests/e2e/ejabberd.py).
        null_port = getattr(self.server, "extra_component_port", None) or self.server.component_port
        self.null = start_component(
            [str(self.bin_dir / "null-pubsub"), "--server", f"127.0.0.1:{null_port}",
             "--component", NULL], {**os.environ, "NULL_SECRET": secret}, self.work / "null.log", WHO)
        return {**os.environ, "BENCH_PASSWORD": PASSWORD,
                "BENCH_CONSUMER_KEY": setup.app["consumer_key"], "BENCH_TOKEN": setup.grant["oauth_token"],
                "CONSUMER_SECRET": setup.app["consumer_secret"],
                "TOKEN_SECRET": setup.grant["oauth_token_secret"]}

    def processes(self) -> dict[str, int]:
        return {self.label: self.server.pid, "guard": self.guard.pid, "null": self.null.pid}

    def measure(self, env: dict[str, str], mode: str, size: int, args: list[str], runs: int) -> bool:
        """One pubsub-bench invocation; its summaries go to `cases`. False when it lost something."""
        print(f"\n== {self.label}: {mode}, {size} subscribers", flush=True)
        status, summaries = run_bench(self.bin_dir, self.server, env, self.processes(),
                                      self.targets_of(mode, size), [mode, "--subscribers", str(size), *args], runs)
        if status not in (0, 2) or not summaries:
            fail(f"pubsub-bench {mode} at {size} failed (exit {status})")
        for s in summaries:
            s["server"] = self.label
        self.cases.extend(summaries)
        for name, process in (("the guard", self.guard), ("null-pubsub", self.null)):
            if process.poll() is not None:
                fail(f"{name} exited (status {process.returncode}) during {mode} at {size}")
        return status == 0

    def stop(self) -> dict[str, str]:
        """Stops everything; returns the components' last log lines."""
        stop_process(self.null)
        stop_process(self.guard)
        self.server.stop()
        tails = {}
        for name in ("guard", "null"):
            log = self.work / f"{name}.log"
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            tails[name] = lines[-1] if lines else ""
            disconnections = sum("disconnected" in line for line in lines)
            if disconnections:
                tails[name] += f" ({disconnections} disconnections)"
        return tails


# ----------------------------------------------------------------------------- report

def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def add_ratios(cases: list[dict]) -> None:
    """Each case's ratio to the null component and to Prosody's file storage of its size."""
    by_key = {(c["server"], c["mode"], c["subscribers"], c["target"]): c for c in cases}
    for c in cases:
        for other in ("null", "prosody-file"):
            base = by_key.get((c["server"], c["mode"], c["subscribers"], other))
            c[f"x_{other}"] = (float(c["rate"]) / float(base["rate"])
                               if base and float(base["rate"]) > 0 else None)


def delivered(c: dict) -> str:
    expected, received = int(c["expected"]), int(c["received"])
    share = 100.0 * received / expected if expected else 0.0
    text = f"{received}/{expected} ({share:.1f} %)" if received != expected else f"{received}/{expected} (100 %)"
    extra = []
    if int(c["duplicates"]):
        extra.append(f"{c['duplicates']} dup")
    if int(c["errors"]) or int(c["unanswered"]):
        extra.append(f"{c['errors']} err {c['unanswered']} unanswered")
    if c["stalled"] == "true":
        extra.append("stalled")
    if c["limited"] == "true":
        limit = LIMITS[c["mode"]][1]
        extra.append(f"stopped at the {limit} s limit" + (f", {c['unsent']} not sent" if int(c["unsent"]) else ""))
    return text + (" " + ", ".join(extra) if extra else "")


def cores(c: dict) -> str:
    order = ["prosody", "ejabberd", "guard", "null", "bench", "machine"]
    return " ".join(f"{name} {float(c[f'cpu_{name}']):.2f}" for name in order if f"cpu_{name}" in c)


def table(cases: list[dict], mode: str, unit: str) -> str:
    rows = [c for c in cases if c["mode"] == mode]
    if not rows:
        return ""
    head = ["server", "subs/node" if mode == "deliveries" else "subscribers", "target", unit,
            "x null", "x prosody-file", "runs", "delivered" if mode == "deliveries" else "answered",
            "cores busy"]
    lines = [head]
    for c in rows:
        lines.append([c["server"], c["subscribers"], c["target"], number(float(c["rate"])),
                      ratio(c["x_null"]), ratio(c["x_prosody-file"]),
                      " ".join(number(float(r)) for r in c["rates"].split("/") if r),
                      delivered(c), cores(c)])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    right = {3, 4, 5}
    out = []
    for k, row in enumerate(lines):
        out.append("  ".join(str(v).rjust(widths[i]) if i in right else str(v).ljust(widths[i])
                             for i, v in enumerate(row)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def goals(cases: list[dict]) -> list[str]:
    """The project's goals for the guard, each with what this run measured."""
    lines = []
    for server in sorted({c["server"] for c in cases}):
        guard = [c for c in cases if c["server"] == server and c["target"] == "guard"]
        for c in guard:
            if c["mode"] == "deliveries" and c["x_null"] is not None:
                whole = int(c["received"]) == int(c["expected"])
                lines.append(f"{server}, {c['subscribers']} per node: deliveries {c['x_null']:.2f}x null "
                             f"(goal >= 0.90x, {'100 % delivered' if whole else 'LOSS'}): "
                             f"{'met' if c['x_null'] >= 0.9 and whole else 'not met'}")
            if c["mode"] == "deliveries" and c["subscribers"] == "1" and c["x_prosody-file"] is not None:
                lines.append(f"{server}, 1 per node: deliveries {c['x_prosody-file']:.2f}x prosody-file "
                             f"(goal >= 3x): {'met' if c['x_prosody-file'] >= 3 else 'not met'}")
            if c["mode"] == "subscribes" and c["x_null"] is not None:
                lines.append(f"{server}, {c['subscribers']} on a node: subscribes {c['x_null']:.2f}x null "
                             f"(goal >= 0.90x): {'met' if c['x_null'] >= 0.9 else 'not met'}")
    return lines


def machine() -> dict:
    def version(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            return next((l.strip() for l in done.stdout.splitlines() if l.strip()), "?")
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    prosody = version(["prosodyctl", "about"])
    ejabberd = version(["dpkg-query", "-W", "-f", "${Version}", "ejabberd"])
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "prosody": prosody,
            "ejabberd": ejabberd, "load_average_at_start": os.getloadavg()}


# ----------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
    parser.add_argument("--bin", type=Path, default=default_bin,
                        help=f"where the release binaries are (default {default_bin})")
    parser.add_argument("--quick", action="store_true", help=f"the test command's size: {QUICK}")
    parser.add_argument("--runs", type=int, help="measured runs per case (default 3; --quick 1)")
    parser.add_argument("--sizes", help="subscribers per node of the deliveries cases (default 1,100,1000)")
    parser.add_argument("--deliveries", type=int, help="deliveries a run (default 50000; publishes = this / size)")
    parser.add_argument("--subscribe-sizes", help="subscribers of the subscribe cases (default 100,1000,5000,20000; "
                                                  "empty: none)")
    parser.add_argument("--ejabberd", choices=("auto", "yes", "no"), default="auto",
                        help="also through ejabberd (auto: when ejabberdctl is installed)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    runs = args.runs if args.runs is not None else size["runs"]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else size["sizes"]
    deliveries = args.deliveries or size["deliveries"]
    subscribe_sizes = ([int(s) for s in args.subscribe_sizes.split(",") if s]
                       if args.subscribe_sizes is not None else size["subscribe_sizes"])
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    with_ejabberd = args.ejabberd == "yes" or (args.ejabberd == "auto" and shutil.which("ejabberdctl") is not None)
    if args.ejabberd == "yes" and shutil.which("ejabberdctl") is None:
        fail("ejabberd is not installed (scripts/setup-ejabberd)")
    bin_dir = args.bin.resolve()
    for program in ("authz-server", "pubsub-guard", "pubsub-bench", "null-pubsub"):
        if not (bin_dir / program).is_file():
            fail(f"{bin_dir / program} is missing (cargo build --release --locked -p authz-server "
                 "-p pubsub-guard -p demo --bins)")
    accounts = max([*sizes, SENDERS])
    raise_file_limit(accounts + SPARE_FILES, WHO)
    users = {"publisher": PASSWORD, **{f"sub{i}": PASSWORD for i in range(1, accounts + 1)}}
    nodes = ([node("deliveries", k) for k in sizes]
             + [f"{node('subscribes', n)}-{r}" for n in subscribe_sizes for r in ["w", *range(1, runs + 1)]])
    started = time.monotonic()
    report: dict = {"machine": machine(), "runs": runs, "quick": args.quick, "sizes": sizes,
                    "deliveries_per_run": deliveries, "subscribe_sizes": subscribe_sizes,
                    "senders": SENDERS, "window": WINDOW, "cases": []}
    cases: list[dict] = report["cases"]
    whole = True
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        work = Path(tmp)
        server = Prosody(work / "prosody", users=users)
        phase = Phase("prosody", bin_dir, work / "prosody-phase", server, prosody_targets, cases)
        (work / "prosody-phase").mkdir()
        try:
            env = phase.start(nodes)
            for k in sizes:
                whole &= phase.measure(env, "deliveries", k, ["--items", str(items_for(k, deliveries))], runs)
            report["storage_check"] = storage_check(server)
            for n in subscribe_sizes:
                whole &= phase.measure(env, "subscribes", n, ["--senders", str(SENDERS),
                                                              "--window", str(WINDOW)], runs)
        finally:
            report["logs"] = {"prosody": phase.stop()}
        if report["storage_check"]["prosody-memory wrote files"] or not report["storage_check"]["prosody-file wrote files"]:
            fail(f"Prosody's storage settings did not take effect: {report['storage_check']}")
        if with_ejabberd:
            from ejabberd import Ejabberd  # noqa: E402 (needs the ejabberd user)
            server = Ejabberd(work / "ejabberd", users=users, component_number=1, extra_components=(NULL,))
            (work / "ejabberd-phase").mkdir()
            phase = Phase("ejabberd", bin_dir, work / "ejabberd-phase", server,
                          lambda mode, k: prosody_targets(mode, k)[:2], cases)
            try:
                env = phase.start([node("deliveries", k) for k in sizes])
                for k in sizes:
                    whole &= phase.measure(env, "deliveries", k, ["--items", str(items_for(k, deliveries))], runs)
            finally:
                report["logs"]["ejabberd"] = phase.stop()

    add_ratios(cases)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n{WHO}: {runs} run(s) per case after a warm-up, medians; x null = share of what the "
          f"server routes for a component that does nothing; binaries in {bin_dir}; {report['seconds']} s in all")
    print(f"\ndeliveries/s (publish to delivery, {deliveries} deliveries a run, at most {ITEMS[1]} publishes):")
    print(table(cases, "deliveries", "deliveries/s"))
    if subscribe_sizes:
        print(f"\nsubscribe IQs/s (distinct JIDs on a fresh node, {SENDERS} connections, {WINDOW} in flight):")
        print(table(cases, "subscribes", "subscribes/s"))
    report["goals"] = goals(cases)
    print("\ngoals for the guard:")
    for line in report["goals"]:
        print(f"  {line}")
    print(f"\nstorage: {report['storage_check']}; last log lines: {report['logs']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{WHO}: figures written to {args.json}")
    if not whole:
        print(f"{WHO}: FAILED: something was lost (see the delivered/answered columns)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
