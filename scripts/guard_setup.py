"""What the guard's benchmark drivers share (scripts/bench_guard.py, scripts/burst_guard.py,
scripts/bench_day.py):
the admin CLIs, one owner with protected nodes, a consumer application holding a grant
that covers them, the guard's config file for a running XMPP server, starting a component
and waiting until it is connected, the open-files limit many connections need, and running
a load client while reading its summary lines.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


def cli(bin_dir: Path, program: str, db: Path, *args: str, stdin: str | None = None,
        who: str = "guard-setup") -> dict[str, str]:
    """Runs `program --database db args…`; its `key=value` output lines, or exits with its error."""
    done = subprocess.run([str(bin_dir / program), "--database", str(db), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        sys.exit(f"{who}: {program} {' '.join(args)} failed: {done.stderr}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@dataclass
class Provisioned:
    """The consumer (`consumer_key`, `consumer_secret`), its grant (`oauth_token`,
    `oauth_token_secret`) and the guard's config file."""
    app: dict[str, str]
    grant: dict[str, str]
    config: Path


def provision(bin_dir: Path, work: Path, db: Path, server, owner: str, node: str,
              who: str, *, scope: str | None = None, more_nodes: Sequence[str] = ()) -> Provisioned:
    """The owner `owner` with the protected node `node` and `more_nodes` (published to by
    publisher@localhost), a consumer with a grant for `scope` (default: `node`), and
    `work/guard.toml` for `server`."""
    cli(bin_dir, "authz-server", db, "owner", "add", owner, stdin=f"{owner}-owner-password\n", who=who)
    app = cli(bin_dir, "authz-server", db, "consumer", "add", "--name", owner.capitalize(), who=who)
    grant = cli(bin_dir, "authz-server", db, "token", "grant", "--owner", owner,
                f"--consumer={app['consumer_key']}", "--scope", scope or node, who=who)
    for name in (node, *more_nodes):
        cli(bin_dir, "pubsub-guard", db, "node", "create", name, "--owner", owner,
            "--publisher", "publisher@localhost", who=who)
    config = work / "guard.toml"
    config.write_text(
        f'component = "{server.component}"\n'
        f'server = "127.0.0.1:{server.component_port}"\n'
        f'database = "{db}"\n'
    )
    return Provisioned(app, grant, config)


def start_component(command: list[str], env: dict[str, str], log: Path, who: str,
                    timeout: float = 15) -> subprocess.Popen:
    """Starts a component (pubsub-guard, null-pubsub) with its output in `log` and waits until
    it logs `connected`; exits with the log if it stops or takes longer than `timeout` s."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while "connected" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            process.wait()
            sys.exit(f"{who}: {Path(command[0]).name} did not connect:\n" + log.read_text(errors="replace"))
        time.sleep(0.05)
    return process


def status_kb(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def raise_file_limit(needed: int, who: str) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (the XMPP server, the components and the load
    clients started afterwards inherit it); exits if even the hard limit is below `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if target < needed:
        sys.exit(f"{who}: the hard limit on open files is {hard}; {needed} are needed (raise it with ulimit -Hn)")
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_streaming(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, list[dict[str, str]]]:
    """Runs a load client (pubsub-bench, pubsub-burst) with its output passing through;
    returns its exit status and its `summary: key=value …` lines, read. Killed after
    `timeout` s."""
    summaries = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as client:
        assert client.stdout is not None
        for line in client.stdout:
            print(line, end="", flush=True)
            if line.startswith("summary: "):
                summaries.append(dict(pair.split("=", 1) for pair in line.split()[1:]))
        try:
            status = client.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            client.kill()
            status = client.wait()
    return status, summaries
