#!/usr/bin/env bash
# Runs the cross-entropy benchmark under Deno, then under Bun (pinned versions, via npx).
# Extra arguments are passed through to both runs, e.g.
#   bash bench/run.sh --quick
#   bash bench/run.sh --json results.json   # writes results.deno.json and results.bun.json
# Needs the dev dependencies (TensorFlow.js): run `npm ci` first.
set -uo pipefail

DENO_VERSION=2.9.6
BUN_VERSION=1.4.4

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -d node_modules/@tensorflow/tfjs || ! -d node_modules/@tensorflow/tfjs-backend-wasm ]]; then
  echo "bench/run.sh: node_modules/@tensorflow/{tfjs,tfjs-backend-wasm} missing; run \`npm ci\` first" >&2
  exit 2
fi

# Both runtimes get the same arguments, except that `--json FILE` becomes FILE with the
# runtime's name before the extension, so the second run does not overwrite the first.
args_for() {
  local runtime=$1
  shift
  local out=()
  while (($#)); do
    if [[ $1 == --json && $# -ge 2 ]]; then
      local f=$2
      if [[ $f == *.json ]]; then f="${f%.json}.$runtime.json"; else f="$f.$runtime"; fi
      out+=(--json "$f")
      shift 2
    else
      out+=("$1")
      shift
    fi
  done
  ((${#out[@]})) && printf '%s\0' "${out[@]}"
  return 0
}

status=0

mapfile -d '' deno_args < <(args_for deno "$@")
echo "=== Deno ${DENO_VERSION} ==="
npx -y "deno@${DENO_VERSION}" run -A bench/cross_entropy_bench.ts "${deno_args[@]+"${deno_args[@]}"}" || status=1

echo
mapfile -d '' bun_args < <(args_for bun "$@")
echo "=== Bun ${BUN_VERSION} ==="
npx -y "bun@${BUN_VERSION}" bench/cross_entropy_bench.ts "${bun_args[@]+"${bun_args[@]}"}" || status=1

exit "$status"
