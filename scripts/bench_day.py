"""Driver of scripts/bench-day: the seed's day at full scale, through Prosody and the guard.

    .venv/bin/python scripts/bench_day.py [--bin DIR] [--quick] [--owners N] [--active A]
        [--heavy H] [--heavy-items K] [--item-bytes B] [--json FILE] [--keep DIR]

The claim (top README): an aggregator polled a photo site 2,975,981 times in a day to follow
45,754 users, 6,721 of whom were active; push replaces that with one signed subscribe per user
and one notification per update, and loses nothing. This plays that day on this machine:

1. Prosody (accounts aggregator@localhost, the consumer application, and site@localhost, the
   photo site) on free loopback ports; one SQLite file for authz-server and the guard.
2. Provisioning, timed: one JSON-lines file for `authz-server import` with the consumer, N
   owners (all with one Argon2id hash, made once), a protected node per owner
   (/photos/u00001…, published to by site@localhost) and the consumer's access token from
   each owner for her node. Then authz-server (serving, idle) and the guard start.
3. DIR/day-bench (demo/src/bin/day-bench.rs): N signed subscribes, pipelined; then A active
   owners publish (H of them K items each, more than the old feed's 20-item window, the others
   one), each item a ~2 KB Atom entry with a GeoRSS point, through a few site connections;
   every (node, item id) must reach the consumer exactly once with the point published.

It reports provisioning time, subscribe IQs/s, publish-to-last-delivery time, deliveries
expected/received/lost, the stanzas the clients sent and received against the polls, CPU
seconds (utime + stime from /proc/PID/stat) per process and phase, peak RSS (VmHWM) and the
database's size; `--json FILE` writes the same figures. Sizes: the day (45,754 owners, 6,721
active, 1,344 of them with 30 items) by default; `--quick` is 500 owners and 80 active (16
with 30 items), a smoke test. No figure is asserted; the exit status is 2 when a delivery
was lost, duplicated or altered or a request failed, in every mode, and 1 when the setup
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from prosody import Prosody, stop_process  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from guard_setup import status_kb  # noqa: E402

# The seed's figures.
POLLS = 2_975_981
FULL = {"owners": 45_754, "active": 6_721, "heavy_items": 30}
QUICK = {"owners": 500, "active": 80, "heavy_items": 30}
CONSUMER = "aggregator"
SITE = "site"
PASSWORD = "day-password"
# How long the guard and authz-server may take to come up, and day-bench to run.
START_SECS = 15
DEADLINE_SECS = 900
TICKS = os.sysconf("SC_CLK_TCK")


def fail(message: str) -> None:
    print(f"bench-day: {message}", file=sys.stderr)
    sys.exit(1)


def default_bin() -> Path:
    """Where cargo puts release binaries: $CARGO_TARGET_DIR/release, else target/release."""
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO / "target") / "release"


def cpu_secs(pid: int) -> float | None:
    """utime + stime of a running process, in seconds (/proc/PID/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state): utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy() -> float:
    """CPU seconds every process of the machine has used since boot (/proc/stat: all but
    idle and iowait), to tell whether other work shared the cores with ours."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS


def children_cpu() -> float:
    """CPU seconds of every child this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def database_bytes(db: Path) -> dict[str, int]:
    """The SQLite file and its -wal, in bytes (0 for a file that is not there)."""
    sizes = {}
    for label, path in (("main", db), ("wal", db.with_name(db.name + "-wal"))):
        sizes[label] = path.stat().st_size if path.exists() else 0
    sizes["total"] = sizes["main"] + sizes["wal"]
    return sizes


