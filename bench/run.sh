#!/usr/bin/env bash
# Runs the benchmarks under Deno, then under Bun (pinned versions, by npx; DENO=... and BUN=... replace the
# commands). Bun has no WebGPU: webgpu_bench.ts says so there and exits 0. A benchmark that fails does not stop
# the others; the exit status is 1 when any failed. Every flag goes to every benchmark (bench/README.md), except
# `--bench LIST` (which ones) and `--runtimes LIST` (deno,bun); `--json FILE` becomes FILE.<bench>.<runtime>.json.
#   bash bench/run.sh --quick
#   bash bench/run.sh --bench softmax,margin_head --runtimes deno --baseline /tmp/softmargin-old
set -uo pipefail

DENO=${DENO:-"npx -y deno@2.9.6"}
BUN=${BUN:-"npx -y bun@1.4.4"}
ALL=(softmax margin_head webgpu phys_moe physics_contrastive metric scale)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -d node_modules/@tensorflow/tfjs-backend-wasm ]] || { echo "bench/run.sh: run \`npm ci\` first" >&2 && exit 2; }

benches=("${ALL[@]}") runtimes=(deno bun) pass=() failed=()
while (($#)); do
  case $1 in
    --bench) IFS=, read -r -a benches <<<"${2:-}" && shift 2 ;;
    --runtimes) IFS=, read -r -a runtimes <<<"${2:-}" && shift 2 ;;
    *) pass+=("$1") && shift ;;
  esac
done
for b in "${benches[@]}"; do
  [[ -f bench/${b}_bench.ts ]] || { echo "bench/run.sh: no benchmark \"$b\" (one of ${ALL[*]})" >&2 && exit 2; }
done
for runtime in "${runtimes[@]}"; do
  case $runtime in
    deno) read -r -a cmd <<<"$DENO run -A" ;;
    bun) read -r -a cmd <<<"$BUN" ;;
    *) echo "bench/run.sh: unknown runtime \"$runtime\" (deno, bun)" >&2 && exit 2 ;;
  esac
  for b in "${benches[@]}"; do
    args=()
    for ((i = 0; i < ${#pass[@]}; i++)); do
      if [[ ${pass[i]} == --json ]]; then
        args+=(--json "${pass[i + 1]%.json}.$b.$runtime.json") && i=$((i + 1))
      else
        args+=("${pass[i]}")
      fi
    done
    echo "=== $runtime: bench/${b}_bench.ts ${args[*]-}"
    "${cmd[@]}" "bench/${b}_bench.ts" "${args[@]+"${args[@]}"}" || failed+=("$b under $runtime (exit $?)")
    echo
  done
done
if ((${#failed[@]})); then
  printf 'bench/run.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
