/**
 * The WebAssembly runtime: compiles the inlined module once, lazily, and lays out
 * memory for the kernels. Kernels never allocate; the host gives them pointers.
 *
 * Memory holds two kinds of blocks, handed out by one first-fit allocator:
 * tensors the caller allocates with {@linkcode alloc} (the zero-copy path) and one
 * reusable scratch arena, grown when a call needs more and reused by every call.
 *
 * @module
 */
import { type Exports, WASM_MEMORY_FLAGS_AT, WASM_RELAXED, WASM_SIMD } from "./generated.ts";
import type { Matrix } from "../types.ts";
import { show, size } from "../validate.ts";

const ALIGN = 64; // a cache line: row chunks and tensors start on one
/** Bytes per piece of a copy staged through a plain buffer (`Runtime.copy`): a piece stays in L2. */
const STAGE = 1 << 18;

let compiled: WebAssembly.Module | null = null;
/** The same module for a shared memory (the thread pool, src/wasm/pool.ts). */
let compiledShared: WebAssembly.Module | null = null;
let current: Runtime | null = null;
/** Whether the module was given (setWasmModule): then there is no build for a shared memory. */
let given = false;

/** The two builds of the kernels: plain SIMD, and relaxed SIMD (fused multiply-add). */
export type WasmVariant = "simd" | "relaxed";
let variant: WasmVariant | null = null;

/**
 * The build this engine runs best: relaxed SIMD where it validates, except under
 * JavaScriptCore (Bun, Safari), where relaxed_madd measured 20% slower than plain SIMD.
 */
function pickVariant(): WasmVariant {
  if (variant) return variant;
  const g = globalThis as { Bun?: unknown; navigator?: { userAgent?: string } };
  const ua = g.navigator?.userAgent ?? "";
  const jsc = g.Bun !== undefined || (/Safari\//.test(ua) && !/Chrome|Chromium|Edg\//.test(ua));
  return (variant = !jsc && relaxedSupported() ? "relaxed" : "simd");
}

/** Chooses the build (for tests and benchmarks); takes effect for the next instance. */
export function useWasmVariant(v: WasmVariant): void {
  variant = v;
  compiled = compiledShared = null;
  current = null;
  given = false; // the inline module again
}

/** The build in use. */
export function wasmVariant(): WasmVariant {
  return pickVariant();
}

/**
 * The module's bytes: its memory is imported (env.memory), plain as built, or shared when
 * `shared` (the build differs in that one flag: assembly/build.ts checks it).
 */
function source(shared = false): Uint8Array {
  const bin = atob(pickVariant() === "relaxed" ? WASM_RELAXED : WASM_SIMD);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  if (shared) bytes[WASM_MEMORY_FLAGS_AT] = 3;
  return bytes;
}

/**
 * Uses a precompiled module, for runtimes that forbid compiling WebAssembly from
 * bytes (Cloudflare Workers import `.wasm` files as `WebAssembly.Module`).
 */
export function setWasmModule(module: WebAssembly.Module): void {
  compiled = module;
  compiledShared = null;
  current = null;
  given = true;
}

/** Compiles the module asynchronously (for `init`); later synchronous use reuses it. */
export async function compileWasm(): Promise<void> {
  if (!compiled) compiled = await WebAssembly.compile(source() as BufferSource);
}

/**
 * The runtime on a shared memory (for the thread pool), replacing a plain one: matrices
 * allocated before (`alloc`) stay valid, as ordinary arrays that calls copy.
 */
export async function sharedRuntime(): Promise<Runtime> {
  if (current?.shared) return current;
  if (given) throw new Error("the module was given with setWasmModule, and threads need the inline module");
  compiledShared ??= await WebAssembly.compile(source(true) as BufferSource);
  // Pools started at once share one memory: the first to get here instantiates it.
  if (current?.shared) return current;
  return (current = instantiate(compiledShared, true));
}

function instantiate(module: WebAssembly.Module, shared: boolean): Runtime {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 65536, shared } as WebAssembly.MemoryDescriptor);
  const instance = new WebAssembly.Instance(module, {
    env: {
      memory,
      abort() {
        throw new Error("softmargin: WebAssembly abort");
      },
    },
  });
  return new Runtime(instance.exports as unknown as Exports, module, shared);
}

/** Whether this engine validates WebAssembly SIMD (a tiny module using one v128 op). */
export function simdSupported(): boolean {
  // (module (func (result v128) (v128.const i32x4 0 0 0 0)))
  return validates("0061736d010000000105016000017b030201000a16011400fd0c000000000000000000000000000000000b");
}

