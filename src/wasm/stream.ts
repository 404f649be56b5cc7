/**
 * Streams `[n, c]` inputs through a row kernel in chunks of rows that fit in L2:
 * each chunk of each input is copied into the arena once, the kernel writes the
 * gradient chunks, and they are copied out while still in cache. Inputs and
 * outputs already in WebAssembly memory (see `alloc`) are used where they are.
 *
 * With a thread pool (src/wasm/pool.ts), a problem large enough to pay for waking the
 * workers runs on it. Inputs and outputs all in WebAssembly memory (`alloc`): the rows are
 * split into one run per thread. Otherwise a pipeline: the workers compute blocks of rows
 * from the front (at most `PIPE_BYTES` per buffer), each holding the block it computes and the
 * next, fed, while the calling thread drains their done blocks, feeds their next ones (workers
 * cannot read an ordinary array) and computes rows of its own from the back in between, as one
 * thread does. Rows are independent: either way the result is bit-identical to one thread.
 *
 * @module
 */
import type { Exports } from "./generated.ts";
import type { Matrix } from "../types.ts";
import type { Layout, Runtime } from "./runtime.ts";
import { type Pool, pool, type Recorder, split } from "./pool.ts";

/** Bytes per buffer per chunk: the chunk's buffers stay well inside a 1 MiB L2. */
const CHUNK_BYTES = 128 * 1024;
/**
 * Bytes per buffer per block of the pipeline: a block's work (~0.3 ms) dwarfs a hand-over (~30 us).
 * Twice that where the call makes a fresh output: a worker's two blocks (~1 ms) then cover the
 * caller's making of it (a 16 MB gradient: 0.5-0.9 ms of zeroing here, during which the worker
 * ran out of blocks: 0.93-0.97 of the time, bench/README.md, session 11).
 */
const PIPE_BYTES = 1 << 20;

/** Where a chunk's rows start, for each input and each output. */
export interface Chunk {
  /** Arena base (buffers placed with the layout are at `base + offset`). */
  base: number;
  /** First row and row count of the chunk. */
  r0: number;
  rows: number;
  /** Addresses of the chunk's rows in each input. */
  ins: number[];
  /** Addresses of the chunk's rows in each output. */
  outs: number[];
  /** The kernels to call: the module's, or a thread's recorder. */
  k: Recorder | Exports;
  /** The thread (0: the calling one): its index into per-thread scratch (see `threadsOf`). */
  thread: number;
}

/** How many threads a call may use: per-thread scratch buffers are laid out this many times. */
export function threadsOf(): number {
  return pool()?.active ?? 1;
}

/**
 * Elements per thread below which a row problem stays on one thread: waking a worker
 * takes about 30 us, the time of some 3e4 logits' cross-entropy. The pipeline of ordinary
 * arrays also feeds its first block alone, so it needs more; matrices in WebAssembly memory
 * (`alloc`) split from a quarter of that (256 x 1000 on two threads: 1.34x, bench/README.md).
 */
const MIN_PER_THREAD = 1 << 17, MIN_PER_THREAD_IN_PLACE = 1 << 15;

/**
 * Runs `kernel` over row chunks of `inputs` (each `[n, c]`), producing one `[n, c]`
 * gradient per entry of `outs` (the caller's buffer, or null for a fresh array).
 * With `inPlace`, output 0 may overwrite input 0's copied chunk (single-input
 * kernels that finish reading an element before writing it).
 * `setup(base)` fills the layout's buffers once the arena is placed. `parallel` false
 * keeps the problem on one thread (a kernel whose result the caller reads).
 */
