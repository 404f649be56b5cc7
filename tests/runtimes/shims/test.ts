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

/** A group of tests; `body` registers them (synchronously). */
export function describe(name: string, body: Body): void {
  const group: Entry = { name, children: [] };
  current.push(group);
  const outer = current;
  current = group.children!;
  try {
    const r = body();
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

/** Runs every registered test in order; `onResult` sees each outcome as it comes. */
export async function run(onResult?: (r: Result) => void): Promise<Result[]> {
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
      if (e.skip) r.status = "skipped";
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
  await walk(root, []);
  return results;
}
