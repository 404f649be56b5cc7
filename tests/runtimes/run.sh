#!/usr/bin/env bash
# The runtime tests of issue 10 (tests/runtimes/main.ts): builds the npm package, packs
# it, and runs it in Node, Bun, Deno (URL import), Chromium and workerd. Installs what
# it needs that npm ci does not: Debian's chromium when absent.
#
#   bash tests/runtimes/run.sh                     # after npm ci
#   SOFTMARGIN_KEEP=1 bash tests/runtimes/run.sh   # keep the temporary projects
#   DENO=/path/to/deno BUN=/path/to/bun bash tests/runtimes/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NO_COLOR=1

if ! command -v chromium >/dev/null; then
  echo "=== runtimes: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

# The orchestrator runs under Node: bundled (TypeScript → one ESM file) into node_modules/.cache,
# where its packages (esbuild, playwright-core, miniflare) resolve from this repository's node_modules.
out=node_modules/.cache/softmargin-runtimes
mkdir -p "$out"
npx esbuild tests/runtimes/main.ts --bundle --platform=node --format=esm --target=node20 \
  --packages=external --log-level=warning --outfile="$out/main.mjs"
start=$SECONDS
status=0
node --test-reporter=spec "$out/main.mjs" || status=$?
echo "=== runtimes: $((SECONDS - start))s, exit status $status"
exit "$status"
