#!/usr/bin/env bash
# One collection of the monitor, printed: the pools' metrics and what the policy would decide (it acts on
# nothing). Also appended to logs/monitor-performance.log ($TENFOLD_MONITOR_PERF_LOG to log elsewhere).
# Usage: ./scripts/monitor-performance.sh [--stack NAME | --config SETTINGS.json]
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${TENFOLD_MONITOR_PERF_LOG:-logs/monitor-performance.log}
mkdir -p "$(dirname "$LOG")"
{
	echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	.venv/bin/tenfold-monitor once "$@"
} | tee -a "$LOG"
