#!/usr/bin/env bash
# Benchmark a real-time endpoint with Apache Bench, posting data.json (written by clients/endpoint.py).
#
#   bash clients/benchmark.sh --service bike-demand-svc [-n 1000] [-c 8]   # a local service
#   bash clients/benchmark.sh --uri URI --key KEY [-n 1000] [-c 8]         # any endpoint
#   SCORING_URI=... KEY=... bash clients/benchmark.sh
#
# Needs `ab` (Debian/Ubuntu: apt-get install apache2-utils). Bounded: -n requests, then it stops.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$python" ] || python=python3
uri="${SCORING_URI:-}"
key="${KEY:-}"
service=""
requests=1000
concurrency=8
data="data.json"

needs_value() { [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --service) needs_value "$@"; service="$2"; shift 2 ;;
    --uri) needs_value "$@"; uri="$2"; shift 2 ;;
    --key) needs_value "$@"; key="$2"; shift 2 ;;
    --data) needs_value "$@"; data="$2"; shift 2 ;;
    -n) needs_value "$@"; requests="$2"; shift 2 ;;
    -c) needs_value "$@"; concurrency="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

positive_int() { [[ "$2" =~ ^[1-9][0-9]{0,8}$ ]] || { echo "error: $1 must be a whole number of 1 or more, got '$2' (e.g. $1 $3)" >&2; exit 2; }; }
positive_int -n "$requests" 1000
positive_int -c "$concurrency" 8
if [ "$concurrency" -gt "$requests" ]; then
  echo "error: -c $concurrency is more than -n $requests: ab cannot run more requests at once than it sends (lower -c or raise -n)" >&2
  exit 2
fi
command -v ab >/dev/null || { echo "error: ab not found (apt-get install apache2-utils)" >&2; exit 2; }
if [ -n "$service" ]; then
  # bad input (e.g. no such service) is one "error: ..." line on stderr and exit status 2, as in the Python CLIs
  endpoint="$("$python" - "$service" "$here/.." <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
from pipelines.errors import cli_main
from pipelines.local.serving import deployments


@cli_main
def main(argv):
    service = deployments.load(argv[0])
    print(service.scoring_uri, deployments.keys(argv[0])["primary"])


sys.exit(main(sys.argv[1:2]))
EOF
  )" || exit $?
  read -r uri key <<<"$endpoint"
fi
[ -n "$uri" ] && [ -n "$key" ] || { echo "error: pass --service NAME or --uri URI --key KEY" >&2; exit 2; }
if [ -e "$data" ] && [ ! -f "$data" ]; then
  echo "error: --data $data is not a file (pass --data with a file name, e.g. --data $data/data.json)" >&2
  exit 2
fi
if [ ! -f "$data" ]; then
  echo "$data not found: writing it with clients/endpoint.py" >&2
  "$python" "$here/endpoint.py" --uri="$uri" --key="$key" --out="$data" >/dev/null
fi

ab -n "$requests" -c "$concurrency" -p "$data" -T 'application/json' -H "Authorization: Bearer $key" "$uri"
