/**
 * The buffers of one call of a kernel that needs whole matrices in WebAssembly memory
 * (random access by label, B x B products): the metric-learning and mixture-of-experts
 * families. An input already in that memory (`alloc`) is used where it is, any other is
 * copied into the scratch arena once; an output is written where the caller's `out`
 * buffer is when that is in WebAssembly memory, else in the arena and copied out once
 * (into the caller's buffer, or a fresh array). Scratch buffers are laid out beside them.
 * (The row-streaming kernels of the softmax family use `stream.ts` instead.)
 *
 * Where each buffer lives is decided when it is declared, before the arena is placed:
 * placing it may grow memory, which detaches every view of the old buffer (`Runtime.pin`).
 *
 * @module
 */
import { Layout, type Runtime, runtime } from "./runtime.ts";

/** Typed arrays a kernel reads. */
export type Values = Float32Array | Float64Array | Int32Array | Uint8Array;

interface Slot {
  /** Its address when it lives in WebAssembly memory already, else -1 (in the arena at `off`). */
  readonly at: number;
  readonly off: number;
  readonly bytes: number;
  /** An input's values, copied into the arena when it is placed. */
  readonly src: Values | null;
  /** An output's destination outside WebAssembly memory (null: a fresh array). */
  readonly dst: Float32Array | null;
  /** An output in WebAssembly memory: its view, re-made after growth. */
  readonly pin: (() => Float32Array) | null;
}

/** The handle of an absent buffer: its address is 0 (the kernels' "none"). */
export const NONE = -1;

/** One kernel call's buffers (see the module). */
export class Frame {
  readonly rt: Runtime = runtime();
  #lay = new Layout();
  #slots: Slot[] = [];
  #base = 0;

  #add(slot: Slot): number {
    this.#slots.push(slot);
    return this.#slots.length - 1;
  }

  /** An input, used in place or copied into the arena once; null: none (`NONE`). */
  input(data: Values | null): number {
    if (!data) return NONE;
    const at = this.rt.addressOf(data);
    const off = at < 0 ? this.#lay.add(data.byteLength) : 0;
    return this.#add({ at, off, bytes: data.byteLength, src: data, dst: null, pin: null });
  }

  /** A float32 output of `length` values, into `out` (the caller's buffer) or a fresh array. */
  output(out: Float32Array | null, length: number): number {
    const at = out ? this.rt.addressOf(out) : -1;
    const pin = at >= 0 ? this.rt.pin(out as Float32Array) : null;
    const off = at < 0 ? this.#lay.add(length * 4) : 0;
    return this.#add({ at, off, bytes: length * 4, src: null, dst: at < 0 ? out : null, pin });
  }

  /** A scratch buffer of `bytes` (also where a kernel writes float64 results, read with `f64`). */
  scratch(bytes: number): number {
    return this.#add({ at: -1, off: this.#lay.add(bytes), bytes, src: null, dst: null, pin: null });
  }

  /** Places the arena (memory may grow) and copies the inputs that live outside it. */
  place(): this {
    this.#base = this.rt.arena(this.#lay.size);
    for (const s of this.#slots) if (s.src && s.at < 0) this.rt.put(this.#base + s.off, s.src);
    return this;
  }

  /** A buffer's address (0 for `NONE`). */
  ptr(h: number): number {
    if (h === NONE) return 0;
    const s = this.#slots[h];
    return s.at >= 0 ? s.at : this.#base + s.off;
  }

  /** A float32 view of a buffer, for the host to fill or read (valid until memory grows). */
  f32(h: number): Float32Array {
    return new Float32Array(this.rt.buffer, this.ptr(h), this.#slots[h].bytes >>> 2);
  }

  /** A copy of `n` float64 values of a buffer. */
  f64(h: number, n: number): Float64Array {
    return this.rt.f64(this.ptr(h), n);
  }

  /** An output's values: the caller's buffer (filled from the arena), a fresh copy, or a view where it lives. */
  take(h: number): Float32Array {
    const s = this.#slots[h];
    if (s.pin) return s.pin();
    const view = this.f32(h);
    if (s.dst) {
      this.rt.copy(s.dst, view);
      return s.dst;
    }
    return view.slice();
  }
}
