"""What the guard's benchmark drivers share (scripts/bench_guard.py, scripts/burst_guard.py):
the admin CLIs, and one owner with a protected node, a consumer application holding a grant
that covers it, and the guard's config file for a running Prosody.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


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
              who: str) -> Provisioned:
    """The owner `owner` with the protected node `node` (published to by
    publisher@localhost), a consumer with a grant for it, and `work/guard.toml` for `server`."""
    cli(bin_dir, "authz-server", db, "owner", "add", owner, stdin=f"{owner}-owner-password\n", who=who)
    app = cli(bin_dir, "authz-server", db, "consumer", "add", "--name", owner.capitalize(), who=who)
    grant = cli(bin_dir, "authz-server", db, "token", "grant", "--owner", owner,
                f"--consumer={app['consumer_key']}", "--scope", node, who=who)
    cli(bin_dir, "pubsub-guard", db, "node", "create", node, "--owner", owner,
        "--publisher", "publisher@localhost", who=who)
    config = work / "guard.toml"
    config.write_text(
        f'component = "{server.component}"\n'
        f'server = "127.0.0.1:{server.component_port}"\n'
        f'database = "{db}"\n'
    )
    return Provisioned(app, grant, config)