def password_hash(bin_dir: Path, work: Path) -> tuple[str, float]:
    """One Argon2id hash, made by `authz-server owner add` in a scratch database and read back;
    every owner of the import reuses it. Returns the hash and the seconds it took."""
    scratch = work / "scratch.sqlite"
    started = time.monotonic()
    done = subprocess.run([str(bin_dir / "authz-server"), "--database", str(scratch), "owner", "add",
                           "throwaway"], input="a throwaway owner's password\n", capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        fail(f"authz-server owner add failed: {done.stderr}")
    with sqlite3.connect(f"file:{scratch}?mode=ro", uri=True) as con:
        row = con.execute("SELECT password_hash FROM owners WHERE name = 'throwaway'").fetchone()
    if not row or not row[0].startswith("$argon2id$"):
        fail(f"no Argon2id hash in {scratch}: {row}")
    return row[0], time.monotonic() - started


def private_file(path: Path, lines) -> None:
    """Writes `lines` to `path`, readable by its owner only (it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)


class Day:
    """The owners, their tokens and what each publishes today."""

    def __init__(self, owners: int, active: int, heavy: int, heavy_items: int, seed: int) -> None:
        width = max(5, len(str(owners)))
        self.names = [f"u{i:0{width}d}" for i in range(1, owners + 1)]
        self.nodes = [f"/photos/{name}" for name in self.names]
        self.consumer_key = secrets.token_urlsafe(16)
        self.consumer_secret = secrets.token_urlsafe(32)
        self.tokens = [(secrets.token_urlsafe(16), secrets.token_urlsafe(32)) for _ in self.names]
        picked = random.Random(seed).sample(range(owners), active)
        self.items = [0] * owners
        for n, i in enumerate(picked):
            self.items[i] = heavy_items if n < heavy else 1

    def import_lines(self, password_hash: str):
        """The records of `authz-server import`: the consumer and the owners first, then the
        nodes and the grants that name them."""
        record = lambda **fields: json.dumps(fields, separators=(",", ":")) + "\n"  # noqa: E731
        yield record(kind="consumer", key=self.consumer_key, secret=self.consumer_secret,
                     name="Aggregator", jid=f"{CONSUMER}@localhost")
        for name in self.names:
            yield record(kind="owner", name=name, password_hash=password_hash)
        for name, node in zip(self.names, self.nodes):
            yield record(kind="node", name=node, owner=name, publishers=[f"{SITE}@localhost"])
        for name, node, (token, secret) in zip(self.names, self.nodes, self.tokens):
            yield record(kind="grant", token=token, secret=secret, consumer=self.consumer_key,
                         owner=name, scope=node)

    def plan_lines(self):
        """day-bench's plan: node, token, token secret, items, per owner."""
        for node, (token, secret), items in zip(self.nodes, self.tokens, self.items):
            yield f"{node}\t{token}\t{secret}\t{items}\n"


def wait_for(path: Path, text: str, process: subprocess.Popen, what: str) -> None:
    """Waits until `text` is in the file `path` that `process` writes to (at most START_SECS)."""
    deadline = time.monotonic() + START_SECS
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline or process.poll() is not None:
            fail(f"{what} did not start:\n{path.read_text(errors='replace')}")
        time.sleep(0.05)


def run_load(bin_dir: Path, server: Prosody, day: Day, plan: Path, args, pids: dict[str, int]):
    """Runs day-bench (its lines pass through); at each `phase:` line reads the CPU time of the
    processes in `pids` and of day-bench. Returns its status, its summary, the marks
    ({phase: (time, {process: cpu})}) and its own rusage."""
    command = [str(bin_dir / "day-bench"), "--xmpp", f"127.0.0.1:{server.c2s_port}",
               "--guard", server.component, "--consumer", f"{CONSUMER}@localhost",
               "--site", f"{SITE}@localhost", f"--consumer-key={day.consumer_key}",
               "--plan", str(plan), "--item-bytes", str(args.item_bytes),
               "--consumer-connections", str(args.consumer_connections),
               "--site-connections", str(args.site_connections),
               "--subscribe-window", str(args.subscribe_window),
               "--publish-window", str(args.publish_window),
               "--deadline-secs", str(DEADLINE_SECS)]
    env = {**os.environ, "DAY_PASSWORD": PASSWORD, "CONSUMER_SECRET": day.consumer_secret}
    marks: dict[str, tuple[float, dict[str, float | None]]] = {}
    summary: dict[str, str] = {}
    load = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    watched = {**pids, "day-bench": load.pid}
    try:
        for line in load.stdout:
            if line.startswith("phase: "):
                cpu = {name: cpu_secs(pid) for name, pid in watched.items()}
                cpu["machine"] = machine_busy()
                marks[line.split()[1]] = (time.monotonic(), cpu)
                continue
            print(line, end="", flush=True)
            if line.startswith("summary: "):
                summary = dict(pair.split("=", 1) for pair in line.split()[1:])
    except BaseException:
        # Interrupted (Ctrl-C): day-bench goes with us.
        load.kill()
        load.wait()
        raise
    # day-bench ends itself at its deadline; this is a margin above it.
    deadline = time.monotonic() + 60
    while True:
        pid, status, usage = os.wait4(load.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            load.kill()
            pid, status, usage = os.wait4(load.pid, 0)
            break
        time.sleep(0.05)
    load.returncode = os.waitstatus_to_exitcode(status)
    return load.returncode, summary, marks, usage


def connections(n: int) -> str:
    return f"{n} connection{'' if n == 1 else 's'}"


def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=default_bin(),
                        help="where the release binaries are (default $CARGO_TARGET_DIR/release "
                             "or target/release)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the smoke test's size: {QUICK} (flags given override it)")
    parser.add_argument("--owners", type=int, help=f"owners, each with a node (day: {FULL['owners']:,})")
    parser.add_argument("--active", type=int, help=f"owners who publish (day: {FULL['active']:,})")
    parser.add_argument("--heavy", type=int, help="active owners who publish --heavy-items items "
                                                  "(day: a fifth of the active)")
    parser.add_argument("--heavy-items", type=int, help="their items (day: 30)")
    parser.add_argument("--item-bytes", type=int, default=2048, help="bytes of XML per Atom entry")
    parser.add_argument("--batch", type=int, default=1000, help="import: lines per transaction")
    parser.add_argument("--consumer-connections", type=int, default=4)
    parser.add_argument("--site-connections", type=int, default=4)
    parser.add_argument("--subscribe-window", type=int, default=512,
                        help="subscribes unanswered at most")
    parser.add_argument("--publish-window", type=int, default=512,
                        help="publishes unanswered at most")
    parser.add_argument("--guard-log", default="info", help="GUARD_LOG of the guard")
    parser.add_argument("--seed", type=int, default=2008, help="which owners are active")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, database)")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    for key, value in size.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.heavy is None:
        args.heavy = args.active // 5
    if not 0 <= args.heavy <= args.active <= args.owners or args.owners < 1:
        fail("sizes must satisfy 0 <= heavy <= active <= owners, owners >= 1")
    bin_dir = args.bin.resolve()
    for program in ("authz-server", "pubsub-guard", "day-bench"):
        if not (bin_dir / program).is_file():
            fail(f"{bin_dir / program} is missing (cargo build --release --locked -p authz-server "
                 "-p pubsub-guard -p demo --bins)")

    started = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        scratch = None
        work = args.keep.resolve()
    else:
        scratch = tempfile.TemporaryDirectory(prefix="bench-day-")
        work = Path(scratch.name)
    try:
        return play(args, bin_dir, work, started)
    finally:
        if scratch is not None:
            scratch.cleanup()


