#!/usr/bin/env bash
# Scale a tenfold stack by hand (or from cron, the monitor or AWX), and show its status.
# The work is scale.yml's; this wrapper only shapes its arguments, logs each run and keeps its exit code.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: auto-scale.sh COMMAND [ARGS] [-- ANSIBLE-PLAYBOOK-ARGS]

Commands:
  scale-up   [POOL] [STEP]   add STEP replicas (default 1) to POOL (default: every pool)
  scale-down [POOL] [STEP]   remove STEP replicas (default 1) from POOL (default: every pool)
  scale      POOL REPLICAS   set POOL to exactly REPLICAS
  status     [--json] [--stack NAME] [--members-url URL] [--events FILE]
                             pools, replicas, LB membership and the last scale events
  help                       this text

POOL is frontend or backend; STEP and REPLICAS are whole numbers. The pools' min/max bounds still
apply (scale.yml clamps to them and says so). `scale-up 2` means: every pool, step 2.
Arguments after -- go to ansible-playbook, e.g.:  auto-scale.sh scale-up backend -- -i inventories/production

Environment:
  TENFOLD_TRIGGER   who asks, recorded in the stack's scale events: manual (default), monitor or awx
  TENFOLD_STACK     stack `status` shows (default: tenfold_stack of inventories/local)
  TENFOLD_AUTOSCALE_LOG  where scale runs are logged (default: logs/auto-scale.log, written by this
                         script only; the monitor logs to logs/monitor-decisions.jsonl)

Scale runs append their output to the log as well; the exit code is ansible-playbook's.
EOF
}

die_usage() {
	echo "auto-scale.sh: $*" >&2
	echo >&2
	usage >&2
	exit 2
}

is_count() { [[ $1 =~ ^[0-9]+$ ]]; }
is_name() { [[ $1 =~ ^[a-z][a-z0-9_]*$ ]]; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PLAYBOOK="$ROOT/.venv/bin/ansible-playbook"
MONITOR="$ROOT/.venv/bin/tenfold-monitor"
LOG="${TENFOLD_AUTOSCALE_LOG:-$ROOT/logs/auto-scale.log}"

# Run scale.yml with the given extra-var arguments, logging to $LOG and the terminal.
run_scale() {
	[[ -x $PLAYBOOK ]] || {
		echo "auto-scale.sh: $PLAYBOOK not found; run 'make venv' first" >&2
		exit 1
	}
	local cmd=("$PLAYBOOK" scale.yml "$@")
	mkdir -p "$(dirname "$LOG")"
	printf '=== %s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${USER:-$(id -un)}" "${cmd[*]}" >>"$LOG"
	local rc=0
	ANSIBLE_CONFIG="$ROOT/ansible.cfg" PATH="$ROOT/.venv/bin:$PATH" \
		"${cmd[@]}" 2>&1 | tee -a "$LOG" || rc=${PIPESTATUS[0]}
	printf '=== %s exit %d\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$rc" >>"$LOG"
	return "$rc"
}

# Split "$@" at --: positional arguments into ARGS, the rest into PASSTHROUGH.
ARGS=()
PASSTHROUGH=()
split_args() {
	while (($#)); do
		if [[ $1 == -- ]]; then
			shift
			PASSTHROUGH=("$@")
			return
		fi
		ARGS+=("$1")
		shift
	done
}

# scale-up / scale-down [POOL] [STEP]
relative() {
	local direction=$1 pool="" step=""
	shift
	(($# <= 2)) || die_usage "scale-$direction takes at most POOL and STEP, got: $*"
	if (($# == 1)) && is_count "$1"; then
		step=$1
	else
		pool=${1:-}
		step=${2:-}
	fi
	[[ -z $pool ]] || is_name "$pool" || die_usage "POOL must be a pool name such as backend, got '$pool'"
	[[ -z $step ]] || is_count "$step" || die_usage "STEP must be a whole number, got '$step'"
	local vars=(-e "direction=$direction")
	[[ -z $pool ]] || vars+=(-e "pool=$pool")
	[[ -z $step ]] || vars+=(-e "step=$step")
	run_scale "${vars[@]}" -e "trigger=${TENFOLD_TRIGGER:-manual}" ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
}

# scale POOL REPLICAS
absolute() {
	(($# == 2)) || die_usage "scale needs POOL and REPLICAS, got: ${*:-nothing}"
	is_name "$1" || die_usage "POOL must be a pool name such as backend, got '$1'"
	is_count "$2" || die_usage "REPLICAS must be a whole number, got '$2'"
	run_scale -e "pool=$1" -e "replicas=$2" -e "trigger=${TENFOLD_TRIGGER:-manual}" \
		${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
}

main() {
	(($#)) || die_usage "no command given"
	local command=$1
	shift
	case $command in
	scale-up | scale-down)
		split_args "$@"
		relative "${command#scale-}" ${ARGS[@]+"${ARGS[@]}"}
		;;
	scale)
		split_args "$@"
		absolute ${ARGS[@]+"${ARGS[@]}"}
		;;
	status)
		exec "$MONITOR" status "$@"
		;;
	help | -h | --help)
		usage
		;;
	*)
		die_usage "unknown command '$command'"
		;;
	esac
}

main "$@"
