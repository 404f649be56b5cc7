/**
 * The thread pool of the WebAssembly backend: `threads - 1` workers and the calling
 * thread, every one running its own instance of the same module on one shared
 * `WebAssembly.Memory`. A parallel call is a list of kernel calls per thread (a
 * "program", recorded by calling the kernels on a {@linkcode Recorder} as one would on
 * the module): the caller writes the workers' programs into the shared memory, wakes the
 * workers, runs its own program meanwhile, and waits until every worker is done. Kernels
 * never allocate and the host laid out every buffer, so threads share nothing but the
 * buffers they are given, and each writes only its own.
 *
 * Workers are `node:worker_threads` workers where that module exists (Node, Deno, Bun:
 * unreferenced, so they never keep a process alive) and Web Workers otherwise (browsers;
 * shared memory there needs a cross-origin-isolated page). Without shared memory or
 * workers (Cloudflare Workers, a page that is not isolated) the backend runs on one
 * thread, and {@linkcode startThreads} says why.
 *
 * @module
 */
import type { Exports } from "./generated.ts";
import { currentRuntime, type Runtime, sharedRuntime } from "./runtime.ts";

/** Int32 slots of each worker's control block. */
const SEQ = 0, DONE = 1, PTR = 2, LEN = 3, ERROR = 4;
const SLOT = 16; // int32s per worker (one 64-byte line each)

/**
 * The worker's code, the same for both kinds of worker: instantiate the module on the
 * shared memory, then wait for a sequence number, run the program it names, and report.
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
    Atomics.wait(c, ${SEQ}, seen);
    seen = Atomics.load(c, ${SEQ});
    if (seen < 0) return;
    try {
      const p = new Float64Array(memory.buffer, c[${PTR}] >>> 0, c[${LEN}]);
      for (let i = 0; i < p.length; i += 2 + p[i + 1]) fns[p[i]](...p.subarray(i + 2, i + 2 + p[i + 1]));
      Atomics.store(c, ${ERROR}, 0);
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
  terminate(): void;
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
  /** The threads calls may use, at most `threads` (benchmarks compare counts on one pool). */
  active: number;
  #workers: AnyWorker[];
  #control: Int32Array;
  #names: string[];
  #index: Map<string, number>;
  #seq = 0;
  #programs = 0;
  #programBytes = 0;

  constructor(rt: Runtime, workers: AnyWorker[], control: Int32Array, names: string[]) {
    this.rt = rt;
    this.#workers = workers;
    this.#control = control;
    this.#names = names;
    this.#index = new Map(names.map((n, i) => [n, i]));
    this.threads = this.active = workers.length + 1;
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
   * returns when all are done. Programs may be fewer than the threads.
   */
  run(programs: number[][]): void {
    const k = this.rt.k as unknown as Record<string, (...a: number[]) => void>;
    this.runs++;
    const others = programs.slice(1);
    const bytes = others.reduce((s, p) => s + Math.ceil(p.length / 8) * 64, 0);
    if (bytes > this.#programBytes) {
      if (this.#programs) this.rt.free(this.#programs);
      this.#programs = 0;
      this.#programs = this.rt.malloc(bytes);
      this.#programBytes = bytes;
    }
    const seq = (this.#seq = (this.#seq % 0x3fffffff) + 1);
    let at = this.#programs;
    others.forEach((p, w) => {
      new Float64Array(this.rt.buffer, at, p.length).set(p);
      const c = w * SLOT;
      this.#control[c + PTR] = at;
      this.#control[c + LEN] = p.length;
      Atomics.store(this.#control, c + SEQ, seq);
      Atomics.notify(this.#control, c + SEQ);
      at += Math.ceil(p.length / 8) * 64;
    });
    let error: unknown = null;
    try {
      const p = programs[0] ?? [];
      for (let i = 0; i < p.length; i += 2 + p[i + 1]) k[this.#names[p[i]]](...p.slice(i + 2, i + 2 + p[i + 1]));
    } catch (e) {
      error = e;
    }
    let failed = false;
    others.forEach((_, w) => {
      const done = w * SLOT + DONE;
      // A timed wait: a missed wake-up costs at most 1 ms (Bun's Web Worker missed one: docs/SCALE.md).
      while (Atomics.load(this.#control, done) !== seq) {
        if (canWait) Atomics.wait(this.#control, done, Atomics.load(this.#control, done), 1);
      }
      if (this.#control[w * SLOT + ERROR]) failed = true;
    });
    if (error) throw error;
    if (failed) throw new Error("softmargin: WebAssembly abort in a worker thread");
  }

  /** Stops the workers. */
  close(): void {
    for (let w = 0; w < this.#workers.length; w++) {
      Atomics.store(this.#control, w * SLOT + SEQ, -1);
      Atomics.notify(this.#control, w * SLOT + SEQ);
      this.#workers[w].terminate();
    }
    this.#workers = [];
  }
}

let current: Pool | null = null;

/**
 * The pool in use, or null (one thread). A pool whose runtime was replaced since
 * (`useWasmVariant`, `setWasmModule`) is stopped: its workers run the old memory.
 */
export function pool(): Pool | null {
  if (current && current.rt !== currentRuntime()) {
    current.close();
    current = null;
  }
  return current;
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
        terminate: () => void w.terminate(),
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
      terminate: () => w.terminate(),
    };
  };
}

/**
 * Starts a pool of `threads` threads (this one and `threads - 1` workers), replacing the
 * current one unless it has as many; `threads` 1 stops it. Resolves to the number of threads running and, where
 * that is fewer than asked, why.
 */
export async function startThreads(threads: number): Promise<{ threads: number; why: string }> {
  if (pool()?.threads === threads && current) {
    current.active = threads;
    return { threads, why: "" };
  }
  current?.close();
  current = null;
  if (threads <= 1) return { threads: 1, why: "" };
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (typeof SharedArrayBuffer !== "function" || g.crossOriginIsolated === false) {
    return { threads: 1, why: "no shared memory (a page must be cross-origin isolated for it)" };
  }
  const make = await workerKind();
  if (typeof make === "string") return { threads: 1, why: make };
  let rt: Runtime;
  try {
    rt = await sharedRuntime();
  } catch (e) {
    return { threads: 1, why: `no shared WebAssembly memory: ${e instanceof Error ? e.message : e}` };
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
    workers.forEach((w) => w.terminate());
    return { threads: 1, why: `the workers did not start: ${e instanceof Error ? e.message : e}` };
  }
  current = new Pool(rt, workers, control, names);
  return { threads, why: "" };
}

/** `[start, end)` of part `t` of `n` items split into `parts` nearly equal runs, each a multiple of `step` but the last. */
export function split(n: number, parts: number, t: number, step = 1): [number, number] {
  const steps = Math.ceil(n / step);
  const at = (k: number) => Math.min(n, Math.floor((steps * k) / parts) * step);
  return [at(t), at(t + 1)];
}
