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

while [ $# -gt 0 ]; do
  case "$1" in
    --service) service="$2"; shift 2 ;;
    --uri) uri="$2"; shift 2 ;;
    --key) key="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    -n) requests="$2"; shift 2 ;;
    -c) concurrency="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v ab >/dev/null || { echo "error: ab not found (apt-get install apache2-utils)" >&2; exit 2; }
if [ -n "$service" ]; then
  read -r uri key < <("$python" - "$service" "$here/.." <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
from pipelines.local import deployments
s = deployments.load(sys.argv[1])
print(s.scoring_uri, deployments.keys(sys.argv[1])["primary"])
EOF
  )
fi
[ -n "$uri" ] && [ -n "$key" ] || { echo "error: pass --service NAME or --uri URI --key KEY" >&2; exit 2; }
if [ ! -f "$data" ]; then
  echo "$data not found: writing it with clients/endpoint.py" >&2
  "$python" "$here/endpoint.py" --uri="$uri" --key="$key" --out="$data" >/dev/null
fi

ab -n "$requests" -c "$concurrency" -p "$data" -T 'application/json' -H "Authorization: Bearer $key" "$uri"