def play(args, bin_dir: Path, work: Path, started: float) -> int:
    db = work / "day.sqlite"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    load_start = os.getloadavg()[0]
    day = Day(args.owners, args.active, args.heavy, args.heavy_items, args.seed)
    items = sum(day.items)
    print(f"bench-day: {args.owners:,} owners, {args.active:,} active ({args.heavy:,} with "
          f"{args.heavy_items} items, the rest 1): {items:,} items of ~{args.item_bytes} bytes",
          flush=True)

    # Provisioning.
    hashed, hash_secs = password_hash(bin_dir, work)
    generate_started = time.monotonic()
    records = work / "import.jsonl"
    private_file(records, day.import_lines(hashed))
    plan = work / "plan.tsv"
    private_file(plan, day.plan_lines())
    generate_secs = time.monotonic() - generate_started
    lines = 1 + 3 * args.owners
    cpu_before = children_cpu()
    import_started = time.monotonic()
    with open(work / "import.log", "w") as progress:
        done = subprocess.run([str(bin_dir / "authz-server"), "--database", str(db), "import",
                               "--batch", str(args.batch), str(records)],
                              stdout=subprocess.PIPE, stderr=progress, text=True, timeout=1800)
    import_secs = time.monotonic() - import_started
    import_cpu = children_cpu() - cpu_before
    if done.returncode != 0:
        fail(f"authz-server import failed (exit {done.returncode}):\n"
             + (work / "import.log").read_text(errors="replace")[-4000:])
    import_summary = done.stdout.strip()
    db_provisioned = database_bytes(db)
    print(f"bench-day: provisioned {lines:,} records in {import_secs:.2f} s "
          f"({lines / import_secs:,.0f}/s): {import_summary}", flush=True)

    server = Prosody(work / "prosody", users={CONSUMER: PASSWORD, SITE: PASSWORD})
    guard = authz = None
    try:
        server.start()
        authz_log = work / "authz.log"
        with open(authz_log, "w") as log:
            authz = subprocess.Popen([str(bin_dir / "authz-server"), "--database", str(db), "serve",
                                      "--listen", "127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT)
        wait_for(authz_log, "listening on http://", authz, "authz-server")
        config = work / "guard.toml"
        config.write_text(f'component = "{server.component}"\n'
                          f'server = "127.0.0.1:{server.component_port}"\n'
                          f'database = "{db}"\n')
        guard_log = work / "guard.log"
        with open(guard_log, "w") as log:
            guard = subprocess.Popen(
                [str(bin_dir / "pubsub-guard"), "--config", str(config), "run"],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "GUARD_SECRET": server.component_secret, "GUARD_LOG": args.guard_log})
        wait_for(guard_log, "connected", guard, "the guard")
        pids = {"guard": guard.pid, "prosody": server.pid, "authz-server": authz.pid}
        status, summary, marks, usage = run_load(bin_dir, server, day, plan, args, pids)
        cpu_end = {name: cpu_secs(pid) for name, pid in pids.items()}
        peak = {name: status_kb(pid, "VmHWM") for name, pid in pids.items()}
        peak["day-bench"] = usage.ru_maxrss
        db_after = database_bytes(db)
        alive = {name: p.poll() is None for name, p in (("guard", guard), ("authz-server", authz))}
    finally:
        guard_status = stop_process(guard)
        stop_process(authz)
        server.stop()
    db_stopped = database_bytes(db)
    total_secs = time.monotonic() - started
    if not summary:
        fail(f"day-bench failed (exit {status}) before its summary")

    # Figures.
    num = lambda key: float(summary[key])  # noqa: E731
    count = lambda key: int(summary[key])  # noqa: E731
    phases = {}
    for name, (begin, end) in (("subscribe", ("subscribe-start", "subscribe-end")),
                               ("publish", ("publish-start", "publish-end"))):
        if begin in marks and end in marks:
            (t0, c0), (t1, c1) = marks[begin], marks[end]
            wall = t1 - t0
            cpu = {p: (c1[p] - c0[p]) if c0.get(p) is not None and c1.get(p) is not None else None
                   for p in c0}
            phases[name] = {"wall_secs": round(wall, 3),
                            "cpu_secs": {p: round(v, 2) for p, v in cpu.items() if v is not None},
                            "cores": {p: round(v / wall, 2) for p, v in cpu.items()
                                      if v is not None and wall > 0}}
    operations = {"subscribe": count("subscribes"), "publish": count("publishes")}
    for name, phase in phases.items():
        # What the machine ran besides the processes of the day (other users' builds…).
        cpu = phase["cpu_secs"]
        ours = sum(v for p, v in cpu.items() if p != "machine")
        cpu["others"] = round(max(cpu.pop("machine", 0) - ours, 0), 2)
        phase["cores"].pop("machine", None)
        phase["cores"]["others"] = round(cpu["others"] / phase["wall_secs"], 2)
        # CPU per request, and the shortest this phase could be on this machine with its cores
        # to ourselves: Prosody runs on one thread, and all of ours share the cores.
        phase["cpu_us_per_request"] = {p: round(v * 1e6 / max(operations[name], 1))
                                       for p, v in cpu.items() if p != "others"}
        phase["floor_secs"] = round(max(cpu.get("prosody", 0), ours / (os.cpu_count() or 1)), 2)
    sent, received = count("sent"), count("received_stanzas")
    # The seed's polls, for this many owners (65 a day each).
    polls = round(POLLS * args.owners / FULL["owners"])
    stanzas = sent + received
    later_day = stanzas - count("subscribe_sent") - count("subscribe_received")
    day_secs = import_secs + num("subscribe_secs") + num("deliver_secs")
    lost = count("lost")
    figures = {
        "size": {"owners": args.owners, "active": args.active, "heavy": args.heavy,
                 "heavy_items": args.heavy_items, "items": items, "item_bytes": count("item_bytes"),
                 "consumer_connections": args.consumer_connections,
                 "site_connections": args.site_connections,
                 "subscribe_window": args.subscribe_window, "publish_window": args.publish_window},
        "provisioning": {"records": lines, "secs": round(import_secs, 3),
                         "records_per_sec": round(lines / import_secs), "batch": args.batch,
                         "cpu_secs": round(import_cpu, 2), "summary": import_summary,
                         "generate_secs": round(generate_secs, 3),
                         "password_hash_secs": round(hash_secs, 3)},
        "subscribe": {"iqs": count("subscribes"), "subscribed": count("subscribed"),
                      "errors": count("subscribe_errors"),
                      "unanswered": count("subscribe_unanswered"),
                      "secs": num("subscribe_secs"),
                      "iqs_per_sec": round(count("subscribes") / num("subscribe_secs"))},
        "publish": {"publishes": count("publishes"), "results": count("publish_results"),
                    "errors": count("publish_errors"), "unanswered": count("publish_unanswered"),
                    "all_answered_secs": num("results_secs"),
                    "to_last_delivery_secs": num("deliver_secs"),
                    "deliveries_per_sec": round(count("received") / max(num("deliver_secs"), 1e-9))},
        "deliveries": {"expected": count("expected"), "received": count("received"), "lost": lost,
                       "duplicates": count("duplicates"), "strays": count("strays"),
                       "altered": count("altered"), "other_messages": count("other_messages")},
        "stanzas": {"sent": sent, "received": received, "total": stanzas,
                    "subscribe": count("subscribe_sent") + count("subscribe_received"),
                    "publish": count("publish_sent") + count("publish_received"),
                    "login_and_close": (count("login_sent") + count("login_received")
                                        + count("close_sent") + count("close_received")),
                    "later_day": later_day, "polls": polls,
                    "polls_per_stanza": round(polls / stanzas, 1),
                    "polls_per_stanza_later_day": round(polls / later_day, 1)},
        "cpu_secs": {**{p: round(v, 2) for p, v in cpu_end.items() if v is not None},
                     "day-bench": round(usage.ru_utime + usage.ru_stime, 2)},
        "peak_rss_kb": peak,
        "phases": phases,
        "database_bytes": {"after_provisioning": db_provisioned, "after_the_day": db_after,
                           "after_stop": db_stopped},
        "day_secs": round(day_secs, 3),
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "total_secs": round(total_secs, 1),
        "ok": status == 0 and lost == 0,
    }
    report(figures, alive, guard_status)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"bench-day: figures written to {args.json}")
    if status not in (0, 2):
        fail(f"day-bench failed (exit {status})")
    if not figures["ok"]:
        print("bench-day: FAILED: deliveries were lost, duplicated or altered, or requests failed",
              file=sys.stderr)
        return 2
    return 0


