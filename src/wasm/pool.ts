/**
 * The thread pools of the WebAssembly backend: a pool is `threads - 1` workers and the
 * calling thread, every one running its own instance of the same module on the process's
 * one shared `WebAssembly.Memory`. A parallel call is a list of kernel calls per thread (a
 * "program", recorded by calling the kernels on a {@linkcode Recorder} as one would on
 * the module): the caller writes the workers' programs into the shared memory, wakes the
 * workers, runs its own program meanwhile, and waits until every worker is done. Kernels
 * never allocate and the host laid out every buffer, so threads share nothing but the
 * buffers they are given, and each writes only its own.
 *
 * A pool belongs to the `Losses` instances that asked for its thread count: `init` takes
 * one with {@linkcode acquirePool} (instances asking for the same count share it, counted)
 * and builds its kernels with {@linkcode onPool}; `dispose` gives it back with
 * {@linkcode releasePool}, which stops the workers once no instance uses it. A kernel finds
 * the pool of the call in progress with {@linkcode pool}: null outside such a call (the
 * synchronous `wasm` losses of `cpu.ts`, a one-thread instance), so it runs on one thread.
 *
 * Workers are `node:worker_threads` workers where that module exists (Node, Deno, Bun:
 * unreferenced, so they never keep a process alive) and Web Workers otherwise (browsers;
 * shared memory there needs a cross-origin-isolated page). Without shared memory or
 * workers (Cloudflare Workers, a page that is not isolated) the backend runs on one
 * thread, and {@linkcode acquirePool} says why.
 *
 * @module
 */
import type { Exports } from "./generated.ts";
import { currentRuntime, type Runtime, sharedRuntime } from "./runtime.ts";

/**
 * Int32 slots of each worker's control block: the last program posted and the last done
 * (sequence numbers, wrapping), a failure flag, the stop flag, and the address and length of
 * the program of each parity (a worker runs its programs in order; two may be posted at once).
 */
const SEQ = 0, DONE = 1, ERROR = 2, STOP = 3, PTR = 4, LEN = 5;
const SLOT = 16; // int32s per worker (one 64-byte line each)
/** Programs a worker may have posted and not done: the one it runs and the next. */
const QUEUE = 2;
/**
 * Loads of the control word a thread spins through before it sleeps (about 0.1-0.2 ms): a
 * sleeping thread wakes 30-70 us after a notify on this VM (bench/README.md, session 10).
 */
const SPIN = 10000;

/**
 * The worker's code, the same for both kinds of worker: instantiate the module on the
 * shared memory, then, program after program, wait for the next sequence number, run the
 * program of its parity, and report.
 */
const WORKER = `"use strict";
const port = typeof require === "function" ? require("node:worker_threads").parentPort : self;
const listen = (f) => (port.on ? port.on("message", f) : (port.onmessage = (e) => f(e.data)));
listen(({ module, memory, control, slot, names }) => {
  const c = new Int32Array(control, slot * ${SLOT * 4}, ${SLOT});
  let fns;
  try {
    const ex = new WebAssembly.Instance(module, {
      env: { memory, abort() { throw new Error("softmargin: WebAssembly abort"); } },
    }).exports;
    fns = names.map((n) => ex[n]);
  } catch (e) {
    port.postMessage(String(e));
    return;
  }
  port.postMessage("ready");
  let seen = 0;
  for (;;) {
    for (let i = 0; i < ${SPIN} && Atomics.load(c, ${SEQ}) === seen; i++);
    while (Atomics.load(c, ${SEQ}) === seen && !Atomics.load(c, ${STOP})) Atomics.wait(c, ${SEQ}, seen);
    if (Atomics.load(c, ${STOP})) return;
    seen = (seen + 1) | 0;
    try {
      const q = 2 * (seen & 1), p = new Float64Array(memory.buffer, c[${PTR} + q] >>> 0, c[${LEN} + q]);
      for (let i = 0; i < p.length; i += 2 + p[i + 1]) fns[p[i]](...p.subarray(i + 2, i + 2 + p[i + 1]));
    } catch (e) {
      Atomics.store(c, ${ERROR}, 1);
    }
    Atomics.store(c, ${DONE}, seen);
    Atomics.notify(c, ${DONE});
  }
});
`;

