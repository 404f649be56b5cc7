/**
 * The WebGPU runtime: one `GpuContext` per device ({@linkcode GpuContext.of}) holds the
 * pipelines (created once, cached by kernel), the bind-group layouts, a pool of scratch
 * buffers, the device's limits and its lost state; `runRows` dispatches a row kernel over
 * a problem, one workgroup per row, uploading host inputs and reading host outputs back,
 * and splitting the rows into chunks that fit `maxStorageBufferBindingSize`. A call with
 * GPU-resident inputs is recorded synchronously ({@linkcode GpuContext.record}: into the
 * caller's encoder or one submitted at its end, with compiled pipelines, its device errors
 * reported later), which is how `readback: false`, `encoder` and `Losses.sync` (SPEC §10)
 * run without awaiting anything.
 *
 * @module
 */
import { F, KERNEL_PARAMS, PARAMS, PARAMS_BYTES, SHADERS } from "./generated.ts";
import { DeviceValues, onDevice } from "../validate.ts";
import * as v from "../validate.ts";

/** A kernel of `src/webgpu/`, by file name. */
export type KernelName = keyof typeof SHADERS;
/** The uniform struct a kernel binds (its family's, declared in its WGSL). */
type StructOf<K extends KernelName> = (typeof KERNEL_PARAMS)[K];
/** A field of kernel `K`'s uniform struct. */
export type ParamName<K extends KernelName> = keyof (typeof PARAMS)[StructOf<K>];
/**
 * Values of kernel `K`'s uniform struct for one dispatch (absent fields are 0); a
 * `vec2<f32>` field takes a float64 value and receives it as a float32 pair.
 */
export type Params<K extends KernelName> = Partial<Record<ParamName<K>, number>>;

/** The bit flags of the row kernels' `flags`, as src/webgpu/common.wgsl declares them. */
export { F };

/**
 * The error of a call on a lost WebGPU device (driver reset, `device.destroy()`, the
 * GPU removed): call `init()` again. An `"auto"` instance moves to WebAssembly instead.
 */
export class DeviceLostError extends Error {
  /** `"DeviceLostError"`. */
  override name = "DeviceLostError";
}

/** The most bytes of scratch buffers a context keeps between calls. */
export const POOL_BYTES = 512 * 2 ** 20;

const STORAGE = 0x80, COPY_SRC = 0x04, COPY_DST = 0x08, MAP_READ = 0x01, UNIFORM = 0x40;

/** The bindings of every row kernel: a, b (read), g, h (write), labels, row_in, cls (read), row_out (write). */
const ROW_BINDINGS = "rrwwrrrw";

/** A call being recorded into a command encoder ({@linkcode GpuContext.record}). */
export interface Recording {
  readonly enc: GPUCommandEncoder;
  /** The call's own buffers, released once its commands are submitted. */
  readonly temps: GPUBuffer[];
}

/** Options of a context. */
export interface ContextOptions {
  /**
   * Largest storage binding, in bytes (default: the device's
   * `maxStorageBufferBindingSize`); smaller values force the split paths (tests).
   */
  maxBindingBytes?: number;
}

/**
 * A device's WebGPU state: its cached pipelines and layouts, its pool of scratch buffers
 * and its limits. There is one per `GPUDevice` ({@linkcode GpuContext.of}), shared by
 * every `init()` on that device, until {@linkcode GpuContext.dispose}.
 */
export class GpuContext {
  static readonly #contexts = new WeakMap<GPUDevice, GpuContext>();

  /**
   * The context of `device`: created on the first call, with `options`, and returned by
   * every later call until it is disposed. `options` must be the same on every call
   * (they size the context's bindings): different ones are a `TypeError`.
   *
   * @param device The device whose context to return.
   * @param options The context's options (tests: a smaller binding limit).
   * @returns The device's one context.
   *
   * @example Every call on a device gets the same context
   * ```ts
   * import { GpuContext } from "./context.ts";
   * const device = await (await navigator.gpu?.requestAdapter())?.requestDevice();
   * if (device) console.log(GpuContext.of(device) === GpuContext.of(device)); // true
   * ```
   */
  static of(device: GPUDevice, options: ContextOptions = {}): GpuContext {
    const ctx = GpuContext.#contexts.get(device);
    const max = options.maxBindingBytes ?? null;
    if (ctx) {
      if (ctx.#maxBindingBytes !== max) {
        throw new TypeError(
          `Expected options.maxBindingBytes to be ${ctx.#maxBindingBytes ?? "undefined"} as when this ` +
            `GPUDevice's context was made, got ${max ?? "undefined"} (dispose() the context first)`,
        );
      }
      return ctx;
    }
    const made = new GpuContext(device, options);
    GpuContext.#contexts.set(device, made);
    return made;
  }

