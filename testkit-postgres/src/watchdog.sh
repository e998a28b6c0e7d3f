# The watchdog of a throwaway PostgreSQL cluster, shared by testkit-postgres (Rust, which
# includes this file) and tests/e2e/postgres.py (Python, which reads it). Run as
#   sh -c "$(cat watchdog.sh)" NAME BIN DIR RUNUSER OWNER
# NAME names it in messages; BIN is the PostgreSQL bin folder, DIR the cluster folder, RUNUSER
# the runuser program and OWNER the user to run the server as (both empty when not root).
# One command a line on stdin (init; start PORT), each answered with ok or fail; at the end of
# stdin (the test process ended, however it ended) it stops the server and removes DIR.
bin=$1 dir=$2 runuser=$3 owner=$4
data=$dir/data
trap '' HUP INT PIPE
as_owner() { if [ -n "$owner" ]; then "$runuser" -u "$owner" -- "$@"; else "$@"; fi; }
answer() { out=$1; shift; if as_owner "$@" >"$out" 2>&1; then echo ok; else echo fail; fi; }
while read -r command port; do
    case $command in
        init) answer "$dir/initdb.out" "$bin/initdb" -D "$data" -A trust -U guard -E UTF8 \
                  --locale=C --no-sync --no-instructions ;;
        start) answer "$dir/pg_ctl.out" "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 \
                  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir'" \
                  start ;;
        *) echo fail ;;
    esac
done
if [ -f "$data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$data" -m immediate -t 10 -w stop >/dev/null 2>&1 || {
        pid=$(head -n 1 "$data/postmaster.pid")
        echo "$0: pg_ctl could not stop the server in $dir; sending SIGKILL to $pid" >&2
        kill -KILL "$pid"
    }
fi
rm -rf -- "$dir"
