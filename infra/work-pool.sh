#!/usr/bin/env bash
# Create datatuner's Prefect work pool if it is missing; idempotent, says what it did.
#
#   infra/work-pool.sh                  # a `process` pool `datatuner-pool` (one machine, compose)
#   infra/work-pool.sh --kubernetes     # a `kubernetes` pool with infra/kubernetes/base-job-template.json
#   infra/work-pool.sh --kubernetes --update   # also rewrite an existing pool's base job template
#
# Talks to the Prefect API named by PREFECT_API_URL (or the active Prefect profile), waiting up
# to --wait seconds (default 60) for it to answer. Exit status 0 when the pool exists with the
# wanted type at the end; 1 when it exists with another type or the API is unreachable.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pool="${DATATUNER_POOL:-datatuner-pool}"
type="process"
template=""
update=0
wait_s=60
prefect="${PREFECT:-prefect}"

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --kubernetes) type="kubernetes" ;;
    --pool) pool="${2:?--pool needs a name}"; shift ;;
    --template) template="${2:?--template needs a file}"; shift ;;
    --update) update=1 ;;
    --wait) wait_s="${2:?--wait needs seconds}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "work-pool.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$type" = "kubernetes" ] && [ -z "$template" ]; then
  template="$here/kubernetes/base-job-template.json"
fi
if [ -n "$template" ] && [ ! -f "$template" ]; then
  echo "work-pool.sh: base job template not found: $template" >&2
  exit 2
fi
template_args=()
[ -n "$template" ] && template_args=(--base-job-template "$template")

api="${PREFECT_API_URL:-the active Prefect profile}"

# Inspect the pool, retrying while the API does not answer (a server still starting).
errfile="$(mktemp)"
trap 'rm -f "$errfile"' EXIT
deadline=$(( $(date +%s) + wait_s ))
while :; do
  # stdout is the pool as JSON; messages go to stderr.
  if out="$("$prefect" work-pool inspect "$pool" --output json 2>"$errfile")"; then
    exists=1; break
  fi
  if grep -qi "not found" <<<"$out" || grep -qi "not found" "$errfile"; then
    exists=0; break
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "work-pool.sh: the Prefect API at $api did not answer within ${wait_s}s:" >&2
    { cat "$errfile"; echo "$out"; } | grep -v '^\s*$' | tail -n 3 >&2
    exit 1
  fi
  sleep 2
done

if [ "$exists" = 0 ]; then
  "$prefect" work-pool create "$pool" --type "$type" "${template_args[@]}" >/dev/null
  echo "work-pool.sh: created work pool '$pool' (type $type${template:+, base job template $template}) at $api"
  exit 0
fi

current="$(python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["type"])' <<<"$out" 2>/dev/null \
  || python -c 'import json, sys; print(json.loads(sys.stdin.read())["type"])' <<<"$out")"
if [ "$current" != "$type" ]; then
  echo "work-pool.sh: work pool '$pool' already exists with type '$current', not '$type';" \
       "delete it (prefect work-pool delete $pool) or choose another name with --pool" >&2
  exit 1
fi
if [ "$update" = 1 ] && [ -n "$template" ]; then
  "$prefect" work-pool update "$pool" --base-job-template "$template" >/dev/null
  echo "work-pool.sh: work pool '$pool' (type $type) exists; updated its base job template from $template"
else
  echo "work-pool.sh: work pool '$pool' (type $type) already exists at $api; nothing to do"
fi
