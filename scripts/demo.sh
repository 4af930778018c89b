#!/usr/bin/env bash
# make demo: the telemt simulator (as a process named "telemt"), a traffic generator and the
# agent watching both, until Ctrl-C. Everything it writes stays in var/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEMO_DIR="${DEMO_DIR:-$PWD/var/demo}"
export DEMO_AGENT_PORT="${DEMO_AGENT_PORT:-19090}"
export DEMO_PROXY_PORT="${DEMO_PROXY_PORT:-18443}"
export DEMO_API_PORT="${DEMO_API_PORT:-19091}"
export DEMO_CONTROL_PORT="${DEMO_CONTROL_PORT:-19092}"
mkdir -p "$DEMO_DIR"

# The eBPF side classifies a process's outbound connections by its comm: a symlink named
# telemt to node makes the simulator's comm "telemt", like the real proxy.
ln -sf "$(command -v node)" "$DEMO_DIR/telemt"

pids=()
stopping=""
stop() {
  stopping=1
  trap - INT TERM EXIT
  echo
  echo "stopping the demo..."
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs and state are in $DEMO_DIR"
}
trap stop INT TERM EXIT

wait_http() {
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "demo: $1 did not come up; see $DEMO_DIR/*.log" >&2
  exit 1
}

# setsid: Ctrl-C reaches only this script, which then stops each child once, in order.
setsid "$DEMO_DIR/telemt" dist/test/fixtures/telemt-sim.js \
  --listen "$DEMO_PROXY_PORT" --api "$DEMO_API_PORT" --control "$DEMO_CONTROL_PORT" \
  --config-out "$DEMO_DIR/telemt.toml" >"$DEMO_DIR/telemt-sim.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$DEMO_API_PORT/v1/health"

# The agent before the traffic, so it sees every connection open.
setsid node dist/src/cli.js run --config deploy/demo/mtlens.yaml >"$DEMO_DIR/agent.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$DEMO_AGENT_PORT/healthz"

setsid node dist/test/fixtures/telemt-sim-traffic.js --proxy "127.0.0.1:$DEMO_PROXY_PORT" >"$DEMO_DIR/traffic.log" 2>&1 &
pids+=($!)

A="localhost:$DEMO_AGENT_PORT"
C="localhost:$DEMO_CONTROL_PORT"
cat <<INFO

mtlens demo is running (Ctrl-C stops everything)
  simulated telemt  proxy 127.0.0.1:$DEMO_PROXY_PORT, Control API 127.0.0.1:$DEMO_API_PORT (process name: telemt)
  traffic           users alice (127.0.0.11), bob (127.0.0.12), carol and dave (both 127.0.0.13: ~ambiguous), probes (127.0.0.66: ~unknown)
  agent             http://$A      logs: $DEMO_DIR/{agent,telemt-sim,traffic}.log

Try (kernel and telemt views side by side):
  curl -s $A/ready
  curl -s '$A/status/connections?role=client&limit=5'   # live connections, bytes, RTT, the user joined by IP
  curl -s $A/status/ebpf                           # programs, maps, ring buffer
  curl -s $A/status/telemt
  curl -s $A/status/discovery                      # listeners, DCs, users found in telemt
  curl -s $A/metrics | grep -E '^mtlens_(user_tcp_bytes_total|telemt_user_octets_total|tcp_connections_opened_total|tcp_bytes_total)'
  curl -sN '$A/events?type=connection.*'           # live connection open/close/stall events
  curl -sN '$A/events?type=telemt.*'               # telemt control-plane changes (restart_detected, ...)

Make the simulated telemt misbehave and watch the agent cope:
  curl -s -X POST $C/restart                       # counters restart at 0 in telemt, not in mtlens
  curl -s -X POST $C/reload                        # a generation reload: same
  curl -s -X POST $C/configure -d '{"ready":false}'          # /ready shows telemt: failed: not ready: admission_closed
  curl -s -X POST $C/configure -d '{"authHeader":"x"}'       # failed: unauthorized (check telemt.auth_header)
  curl -s -X POST $C/configure -d '{"whitelist":["10.0.0.0/8"]}'   # dropped without a reply
  curl -s -X POST $C/configure -d '{"ready":true,"authHeader":"","whitelist":[]}'   # back to normal
INFO

wait -n "${pids[@]}" || true
[ -n "$stopping" ] || echo "demo: a process exited; see $DEMO_DIR/*.log" >&2
