/**
 * Chromium (Debian's `chromium`, driven headless by playwright-core): pages served from
 * 127.0.0.1 load the unpacked package (its `default` files, which browsers and bundlers
 * take) and run the fixture suite (bundled by bundle.ts with the browser shims):
 *
 * - a page that is not cross-origin isolated, on js, wasm and WebGPU (Chromium's
 *   SwiftShader adapter, given `--enable-unsafe-webgpu`);
 * - a page under `Content-Security-Policy: default-src 'none'; script-src 'self'
 *   'wasm-unsafe-eval'`, on js and wasm, with no CSP violation reported;
 * - a page without 'wasm-unsafe-eval': WebAssembly is refused (so the policy is
 *   enforced and that keyword is what a user needs), the float64 reference still runs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Browser, chromium, type Page } from "playwright-core";
import { bundleSuite, fixtureCases, ROOT } from "./bundle.ts";
import { type Package, serve, type Server } from "./harness.ts";

/** Where Debian's package puts it (`.ci/run` installs it when absent). */
export const CHROMIUM: string = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** The policies of the pages, sent as HTTP headers. */
export const STRICT_CSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'";
const NO_WASM_CSP = "default-src 'none'; script-src 'self'";

/**
 * Flags: no network beyond the page (this machine's network is closed), and WebGPU,
 * which headless Chromium on Linux offers only with --enable-unsafe-webgpu (then as
 * SwiftShader, a software fallback adapter, where there is no GPU).
 */
export const FLAGS: string[] = [
  "--no-sandbox",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--enable-unsafe-webgpu",
];

interface SuiteReport {
  backends: string[];
  webgpu: string;
  seconds: number;
  passed: number;
  failed: number;
  skipped: number;
  perBackend: Record<string, { passed: number; failed: number; skipped: number }>;
  failures: { name: string; error: string }[];
}

interface Report {
  crossOriginIsolated: boolean;
  userAgent: string;
  suite?: SuiteReport;
  nowasm?: { js: number; wasm: number | string; init: string };
  threads?: { threads: number; note: string; sameBits: boolean; headLoss: number; headGrad: number };
  error?: string;
}

/** Opens `path`, waits for its report, and collects what the console said. */
export async function visit<R = Report>(
  browser: Browser,
  url: string,
  timeout: number,
): Promise<{ report: R; console: string[] }> {
  const page: Page = await browser.newPage();
  const messages: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") messages.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => messages.push(`pageerror: ${e.message}`));
  try {
    await page.goto(url);
    await page.waitForFunction(() => (globalThis as { SOFTMARGIN_REPORT?: unknown }).SOFTMARGIN_REPORT, null, {
      timeout,
      polling: 250,
    });
    const report = await page.evaluate(() => (globalThis as unknown as { SOFTMARGIN_REPORT: R }).SOFTMARGIN_REPORT);
    return { report, console: messages };
  } finally {
    await page.close();
  }
}

/** Asserts a page's suite: nothing failed, every case ran or was skipped on each of its backends. */
function assertPageSuite(label: string, report: Report, backends: string[]): SuiteReport {
  assert.equal(report.error, undefined, `${label}: ${report.error}`);
  const s = report.suite!;
  const cases = Object.values(fixtureCases()).reduce((a, b) => a + b, 0);
  console.log(
    `  ${label}: ${s.passed} passed, ${s.failed} failed, ${s.skipped} skipped in ${s.seconds.toFixed(1)} s ` +
      `(${JSON.stringify(s.perBackend)})`,
  );
  assert.equal(s.failed, 0, `${label}: failures:\n${s.failures.map((f) => `${f.name}: ${f.error}`).join("\n")}`);
  assert.deepEqual(s.backends, backends, `${label}: backends (WebGPU: ${s.webgpu})`);
  for (const b of backends) {
    const c = s.perBackend[b];
    assert.equal(c.passed + c.skipped, cases, `${label} ${b}: every fixture case`);
    assert.ok(c.passed > c.skipped, `${label} ${b}: most cases run`);
  }
  return s;
}

