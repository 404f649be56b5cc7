/**
 * Stands in for `node:test` in the browser bundle of the fixture suite: `describe` and
 * `it` (with `{ skip }`) register tests as the suite's modules load; {@linkcode run}
 * then runs them one after another and returns each result, for the page to report.
 *
 * @module
 */

type Body = () => unknown;

interface Entry {
  name: string;
  body?: Body;
  skip?: string | boolean;
  children?: Entry[];
}

/** One test's outcome; `name` is the path of describe names and the test's, joined by " > ". */
export interface Result {
  name: string;
  status: "passed" | "failed" | "skipped";
  ms: number;
  error?: string;
}

const root: Entry[] = [];
let current = root;

const hooks: Body[] = [];

/** A hook run once before every test (`node:test`'s `before` at the top level). */
export function before(fn: Body): void {
  hooks.push(fn);
}

/** A group of tests; `body` registers them (synchronously): `describe(name, body)` or `describe(name, { skip }, body)`. */
export function describe(name: string, options: { skip?: string | boolean } | Body, body?: Body): void {
  const [o, fn] = typeof options === "function" ? [{}, options] : [options ?? {}, body!];
  if (o.skip) {
    current.push({ name, skip: o.skip, body: () => {} });
    return;
  }
  const group: Entry = { name, children: [] };
  current.push(group);
  const outer = current;
  current = group.children!;
  try {
    const r = fn();
    if (r instanceof Promise) throw new TypeError(`describe("${name}"): an async body is not supported here`);
  } finally {
    current = outer;
  }
}

/** A test: `it(name, body)` or `it(name, { skip }, body)`. */
export function it(name: string, options: { skip?: string | boolean } | Body, body?: Body): void {
  const [o, fn] = typeof options === "function" ? [{}, options] : [options ?? {}, body];
  current.push({ name, body: fn, skip: o.skip });
}

export const test = it;

/**
 * Runs every registered test in order (those `select` refuses, by their full name, are
 * skipped); `onResult` sees each outcome as it comes.
 */
export async function run(onResult?: (r: Result) => void, select?: (name: string) => boolean): Promise<Result[]> {
  const results: Result[] = [];
  const walk = async (entries: Entry[], path: string[]) => {
    for (const e of entries) {
      const name = [...path, e.name];
      if (e.children) {
        await walk(e.children, name);
        continue;
      }
      const r: Result = { name: name.join(" > "), status: "passed", ms: 0 };
      const t0 = performance.now();
      if (e.skip || (select && !select(r.name))) r.status = "skipped";
      else {
        try {
          await e.body!();
        } catch (err) {
          r.status = "failed";
          r.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        }
      }
      r.ms = performance.now() - t0;
      results.push(r);
      onResult?.(r);
    }
  };
  for (const h of hooks) await h();
  await walk(root, []);
  return results;
}
