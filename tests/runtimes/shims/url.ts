/**
 * Stands in for `node:url` in the browser bundle of the fixture suite: there
 * `import.meta.url` is an http URL, and only its path is needed (shims/fs.ts finds
 * fixtures by base name).
 *
 * @module
 */

/** The path of a URL (any scheme). */
export function fileURLToPath(url: string | URL): string {
  return new URL(url).pathname;
}