/** Whether this engine validates relaxed SIMD (a module using f32x4.relaxed_madd). */
function relaxedSupported(): boolean {
  // (module (func (param v128) (result v128) local.get 0 local.get 0 local.get 0 f32x4.relaxed_madd))
  return validates("0061736d0100000001060160017b017b030201000a0d010b00200020002000fd85020b");
}

/** Whether this engine validates the module given in hex. */
function validates(hex: string): boolean {
  try {
    return WebAssembly.validate(Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16)));
  } catch {
    return false;
  }
}

/** The runtime of this process if one was instantiated, else null (instantiates nothing). */
export function currentRuntime(): Runtime | null {
  return current;
}

/** The one runtime of this process, instantiated on first use. */
export function runtime(): Runtime {
  if (!current) {
    if (!compiled) compiled = new WebAssembly.Module(source() as BufferSource);
    current = instantiate(compiled, false);
  }
  return current;
}

/** What {@linkcode Runtime.stats} reports, in bytes (for tests; not part of the public API). */
export interface MemoryStats {
  /** The size of WebAssembly memory. */
  bytes: number;
  /** Bytes in live blocks (the arena and every allocated matrix), and how many blocks. */
  used: number;
  blocks: number;
  /** Bytes on the free list, how many free blocks, and the largest one. */
  free: number;
  freeBlocks: number;
  largestFree: number;
  /** The scratch arena's size. */
  arena: number;
}

/** A free block of memory. */
interface Block {
  ptr: number;
  size: number;
}

/** Memory layout and the kernels of one instance. */
export class Runtime {
  readonly k: Exports;
  /** The compiled module (the thread pool instantiates it once per worker). */
  readonly module: WebAssembly.Module;
  /** Whether the memory is shared (the thread pool's). */
  readonly shared: boolean;
  #free: Block[] = [];
  #used = new Map<number, number>();
  #arena = 0;
  #arenaSize = 0;
  #f32: Float32Array;
  /** The plain buffer `copy` stages through (made on first use). */
  #stage: Uint8Array | null = null;
  /**
   * The address and length of every view of this memory handed out by `WasmMatrix.data`
   * and `pin`: a composite loss prepares all its terms' problems before the first term
   * runs, so a view a later term holds may be detached by an earlier term's growth, and
   * is still found here (its own byteOffset and length read 0 once detached).
   */
  #views = new WeakMap<ArrayBufferView, readonly [number, number]>();

  constructor(k: Exports, module: WebAssembly.Module, shared: boolean) {
    this.k = k;
    this.module = module;
    this.shared = shared;
    const base = Math.ceil(k.heap_base() / ALIGN) * ALIGN;
    const end = k.memory.buffer.byteLength;
    if (end > base) this.#free.push({ ptr: base, size: end - base });
    this.#f32 = new Float32Array(k.memory.buffer);
  }

  /** The memory's buffer (it changes when memory grows). */
  get buffer(): ArrayBuffer {
    return this.k.memory.buffer as ArrayBuffer;
  }

  /** A float32 view over the whole memory, recreated after growth. */
  get f32(): Float32Array {
    if (this.#f32.buffer !== this.k.memory.buffer) this.#f32 = new Float32Array(this.k.memory.buffer);
    return this.#f32;
  }

  /**
   * The address of `data` when it lives in this memory (the zero-copy path; also a view
   * handed out by this runtime that growth detached since), else -1.
   */
  addressOf(data: ArrayBufferView): number {
    return data.buffer === this.k.memory.buffer ? data.byteOffset : (this.#views.get(data)?.[0] ?? -1);
  }

  /** Records a view of this memory (see `#views`); returns it. */
  view(data: Float32Array): Float32Array {
    this.#views.set(data, [data.byteOffset, data.length]);
    return data;
  }

  /**
   * `data` as a getter that survives memory growth, which detaches every view of the old
   * buffer: a view into this memory is re-made over the current one, any other array is
   * returned as is. Pin a problem's arrays before anything that may allocate (the arena).
   */
  pin(data: Float32Array): () => Float32Array {
    const at = this.addressOf(data), length = this.#views.get(data)?.[1] ?? data.length; // detached: 0
    if (at < 0) return () => data;
    let view = data;
    return () => (view.buffer === this.buffer ? view : (view = this.view(new Float32Array(this.buffer, at, length))));
  }

  /** Allocates `bytes` (aligned to 64), growing memory when needed. */
  malloc(bytes: number): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let i = this.#free.findIndex((b) => b.size >= size);
    if (i < 0) {
      this.#grow(size);
      i = this.#free.findIndex((b) => b.size >= size);
    }
    const block = this.#free[i];
    const ptr = block.ptr;
    if (block.size === size) this.#free.splice(i, 1);
    else {
      block.ptr += size;
      block.size -= size;
    }
    this.#used.set(ptr, size);
    return ptr;
  }

  /** Allocates the free bytes [ptr, ptr + size) (a block just freed), splitting its free block. */
  #take(ptr: number, size: number): number {
    const i = this.#free.findIndex((b) => b.ptr <= ptr && ptr + size <= b.ptr + b.size);
    const b = this.#free[i];
    const parts = [{ ptr: b.ptr, size: ptr - b.ptr }, { ptr: ptr + size, size: b.ptr + b.size - ptr - size }];
    this.#free.splice(i, 1, ...parts.filter((p) => p.size > 0));
    this.#used.set(ptr, size);
    return ptr;
  }