/** The kernels as a recorder: each call appends itself to a program instead of running. */
export type Recorder = Omit<Exports, "memory">;

/** A worker of either kind, reduced to what the pool uses. */
interface AnyWorker {
  post(message: unknown): void;
  /** Resolves with the worker's first message ("ready", or why it could not start). */
  first: Promise<string>;
  /** Stops the worker; resolves once it has stopped. */
  terminate(): Promise<void>;
}

/** Whether this thread may block in `Atomics.wait` (not a browser's main thread). */
const canWait = (() => {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
})();

/** The thread pool (see the module). */
export class Pool {
  readonly threads: number;
  readonly rt: Runtime;
  /** Parallel calls run so far (for tests). */
  runs = 0;
  /** The `Losses` instances holding this pool ({@linkcode acquirePool}, {@linkcode releasePool}). */
  users = 0;
  /** Null while the workers run; once {@linkcode Pool.close}d, resolves when they have all stopped. */
  closed: Promise<void> | null = null;
  /** The threads calls may use, at most `threads` (benchmarks compare counts on one pool). */
  active: number;
  #workers: AnyWorker[];
  #control: Int32Array;
  #names: string[];
  #index: Map<string, number>;
  /** Per worker, the sequence number of the last program posted. */
  #posted: number[];
  /** Per worker and parity, the program buffer (address, bytes) in WebAssembly memory. */
  #at: number[];
  #bytes: number[];

  constructor(rt: Runtime, workers: AnyWorker[], control: Int32Array, names: string[]) {
    this.rt = rt;
    this.#workers = workers;
    this.#control = control;
    this.#names = names;
    this.#index = new Map(names.map((n, i) => [n, i]));
    this.threads = this.active = workers.length + 1;
    this.#posted = workers.map(() => 0);
    this.#at = Array(QUEUE * workers.length).fill(0);
    this.#bytes = Array(QUEUE * workers.length).fill(0);
  }

  /** A recorder appending to `program` (a flat list: kernel index, argument count, arguments). */
  recorder(program: number[]): Recorder {
    return new Proxy({} as Recorder, {
      get: (_, name) => {
        const at = this.#index.get(name as string);
        if (at === undefined) throw new TypeError(`softmargin: no kernel ${String(name)}`);
        return (...args: number[]) => program.push(at, args.length, ...args);
      },
    });
  }