  /** Why the device was lost, or null while it works. */
  lost: string | null = null;
  /** Bytes one storage binding may hold. */
  readonly maxBinding: number;
  /** Bytes one buffer may hold. */
  readonly maxBuffer: number;
  /** Storage-binding offset alignment, bytes. */
  readonly align: number;
  /** Workgroups per dispatch dimension. */
  readonly maxGroups: number;
  /**
   * Whether the adapter is Mesa's llvmpipe (or its Vulkan driver lavapipe), whose invocations stop after
   * 65,535 loop iterations in all (src/webgpu/loops.ts's `checkLoops` refuses what would exceed them).
   */
  readonly loopLimited: boolean;
  readonly #maxBindingBytes: number | null;
  #disposed = false;
  #roundTrip: Promise<number> | null = null;
  readonly #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  /** The pipelines compiled so far (for {@linkcode GpuContext.pipelineNow}). */
  readonly #ready = new Map<string, GPUComputePipeline>();
  /** The call being recorded (see {@linkcode GpuContext.record}), or null. */
  recording: Recording | null = null;
  /** Messages of device errors that recorded calls raised, reported by the next call (or `dispose`). */
  #errors: string[] = [];
  /** The error scopes of the recorded calls not yet popped. */
  #scopes: Promise<void> = Promise.resolve();
  readonly #layouts = new Map<string, GPUPipelineLayout>();
  /** Large scratch buffers of finished calls, kept for the next ones (allocating them is slow). */
  readonly #pool: GPUBuffer[] = [];
  /** One placeholder buffer per binding slot (a writable binding may not alias another). */
  readonly #dummies: GPUBuffer[] = [];

  /**
   * A context of its own for `device`, not shared and not found by
   * {@linkcode GpuContext.of} (which is the way to get a device's context).
   */
  constructor(readonly device: GPUDevice, options: ContextOptions = {}) {
    const l = device.limits;
    this.#maxBindingBytes = options.maxBindingBytes ?? null;
    this.maxBinding = Math.min(options.maxBindingBytes ?? Infinity, l.maxStorageBufferBindingSize);
    this.maxBuffer = l.maxBufferSize;
    this.align = l.minStorageBufferOffsetAlignment;
    this.maxGroups = l.maxComputeWorkgroupsPerDimension;
    const info = (device as { adapterInfo?: GPUAdapterInfo }).adapterInfo;
    this.loopLimited = /llvmpipe|lavapipe/i.test(`${info?.description ?? ""} ${info?.device ?? ""}`);
    device.lost.then((info) => {
      this.lost = info.message || info.reason || "unknown reason";
    });
  }

  /** Whether {@linkcode GpuContext.dispose} was called. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Releases what the context holds: destroys its pooled scratch and placeholder
   * buffers, drops its pipelines and layouts, and removes it from its device, so that
   * every later call on it (or on losses bound to it) throws an `Error`, and the next
   * {@linkcode GpuContext.of} on the device makes a new context. The device itself is
   * left as it is. Calling it again does nothing.
   *
   * @example Release a device's pipelines and buffers
   * ```ts
   * import { GpuContext } from "./context.ts";
   * const device = await (await navigator.gpu?.requestAdapter())?.requestDevice();
   * if (device) {
   *   const ctx = GpuContext.of(device);
   *   ctx.dispose();
   *   console.log(ctx.disposed, GpuContext.of(device) !== ctx); // true true
   * }
   * ```
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (GpuContext.#contexts.get(this.device) === this) GpuContext.#contexts.delete(this.device);
    for (const b of this.#pool.splice(0)) b.destroy();
    // forEach: the placeholders are made per binding slot as needed, so the array has holes.
    this.#dummies.forEach((b) => b.destroy());
    this.#dummies.length = 0;
    this.#pipelines.clear();
    this.#ready.clear();
    this.#layouts.clear();
    // The own buffers of recorded calls whose encoder was never submitted; the queue as it was.
    for (const list of [...this.#byEncoder.values(), ...this.#byCommands.values()]) list.forEach((b) => b.destroy());
    this.#byEncoder.clear();
    this.#byCommands.clear();
    // (A wrapper that someone wrapped in turn stays in their chain, passing calls through.)
    if (this.#wrapper !== null && this.device.queue.submit === this.#wrapper) this.device.queue.submit = this.#submit!;
    this.#submit = this.#wrapper = null;
  }

  /**
   * Throws when the context was disposed, a `DeviceLostError` when the device is gone, or
   * an `Error` with the device errors that earlier recorded calls raised (once).
   */
  check(): void {
    this.reportErrors();
    if (this.#disposed) {
      throw new Error("Expected a live WebGPU context, got one that was disposed (dispose()): call init() again");
    }
    if (this.lost !== null) throw new DeviceLostError(`The WebGPU device was lost (${this.lost}); call init() again`);
  }

