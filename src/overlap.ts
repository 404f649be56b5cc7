/**
 * Refuses `out` buffers that share memory with an input, the upstream gradient or another
 * `out` buffer. No loss computes in place: the WebAssembly kernels of several losses read
 * an input again after writing a gradient (the SphereFace and L-Softmax label terms read
 * x and W, the centre terms the features), and a WebGPU dispatch cannot bind one buffer
 * both for reading and for writing, so an overlap would give wrong gradients on one
 * backend and a WebGPU validation error on another. It is refused before any work, on
 * every backend, with a `TypeError` that names both.
 *
 * Host memory is compared by its `ArrayBuffer` and byte range, so subarrays of one buffer
 * and `alloc`'d matrices (views into the one WebAssembly memory) overlap only where their
 * bytes do; a GPU-resident matrix starts at byte 0 of its buffer, so two overlap when
 * they are the same buffer.
 *
 * @module
 */
import { isGpuMatrix } from "./validate.ts";

/** The memory a value occupies: an `ArrayBuffer` (or `GPUBuffer`) and a byte range. */
interface Region {
  readonly name: string;
  readonly memory: unknown;
  readonly start: number;
  readonly end: number;
}

/**
 * The regions of a value: a typed array, a matrix's `data` (a host or integer matrix), a
 * GPU matrix's buffer, or the items of a list of matrices. Anything else (numbers, arrays
 * of numbers, missing optional inputs) occupies none that a kernel could write.
 */
function regions(name: string, value: unknown, into: Region[], depth = 0): Region[] {
  if (ArrayBuffer.isView(value)) {
    into.push({ name, memory: value.buffer, start: value.byteOffset, end: value.byteOffset + value.byteLength });
  } else if (isGpuMatrix(value)) {
    into.push({ name, memory: value.buffer, start: 0, end: value.buffer.size });
  } else if (Array.isArray(value)) {
    // A list of matrices (an array of labels or indices holds numbers: its first item says which).
    if (depth === 0 && typeof value[0] === "object") value.forEach((m, i) => regions(`${name}[${i}]`, m, into, 1));
  } else if (typeof value === "object" && value !== null && ArrayBuffer.isView((value as { data?: unknown }).data)) {
    regions(name, (value as { data: unknown }).data, into, depth);
  }
  return into;
}

const overlaps = (a: Region, b: Region) => a.memory === b.memory && a.start < b.end && b.start < a.end;

/**
 * Checks that no buffer of `out` overlaps an input, the upstream gradient or another
 * buffer of `out`; an overlap is a `TypeError` naming both (`options.out.x`, `inputs.x`).
 */
export function checkOverlap(inputs: object, out: object | undefined, upstream?: unknown): void {
  if (out === undefined) return;
  const read: Region[] = [];
  for (const [key, value] of Object.entries(inputs)) regions(`inputs.${key}`, value, read);
  regions("upstream", upstream, read);
  const written: Region[] = [];
  for (const [key, value] of Object.entries(out)) {
    for (const w of regions(`options.out.${key}`, value, [])) {
      const other = [...read, ...written].find((r) => overlaps(w, r));
      if (other) {
        throw new TypeError(
          `Expected ${w.name} to share no memory with the inputs, the upstream gradient or the other out buffers (no loss computes in place), got one overlapping ${other.name}`,
        );
      }
      written.push(w);
    }
  }
}