export function streamRows(
  rt: Runtime,
  lay: Layout,
  n: number,
  c: number,
  inputs: Float32Array[],
  outs: (Matrix | null)[],
  inPlace: boolean,
  setup: (base: number) => void,
  kernel: (chunk: Chunk) => void,
  parallel = true,
): Float32Array[] {
  const p = parallel ? pool() : null;
  // Addresses first: placing the arena may grow memory and detach views of it.
  const inAt = inputs.map((x) => rt.addressOf(x));
  const outAt = outs.map((m) => (m ? rt.addressOf(m.data) : -1));
  const copiesIn = inAt.filter((a) => a < 0).length;
  const ownOut = outAt.map((a, k) => a < 0 && !(inPlace && k === 0 && inAt[0] < 0));
  const buffers = copiesIn + ownOut.filter(Boolean).length;
  const least = buffers > 0 ? MIN_PER_THREAD : MIN_PER_THREAD_IN_PLACE;
  const threads = p ? Math.min(p.active, Math.floor((n * c) / least)) : 1;
  if (p && threads > 1 && buffers > 0) {
    return pipeline(p, threads, rt, lay, n, c, inputs, outs, inAt, outAt, ownOut, setup, kernel);
  }
  const chunk = buffers === 0 ? n : Math.min(n, Math.max(1, Math.floor(CHUNK_BYTES / (c * 4))));
  const inBuf = inAt.map((a) => (a < 0 ? lay.add(chunk * c * 4) : -1));
  const outBuf = outAt.map((_, k) => (ownOut[k] ? lay.add(chunk * c * 4) : k === 0 && outAt[0] < 0 ? inBuf[0] : -1));
  const base = rt.arena(lay.size);
  setup(base);
  const results = outs.map((m, k) => (outAt[k] >= 0 ? null : (m?.data ?? new Float32Array(n * c))));
  for (let r0 = 0; r0 < n; r0 += chunk) {
    const rows = Math.min(chunk, n - r0);
    const ins = inAt.map((a, k) => {
      if (a >= 0) return a + r0 * c * 4;
      rt.copy(
        rt.f32.subarray((base + inBuf[k]) >>> 2, ((base + inBuf[k]) >>> 2) + rows * c),
        inputs[k].subarray(r0 * c, (r0 + rows) * c),
      );
      return base + inBuf[k];
    });
    const o = outAt.map((a, k) => (a >= 0 ? a + r0 * c * 4 : base + outBuf[k]));
    if (threads <= 1 || !p) kernel({ base, r0, rows, ins, outs: o, k: rt.k, thread: 0 });
    else {
      const programs = Array.from({ length: threads }, (_, t): number[] => {
        const [a, b] = split(rows, threads, t), program: number[] = [];
        const at = (x: number) => x + a * c * 4;
        if (b > a) {
          kernel({
            base,
            r0: r0 + a,
            rows: b - a,
            ins: ins.map(at),
            outs: o.map(at),
            k: p.recorder(program),
            thread: t,
          });
        }
        return program;
      });
      p.run(programs);
    }
    results.forEach((dst, k) => {
      if (dst) rt.copy(dst.subarray(r0 * c, (r0 + rows) * c), rt.f32.subarray(o[k] >>> 2, (o[k] >>> 2) + rows * c));
    });
  }
  // Outputs in WebAssembly memory: a fresh view (the caller's may be detached by growth).
  return results.map((r, k) => r ?? new Float32Array(rt.buffer, outAt[k], n * c));
}

/**
 * `streamRows` on `threads` threads with some inputs or outputs in ordinary arrays: the
 * workers compute blocks of rows from the front, each from its own two sets of buffers (by
 * the block's parity), while the calling thread drains their done blocks, feeds their next
 * ones (in that order: an output may share its input's buffer) and, in between, computes rows
 * of its own from the back, in chunks through its own buffers (as one thread does). Each
 * worker holds two blocks (`Pool.post`): the one it computes and the next, fed, so it goes on
 * without waiting for the caller to finish a chunk. Blocks grow from a few of the caller's
 * chunks (the first is fed before any worker starts) and shrink again as the rows left do (a
 * block takes at most half of a worker's share of them), so the caller has rows of its own to
 * compute while the last blocks run.
 */
