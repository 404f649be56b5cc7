/**
 * What the runtime checks share: running a command with a time limit, a static HTTP
 * server on 127.0.0.1 that records what it served, temporary folders, and reading the
 * summaries of `node --test`, `bun test` and `deno test`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fixtureCases } from "./bundle.ts";

/** A command line from an environment variable (`DENO="npx -y deno@2.9.6"`), or the default. */
export function command(env: string, fallback: string): string[] {
  return (process.env[env] || fallback).split(/\s+/).filter((s) => s);
}

/** Deno and Bun as tests/run.sh runs them. */
export const DENO: string[] = command("DENO", "npx -y deno@2.9.6");
export const BUN: string[] = command("BUN", "npx -y bun@1.4.4");

/** What a command printed (stdout and stderr interleaved) and its exit status. */
export interface Ran {
  code: number | null;
  output: string;
  ms: number;
}

/** Runs `argv` in `cwd`, killing it (and its children) after `timeoutMs`. */
export function exec(
  argv: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Ran> {
  const t0 = performance.now();
  return new Promise((done, failed) => {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: options.cwd,
      env: { ...process.env, NO_COLOR: "1", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[killed after ${options.timeoutMs} ms]`;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* already gone */ }
    }, options.timeoutMs ?? 120_000);
    child.on("error", failed);
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, output, ms: performance.now() - t0 });
    });
  });
}

/** Runs `argv` and fails with its output unless it exits with status 0. */
export async function mustRun(argv: string[], options: Parameters<typeof exec>[1] = {}): Promise<Ran> {
  const r = await exec(argv, options);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} exited with ${r.code}:\n${tail(r.output)}`);
  return r;
}

/** The last `n` characters of a long output. */
export function tail(s: string, n = 6000): string {
  return s.length > n ? "…" + s.slice(-n) : s;
}

/** A fresh temporary folder. */
export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `softmargin-${name}-`));
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".ts": "application/typescript; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".md": "text/markdown; charset=utf-8",
};

/** A route: a folder served under a URL prefix, with extra response headers for some paths. */
export interface Mount {
  prefix: string;
  dir: string;
  headers?: (path: string) => Record<string, string>;
}

/** A static server on 127.0.0.1 (a free port); `served` lists every path requested. */
export interface Server {
  origin: string;
  port: number;
  served: string[];
  close(): Promise<void>;
}

/** Serves `mounts` (the first matching prefix wins) until `close()`. */
export async function serve(mounts: Mount[]): Promise<Server> {
  const served: string[] = [];
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    served.push(path);
    const mount = mounts.find((m) => path.startsWith(m.prefix));
    const file = mount && normalize(join(mount.dir, path.slice(mount.prefix.length)));
    if (!mount || !file!.startsWith(normalize(mount.dir)) || !statSync(file!, { throwIfNoEntry: false })?.isFile()) {
      res.writeHead(404).end(`not found: ${path}`);
      return;
    }
    res.writeHead(200, {
      "content-type": TYPES[extname(file!)] ?? "application/octet-stream",
      "cache-control": "no-store",
      ...mount.headers?.(path),
    });
    res.end(readFileSync(file!));
  };
  const server = createServer(handle);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as { port: number }).port;
  return {
    origin: `http://127.0.0.1:${port}`,
    port,
    served,
    close: () => new Promise((ok) => server.close(() => ok())),
  };
}

/** Passed, failed and skipped tests of a run. */
export interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** The summary of `node --test --test-reporter=tap` ("# pass 12", "# fail 0", "# skipped 3"). */
export function countNodeTap(out: string): Counts {
  const n = (k: string) => Number(out.match(new RegExp(`^# ${k} (\\d+)$`, "m"))?.[1] ?? NaN);
  return { passed: n("pass"), failed: n("fail"), skipped: n("skipped") };
}

/** The summary of `bun test` (" 12 pass", " 0 fail", " 3 skip"). */
export function countBun(out: string): Counts {
  const n = (k: string) => Number(out.match(new RegExp(`^\\s*(\\d+) ${k}$`, "m"))?.[1] ?? 0);
  return { passed: n("pass"), failed: n("fail"), skipped: n("skip") };
}

/**
 * The leaf tests of `deno test` (node:test's `it` inside `describe` are steps):
 * "name ... ok", "name ... FAILED", "name ... ignored", less the groups that enclose them.
 */
export function countDeno(out: string): Counts {
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const open = new Map<string, number>();
  for (const line of out.split("\n")) {
    if (/ \.\.\.$/.test(line)) {
      open.set(line, (open.get(line) ?? 0) + 1);
      continue;
    }
    const m = line.match(/^(.*) \.\.\. (ok|FAILED|ignored)( \(.*\))?$/);
    if (!m) continue;
    const key = `${m[1]} ...`;
    if ((open.get(key) ?? 0) > 0) {
      open.set(key, open.get(key)! - 1);
      continue;
    }
    if (m[2] === "ok") counts.passed++;
    else if (m[2] === "FAILED") counts.failed++;
    else counts.skipped++;
  }
  return counts;
}

/** The distinct skip reasons in a node:test TAP report ("# SKIP reason"). */
export function skipReasons(out: string): string[] {
  return [...new Set([...out.matchAll(/# SKIP (.+)$/gm)].map((m) => m[1].trim()))].sort();
}

/** The package under test: its tarball, unpacked, and installed in a fresh project. */
export interface Package {
  /** The temporary folder everything lives in. */
  work: string;
  tarball: string;
  /** The tarball's contents (`package/` of the tarball). */
  unpacked: string;
  /** A fresh Node project with the tarball (and @types/node) installed. */
  project: string;
  /** Paths in the tarball, from `npm pack --json`. */
  files: string[];
}

/** Fixture tests a full run has on `backends` backends (every case of every file on each). */
export function expectedTests(backends: number): number {
  return Object.values(fixtureCases()).reduce((a, b) => a + b, 0) * backends;
}

/** Asserts a fixture-suite run: nothing failed, and every test of every file ran or was skipped as not exported. */
export function assertSuite(label: string, counts: Counts, backends: number, output: string): void {
  console.log(`${label}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
  assert.equal(counts.failed, 0, `${label}: ${counts.failed} fixture tests failed:\n${tail(output)}`);
  assert.equal(
    counts.passed + counts.skipped,
    expectedTests(backends),
    `${label}: expected ${expectedTests(backends)} fixture tests (every case on ${backends} backends), ` +
      `got ${counts.passed + counts.skipped}:\n${tail(output)}`,
  );
  assert.ok(counts.passed > counts.skipped, `${label}: most fixture tests must run, ${counts.skipped} were skipped`);
}
