#!/usr/bin/env bash
# The figures of BENCHMARKS.md, "Whole cluster (runnel bench)": `runnel dev` (3 nodes,
# replication factor 3, fsync on a quorum) on 127.0.0.1, the raw fsync rate of the same
# disk, then `runnel bench` produce at full and at half load, catch-up consume, and
# end-to-end, 1 KiB records. Prints every figure; run it on an otherwise idle machine.
#
#   ./scripts/bench-cluster.sh            # 500,000 records at full load, 250,000 at half
#   RECORDS=50000 ./scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-500000}
SHARDS=${SHARDS:-8}
PRODUCERS=${PRODUCERS:-1}

cargo build --release --locked -q -p runnel-cli
R=target/release/runnel
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-bench.XXXXXX")
"$R" dev --dir "$WORK/dev" --records 100 >"$WORK/dev.log" 2>&1 &
DEV=$!
cleanup() {
  kill "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
until grep -q "Serving until Ctrl-C" "$WORK/dev.log"; do
  if ! kill -0 "$DEV" 2>/dev/null; then
    cat "$WORK/dev.log"
    echo "runnel dev did not start" >&2
    exit 1
  fi
  sleep 1
done

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== raw fsync rate of the data disk (4 KiB write + fsync, 3 s)"
python3 - "$WORK" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
block, n, start = b"x" * 4096, 0, time.time()
while time.time() - start < 3:
    os.write(fd, block)
    os.fsync(fd)
    n += 1
print(f"{n / (time.time() - start):.0f} fsyncs/s")
EOF

E=(--endpoint 127.0.0.1:7100)
ADMIN=(127.0.0.1:7180 127.0.0.1:7181 127.0.0.1:7182)
# The servers' own view of a phase (request durations, fsyncs) from their histograms.
mark() { scripts/server-latency.py --save "$WORK/metrics.json" "${ADMIN[@]}"; }
server() { scripts/server-latency.py --since "$WORK/metrics.json" "${ADMIN[@]}"; }
common=(--shards "$SHARDS" --replication 3 --record-size 1024 --producers "$PRODUCERS")

echo "== produce, full load"
mark
"$R" "${E[@]}" -o json bench produce --stream bench "${common[@]}" --records "$RECORDS" \
  | tee "$WORK/full.json"
server
FULL=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["phases"][0]["records_per_s"]))' "$WORK/full.json")
HALF=${HALF_RATE:-$((FULL / 2))}

echo "== produce, half load ($HALF records/s)"
mark
"$R" "${E[@]}" -o json bench produce --stream bench-half "${common[@]}" \
  --records "$((RECORDS / 2))" --rate "$HALF"
server

echo "== consume from the oldest record (catch-up)"
mark
"$R" "${E[@]}" -o json bench consume --stream bench "${common[@]}"
server

echo "== end to end at half load"
mark
"$R" "${E[@]}" -o json bench e2e --stream bench-e2e "${common[@]}" \
  --records "$((RECORDS / 2))" --rate "$HALF"
server

echo "== rerun: ./scripts/bench-cluster.sh (RECORDS=$RECORDS SHARDS=$SHARDS PRODUCERS=$PRODUCERS)"