  /** Throws the device errors collected from recorded calls, if any, and forgets them (`check`, `Losses.dispose`). */
  reportErrors(): void {
    if (this.#errors.length === 0) return;
    const e = this.#errors.splice(0);
    throw new Error(`WebGPU error of an earlier call: ${e.join("; ")}`);
  }

  /**
   * Resolves once the device has reported the errors of the calls recorded so far (the
   * asynchronous forms await it, then {@linkcode GpuContext.check}).
   */
  settled(): Promise<void> {
    return this.#scopes;
  }

  /**
   * Records one call's commands synchronously: `body` encodes into `encoder` (the
   * caller's, who submits it) or into a new encoder submitted when `body` returns. The
   * buffers the call made for itself ({@linkcode GpuContext.temp}) are destroyed after
   * that submission, or, with the caller's encoder, once the caller submits its command
   * buffer (they must outlive that submission; see `#afterSubmit`). Device errors are caught in error scopes and reported
   * by the next call on the context ({@linkcode GpuContext.check}) or by `dispose`:
   * nothing here awaits.
   */
  record<T>(encoder: GPUCommandEncoder | undefined, body: (enc: GPUCommandEncoder) => T): T {
    this.check();
    if (this.recording) throw new Error("Expected one WebGPU call recorded at a time, got a call inside another");
    const device = this.device;
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const rec: Recording = { enc: encoder ?? device.createCommandEncoder(), temps: [] };
    this.recording = rec;
    try {
      const out = body(rec.enc);
      if (!encoder) device.queue.submit([rec.enc.finish()]);
      return out;
    } finally {
      this.recording = null;
      const invalid = device.popErrorScope(), oom = device.popErrorScope();
      this.#scopes = Promise.all([invalid, oom, this.#scopes]).then(([a, b]) => {
        const e = a ?? b;
        if (e) this.#errors.push(e.message);
      }, (e) => void this.#errors.push(String(e)));
      if (!encoder) { for (const b of rec.temps) b.destroy(); }
      else this.#afterSubmit(encoder, rec.temps);
    }
  }

  /** The own buffers of calls recorded into a caller's encoder, until it is finished. */
  readonly #byEncoder = new Map<GPUCommandEncoder, GPUBuffer[]>();
  /** ... and from its finish until its command buffer is submitted. */
  readonly #byCommands = new Map<GPUCommandBuffer, GPUBuffer[]>();
  /** The queue's `submit` as it was when the context wrapped it, and the wrapper. */
  #submit: GPUQueue["submit"] | null = null;
  #wrapper: GPUQueue["submit"] | null = null;

