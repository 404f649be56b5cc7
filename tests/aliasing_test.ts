// An `out` buffer that shares memory with an input, the upstream gradient or another `out`
// buffer is refused before any work with a TypeError naming both (no loss computes in
// place; docs/LOSSES.md "Options every loss takes"). Tested for every loss, every `out`
// key and every input with memory (matrices, lists of matrices, integer arrays), on every
// backend: views of one ArrayBuffer sharing one element, the same `alloc` matrix
// (WebAssembly), the same GPU buffer (WebGPU). Views of one buffer that do not overlap are
// accepted and give what separate buffers give.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { alloc } from "../cpu.ts";
import { assertThrowsNamed } from "./helpers/assert.ts";
import { type Backend, backends } from "./helpers/backends.ts";
import { sharedDevice, upload } from "./helpers/gpu.ts";
import { init } from "../mod.ts";
import { type Case, cases, isMetric } from "./helpers/wasm_cases.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Values = Float32Array | Int32Array;

const CASES = cases().filter((cs) => !isMetric(cs));

/** The first matrix of a list input, or the input itself. */
const first = (value: Any): Any => (Array.isArray(value) && typeof value[0] === "object" ? value[0] : value);

/** The typed array holding an input's values (a list's first matrix's), or null when it has none. */
function memoryOf(value: Any): Values | null {
  const m = first(value);
  if (ArrayBuffer.isView(m)) return m as Values;
  return m && ArrayBuffer.isView(m.data) ? m.data : null;
}

/** `value` with its first matrix (or its typed array) replaced by `m`. */
function withFirst(value: Any, m: Any): Any {
  if (Array.isArray(value) && typeof value[0] === "object") return [m, ...value.slice(1)];
  return m;
}

/** `value` with the memory of `memoryOf(value)` replaced by `data`. */
const withMemory = (value: Any, data: Values): Any =>
  withFirst(value, ArrayBuffer.isView(first(value)) ? data : { ...first(value), data });

/** A case's `out` keys (the transforms also write `output`), each with the input whose shape its buffer has. */
function outKeys(cs: Case): [key: string, input: string][] {
  const keys: [string, string][] = cs.spec.grads.map((g) => [g, g]);
  return cs.spec.matrixOutput ? [...keys, ["output", "x"]] : keys;
}

/** Fresh `out` buffers for the input `input` (a list for a list input), the first one with values `data` when given. */
function outFor(cs: Case, input: string, data?: Float32Array): Any {
  const fresh = (m: Any) => ({ data: new Float32Array(m.shape[0] * m.shape[1]), shape: m.shape });
  const value = cs.inputs[input];
  const head = first(value);
  const own = data ? { data, shape: head.shape } : fresh(head);
  return Array.isArray(value) ? [own, ...value.slice(1).map(fresh)] : own;
}

/** Elements of the first matrix of an input (or out buffer). */
const sizeOf = (value: Any): number => first(value).shape[0] * first(value).shape[1];

/** How an error names the first matrix of `value` called `name`. */
const nameOf = (
  name: string,
  value: Any,
) => (Array.isArray(value) && typeof value[0] === "object" ? `${name}[0]` : name);

/** `valueAndGrad` of the case's loss with `out` (the transforms with their upstream). */
function call(b: Backend, cs: Case, inputs: Any, out: Any, upstream = cs.upstream): unknown {
  return (b.losses as Any)[cs.spec.name].valueAndGrad(inputs, { out }, upstream);
}

/** What a call reads (its inputs, and the transforms' upstream): the name an error gives, the key, the value. */
function readables(cs: Case): [name: string, key: string | null, value: Any][] {
  const named: [string, string | null, Any][] = Object.entries(cs.inputs).map(([k, v]) => [`inputs.${k}`, k, v]);
  return cs.upstream ? [...named, ["upstream", null, cs.upstream]] : named;
}

/** A call's inputs and upstream with the readable `key` (null: the upstream) replaced by `value`. */
function replaced(cs: Case, key: string | null, value: Any): [Any, Any] {
  return key === null ? [cs.inputs, value] : [{ ...cs.inputs, [key]: value }, cs.upstream];
}

/** A copy of `like` and a float view of `n` elements in one ArrayBuffer, sharing one element (`like`'s last). */
function sharingOne(like: Values, n: number): [Values, Float32Array] {
  const buffer = new ArrayBuffer(4 * (like.length - 1 + n));
  const copy = new (like.constructor as Int32ArrayConstructor)(buffer, 0, like.length);
  copy.set(like);
  return [copy, new Float32Array(buffer, 4 * (like.length - 1), n)];
}

/** A result with every typed array as a plain array (views into different buffers compare by value). */
function plain(r: unknown): unknown {
  if (ArrayBuffer.isView(r)) return Array.from(r as Float32Array);
  if (Array.isArray(r)) return r.map(plain);
  if (typeof r === "object" && r !== null) return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, plain(v)]));
  return r;
}

