#!/usr/bin/env bash
# Runs the benchmarks (cross_entropy, arcface, margin_head, webgpu, phys_moe, physics_contrastive, scale)
# under Deno, then under Bun (pinned versions, via npx); Bun has no WebGPU, so webgpu only prints
# "no WebGPU adapter: ..." there. `--only core_v2` runs the Core v2 before/after file, which is not
# in the default list (it needs the old tree: see its header). A benchmark that fails does not stop
# the others; the exit status is 1 when any of them failed. Extra arguments are passed through to
# every run, e.g.
#   bash bench/run.sh --quick
#   bash bench/run.sh --json results.json   # writes results.<benchmark>.<runtime>.json
#   bash bench/run.sh --only arcface,margin_head --quick
# `--only LIST` (read here, not passed on) picks benchmarks; pass a benchmark's own flags
# (`--gemm`, `--ref-max-c` of margin_head, or `--shapes`, whose format differs) together with
# `--only` for that benchmark (webgpu's own: `--head-c`, `--require-gpu`). DENO=... and BUN=...
# replace the npx commands.
# Needs the dev dependencies (TensorFlow.js): run `npm ci` first.
set -uo pipefail

DENO_VERSION=2.9.6
BUN_VERSION=1.4.4
DENO=${DENO:-"npx -y deno@${DENO_VERSION}"}
BUN=${BUN:-"npx -y bun@${BUN_VERSION}"}
ALL=(cross_entropy arcface margin_head webgpu phys_moe physics_contrastive scale)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ! -d node_modules/@tensorflow/tfjs || ! -d node_modules/@tensorflow/tfjs-backend-wasm ]]; then
  echo "bench/run.sh: node_modules/@tensorflow/{tfjs,tfjs-backend-wasm} missing; run \`npm ci\` first" >&2
  exit 2
fi

# --only is ours; everything else goes to the benchmarks.
benches=("${ALL[@]}")
pass=()
while (($#)); do
  if [[ $1 == --only && $# -ge 2 ]]; then
    IFS=, read -r -a benches <<<"$2"
    for b in "${benches[@]}"; do
      if [[ ! -f bench/${b}_bench.ts ]]; then
        echo "bench/run.sh: no benchmark \"$b\" (expected one of: ${ALL[*]})" >&2
        exit 2
      fi
    done
    shift 2
  else
    pass+=("$1")
    shift
  fi
done

# Every run gets the same arguments, except that `--json FILE` becomes FILE with the
# benchmark's and the runtime's names before the extension, so no run overwrites another.
args_for() {
  local tag=$1
  shift
  local out=()
  while (($#)); do
    if [[ $1 == --json && $# -ge 2 ]]; then
      local f=$2
      if [[ $f == *.json ]]; then f="${f%.json}.$tag.json"; else f="$f.$tag"; fi
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
failed=()

for runtime in deno bun; do
  for b in "${benches[@]}"; do
    mapfile -d '' args < <(args_for "$b.$runtime" "${pass[@]+"${pass[@]}"}")
    if [[ $runtime == deno ]]; then
      echo "=== Deno ${DENO_VERSION}: ${b}_bench.ts ==="
      # shellcheck disable=SC2086 # $DENO may be a command with arguments
      $DENO run -A "bench/${b}_bench.ts" "${args[@]+"${args[@]}"}"
    else
      echo "=== Bun ${BUN_VERSION}: ${b}_bench.ts ==="
      # shellcheck disable=SC2086
      $BUN "bench/${b}_bench.ts" "${args[@]+"${args[@]}"}"
    fi
    rc=$?
    if ((rc != 0)); then
      status=1
      failed+=("${b} under ${runtime} (exit ${rc})")
    fi
    echo
  done
done

if ((${#failed[@]})); then
  echo "bench/run.sh: failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
fi
exit "$status"
