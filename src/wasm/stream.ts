/**
 * Streams an `[n, c]` input through a row kernel in chunks of rows that fit in
 * L2: each chunk is copied into the arena once, the kernel writes its gradient
 * over it in place, and the chunk is copied out while still in cache. Inputs and
 * outputs already in WebAssembly memory (see `alloc`) are used where they are.
 *
 * @module
 */
import type { Matrix } from "../types.ts";
import type { Layout, Runtime } from "./runtime.ts";

/** Bytes of input per chunk: a few of these stay well inside a 1 MiB L2. */
const CHUNK_BYTES = 128 * 1024;

/** What a streamed kernel produced: per-row values and the gradient (when asked for). */
export interface Streamed {
  rows: Float64Array[];
  grad?: Float32Array;
}

/**
 * Runs `kernel(base, r0, rows, zPtr, gPtr)` over row chunks. `setup(base)` fills
 * the layout's buffers once the arena is placed; `collect(base)` reads results.
 */
export function streamRows(
  rt: Runtime,
  lay: Layout,
  n: number,
  c: number,
  input: Float32Array,
  grad: boolean,
  out: Matrix | null,
  setup: (base: number) => void,
  kernel: (base: number, r0: number, rows: number, z: number, g: number) => void,
  collect: (base: number) => Float64Array[],
): Streamed {
  // Addresses first: placing the arena may grow memory and detach views of it.
  const inPtr = rt.addressOf(input);
  const outPtr = out ? rt.addressOf(out.data) : -1;
  const direct = inPtr >= 0 && (!grad || outPtr >= 0);
  const chunk = direct ? n : Math.min(n, Math.max(1, Math.floor(CHUNK_BYTES / (c * 4))));
  const buf = direct ? -1 : lay.add(chunk * c * 4);
  const base = rt.arena(lay.size);
  setup(base);
  const gradOut = grad && outPtr < 0 ? (out?.data ?? new Float32Array(n * c)) : undefined;
  for (let r0 = 0; r0 < n; r0 += chunk) {
    const rows = Math.min(chunk, n - r0);
    let z = inPtr + r0 * c * 4;
    if (inPtr < 0) {
      z = base + buf;
      rt.f32.set(input.subarray(r0 * c, (r0 + rows) * c), z >>> 2);
    }
    // Copied chunks are overwritten by their gradient in place.
    const g = !grad ? 0 : outPtr >= 0 ? outPtr + r0 * c * 4 : base + buf;
    kernel(base, r0, rows, z, g);
    if (gradOut) gradOut.set(rt.f32.subarray((base + buf) >>> 2, ((base + buf) >>> 2) + rows * c), r0 * c);
  }
  return { rows: collect(base), grad: grad ? (gradOut ?? out!.data) : undefined };
}
