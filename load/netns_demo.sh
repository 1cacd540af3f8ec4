#!/usr/bin/env bash
# The machine boundary, shown on one machine: Redis, a model host, a web server and the load generator
# each in a network namespace of their own, joined by veth pairs to a bridge in a sixth namespace, on a
# private subnet that exists only inside those namespaces (nothing leaves this machine).
#
#   sudo bash load/netns_demo.sh              # about 2 minutes; PYTHON=... to use another interpreter
#
#   mb-redis   10.199.0.1  redis-server
#   mb-host1   10.199.0.2  microbatch serve examples._embedder:embed_texts --name embed (the real model)
#   mb-web     10.199.0.3  the Flask example under gunicorn gthread -w 2, MICROBATCH_REMOTE=redis://10.199.0.1
#   mb-client  10.199.0.5  Locust, 32 users sending one text each (every vector checked)
#   mb-host2   10.199.0.4  a second host, started after the first one's namespace is gone
#
# A third of the way into the load, every process in mb-host1 is SIGKILLed and the namespace deleted
# (its link vanishes mid-conversation); a second host comes up in mb-host2 and claims the work the
# first left unacknowledged. The script prints the requests answered correctly, the lost or wrong
# ones (target: 0), and what the new host claimed. Needs root (ip netns) and iproute2 (installed with
# apt-get if missing). Not part of the test suite. Everything it starts is stopped, the namespaces
# deleted, on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}
NET=10.199.0
USERS=${USERS:-32}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-45}
NAMESPACES=(mb-lan mb-redis mb-host1 mb-host2 mb-web mb-client)

[ "$(id -u)" = 0 ] || { echo "netns_demo.sh needs root (ip netns); run it with sudo" >&2; exit 1; }
if ! command -v ip >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing: run scripts/env.sh" >&2; exit 1; }
for ns in "${NAMESPACES[@]}"; do
  if ip netns list | grep -qw "$ns"; then echo "namespace $ns exists already: delete it first" >&2; exit 1; fi
done

WORK=$(mktemp -d /tmp/mb-netns-XXXXXX)
cleanup() {
  set +e
  for ns in "${NAMESPACES[@]}"; do
    if ip netns list | grep -qw "$ns"; then
      pids=$(ip netns pids "$ns")
      [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
    fi
  done
  sleep 1
  for ns in "${NAMESPACES[@]}"; do
    if ip netns list | grep -qw "$ns"; then
      pids=$(ip netns pids "$ns")
      [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
      ip netns del "$ns"
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[$(date +%T)] $*"; }

# ------------------------------------------------------------------ the network
ip netns add mb-lan
ip -n mb-lan link add br0 type bridge
ip -n mb-lan link set br0 up
node() {  # node NAME LAST-OCTET: a namespace with one veth end on the bridge, the other its NIC
  local ns=mb-$1
  ip netns add "$ns"
  ip link add "$ns-a" type veth peer name "$ns-b"
  ip link set "$ns-a" netns "$ns"
  ip link set "$ns-b" netns mb-lan
  ip -n mb-lan link set "$ns-b" master br0 up
  ip -n "$ns" addr add "$NET.$2/24" dev "$ns-a"
  ip -n "$ns" link set "$ns-a" up
  ip -n "$ns" link set lo up
}
node redis 1
node host1 2
node host2 4
node web 3
node client 5
log "namespaces up: ${NAMESPACES[*]} on $NET.0/24"

in_ns() {  # in_ns NS COMMAND...: run in the namespace with the repository's environment
  local ns=$1; shift
  ip netns exec "$ns" env PYTHONPATH="$REPO/src:$REPO/adapters:$REPO" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$@"
}
URL="redis://$NET.1:6379/0"

# ------------------------------------------------------------------ the services
in_ns mb-redis redis-server --bind "$NET.1" --port 6379 --protected-mode no --save "" --appendonly no \
  --dir "$WORK" --loglevel warning > "$WORK/redis.log" 2>&1 &
start_host() {  # start_host NS
  in_ns "$1" "$PY" -m microbatch serve examples._embedder:embed_texts --url "$URL" --name embed \
    --max-batch-size 32 --claim-idle 3 --log-level INFO >> "$WORK/$1.log" 2>&1 &
}
start_host mb-host1
in_ns mb-web env MICROBATCH_REMOTE="$URL" "$PY" -m gunicorn --workers 2 --worker-class gthread --threads 32 \
  --bind "$NET.3:8000" --log-level warning examples.flask_app:app > "$WORK/web.log" 2>&1 &

log "waiting for the web server (mb-web) to answer through the host (mb-host1) and Redis (mb-redis)"
in_ns mb-client "$PY" - "$NET.3" <<'EOF'
import json, sys, time, urllib.request
url = f"http://{sys.argv[1]}:8000/embed"
deadline = time.monotonic() + 300
while True:
    try:
        request = urllib.request.Request(url, json.dumps({"text": "warm up"}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.load(response)["embedding"]) == 384
            break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("the web server never answered")
        time.sleep(0.5)  # polling starting processes in other namespaces
EOF
log "serving: a vector crossed client -> web -> redis -> host1 -> redis -> web -> client"

# ------------------------------------------------------------------ load, kill, replace
log "load: $USERS Locust users for ${SECONDS_OF_LOAD}s from mb-client"
(cd load && in_ns mb-client "$PY" -m locust -f locustfile.py --headless --only-summary --users "$USERS" \
  --spawn-rate "$USERS" --run-time "${SECONDS_OF_LOAD}s" --host "http://$NET.3:8000" --loglevel WARNING \
  --results-file "$WORK/results.json" InteractiveUser > "$WORK/locust.log" 2>&1) &
LOAD=$!
sleep $((SECONDS_OF_LOAD / 3))  # an arbitrary moment mid-load
log "killing every process in mb-host1 (SIGKILL) and deleting the namespace"
pids=$(ip netns pids mb-host1)
kill -KILL $pids
ip netns del mb-host1
log "starting a second host in mb-host2 ($NET.4)"
start_host mb-host2
wait $LOAD || true  # Locust exits 1 when any request failed: counted below

# ------------------------------------------------------------------ the verdict
in_ns mb-client "$PY" - "$WORK/results.json" "$NET.3" <<'EOF'
import json, sys, urllib.request
results = json.load(open(sys.argv[1]))
records = results["records"]  # [name, start, latency s, texts, ok]
good = sum(1 for r in records if r[4])
bad = len(records) - good
with urllib.request.urlopen(f"http://{sys.argv[2]}:8000/stats", timeout=30) as response:
    stats = json.load(response)["batchers"]["embed"]
hosts = stats["hosts"]
print(f"\nrequests in the window: {len(records)}; answered correctly: {good}; lost or wrong: {bad} (target 0)")
for message, count in results["failures"].items():
    print(f"  {count} x {message}")
for name, host in hosts.items():
    print(f"live host {name}: {host['stats']['completed']} items completed, {host['claimed']} entries claimed "
          "from the killed host")
print(f"mean batch at the hosts: {stats['mean_batch_size']:.1f}")
sys.exit(1 if bad else 0)
EOF