def report(f: dict, alive: dict[str, bool], guard_status: int | None) -> None:
    """Prints the figures as a table."""
    s, p, d, st = f["size"], f["provisioning"], f["deliveries"], f["stanzas"]
    sub, pub = f["subscribe"], f["publish"]
    rows = [
        ("owners / active / items", f"{s['owners']:,} / {s['active']:,} ({s['heavy']:,} × "
                                    f"{s['heavy_items']}, the rest × 1) / {s['items']:,} of "
                                    f"{s['item_bytes']:,} bytes"),
        ("provisioning (import)", f"{p['secs']:.2f} s for {p['records']:,} records "
                                  f"({p['records_per_sec']:,}/s, {p['cpu_secs']:.1f} CPU s, "
                                  f"batch {p['batch']})"),
        ("signed subscribes", f"{sub['iqs']:,} in {sub['secs']:.2f} s: {sub['iqs_per_sec']:,} IQs/s "
                              f"(window {s['subscribe_window']}, "
                              f"{connections(s['consumer_connections'])}); {sub['subscribed']:,} subscribed, {sub['errors']} "
                              f"errors, {sub['unanswered']} unanswered"),
        ("publish → last delivery", f"{pub['to_last_delivery_secs']:.2f} s for {pub['publishes']:,} "
                                    f"publishes ({pub['deliveries_per_sec']:,} deliveries/s; "
                                    f"window {s['publish_window']}, "
                                    f"{connections(s['site_connections'])}); {pub['results']:,} results, {pub['errors']} "
                                    f"errors, {pub['unanswered']} unanswered"),
        ("deliveries", f"expected {d['expected']:,}, received {d['received']:,}, lost {d['lost']}, "
                       f"duplicates {d['duplicates']}, strays {d['strays']}, altered {d['altered']}"),
        ("the day, end to end", f"{f['day_secs']:.2f} s (provisioning + subscribes + publish → "
                                f"last delivery)"),
        ("stanzas on the wire", f"{st['total']:,} ({st['sent']:,} sent, {st['received']:,} "
                                f"received by the clients) against {st['polls']:,} polls "
                                f"({'the seed' if s['owners'] == FULL['owners'] else '65 an owner'}): "
                                f"{st['polls_per_stanza']}× fewer"),
        ("  of which", f"subscribes {st['subscribe']:,}, publishing {st['publish']:,}, logins "
                       f"{st['login_and_close']}; a later day (no subscribes): {st['later_day']:,}, "
                       f"{st['polls_per_stanza_later_day']}× fewer"),
        ("CPU seconds", ", ".join(f"{name} {secs:.1f}" for name, secs in f["cpu_secs"].items())),
        ("peak RSS (VmHWM)", ", ".join(f"{name} {mb(kb)}" for name, kb in f["peak_rss_kb"].items())),
    ]
    for name, phase in f["phases"].items():
        cores = ", ".join(f"{proc} {c:.2f}" for proc, c in phase["cores"].items())
        rows.append((f"cores busy: {name}", f"{cores} (over {phase['wall_secs']:.2f} s)"))
        ours = {p: c for p, c in phase["cores"].items() if p != "others"}
        busiest = max(ours.items(), key=lambda kv: kv[1], default=None)
        if busiest:
            rows.append(("", f"busiest {busiest[0]} at {busiest[1]:.2f} cores; the machine "
                             f"{sum(phase['cores'].values()):.2f} of {os.cpu_count()} cores busy"))
        per = ", ".join(f"{proc} {us:,}" for proc, us in phase["cpu_us_per_request"].items())
        rows.append(("", f"CPU µs per {name}: {per}; at least {phase['floor_secs']:.1f} s with "
                         f"the cores to ourselves"))
    db = f["database_bytes"]
    rows.append(("database (file + -wal)", f"{db['after_the_day']['total'] / 1e6:.1f} MB after the "
                                           f"day ({db['after_the_day']['wal'] / 1e6:.1f} MB WAL); "
                                           f"{db['after_provisioning']['total'] / 1e6:.1f} MB after "
                                           f"provisioning; {db['after_stop']['total'] / 1e6:.1f} MB "
                                           f"once stopped"))
    rows.append(("total wall time", f"{f['total_secs']:.1f} s (with starting and stopping); "
                                    f"load average {f['load_average']['start']:.1f} at the start, "
                                    f"{f['load_average']['end']:.1f} at the end"))
    if not all(alive.values()) or guard_status not in (0, None):
        rows.append(("processes", f"still running at the end: {alive}; guard exit {guard_status}"))
    print("\nbench-day summary:")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("bench-day: nothing lost" if f["deliveries"]["lost"] == 0 else "bench-day: DELIVERIES LOST")


if __name__ == "__main__":
    sys.exit(main())
