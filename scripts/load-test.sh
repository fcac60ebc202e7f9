#!/usr/bin/env bash
# Load tests through a tenfold stack's load balancer (locust, headless), checked against the seed's criteria.
#   ./scripts/load-test.sh [scenarios] [OPTIONS]   10..1000 concurrent users, 60 s each -> logs/load-test-results.json
#   ./scripts/load-test.sh spike [OPTIONS]         baseline, 10x spike, back down, with the monitor -> logs/load-test-spike.{json,png}
#   ./scripts/load-test.sh --help | spike --help   every option
# Exit code: 0 every scenario (or phase) passed, 1 one failed the criteria, 2 bad input or a failed step.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"
[[ -x $PYTHON ]] || {
	echo "load-test.sh: $PYTHON not found; run 'make venv' first" >&2
	exit 2
}
export ANSIBLE_CONFIG="$ROOT/ansible.cfg" PATH="$ROOT/.venv/bin:$PATH"
exec "$PYTHON" "$ROOT/scripts/load_test.py" "$@"
