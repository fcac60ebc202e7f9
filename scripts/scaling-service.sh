#!/usr/bin/env bash
# Run tenfold's monitor (tenfold-monitor run) as a background service of this machine.
#   ./scripts/scaling-service.sh start|stop|restart|status
# PID file: logs/scaling-service-<stack>.pid. The monitor's log as text (its stderr, as the journal gets it
# under systemd): logs/scaling-service-<stack>.log, the previous start's kept as .log.1. The monitor itself
# writes its log as JSON lines (logs/monitor-decisions.jsonl) and its metrics (logs/performance-metrics.jsonl).
# The monitor's settings come from logs/monitor-<stack>.json when it exists (ansible-playbook
# playbooks/monitor.yml renders it from the inventory), else from the built-in defaults.
# On hosts with systemd, the monitor role installs a unit instead (monitor_service: true).
set -euo pipefail
cd "$(dirname "$0")/.."

stack() {
	if [[ -n ${TENFOLD_STACK:-} ]]; then
		echo "$TENFOLD_STACK"
	else
		awk -F': *' '/^tenfold_stack:/ {print $2; exit}' inventories/local/group_vars/all.yml 2>/dev/null || true
	fi
}

STACK=$(stack)
STACK=${STACK:-tenfold}
PIDFILE="logs/scaling-service-${STACK}.pid"
# The monitor's stderr, written by the monitor only: a file held open cannot be renamed under it, so it is
# rotated here, when no monitor of the stack runs.
LOG="logs/scaling-service-${STACK}.log"
CONFIG=${TENFOLD_MONITOR_CONFIG:-logs/monitor-${STACK}.json}
PYTHON=.venv/bin/python
# The monitor package's console script (make venv installs it).
MONITOR=.venv/bin/tenfold-monitor

# The monitor's state file: the settings' state_file, else its default.
state_file() {
	local state=""
	if [[ -f $CONFIG ]]; then
		state=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("state_file", ""))' "$CONFIG")
	fi
	echo "${state:-logs/monitor-state.json}"
}

# tenfold_monitor: a monitor started as python -m tenfold_monitor, before the console script.
running_pid() {
	[[ -f $PIDFILE ]] || return 1
	local pid
	pid=$(cat "$PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && grep -qaE 'tenfold[-_]monitor' "/proc/$pid/cmdline" 2>/dev/null &&
		echo "$pid"
}

start() {
	local pid
	if pid=$(running_pid); then
		echo "monitor of stack $STACK already running (pid $pid)"
		return 0
	fi
	[[ -x $MONITOR ]] || { echo "scaling-service.sh: $MONITOR missing: run 'make venv' first" >&2; exit 1; }
	mkdir -p logs
	local args=(run --stack "$STACK")
	if [[ -f $CONFIG ]]; then
		args+=(--config "$CONFIG")
	else
		echo "note: $CONFIG not found, using the built-in defaults (ansible-playbook playbooks/monitor.yml renders it)"
	fi
	[[ ! -s $LOG ]] || mv -f "$LOG" "$LOG.1"
	nohup "$MONITOR" "${args[@]}" >"$LOG" 2>&1 </dev/null &
	echo $! >"$PIDFILE"
	sleep 1
	if pid=$(running_pid); then
		echo "monitor of stack $STACK started (pid $pid); tail -f $LOG"
	else
		rm -f "$PIDFILE"
		echo "scaling-service.sh: the monitor exited at once; last lines of $LOG:" >&2
		tail -n 20 "$LOG" >&2
		exit 1
	fi
}

stop() {
	local pid
	if ! pid=$(running_pid); then
		echo "monitor of stack $STACK is not running"
		rm -f "$PIDFILE"
		return 0
	fi
	kill -TERM "$pid"
	# The monitor lets a scale run in progress finish before it exits.
	for _ in $(seq 1 180); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "monitor (pid $pid) did not stop within 90 s; sending SIGKILL" >&2
		kill -KILL "$pid"
	fi
	rm -f "$PIDFILE"
	echo "monitor of stack $STACK stopped"
}

status() {
	local pid
	if ! pid=$(running_pid); then
		echo "monitor of stack $STACK: not running"
		return 3
	fi
	local uptime
	uptime=$(ps -o etime= -p "$pid" | tr -d ' ')
	echo "monitor of stack $STACK: running, pid $pid, up $uptime"
	local state
	state=$(state_file)
	if [[ -f $state ]]; then
		"$PYTHON" - "$state" <<'PY'
import json, sys, time
state = json.load(open(sys.argv[1]))
age = time.time() - state["at"]
traffic = state.get("traffic_state", "ok")
print(f"last collection {age:.0f}s ago{' (dry run)' if state['dry_run'] else ''}"
      f"{', a scale run in progress' if state['scale_run_in_progress'] else ''}"
      f", traffic {'fresh' if traffic == 'ok' else traffic + ': no scaling on traffic'}")
for pool, d in sorted(state["decisions"].items()):
    print(f"  {pool:<9} {d['action']:<4} {d['current']} -> {d['desired']}: {d['reason']}")
for warning in state["warnings"]:
    print(f"  warning: {warning}")
PY
	fi
}

case ${1:-} in
start) start ;;
stop) stop ;;
restart) stop && start ;;
status) status ;;
*)
	echo "usage: scaling-service.sh start|stop|restart|status" >&2
	exit 2
	;;
esac
