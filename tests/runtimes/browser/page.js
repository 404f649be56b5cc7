// The page script of tests/runtimes/browser_check.ts, served from 127.0.0.1 beside the
// suite bundle (suite.js) and the unpacked package (../pkg/). It leaves its report in
// globalThis.SOFTMARGIN_REPORT:
//   ?webgpu   the fixture suite, with WebGPU when the browser has an adapter;
//   (nothing) the fixture suite on js and wasm;
//   ?nowasm   no suite: what a page whose CSP lacks 'wasm-unsafe-eval' can and cannot do;
//   ?threads  no suite: init({ threads: 2 }), and crossEntropy and marginHead on 2 threads against 1.
const params = new URLSearchParams(location.search);
const report = { crossOriginIsolated: globalThis.crossOriginIsolated, userAgent: navigator.userAgent };

/** The fixture suite's outcome: counts per backend and every failure. */
async function suite() {
  globalThis.SOFTMARGIN_SUITE_WEBGPU = params.has("webgpu");
  const { run, backends, webgpuMissing } = await import("./suite.js");
  const t0 = performance.now();
  const results = await run();
  const perBackend = {};
  for (const r of results) {
    const backend = r.name.split(" > ")[1];
    perBackend[backend] ??= { passed: 0, failed: 0, skipped: 0 };
    perBackend[backend][r.status]++;
  }
  return {
    backends: backends.map((b) => b.name),
    webgpu: webgpuMissing || "in use",
    seconds: (performance.now() - t0) / 1000,
    passed: results.filter((r) => r.status === "passed").length,
    failed: results.filter((r) => r.status === "failed").length,
    skipped: results.filter((r) => r.status === "skipped").length,
    perBackend,
    failures: results.filter((r) => r.status === "failed").slice(0, 20),
  };
}

/** Under a CSP without 'wasm-unsafe-eval': the float64 reference runs, WebAssembly does not. */
async function noWasm() {
  const { js, wasm } = await import("../pkg/cpu.js");
  const { init } = await import("../pkg/mod.js");
  const logits = { data: new Float32Array([2, 1, 0.1, 0.5, 2.5, 0.3]), shape: [2, 3] };
  const out = { js: js.crossEntropy.forward({ logits, labels: [0, 1] }).loss };
  try {
    out.wasm = wasm.crossEntropy.forward({ logits, labels: [0, 1] }).loss;
  } catch (e) {
    out.wasm = `${e.name}: ${e.message}`;
  }
  try {
    const losses = await init();
    out.init = `${losses.backend}: ${losses.note}`;
  } catch (e) {
    out.init = `${e.name}: ${e.message}`;
  }
  return out;
}

/** The thread pool (threads_check.mjs, shared with the Node and Bun check). */
async function threads() {
  const { init } = await import("../pkg/mod.js");
  const { alloc } = await import("../pkg/cpu.js");
  const { threadsCheck } = await import("./threads_check.mjs");
  return await threadsCheck(init, alloc);
}

try {
  if (params.has("nowasm")) report.nowasm = await noWasm();
  else if (params.has("threads")) report.threads = await threads();
  else report.suite = await suite();
} catch (e) {
  report.error = `${e.name}: ${e.message}\n${e.stack}`;
}
globalThis.SOFTMARGIN_REPORT = report;
