// Backend selection (src/backend.ts): "auto" falls back to the float64 reference, and
// says why, when compiling WebAssembly is refused (a Content-Security-Policy without
// 'wasm-unsafe-eval', an edge runtime); init refuses unknown options.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { init } from "../mod.ts";
import { assertThrowsNamed } from "./helpers/assert.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const isDeno = typeof (globalThis as Any).Deno !== "undefined";

describe("backend selection", () => {
  it("auto uses js when compiling WebAssembly is refused, and says why", { skip: !isDeno && "needs Deno" }, () => {
    const mod = fileURLToPath(new URL("../mod.ts", import.meta.url));
    const script = `
      WebAssembly.compile = () => Promise.reject(new WebAssembly.CompileError("refused by the page's CSP"));
      const { init } = await import(${JSON.stringify(mod)});
      const l = await init({ backend: "auto" });
      const logits = { data: new Float32Array([0, 0]), shape: [1, 2] };
      const { loss } = await l.crossEntropy.forward({ logits, labels: [0] });
      console.log(JSON.stringify({ backend: l.backend, note: l.note, loss }));`;
    const deno = (globalThis as Any).Deno.execPath();
    const r = spawnSync(deno, ["eval", "--quiet", script], {
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assert.equal(out.backend === "js" || out.backend === "webgpu", true, out.note);
    if (out.backend === "js") assert.match(out.note, /wasm-unsafe-eval/);
    assert.ok(Math.abs(out.loss - Math.LN2) < 1e-12);
  });

  it("init refuses an unknown option and a bad backend", async () => {
    await assertThrowsNamed(() => init({ backnd: "js" } as Any), TypeError, '"backnd"', "backend");
    await assertThrowsNamed(() => init({ backend: "cuda" } as Any), RangeError, "options.backend", '"cuda"');
  });
});