/** Registers the Chromium checks. */
export function browserChecks(pkg: Package): void {
  describe("Chromium (headless, playwright-core)", () => {
    let browser: Browser;
    let server: Server;
    let base: string;

    before(async () => {
      assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium)`);
      const dir = join(pkg.work, "browser");
      mkdirSync(dir);
      // The suite imports the package's files by URL, as a page without a bundler would.
      await bundleSuite(
        { platform: "browser", main: "../pkg/mod.js", cpu: "../pkg/cpu.js" },
        join(dir, "suite.js"),
        "browser_suite.ts",
      );
      for (const page of ["plain.html", "csp.html", "nowasm.html", "isolated.html"]) {
        copyFileSync(join(ROOT, "tests/runtimes/browser/page.html"), join(dir, page));
      }
      copyFileSync(join(ROOT, "tests/runtimes/browser/page.js"), join(dir, "page.js"));
      copyFileSync(join(ROOT, "tests/runtimes/threads_check.mjs"), join(dir, "threads_check.mjs"));
      const csp: Record<string, string> = { "/harness/csp.html": STRICT_CSP, "/harness/nowasm.html": NO_WASM_CSP };
      // Cross-origin isolation (shared memory, so threads): the page and every script it loads.
      const isolated = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
      server = await serve([
        { prefix: "/pkg/", dir: pkg.unpacked, headers: () => ({ "cross-origin-resource-policy": "same-origin" }) },
        {
          prefix: "/harness/",
          dir,
          headers: (path): Record<string, string> =>
            csp[path] ? { "content-security-policy": csp[path] } : path.startsWith("/harness/isolated") ? isolated : {},
        },
      ]);
      base = `${server.origin}/harness`;
      browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
      console.log(`  Chromium ${browser.version()}`);
    });

    after(async () => {
      await browser?.close();
      await server?.close();
    });

    it("a page that is not cross-origin isolated: the fixture suite on js, wasm and WebGPU", {
      timeout: 180_000,
    }, async () => {
      const { report } = await visit(browser, `${base}/plain.html?webgpu`, 170_000);
      assert.equal(report.crossOriginIsolated, false, "the page is not cross-origin isolated");
      const s = report.suite!;
      console.log(`  WebGPU: ${s?.webgpu}`);
      assertPageSuite("not isolated", report, s?.webgpu === "in use" ? ["js", "wasm", "webgpu"] : ["js", "wasm"]);
    });

    it(`a page under "${STRICT_CSP}": the fixture suite on js and wasm`, { timeout: 120_000 }, async () => {
      const { report, console: messages } = await visit(browser, `${base}/csp.html`, 110_000);
      assertPageSuite("strict CSP", report, ["js", "wasm"]);
      assert.deepEqual(messages, [], "no CSP violation or other error on the console");
    });

    it(
      "a cross-origin-isolated page runs WebAssembly on 2 threads (Web Workers); one that is not runs on one, saying why",
      {
        timeout: 60_000,
      },
      async () => {
        const { report } = await visit(browser, `${base}/isolated.html?threads`, 50_000);
        assert.equal(report.error, undefined, String(report.error));
        assert.equal(report.crossOriginIsolated, true, "the page is cross-origin isolated");
        const t = report.threads!;
        console.log(
          `  isolated: ${t.note}; head within ${t.headLoss.toExponential(1)} / ${t.headGrad.toExponential(1)}`,
        );
        assert.equal(t.threads, 2, t.note);
        assert.ok(t.sameBits, "crossEntropy on 2 threads: the same bits as on one");
        assert.ok(t.headLoss < 1e-6 && t.headGrad < 1e-5, `marginHead on 2 threads: ${t.headLoss}, ${t.headGrad}`);
        const plain = (await visit(browser, `${base}/plain.html?threads`, 50_000)).report;
        assert.equal(plain.error, undefined, String(plain.error));
        assert.equal(plain.threads!.threads, 1);
        assert.match(plain.threads!.note, /one thread: no shared memory/);
        assert.ok(plain.threads!.sameBits);
      },
    );

    it(
      "without 'wasm-unsafe-eval' WebAssembly is refused; the float64 reference runs",
      { timeout: 60_000 },
      async () => {
        const { report } = await visit(browser, `${base}/nowasm.html?nowasm`, 50_000);
        assert.equal(report.error, undefined, String(report.error));
        const r = report.nowasm!;
        console.log(`  without 'wasm-unsafe-eval': wasm → ${r.wasm}; init() → ${r.init}`);
        assert.ok(Math.abs(r.js - 0.3185397696) < 1e-6, `js crossEntropy ${r.js}, PyTorch 0.3185397696`);
        assert.equal(typeof r.wasm, "string", "compiling WebAssembly must be refused");
        assert.match(r.wasm as string, /CompileError|EvalError/);
      },
    );
  });
}