  /** Frees a block from `malloc`. */
  free(ptr: number): void {
    const size = this.#used.get(ptr);
    if (size === undefined) return;
    this.#used.delete(ptr);
    let i = this.#free.findIndex((b) => b.ptr > ptr);
    if (i < 0) i = this.#free.length;
    this.#free.splice(i, 0, { ptr, size });
    // Coalesce with the neighbours.
    const next = this.#free[i + 1];
    if (next && ptr + size === next.ptr) {
      this.#free[i].size += next.size;
      this.#free.splice(i + 1, 1);
    }
    const prev = this.#free[i - 1];
    if (prev && prev.ptr + prev.size === ptr) {
      prev.size += this.#free[i].size;
      this.#free.splice(i, 1);
    }
  }

  #grow(size: number): void {
    const mem = this.k.memory;
    const end = mem.buffer.byteLength;
    const last = this.#free[this.#free.length - 1];
    const tail = last && last.ptr + last.size === end ? last.size : 0;
    const need = size - tail;
    // Grow by at least a quarter of the current size so repeated growth stays rare.
    const pages = Math.max(Math.ceil(need / 65536), Math.ceil(end / 4 / 65536));
    const max = 65536 - end / 65536;
    const grow = Math.min(pages, max);
    if (grow < Math.ceil(need / 65536)) {
      throw new RangeError(
        `Expected the problem to fit in WebAssembly's 4 GiB memory: it needs ${size} more bytes, ` +
          `${end} are in use of at most ${65536 * 65536}`,
      );
    }
    try {
      mem.grow(grow);
    } catch (e) {
      throw new RangeError(`Expected WebAssembly memory to grow by ${grow * 65536} bytes, the engine refused: ${e}`);
    }
    if (tail) last.size += grow * 65536;
    else this.#free.push({ ptr: end, size: grow * 65536 });
  }

  /**
   * The scratch arena, at least `bytes` long, reused across calls (every kernel call
   * lays out its buffers in it). Its address may change between calls, never during one.
   */
  arena(bytes: number): number {
    if (bytes > this.#arenaSize) {
      const size = Math.ceil(bytes / ALIGN) * ALIGN, [oldPtr, old] = [this.#arena, this.#arenaSize];
      // Freed first so that the new arena may reuse its place. If memory cannot grow, the old
      // arena is placed again where it was (the block just freed holds it), so memory is laid
      // out after the error as before it, never a stale pointer to a free block.
      if (this.#arena) this.free(this.#arena);
      this.#arena = this.#arenaSize = 0;
      try {
        this.#arena = this.malloc(size);
        this.#arenaSize = size;
      } catch (e) {
        if (old) [this.#arena, this.#arenaSize] = [this.#take(oldPtr, old), old];
        throw e;
      }
    }
    return this.#arena;
  }

  /** Where memory stands (for tests): its size, the live blocks, the free list and the arena, in bytes. */
  stats(): MemoryStats {
    let used = 0, free = 0, largestFree = 0;
    for (const size of this.#used.values()) used += size;
    for (const b of this.#free) [free, largestFree] = [free + b.size, Math.max(largestFree, b.size)];
    return {
      bytes: this.k.memory.buffer.byteLength,
      used,
      blocks: this.#used.size,
      free,
      freeBlocks: this.#free.length,
      largestFree,
      arena: this.#arenaSize,
    };
  }

  /** A copy of `n` float64 values at `ptr`. */
  f64(ptr: number, n: number): Float64Array {
    return new Float64Array(this.k.memory.buffer, ptr, n).slice();
  }

  /** Copies `src` to `ptr`. */
  put(ptr: number, src: ArrayBufferView): void {
    this.copy(new Uint8Array(this.k.memory.buffer, ptr, src.byteLength), src);
  }

  /**
   * Copies `src` into `dst` (views of as many bytes, one of them in this memory). To or from a
   * shared memory V8 copies word by word where the two addresses agree modulo 8, and byte by
   * byte where they do not (6.7x slower: bench/README.md, "Issue 21, session 11"): a logits row
   * of odd length, an array at an odd float. Such a copy goes through a plain buffer placed as
   * the shared side, in pieces of `STAGE` bytes (2.1x the aligned copy: memmove, then a word copy).
   */
  copy(dst: ArrayBufferView, src: ArrayBufferView): void {
    const d = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    const s = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    if (!this.shared || ((d.byteOffset ^ s.byteOffset) & 7) === 0) return d.set(s);
    const at = (d.buffer === this.buffer ? d : s).byteOffset & 7, stage = (this.#stage ??= new Uint8Array(STAGE + 8));
    for (let i = 0; i < s.length; i += STAGE) {
      const piece = stage.subarray(at, at + Math.min(STAGE, s.length - i));
      piece.set(s.subarray(i, i + piece.length));
      d.set(piece, i);
    }
  }
}

/** Lays out several buffers in the arena: `add` returns each one's offset, all 64-byte aligned. */
export class Layout {
  size = 0;
  add(bytes: number): number {
    const at = this.size;
    this.size += Math.ceil(bytes / ALIGN) * ALIGN;
    return at;
  }
}

/** A matrix allocated in WebAssembly memory: inputs and outputs there are never copied. */
export class WasmMatrix implements Matrix {
  readonly shape: readonly [number, number];
  #rt: Runtime;
  #ptr: number;
  #view: Float32Array;

  /** Allocates a `[rows, cols]` matrix in `rt`'s memory (use `alloc`). */
  constructor(rt: Runtime, shape: readonly [number, number]) {
    this.#rt = rt;
    this.shape = shape;
    this.#ptr = rt.malloc(shape[0] * shape[1] * 4);
    this.#view = rt.view(new Float32Array(rt.buffer, this.#ptr, shape[0] * shape[1]));
  }

  /** The values, a view into WebAssembly memory (recreated if memory grew since). */
  get data(): Float32Array {
    if (this.#ptr < 0) throw new TypeError("Expected a live WasmMatrix, got one already freed");
    if (this.#view.buffer !== this.#rt.buffer) {
      this.#view = this.#rt.view(new Float32Array(this.#rt.buffer, this.#ptr, this.shape[0] * this.shape[1]));
    }
    return this.#view;
  }

  /** Returns the memory to the allocator; the matrix must not be used afterwards. */
  free(): void {
    if (this.#ptr >= 0) this.#rt.free(this.#ptr);
    this.#ptr = -1;
  }

  /** Frees the matrix at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.free();
  }
}

/**
 * Allocates a zero-filled `[rows, cols]` matrix in WebAssembly memory. Passing it as an
 * input, or as an `options.out` buffer, to the WebAssembly backend skips every copy.
 * Free it with `free()` (or `using`).
 *
 * @param shape `[rows, cols]`: exactly two sizes (another value is a `TypeError`), each a
 * non-negative integer (a `RangeError` otherwise).
 *
 * @example Zero-copy cross-entropy
 * ```ts
 * import { alloc, wasm } from "@softmargin/softmargin/cpu";
 * const logits = alloc([2, 3]);
 * logits.data.set([1, 2, 3, 3, 2, 1]);
 * const grad = alloc([2, 3]);
 * const { loss } = wasm.crossEntropy.valueAndGrad({ logits, labels: [2, 0] }, { out: { logits: grad } });
 * console.log(loss, grad.data[0]); // 0.4076 0.0450
 * logits.free();
 * grad.free();
 * ```
 */
export function alloc(shape: readonly [number, number]): WasmMatrix {
  if (!Array.isArray(shape) || shape.length !== 2) {
    throw new TypeError(`Expected shape to be [rows, cols], got ${show(shape)}`);
  }
  const r = size("shape[0]", shape[0]), c = size("shape[1]", shape[1]);
  const m = new WasmMatrix(runtime(), [r, c]);
  m.data.fill(0);
  return m;
}
