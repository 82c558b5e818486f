#!/usr/bin/env bash
# The README's benchmark table: every scenario against one hub binary, reports in OUT_DIR.
#
#   cargo build --release --workspace
#   loadtest/bench.sh [HUB_BINARY] [OUT_DIR]
#
# Needs wrk and nginx for the machine's ceiling (else the load test's own lean client and
# sink stand in, and the report says so). About 25 minutes on a 2-core machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/hubcast}
out=${2:-$here/target/bench}
lt=${LOADTEST:-$here/target/release/hubcast-loadtest}
mkdir -p "$out"
run() {
    local name=$1
    shift
    echo "== $name: hubcast-loadtest $*"
    "$lt" "$@" --hub-bin "$bin" --out "$out/$name" 2>"$out/$name.log" | grep -v '^report:'
}
run fanout fanout
run many-topics many-topics
run many-topics-light many-topics --ping light
run latency-1k latency --payload 200 --rate 1000
run latency-3k latency --payload 200 --rate 3000
run stream stream --runs 1
run dead-destinations dead-destinations
run crash crash --runs 1
run subscribe-storm subscribe-storm --runs 1
run scale scale --runs 1