  /**
   * Runs program t on thread t (0: this thread, directly; the others on the workers) and
   * returns when all are done. Programs may be fewer than the threads. `alongside` runs on
   * this thread once the workers are woken, before its own program (a caller feeding the
   * workers' next buffers while they compute: src/wasm/head_threads.ts); its `done()` says
   * whether every worker has finished.
   */
  run(programs: number[][], alongside?: (done: () => boolean) => void): void {
    const k = this.rt.k as unknown as Record<string, (...a: number[]) => void>;
    this.runs++;
    const seqs = programs.slice(1).map((p, w) => this.post(w, p));
    let error: unknown = null;
    try {
      alongside?.(() => seqs.every((s, w) => this.reached(w, s)));
      const p = programs[0] ?? [];
      for (let i = 0; i < p.length; i += 2 + p[i + 1]) k[this.#names[p[i]]](...p.slice(i + 2, i + 2 + p[i + 1]));
    } catch (e) {
      error = e;
    }
    this.settle(error);
  }

  /**
   * Posts `program` to worker `w` (thread w + 1) and returns its sequence number. A worker
   * runs its programs in order and holds at most `QUEUE` (the one it runs and the next, so
   * that it goes on without waiting for the caller: src/wasm/stream.ts); with as many
   * posted and not done, this first waits for the oldest.
   */
  post(w: number, program: number[]): number {
    const seq = (this.#posted[w] + 1) | 0, q = w * QUEUE + (seq & 1);
    this.wait(w, (seq - QUEUE) | 0); // the last program of this parity, whose buffer this one takes
    if (program.length * 8 > this.#bytes[q]) {
      if (this.#at[q]) this.rt.free(this.#at[q]);
      this.#at[q] = 0;
      this.#at[q] = this.rt.malloc(program.length * 8);
      this.#bytes[q] = program.length * 8;
    }
    new Float64Array(this.rt.buffer, this.#at[q], program.length).set(program);
    const c = w * SLOT;
    this.#control[c + PTR + 2 * (seq & 1)] = this.#at[q];
    this.#control[c + LEN + 2 * (seq & 1)] = program.length;
    this.#posted[w] = seq;
    Atomics.store(this.#control, c + SEQ, seq);
    Atomics.notify(this.#control, c + SEQ);
    return seq;
  }

  /** Whether worker `w` has done its program `seq` (sequence numbers wrap: compared as int32 differences). */
  reached(w: number, seq: number): boolean {
    return ((Atomics.load(this.#control, w * SLOT + DONE) - seq) | 0) >= 0;
  }

  /** Waits until worker `w` has done its program `seq`: spins a while, then sleeps. */
  wait(w: number, seq: number): void {
    for (let i = 0; i < SPIN && !this.reached(w, seq); i++);
    const at = w * SLOT + DONE;
    // A timed wait: a missed wake-up costs at most 1 ms (Bun's Web Worker missed one: docs/SCALE.md).
    while (!this.reached(w, seq)) {
      if (canWait) Atomics.wait(this.#control, at, Atomics.load(this.#control, at), 1);
    }
  }

  /**
   * Waits until every worker has done every program posted, then throws `error` if given,
   * else a worker's failure (a WebAssembly abort) if there was one.
   */
  settle(error: unknown = null): void {
    let failed = false;
    this.#posted.forEach((seq, w) => {
      this.wait(w, seq);
      if (Atomics.exchange(this.#control, w * SLOT + ERROR, 0)) failed = true;
    });
    if (error) throw error;
    if (failed) throw new Error("softmargin: WebAssembly abort in a worker thread");
  }

  /**
   * Whether calls may run on this pool: not closed, and its memory still the process's
   * (`useWasmVariant` and `setWasmModule` replace the runtime; the workers hold the old one).
   */
  live(): boolean {
    return this.closed === null && this.rt === currentRuntime();
  }

  /** Stops the workers and frees the programs' buffer (idempotent); resolves when the workers have stopped. */
  close(): Promise<void> {
    if (this.closed) return this.closed;
    for (let w = 0; w < this.#workers.length; w++) {
      Atomics.store(this.#control, w * SLOT + STOP, 1);
      Atomics.notify(this.#control, w * SLOT + SEQ);
    }
    this.#at.forEach((at) => at && this.rt.free(at));
    this.#at.fill(0);
    this.#bytes.fill(0);
    this.closed = Promise.all(this.#workers.map((w) => w.terminate())).then(() => {});
    this.#workers = [];
    return this.closed;
  }
}

/** The running pools by thread count: the instances asking for a count share its pool. */
const pools = new Map<number, Pool>();
/** Pools being started, by thread count (instances created at once wait for the same one). */
const starting = new Map<number, Promise<Pool | string>>();
/** The pool of the kernel call in progress ({@linkcode withPool}), or null. */
let scoped: Pool | null = null;

/**
 * The pool of the call in progress, or null: run on one thread. A pool whose runtime was
 * replaced since (`useWasmVariant`, `setWasmModule`) is stopped and gives null.
 */
export function pool(): Pool | null {
  if (scoped && !scoped.live()) retire(scoped);
  return scoped?.live() ? scoped : null;
}

/** Runs `f` with `p` as the pool of the call (see {@linkcode pool}); f must be synchronous. */
export function withPool<R>(p: Pool | null, f: () => R): R {
  const outer = scoped;
  scoped = p;
  try {
    return f();
  } finally {
    scoped = outer;
  }
}

/**
 * `kernels` running on `p`: each call runs with `p` as its pool. The WebAssembly kernels
 * are synchronous (a composite runs its terms in the one call), so the pool holds for the
 * whole call and for nothing else.
 */
export function onPool<K extends object>(kernels: K, p: Pool): K {
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(kernels)) {
    out[name] = (problem: unknown) => withPool(p, () => (f as (q: unknown) => unknown)(problem));
  }
  return out as K;
}

/** The running pools by thread count (for tests and benchmarks). */
export function poolsInUse(): ReadonlyMap<number, Pool> {
  return pools;
}

/** Stops `p` and forgets it. */
function retire(p: Pool): void {
  void p.close();
  if (pools.get(p.threads) === p) pools.delete(p.threads);
}

/** The worker constructor of this runtime, or why there is none. */
async function workerKind(): Promise<((source: string) => AnyWorker) | string> {
  try {
    const spec = "node:worker_threads"; // not a literal: bundlers for browsers leave it alone
    const { Worker } = await import(spec);
    return (source) => {
      const w = new Worker(source, { eval: true });
      return {
        post: (m) => w.postMessage(m),
        // Unreferenced once it has started (before, the event loop must wait for its message).
        first: new Promise<string>((resolve) => {
          w.once("message", resolve);
          w.once("error", (e: unknown) => resolve(String(e)));
        }).then((said) => (w.unref(), said)),
        terminate: async () => void (await w.terminate()),
      };
    };
  } catch { /* not Node, Deno or Bun */ }
  const g = globalThis as { Worker?: typeof Worker };
  if (typeof g.Worker !== "function") return "this runtime has no workers";
  return (source) => {
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    const w = new (g.Worker as typeof Worker)(url);
    return {
      post: (m) => w.postMessage(m),
      first: new Promise((resolve) => {
        w.onmessage = (e) => resolve(String(e.data));
        w.onerror = (e) => resolve(`the worker failed to start: ${e.message}`);
      }),
      terminate: () => Promise.resolve(w.terminate()),
    };
  };
}

/** What {@linkcode acquirePool} gives: the pool (null: one thread), the threads running, and why fewer than asked. */
export interface Threads {
  pool: Pool | null;
  threads: number;
  why: string;
}

/**
 * A pool of `threads` threads for one `Losses` instance: the running one of that count
 * (shared, counted in `users`) or a new one; `threads` 1, or no shared memory or workers,
 * gives no pool, saying why. Give it back with {@linkcode releasePool}.
 */
export async function acquirePool(threads: number): Promise<Threads> {
  for (const p of pools.values()) if (!p.live()) retire(p); // their workers hold a replaced memory
  if (threads <= 1) return { pool: null, threads: 1, why: "" };
  for (;;) {
    const running = pools.get(threads);
    if (running?.live()) {
      running.users++;
      return { pool: running, threads, why: "" };
    }
    if (running) retire(running);
    let started = starting.get(threads);
    if (!started) {
      started = startPool(threads).finally(() => starting.delete(threads));
      starting.set(threads, started);
    }
    const got = await started;
    if (typeof got === "string") return { pool: null, threads: 1, why: got };
    if (!pools.has(threads)) pools.set(threads, got);
  }
}

/** Gives back an instance's pool: its workers stop when no other instance holds it. */
export function releasePool(p: Pool): void {
  if (p.users > 0 && --p.users === 0) retire(p);
}

/** Starts a pool of `threads` threads (this one and `threads - 1` workers), or says why it cannot. */
async function startPool(threads: number): Promise<Pool | string> {
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (typeof SharedArrayBuffer !== "function" || g.crossOriginIsolated === false) {
    return "no shared memory (a page must be cross-origin isolated for it)";
  }
  const make = await workerKind();
  if (typeof make === "string") return make;
  let rt: Runtime;
  try {
    rt = await sharedRuntime();
  } catch (e) {
    return `no shared WebAssembly memory: ${e instanceof Error ? e.message : e}`;
  }
  const names = Object.keys(rt.k).filter((n) => typeof (rt.k as unknown as Record<string, unknown>)[n] === "function")
    .sort();
  const control = new Int32Array(new SharedArrayBuffer((threads - 1) * SLOT * 4));
  const workers: AnyWorker[] = [];
  try {
    for (let slot = 0; slot < threads - 1; slot++) {
      const w = make(WORKER);
      workers.push(w);
      w.post({ module: rt.module, memory: rt.k.memory, control: control.buffer, slot, names });
    }
    const said = await Promise.all(workers.map((w) => w.first));
    const bad = said.find((s) => s !== "ready");
    if (bad !== undefined) throw new Error(bad);
  } catch (e) {
    workers.forEach((w) => void w.terminate());
    return `the workers did not start: ${e instanceof Error ? e.message : e}`;
  }
  return new Pool(rt, workers, control, names);
}

/** `[start, end)` of part `t` of `n` items split into `parts` nearly equal runs, each a multiple of `step` but the last. */
export function split(n: number, parts: number, t: number, step = 1): [number, number] {
  const steps = Math.ceil(n / step);
  const at = (k: number) => Math.min(n, Math.floor((steps * k) / parts) * step);
  return [at(t), at(t + 1)];
}

/**
 * Bytes of W per thread per round of a streaming head (rounded to whole chunks, at least one):
 * a round's work (milliseconds at D = 128) dwarfs a wake-up, and a thread's four slab buffers
 * (W in, its gradient out, two each) stay at 2 MiB.
 */
export const SLAB_BYTES = 1 << 19;

/**
 * Classes per slab of a streaming head: whole chunks of `chunk` classes, about `SLAB_BYTES` of
 * W's rows (`rowBytes` bytes per class), at least one chunk.
 */
export function slabClasses(chunk: number, rowBytes: number): number {
  return Math.max(1, Math.floor(SLAB_BYTES / (chunk * rowBytes))) * chunk;
}

/**
 * Runs a streaming head's phase in `rounds` rounds (src/wasm/head_threads.ts,
 * src/wasm/linear_cross_entropy.ts): in round r each thread t computes its next slab of classes
 * from its own buffers, its kernel calls made by `record(k, t, r)`. On `p` (threads > 1) the
 * calling thread, alongside its own slab of round r, drains round r - 1's outputs (`drain`) and
 * then feeds round r + 1's inputs (`feed`) into the buffers of the other parity, so the copies
 * of ordinary arrays overlap the workers' compute; without a pool (one thread) each round is
 * fed, computed and drained in turn. `feed` and `drain` ignore rounds out of `[0, rounds)`.
 */
export function streamRounds(
  p: Pool | null,
  rt: Runtime,
  threads: number,
  rounds: number,
  record: (k: Recorder | Exports, t: number, r: number) => void,
  feed: (r: number) => void,
  drain: (r: number) => void = () => {},
): void {
  if (!p || threads < 2) {
    for (let r = 0; r < rounds; r++) [feed(r), record(rt.k, 0, r), drain(r)];
    return;
  }
  feed(0);
  for (let r = 0; r < rounds; r++) {
    p.run(
      Array.from({ length: threads }, (_, t) => {
        const program: number[] = [];
        record(p.recorder(program), t, r);
        return program;
      }),
      () => [drain(r - 1), feed(r + 1)],
    );
  }
  drain(rounds - 1);
}
