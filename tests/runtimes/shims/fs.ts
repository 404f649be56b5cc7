/**
 * Stands in for `node:fs` in the bundled fixture suite: the PyTorch fixtures
 * (tests/fixtures/*.json) are embedded at bundle time (`FIXTURES`, defined by the
 * bundler), so the suite needs no file system, no `--allow-read` and no fetch, and runs
 * the same in Node, Bun, Deno and a browser. Files are found by their base name.
 *
 * @module
 */

declare const FIXTURES: Record<string, string>;
const files: Record<string, string> = FIXTURES; // named once: the bundler inlines it where it is named

const base = (path: string | URL) => String(path).replace(/\/+$/, "").split(/[\\/]/).pop() ?? "";

/** The embedded text of a fixture file. */
export function readFileSync(path: string | URL): string {
  const text = files[base(path)];
  if (text === undefined) throw new Error(`ENOENT: ${path} is not an embedded fixture`);
  return text;
}

/** The embedded fixture files' names (whatever the directory). */
export function readdirSync(_dir: string | URL): string[] {
  return Object.keys(files).sort();
}
