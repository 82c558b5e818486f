#!/usr/bin/env bash
# Flame graph of the hub during one load-test scenario.
#
#   loadtest/profile.sh OUT.svg HUB_BINARY SCENARIO [hubcast-loadtest options...]
#
# Runs `hubcast-loadtest SCENARIO --runs 1 --hub-bin HUB_BINARY [options]`, records the hub
# process from its start to its exit with `perf record --call-graph dwarf`, and folds the
# samples into OUT.svg with inferno (`cargo install inferno`). Needs perf and a hub built with
# line tables (the release profile has them); FOLDED=FILE keeps the folded stacks too; the
# software cpu-clock event is sampled (PROFILE_EVENT), which virtual machines without hardware
# counters also have. The whole run is recorded: subscribing, then delivering.
set -euo pipefail
out=$1 bin=$(realpath "$2") scenario=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
loadtest=${LOADTEST:-$here/target/release/hubcast-loadtest}
for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$loadtest" "$scenario" --runs 1 --hub-bin "$bin" --out "$work/report" "$@" >"$work/log" 2>&1 &
lt=$!
# The newest hub process: scenarios with phases start one hub per phase.
hub_pid() { pgrep -f -n "^$bin serve" || true; }
pid=""
for _ in $(seq 1 300); do
    pid=$(hub_pid)
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || { cat "$work/log" >&2; echo "the hub did not start" >&2; exit 1; }
# Threads the hub starts after perf attaches are not all followed: let it start them first.
# PROFILE_DELAY=N waits N seconds instead of one (to leave out a scenario's set-up, or to
# record a later phase's hub: the newest hub then is the one recorded).
sleep "${PROFILE_DELAY:-1}"
pid=$(hub_pid)
[ -n "$pid" ] || { cat "$work/log" >&2; echo "no hub runs after the delay" >&2; exit 1; }
perf record -q -e "${PROFILE_EVENT:-cpu-clock}" -F "${PROFILE_HZ:-299}" --call-graph dwarf,16384 \
    -p "$pid" -o "$work/perf.data" >/dev/null || true
wait "$lt" || { cat "$work/log" >&2; exit 1; }
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/folded"
[ -n "${FOLDED:-}" ] && cp "$work/folded" "$FOLDED"
inferno-flamegraph --minwidth 0.2 --title "hub: $scenario $*" <"$work/folded" >"$out"
grep -E "ceiling_req|hub_deliv|hub_to_ceil|latency_p99|superseded|verified|phase_[ab]_(deliveries|latency_p99|backlog_slope)" \
    "$work/log" || true
echo "flame graph: $out"