for (const b of backends) {
  describe(`${b.name}: out buffers sharing memory`, () => {
    for (const cs of CASES) {
      it(`${cs.spec.name}: every out key overlapping every input is refused`, async () => {
        for (const [g, gi] of outKeys(cs)) {
          for (const [name, k, value] of readables(cs)) {
            const mem = memoryOf(value);
            if (mem === null || mem.length === 0) continue;
            const [copy, shared] = sharingOne(mem, sizeOf(cs.inputs[gi]));
            const [inputs, upstream] = replaced(cs, k, withMemory(value, copy));
            await assertThrowsNamed(
              () => call(b, cs, inputs, { [g]: outFor(cs, gi, shared) }, upstream),
              TypeError,
              nameOf(`options.out.${g}`, cs.inputs[gi]),
              nameOf(name, value),
            );
          }
        }
      });

      it(`${cs.spec.name}: out buffers overlapping each other are refused`, async () => {
        const keys = outKeys(cs);
        for (let i = 0; i < keys.length; i++) {
          for (let j = i + 1; j < keys.length; j++) {
            const [[g1, i1], [g2, i2]] = [keys[i], keys[j]];
            const [copy, shared] = sharingOne(new Float32Array(sizeOf(cs.inputs[i1])), sizeOf(cs.inputs[i2]));
            const out = { [g1]: outFor(cs, i1, copy as Float32Array), [g2]: outFor(cs, i2, shared) };
            await assertThrowsNamed(
              () => call(b, cs, cs.inputs, out),
              TypeError,
              nameOf(`options.out.${g1}`, cs.inputs[i1]),
              nameOf(`options.out.${g2}`, cs.inputs[i2]),
            );
          }
        }
      });

      it(`${cs.spec.name}: views of one buffer that do not overlap are accepted`, async () => {
        // Every input, the upstream and every out buffer end to end in one ArrayBuffer.
        const parts: [Values, (d: Values) => void][] = [];
        const inputs: Any = { ...cs.inputs };
        let upstream = cs.upstream;
        for (const [, k, value] of readables(cs)) {
          const mem = memoryOf(value);
          const put = (d: Values) => (k === null ? upstream = withMemory(value, d) : inputs[k] = withMemory(value, d));
          if (mem) parts.push([mem, put]);
        }
        const out: Any = {};
        for (const [g, gi] of outKeys(cs)) {
          parts.push([new Float32Array(sizeOf(cs.inputs[gi])), (d) => (out[g] = outFor(cs, gi, d as Float32Array))]);
        }
        const buffer = new ArrayBuffer(parts.reduce((s, [m]) => s + m.byteLength, 0));
        let at = 0;
        for (const [m, put] of parts) {
          const d = new (m.constructor as Int32ArrayConstructor)(buffer, at, m.length);
          d.set(m);
          put(d);
          at += m.byteLength;
        }
        const separate = Object.fromEntries(outKeys(cs).map(([g, gi]) => [g, outFor(cs, gi)]));
        assert.deepEqual(
          plain(await call(b, cs, inputs, out, upstream)),
          plain(await call(b, cs, cs.inputs, separate)),
        );
      });
    }

    it("an upstream vector (reduction none) overlapping an out buffer is refused", async () => {
      const cs = CASES.find((c) => c.spec.name === "crossEntropy")!;
      const [upstream, shared] = sharingOne(new Float32Array(3).fill(1), sizeOf(cs.inputs.logits));
      await assertThrowsNamed(
        () =>
          (b.losses as Any).crossEntropy.backward(cs.inputs, {
            reduction: "none",
            out: { logits: outFor(cs, "logits", shared) },
          }, upstream),
        TypeError,
        "options.out.logits",
        "upstream",
      );
    });

    if (b.name === "wasm") {
      it("the same alloc matrix as an input and an out buffer is refused", async () => {
        for (const cs of CASES) {
          for (const [g, gi] of outKeys(cs)) {
            const m = first(cs.inputs[gi]);
            const a = alloc(m.shape);
            a.data.set(m.data);
            const [inputs, upstream] = replaced(cs, gi, withFirst(cs.inputs[gi], a));
            try {
              await assertThrowsNamed(
                () => call(b, cs, inputs, { [g]: withFirst(outFor(cs, gi), a) }, upstream),
                TypeError,
                nameOf(`options.out.${g}`, cs.inputs[gi]),
                nameOf(`inputs.${gi}`, cs.inputs[gi]),
              );
            } finally {
              a.free();
            }
          }
        }
      });
    }

    if (b.name === "webgpu") {
      it("the same GPU buffer as an input and an out buffer is refused", async () => {
        // The losses on the device that `upload` puts buffers on.
        const gpu = { name: "webgpu", losses: await init({ backend: "webgpu", device: await sharedDevice() }) };
        for (const cs of CASES) {
          for (const [g, gi] of outKeys(cs)) {
            for (const [name, k, value] of readables(cs)) {
              // The class rule is host data, as integer inputs are.
              if (k === "rule" || !(memoryOf(value) instanceof Float32Array)) continue;
              const m = first(value), size = Math.max(sizeOf(m), sizeOf(cs.inputs[gi]));
              const data = new Float32Array(size);
              data.set(m.data);
              const { buffer } = await upload({ data, shape: [1, size] });
              const [inputs, upstream] = replaced(cs, k, withFirst(value, { buffer, shape: m.shape }));
              const rest = Array.isArray(cs.inputs[gi])
                ? await Promise.all(cs.inputs[gi].slice(1).map((x: Any) => upload(x)))
                : [];
              const own = { buffer, shape: first(cs.inputs[gi]).shape };
              const out = { [g]: Array.isArray(cs.inputs[gi]) ? [own, ...rest] : own };
              try {
                await assertThrowsNamed(
                  () => call(gpu, cs, inputs, out, upstream),
                  TypeError,
                  nameOf(`options.out.${g}`, cs.inputs[gi]),
                  nameOf(name, value),
                );
              } finally {
                buffer.destroy();
                for (const r of rest) r.buffer.destroy();
              }
            }
          }
        }
        gpu.losses.dispose();
      });
    }
  });
}
