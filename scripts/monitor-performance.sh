#!/usr/bin/env bash
# One collection of the monitor, printed: the pools' metrics and what the policy would decide (it acts on
# nothing). Also appended to logs/monitor-performance.log.  Usage: ./scripts/monitor-performance.sh [--stack NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p logs
{
	echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	PYTHONPATH=monitor .venv/bin/python -m tenfold_monitor once "$@"
} | tee -a logs/monitor-performance.log