function pipeline(
  p: Pool,
  threads: number,
  rt: Runtime,
  lay: Layout,
  n: number,
  c: number,
  inputs: Float32Array[],
  outs: (Matrix | null)[],
  inAt: number[],
  outAt: number[],
  ownOut: boolean[],
  setup: (base: number) => void,
  kernel: (chunk: Chunk) => void,
): Float32Array[] {
  const workers = threads - 1, rowBytes = c * 4;
  const fresh = outs.some((m, k) => outAt[k] < 0 && !m);
  const chunk = Math.min(Math.ceil(n / threads), Math.max(1, Math.floor(((fresh ? 2 : 1) * PIPE_BYTES) / rowBytes)));
  const mine = Math.max(1, Math.min(chunk, Math.floor(CHUNK_BYTES / rowBytes)));
  const buffers = (rows: number) => {
    const bytes = rows * rowBytes, inBuf = inAt.map((a) => (a < 0 ? lay.add(bytes) : -1));
    const outBuf = outAt.map((_, k) => (ownOut[k] ? lay.add(bytes) : k === 0 && outAt[0] < 0 ? inBuf[0] : -1));
    return { inBuf, outBuf };
  };
  const sets = Array.from({ length: 2 * workers }, () => buffers(chunk)), callers = buffers(mine);
  const base = rt.arena(lay.size);
  setup(base);
  // Fresh outputs are made once the workers run: a fresh array's zeroing or first-touch page faults
  // (docs/PERFORMANCE.md) then overlap the workers' first blocks instead of delaying them.
  let results: (Float32Array | null)[] | undefined;
  const made = () => (results ??= outs.map((m, k) => (outAt[k] >= 0 ? null : (m?.data ?? new Float32Array(n * c)))));
  /** Where rows [r0, r0 + rows) are read and written, the copied ones in `set`. */
  const place = (set: { inBuf: number[]; outBuf: number[] }, r0: number) => ({
    ins: inAt.map((a, k) => (a >= 0 ? a + r0 * rowBytes : base + set.inBuf[k])),
    o: outAt.map((a, k) => (a >= 0 ? a + r0 * rowBytes : base + set.outBuf[k])),
  });
  const feed = (r0: number, rows: number, ins: number[]) =>
    ins.forEach((at, k) =>
      inAt[k] < 0 &&
      rt.copy(rt.f32.subarray(at >>> 2, (at >>> 2) + rows * c), inputs[k].subarray(r0 * c, (r0 + rows) * c))
    );
  const drain = (r0: number, rows: number, o: number[]) =>
    made().forEach((dst, k) =>
      dst && rt.copy(dst.subarray(r0 * c, (r0 + rows) * c), rt.f32.subarray(o[k] >>> 2, (o[k] >>> 2) + rows * c))
    );
  type Block = { r0: number; rows: number; o: number[]; seq: number };
  // The workers' rows are [0, front), the caller's [back, n).
  let front = 0, back = n;
  /** Per worker: its blocks posted and not drained (at most two), and how many it was given. */
  const held: Block[][] = Array.from({ length: workers }, () => []), given: number[] = Array(workers).fill(0);
  /**
   * Worker w's next block, fed and posted, if rows are left for it: at most `chunk` rows and half a
   * worker's share of the rows left, but at least the caller's chunk (rows left below it are the
   * caller's). A worker's first blocks are smaller (4 of the caller's chunks, doubling), so that it
   * starts soon, unless the call makes a fresh output: then they are whole, to cover its making.
   */
  const give = (w: number): boolean => {
    if (back - front <= mine) return false;
    const b = given[w]++, left = Math.ceil((back - front) / (2 * workers));
    const grow = fresh ? chunk : mine * 2 ** Math.min(b + 2, 30);
    const r0 = front, rows = Math.min(chunk, grow, Math.max(mine, left), back - front);
    front += rows;
    const { ins, o } = place(sets[2 * w + (b % 2)], r0), program: number[] = [];
    feed(r0, rows, ins);
    kernel({ base, r0, rows, ins, outs: o, k: p.recorder(program), thread: w + 1 });
    held[w].push({ r0, rows, o, seq: p.post(w, program) });
    return true;
  };
  /** The caller's next chunk of rows, from the back. */
  const own = () => {
    const rows = Math.min(mine, back - front), r0 = (back -= rows), { ins, o } = place(callers, r0);
    feed(r0, rows, ins);
    kernel({ base, r0, rows, ins, outs: o, k: rt.k, thread: 0 });
    drain(r0, rows, o);
  };
  let error: unknown = null;
  p.runs++;
  try {
    for (let w = 0; w < workers; w++) give(w);
    for (let w = 0; w < workers; w++) give(w);
    made();
    for (;;) {
      // Done blocks drained and their buffers given the worker's next block; else a chunk of
      // the caller's own; else (no rows left) the oldest block waited for.
      let moved = false;
      for (let w = 0; w < workers; w++) {
        const b = held[w][0];
        if (b && p.reached(w, b.seq)) {
          held[w].shift();
          drain(b.r0, b.rows, b.o);
          give(w);
          moved = true;
        }
      }
      if (moved) continue;
      if (back > front) own();
      else {
        const w = held.findIndex((h) => h.length > 0);
        if (w < 0) break;
        p.wait(w, held[w][0].seq);
      }
    }
  } catch (e) {
    error = e;
  }
  p.settle(error);
  return made().map((r, k) => r ?? new Float32Array(rt.buffer, outAt[k], n * c));
}