  /**
   * Destroys `temps` once the command buffer of `encoder` is submitted (destroying a buffer
   * that submitted work uses is allowed: the work keeps it): the encoder's `finish` is
   * wrapped to know its command buffer, and the queue's `submit` to know when it goes
   * (wrapped again at each `finish` if someone replaced the wrapper; given back by
   * `dispose`). An encoder never submitted keeps them until `dispose`.
   */
  #afterSubmit(encoder: GPUCommandEncoder, temps: GPUBuffer[]): void {
    const held = this.#byEncoder.get(encoder);
    if (held) {
      held.push(...temps);
      return;
    }
    this.#byEncoder.set(encoder, [...temps]);
    const finish = encoder.finish;
    encoder.finish = (...a: Parameters<GPUCommandEncoder["finish"]>) => {
      const commands = finish.apply(encoder, a);
      const mine = this.#byEncoder.get(encoder);
      if (mine) {
        this.#byEncoder.delete(encoder);
        this.#byCommands.set(commands, mine);
        this.#watchSubmit();
      }
      return commands;
    };
  }

  /** Wraps the queue's `submit` (unless it is this context's wrapper already) to release the buffers of `#byCommands`. */
  #watchSubmit(): void {
    const queue = this.device.queue;
    if (this.#wrapper !== null && queue.submit === this.#wrapper) return;
    const submit = queue.submit, byCommands = this.#byCommands;
    this.#submit = submit;
    this.#wrapper = (buffers: Iterable<GPUCommandBuffer>) => {
      const list = [...buffers];
      submit.call(queue, list);
      for (const c of list) {
        const mine = byCommands.get(c);
        if (mine) (byCommands.delete(c), mine.forEach((b) => b.destroy()));
      }
    };
    queue.submit = this.#wrapper;
  }

  /** A buffer of the call being recorded, released with it (see {@linkcode GpuContext.record}). */
  temp<B extends GPUBuffer | null>(b: B): B {
    if (!this.recording) throw new Error("Expected a WebGPU call being recorded (GpuContext.record)");
    if (b) this.recording.temps.push(b);
    return b;
  }

  /**
   * Compiles every kernel's pipelines (each `@compute` entry point of `src/webgpu/*.wgsl`,
   * with the row kernels' bindings or the bindings its WGSL declares), asynchronously,
   * so that later calls compile none (`init({ precompile: true })`). Returns how many.
   */
  async precompile(): Promise<number> {
    const jobs: Promise<GPUComputePipeline>[] = [];
    for (const kernel of Object.keys(SHADERS) as KernelName[]) {
      const src = SHADERS[kernel].slice(SHADERS[kernel].indexOf("// ---- "));
      const fields = PARAMS[KERNEL_PARAMS[kernel]];
      const row = ["row0", "h_off", "rs_in", "rs_out"].every((f) => f in fields);
      let bindings = ROW_BINDINGS;
      if (!row) {
        const slots: string[] = [];
        for (const m of src.matchAll(/@binding\((\d+)\)\s*var<storage,\s*(read_write|read)>/g)) {
          slots[Number(m[1]) - 1] = m[2] === "read" ? "r" : "w";
        }
        bindings = Array.from(slots, (k) => k ?? "r").join("");
      }
      for (const m of src.matchAll(/@compute\b[\s\S]*?\bfn\s+(\w+)/g)) {
        jobs.push(this.pipeline(kernel, bindings, m[1]));
      }
    }
    await Promise.all(jobs);
    return jobs.length;
  }

  /**
   * A compiled pipeline, now: the one compiled before, or compiled synchronously (once).
   * The recorded calls use it, so that nothing awaits.
   */
  pipelineNow(kernel: KernelName, bindings: string, entry = "main"): GPUComputePipeline {
    this.check();
    const key = `${kernel}:${entry}:${bindings}`;
    let p = this.#ready.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ code: SHADERS[kernel], label: kernel });
      p = this.device.createComputePipeline({ layout: this.#layout(bindings), compute: { module, entryPoint: entry } });
      this.#ready.set(key, p);
      if (!this.#pipelines.has(key)) this.#pipelines.set(key, Promise.resolve(p));
    }
    return p;
  }

  /**
   * The pipeline of a kernel's entry point, created once. `bindings` lists the kernel's
   * storage bindings 1.. in order as "r" (read-only) or "w" (read-write): the layout is
   * explicit so a kernel may leave a binding unused.
   */
  pipeline(kernel: KernelName, bindings: string, entry = "main"): Promise<GPUComputePipeline> {
    this.check();
    const key = `${kernel}:${entry}:${bindings}`;
    let p = this.#pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ code: SHADERS[kernel], label: kernel });
      p = this.device.createComputePipelineAsync({
        layout: this.#layout(bindings),
        compute: { module, entryPoint: entry },
      });
      // (A layout that does not fit the shader is an error of its caller: not cached.)
      p.then((x) => this.#ready.set(key, x), () => this.#pipelines.delete(key));
      this.#pipelines.set(key, p);
    }
    return p;
  }

  #layout(bindings: string): GPUPipelineLayout {
    let l = this.#layouts.get(bindings);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = [{ binding: 0, visibility: 4, buffer: { type: "uniform" } }];
      [...bindings].forEach((k, i) =>
        entries.push({ binding: i + 1, visibility: 4, buffer: { type: k === "w" ? "storage" : "read-only-storage" } })
      );
      const group = this.device.createBindGroupLayout({ entries });
      l = this.device.createPipelineLayout({ bindGroupLayouts: [group] });
      this.#layouts.set(bindings, l);
    }
    return l;
  }

  /** A bind group for `pipeline`: the uniform `params`, then one resource per storage binding. */
  bind(
    pipeline: GPUComputePipeline,
    params: GPUBuffer,
    resources: (GPUBufferBinding | GPUBuffer | null)[],
  ): GPUBindGroup {
    return this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: params } },
        ...resources.map((r, i) => ({
          binding: i + 1,
          resource: r === null ? { buffer: this.#dummy(i) } : "buffer" in r ? r : { buffer: r },
        })),
      ],
    });
  }

  #dummy(slot: number): GPUBuffer {
    return (this.#dummies[slot] ??= this.device.createBuffer({ size: 16, usage: STORAGE }));
  }

  /**
   * Runs `encode` and submits its commands, turning a validation or out-of-memory error
   * into an exception (WebGPU reports them asynchronously, not by throwing).
   */
  async submit(encode: (enc: GPUCommandEncoder) => void): Promise<void> {
    this.check();
    this.device.pushErrorScope("out-of-memory");
    this.device.pushErrorScope("validation");
    const enc = this.device.createCommandEncoder();
    encode(enc);
    this.device.queue.submit([enc.finish()]);
    const invalid = await this.device.popErrorScope();
    const oom = await this.device.popErrorScope();
    const e = invalid ?? oom;
    if (e) throw new Error(`WebGPU error: ${e.message}`);
  }

  /**
   * A binding of `count` floats of `buffer` from element `start`: the offset aligned
   * down to the device's alignment, and the element offset of `start` inside it.
   */
  range(buffer: GPUBuffer, start: number, count: number): [GPUBufferBinding, number] {
    const bytes = start * 4, at = Math.floor(bytes / this.align) * this.align;
    return [{ buffer, offset: at, size: bytes - at + count * 4 }, (bytes - at) / 4];
  }

  /** Columns of one segment of a row too long for one binding (a multiple of 64). */
  get segment(): number {
    return Math.floor((this.maxBinding - this.align) / 4 / 64) * 64;
  }

  /**
   * The median time of three empty submissions' completion (a dispatch's fixed cost),
   * seconds; measured once per context.
   */
  roundTrip(): Promise<number> {
    return this.#roundTrip ??= this.#measure();
  }

  async #measure(): Promise<number> {
    const times: number[] = [];
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      this.device.queue.submit([]);
      await this.device.queue.onSubmittedWorkDone();
      times.push((performance.now() - t0) / 1e3);
    }
    return times.sort((a, b) => a - b)[1];
  }

  /** A uniform buffer holding kernel `kernel`'s struct with `values`. */
  params<K extends KernelName>(kernel: K, values: Params<K>): GPUBuffer {
    const struct = KERNEL_PARAMS[kernel];
    const fields: Record<string, readonly [number, string]> = PARAMS[struct];
    const bytes = new ArrayBuffer(PARAMS_BYTES[struct]);
    const u = new Uint32Array(bytes), i = new Int32Array(bytes), f = new Float32Array(bytes);
    for (const [name, value] of Object.entries(values) as [string, number][]) {
      const field = fields[name];
      if (!field) throw new Error(`src/webgpu/${kernel}.wgsl: ${struct} has no field ${name}`);
      const [slot, type] = field;
      if (type === "f32") f[slot] = value;
      else if (type === "i32") i[slot] = value;
      else if (type === "u32") u[slot] = value;
      else {
        // vec2<f32>: the float64 value as hi + lo.
        f[slot] = value;
        f[slot + 1] = value - f[slot];
      }
    }
    return this.upload(new Uint8Array(bytes), UNIFORM);
  }

  /** A new buffer (at least 16 bytes, a multiple of 4). */
  buffer(bytes: number, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    return this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 4) * 4), usage });
  }

  /**
   * A scratch buffer of at least `bytes` (from the pool when one fits, at most twice
   * the size), to be given back with `release`.
   */
  scratch(bytes: number, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    const need = Math.max(16, Math.ceil(bytes / 4) * 4);
    let best = -1;
    this.#pool.forEach((b, k) => {
      if (b.usage === usage && b.size >= need && b.size <= 2 * need && (best < 0 || b.size < this.#pool[best].size)) {
        best = k;
      }
    });
    if (best >= 0) return this.#pool.splice(best, 1)[0];
    return this.device.createBuffer({ size: need, usage });
  }

  /**
   * Gives scratch buffers back; the pool keeps at most `POOL_BYTES`, the most recent
   * first (none once the context is disposed). During a recorded call they go with the
   * call's own buffers instead (the caller's encoder may not be submitted yet).
   */
  release(...buffers: GPUBuffer[]): void {
    if (this.recording) {
      this.recording.temps.push(...buffers);
      return;
    }
    if (this.#disposed) {
      for (const b of buffers) b.destroy();
      return;
    }
    this.#pool.unshift(...buffers);
    let total = 0;
    for (let k = 0; k < this.#pool.length; k++) {
      total += this.#pool[k].size;
      if (total > POOL_BYTES) {
        for (const b of this.#pool.splice(k)) b.destroy();
        break;
      }
    }
  }

  /** A new buffer holding `data`. */
  upload(data: ArrayBufferView, usage = STORAGE | COPY_SRC | COPY_DST): GPUBuffer {
    const b = this.buffer(data.byteLength, usage | COPY_DST);
    if (data.byteLength > 0) {
      this.device.queue.writeBuffer(b, 0, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    }
    return b;
  }

  /** A readback buffer. */
  staging(bytes: number): GPUBuffer {
    return this.buffer(bytes, MAP_READ | COPY_DST);
  }

  /** Maps a staging buffer and copies `bytes` from byte `offset` out. */
  async read(staging: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    await staging.mapAsync(MAP_READ);
    try {
      return staging.getMappedRange(offset, Math.max(4, Math.ceil(bytes / 4) * 4)).slice(0, bytes);
    } finally {
      staging.unmap();
    }
  }

  /**
   * Maps staging buffers together (one wait for all) and copies `bytes` of each out.
   */
  async readAll(parts: [GPUBuffer, number][]): Promise<ArrayBuffer[]> {
    await Promise.all(parts.map(([b]) => b.mapAsync(MAP_READ)));
    try {
      return parts.map(([b, bytes]) => b.getMappedRange(0, Math.max(4, Math.ceil(bytes / 4) * 4)).slice(0, bytes));
    } finally {
      for (const [b] of parts) b.unmap();
    }
  }

  /** Reads a GPU-resident matrix back (`checkFinite`). */
  async readMatrix(m: { buffer: GPUBuffer; shape: readonly [number, number] }): Promise<Float32Array> {
    const bytes = m.shape[0] * m.shape[1] * 4;
    const staging = this.staging(bytes);
    try {
      await this.submit((enc) => enc.copyBufferToBuffer(m.buffer, 0, staging, 0, bytes));
      return new Float32Array(await this.read(staging, 0, bytes));
    } finally {
      staging.destroy();
    }
  }

  /** `checkFinite` on GPU-resident values: reads them back and scans them. */
  async checkFinite(...values: Float32Array[]): Promise<void> {
    for (const d of values) {
      if (onDevice(d) && d.checkFinite !== null) v.finite(d.checkFinite, await this.readMatrix(d), d.shape[1]);
    }
  }
}

/**
 * Checks that a caller's output buffer lives where the outputs go: on the GPU when an
 * input is GPU-resident, else on the host.
 */
export function checkOut(name: string, out: { buffer?: unknown } | null | undefined, resident: boolean): void {
  if (out && (out.buffer !== undefined) !== resident) {
    throw new TypeError(
      `Expected options.out.${name} to be ${
        resident ? "a GPU matrix { buffer, shape } (the inputs are on the GPU)" : "{ data: Float32Array, shape }"
      }, got ${resident ? "a Float32Array" : "a GPUBuffer"}`,
    );
  }
}

/** The row kernels: those whose struct includes src/webgpu/row_params.wgsl's fields. */
export type RowKernel = {
  [K in KernelName]: "row0" | "h_off" | "rs_in" | "rs_out" extends ParamName<K> ? K : never;
}[KernelName];

/** One row kernel's dispatch over a problem of `n` rows of `c` columns. */
export interface RowJob<K extends RowKernel> {
  kernel: K;
  n: number;
  c: number;
  /** The kernel's own fields (runRows writes the row fields). */
  params: Params<K>;
  /** The [N, C] inputs bound at 1 and 2 (host values, GPU stand-ins, or null). */
  ins: (Float32Array | null)[];
  /** Which [N, C] outputs (bound at 3 and 4) are written, and the caller's buffers for them. */
  outs: ({ name: string; out: { data?: Float32Array; buffer?: GPUBuffer } | null } | null)[];
  /** Bound at 5, 6, 7: labels (i32), per-row inputs (f32, `rsIn` per row), a per-class vector (f32). */
  labels?: Int32Array | null;
  rowIn?: Float32Array | null;
  rsIn?: number;
  cls?: Float32Array | null;
  /** Per-row outputs (bound at 8), `rsOut` per row. */
  rsOut: number;
  /**
   * An entry point dispatched before `main` over the same rows and bindings, one
   * invocation per row (workgroups of 64), writing `perRow` floats per row into h
   * (binding 4, then a scratch buffer) for `main` to read: per-row work too long to
   * sit in `main` itself (the margin losses' targets). With `passes`, one dispatch per
   * element, in order, each with those parameters added (interTopK's windows of classes,
   * src/webgpu/loops.ts).
   */
  first?: { entry: string; perRow: number; passes?: Partial<Params<K>>[] };
}

/** Rows per dispatch of a row kernel: what fits one storage binding and one dispatch dimension. */
function rowsPerChunk(ctx: GpuContext, n: number, c: number): number {
  const perChunk = Math.min(ctx.maxGroups, Math.floor((ctx.maxBinding - ctx.align) / (c * 4)), n);
  if (perChunk < 1) {
    throw new RangeError(
      `Expected a row of ${c} float32 values to fit one WebGPU storage binding (${ctx.maxBinding} bytes), got ${
        c * 4
      } bytes`,
    );
  }
  return perChunk;
}

/** What a row kernel returns: its per-row outputs `[n, rsOut]` and its [N, C] outputs (in `outs`' order). */
export interface RowsResult {
  rows: Float32Array;
  outs: Float32Array[];
}

/**
 * Runs a row kernel: one workgroup per row, the rows in chunks that fit one storage
 * binding and one dispatch dimension. When any input is GPU-resident the outputs stay on
 * the GPU (as `DeviceValues`) and the call is recorded ({@linkcode recordRows}): inside a
 * recorded call (`readback: false`) synchronously, its per-row outputs left on the GPU;
 * else in one submission whose per-row outputs are read back. Host inputs go in chunks
 * through upload buffers and their outputs are read back into Float32Arrays (the
 * caller's `out` buffer when given).
 */
export function runRows<K extends RowKernel>(ctx: GpuContext, job: RowJob<K>): RowsResult | Promise<RowsResult> {
  ctx.check();
  const resident = job.ins.some((d) => onDevice(d));
  for (const o of job.outs) if (o) checkOut(o.name, o.out, resident);
  if (ctx.recording) return recordRows(ctx, job);
  return resident ? readRows(ctx, job) : hostRows(ctx, job);
}

/** A GPU-resident row kernel in one submission; its per-row outputs read back. */
async function readRows<K extends RowKernel>(ctx: GpuContext, job: RowJob<K>): Promise<RowsResult> {
  // Compiled before recording (asynchronously), so that the recording finds them.
  await ctx.pipeline(job.kernel, ROW_BINDINGS);
  if (job.first) await ctx.pipeline(job.kernel, ROW_BINDINGS, job.first.entry);
  const bytes = job.n * job.rsOut * 4;
  const staging = ctx.staging(bytes);
  try {
    const { outs } = ctx.record(undefined, (enc) => {
      const r = recordRows(ctx, job);
      enc.copyBufferToBuffer((r.rows as unknown as DeviceValues).buffer, 0, staging, 0, bytes);
      return r;
    });
    const rows = new Float32Array(await ctx.read(staging, 0, bytes));
    await ctx.settled();
    ctx.check();
    return { rows, outs };
  } finally {
    staging.destroy();
  }
}

/**
 * Records a row kernel with GPU-resident inputs into the call being recorded: one
 * compute pass of a dispatch per chunk of rows (the [N, C] inputs and outputs bound in
 * place by ranges); host inputs are uploaded whole. Its per-row outputs are a
 * `DeviceValues` `[n, rsOut]` in a buffer of the call.
 */
export function recordRows<K extends RowKernel>(ctx: GpuContext, job: RowJob<K>): RowsResult {
  const { n, c } = job;
  const perChunk = rowsPerChunk(ctx, n, c);
  const t = <B extends GPUBuffer | null>(b: B) => ctx.temp(b);
  const ins = job.ins.map((d) => (d === null ? null : onDevice(d) ? d.buffer : t(ctx.upload(d))));
  const outs: Float32Array[] = [];
  const outBufs = job.outs.map((o, k) => {
    if (o === null) return null;
    const buffer = o.out?.buffer ?? ctx.buffer(n * c * 4);
    outs[k] = new DeviceValues(buffer, [n, c]) as unknown as Float32Array;
    return buffer;
  });
  const small = (d: ArrayBufferView | null | undefined) => (d ? t(ctx.upload(d)) : null);
  const labels = small(job.labels), cls = small(job.cls);
  // (per-row inputs a kernel of the same call wrote stay where they are)
  const rowIn = onDevice(job.rowIn) ? job.rowIn.buffer : small(job.rowIn);
  const rowOut = t(ctx.buffer(n * job.rsOut * 4));
  const pipeline = ctx.pipelineNow(job.kernel, ROW_BINDINGS);
  const first = job.first ? ctx.pipelineNow(job.kernel, ROW_BINDINGS, job.first.entry) : null;
  const firstOut = job.first ? t(ctx.buffer(n * job.first.perRow * 4)) : null;
  const pass = ctx.recording!.enc.beginComputePass();
  for (let r0 = 0; r0 < n; r0 += perChunk) {
    const rows = Math.min(perChunk, n - r0);
    const bind: (GPUBufferBinding | null)[] = [], offs: number[] = [];
    for (
      const b of [...ins, ...Array(2 - ins.length).fill(null), ...outBufs, ...Array(2 - outBufs.length).fill(null)]
    ) {
      const [r, off] = b ? ctx.range(b, r0 * c, rows * c) : [null, 0];
      bind.push(r), offs.push(off);
    }
    if (firstOut) bind[3] = { buffer: firstOut, offset: 0, size: firstOut.size };
    const fields = {
      ...(job.params as Params<RowKernel>),
      n: rows,
      c,
      row0: r0,
      a_off: offs[0],
      b_off: offs[1],
      g_off: offs[2],
      h_off: offs[3],
      rs_in: job.rsIn ?? 0,
      rs_out: job.rsOut,
    };
    const resources = [...bind, labels, rowIn, cls, rowOut];
    // One bind group for both entry points: they share the explicit layout.
    const group = ctx.bind(pipeline, t(ctx.params<RowKernel>(job.kernel, fields)), resources);
    if (first) {
      pass.setPipeline(first);
      for (const extra of job.first!.passes ?? [{}]) {
        pass.setBindGroup(
          0,
          ctx.bind(pipeline, t(ctx.params<RowKernel>(job.kernel, { ...fields, ...extra })), resources),
        );
        pass.dispatchWorkgroups(Math.ceil(rows / 64));
      }
    }
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(rows);
  }
  pass.end();
  return { rows: new DeviceValues(rowOut, [n, job.rsOut]) as unknown as Float32Array, outs };
}

/**
 * A row kernel on host inputs: the rows in chunks through upload buffers, each chunk's
 * outputs read back (into the caller's `out` buffers when given).
 */
async function hostRows<K extends RowKernel>(ctx: GpuContext, job: RowJob<K>): Promise<RowsResult> {
  const { n, c } = job;
  const rowBytes = c * 4;
  const perChunk = rowsPerChunk(ctx, n, c);
  const device = ctx.device;
  const temps: GPUBuffer[] = [];
  const keep = <T extends GPUBuffer>(b: T) => (temps.push(b), b);
  const scratch: GPUBuffer[] = [];
  const pooled = (b: GPUBuffer) => (scratch.push(b), b);
  try {
    const chunked = perChunk < n;
    // Host inputs: one upload buffer each (the whole matrix, or one chunk reused).
    const inBufs = job.ins.map((d) => (d === null ? null : pooled(ctx.scratch(perChunk * rowBytes))));
    // Outputs: a chunk buffer read back through the staging buffer.
    const results: Float32Array[] = [];
    const outBufs = job.outs.map((o, k) => {
      if (o === null) return null;
      results[k] = o.out?.data ?? new Float32Array(n * c);
      return pooled(ctx.scratch(perChunk * rowBytes));
    });
    const small = (d: ArrayBufferView | null | undefined) => (d ? keep(ctx.upload(d)) : null);
    const labels = small(job.labels), rowIn = small(job.rowIn), cls = small(job.cls);
    const rowOut = keep(ctx.buffer(n * job.rsOut * 4));
    // Staging offsets must be multiples of 8.
    const stride = Math.ceil((perChunk * rowBytes) / 8) * 8;
    const hostOut = outBufs.filter((b) => b !== null).length;
    const staging = pooled(ctx.scratch(hostOut * stride + n * job.rsOut * 4, MAP_READ | COPY_DST));
    const pipeline = await ctx.pipeline(job.kernel, ROW_BINDINGS);
    const first = job.first ? await ctx.pipeline(job.kernel, ROW_BINDINGS, job.first.entry) : null;
    const firstOut = job.first ? keep(ctx.buffer(n * job.first.perRow * 4)) : null;
    const rowsOut = new Float32Array(n * job.rsOut);
    for (let r0 = 0; r0 < n; r0 += perChunk) {
      const rows = Math.min(perChunk, n - r0), last = r0 + rows >= n;
      const bind: (GPUBufferBinding | null)[] = [];
      job.ins.forEach((d, k) => {
        const b = inBufs[k];
        if (d === null || b === null) {
          bind.push(null);
        } else {
          device.queue.writeBuffer(b, 0, d.buffer as ArrayBuffer, d.byteOffset + r0 * rowBytes, rows * rowBytes);
          bind.push({ buffer: b, offset: 0, size: rows * rowBytes });
        }
      });
      while (bind.length < 2) bind.push(null);
      outBufs.forEach((b) => bind.push(b === null ? null : { buffer: b, offset: 0, size: rows * rowBytes }));
      while (bind.length < 4) bind.push(null);
      if (firstOut) bind[3] = { buffer: firstOut, offset: 0, size: firstOut.size };
      const fields = {
        ...(job.params as Params<RowKernel>),
        n: rows,
        c,
        row0: r0,
        rs_in: job.rsIn ?? 0,
        rs_out: job.rsOut,
      };
      const resources = [...bind, labels, rowIn, cls, rowOut];
      let at = 0;
      const reads: [number, number][] = [];
      await ctx.submit((enc) => {
        const pass = enc.beginComputePass();
        // One bind group for both entry points: they share the explicit layout.
        const group = ctx.bind(pipeline, keep(ctx.params<RowKernel>(job.kernel, fields)), resources);
        if (first) {
          pass.setPipeline(first);
          for (const extra of job.first!.passes ?? [{}]) {
            const u = keep(ctx.params<RowKernel>(job.kernel, { ...fields, ...extra }));
            pass.setBindGroup(0, ctx.bind(pipeline, u, resources));
            pass.dispatchWorkgroups(Math.ceil(rows / 64));
          }
        }
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(rows);
        pass.end();
        outBufs.forEach((b, k) => {
          if (b === null) return;
          enc.copyBufferToBuffer(b, 0, staging, at, rows * rowBytes);
          reads.push([k, at]);
          at += stride;
        });
        if (last) enc.copyBufferToBuffer(rowOut, 0, staging, at, n * job.rsOut * 4);
      });
      if (reads.length > 0 || last) {
        await staging.mapAsync(MAP_READ);
        try {
          for (const [k, off] of reads) {
            results[k].set(new Float32Array(staging.getMappedRange(off, rows * rowBytes)), r0 * c);
          }
          if (last) rowsOut.set(new Float32Array(staging.getMappedRange(at, n * job.rsOut * 4)));
        } finally {
          staging.unmap();
        }
      }
      if (!chunked) break;
    }
    ctx.check();
    return { rows: rowsOut, outs: results };
  } finally {
    for (const b of temps) b.destroy();
    // Every submission of this call is complete (its last readback was awaited) or failed.
    ctx.release(...scratch);
  }
}
