// WebAssembly memory stays flat: over 100,000 calls that cycle through every loss on every
// path (fresh gradients, `out` buffers in ordinary Float32Arrays, matrices allocated in
// WebAssembly memory once or on every call; valueAndGrad and forward) neither the memory
// nor the allocator's blocks grow after the first round, and errors, thrown before the
// kernels run (bad labels, bad out shapes, freed matrices, NaN under checkFinite) or in the
// middle of a call (a problem whose scratch cannot fit in 4 GiB, found while the arena is
// being placed), leave it as it was, with the next call right (against the float64
// reference). Memory is measured as the memory's byte length and the allocator's live and
// free blocks (`Runtime.stats`, internal).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { alloc, wasm } from "../cpu.ts";
import { type MemoryStats, runtime } from "../src/wasm/runtime.ts";
import {
  assertMatches,
  call,
  type Case,
  cases,
  isMetric,
  type Method,
  type OutPlace,
  outs,
  type Place,
  place,
  reference,
} from "./helpers/wasm_cases.ts";

// deno-lint-ignore no-explicit-any
type Any = any;

const CALLS = 100_000;
const CASES = cases();
/**
 * Each test makes thousands of calls (about 5-8 s under Bun on a loaded 2-vCPU machine,
 * past bun test's default 5 s per test).
 */
const LONG = { timeout: 120_000 };

/** A way of calling: where the matrices are, where the gradients go, which method. */
interface Path {
  inputs: Place;
  out: OutPlace;
  method: Method;
  /** Allocate the matrices on every call (and free them after) rather than once. */
  perCall?: boolean;
}

const PATHS: Path[] = [
  { inputs: "host", out: "fresh", method: "valueAndGrad" },
  { inputs: "host", out: "fresh", method: "forward" },
  { inputs: "host", out: "host", method: "valueAndGrad" },
  { inputs: "alloc", out: "alloc", method: "valueAndGrad" },
  { inputs: "alloc", out: "fresh", method: "forward" },
  { inputs: "alloc", out: "alloc", method: "valueAndGrad", perCall: true },
];

/** One loss on one path, its matrices placed once (unless per call), and its reference result. */
interface Combo {
  cs: Case;
  path: Path;
  run(): Any;
  check(label: string): void;
  free(): void;
}

function combo(cs: Case, path: Path): Combo {
  const want = reference(cs, path.method);
  const placeAll = () => ({ placed: place(cs, path.inputs), o: outs(cs, path.out) });
  const once = path.perCall ? null : placeAll();
  const run = () => {
    const p = once ?? placeAll();
    try {
      return call(wasm, cs, p.placed, p.o.out, path.method);
    } finally {
      if (!once) [p.placed.free(), p.o.free()];
    }
  };
  const name = `${cs.spec.name} (${path.inputs} inputs, ${path.out} gradients, ${path.method}${
    path.perCall ? ", allocated per call" : ""
  })`;
  return {
    cs,
    path,
    run,
    check: (label) => assertMatches(run(), want, `${name}, ${label}`),
    free: () => once && [once.placed.free(), once.o.free()],
  };
}

const stats = (): MemoryStats => runtime().stats();

/**
 * Asserts memory and the allocator are as in `before`: the same memory, live blocks, free
 * bytes and arena (the arena may have moved: after an error it is placed again).
 */
function assertFlat(before: MemoryStats, label: string): void {
  const { largestFree: _, ...now } = stats(), { largestFree: __, ...then } = before;
  if (now.arena === then.arena) {
    assert.deepEqual(now, then, `${label}: memory or the allocator's blocks changed`);
    return;
  }
  // A call that failed while placing the arena freed it; the calls since may have needed
  // a smaller one (which engine refuses which growth, and when, differs: Bun, V8). Memory
  // must not have grown, and the live blocks other than the arena must be the same.
  assert.ok(now.arena < then.arena, `${label}: the arena grew from ${then.arena} to ${now.arena} bytes`);
  assert.equal(now.bytes, then.bytes, `${label}: memory grew`);
  assert.equal(now.blocks, then.blocks, `${label}: live blocks changed`);
  assert.equal(now.used - now.arena, then.used - then.arena, `${label}: live bytes besides the arena changed`);
}

describe("WebAssembly memory stays flat", () => {
  it(`over ${CALLS} calls of every loss on every path`, LONG, () => {
    const combos = CASES.flatMap((cs) =>
      PATHS.filter((p) => !(isMetric(cs) && p.out !== "fresh")).map((p) => combo(cs, p))
    );
    try {
      // The first round places the arena at its largest and checks every path.
      combos.forEach((c) => c.check("first round"));
      const before = stats();
      let calls = combos.length, rounds = 1;
      while (calls < CALLS) {
        for (const c of combos) c.run();
        calls += combos.length;
        rounds++;
        if (rounds % 100 === 0) assertFlat(before, `after ${calls} calls`);
      }
      assertFlat(before, `after ${calls} calls`);
      combos.forEach((c) => c.check(`after ${calls} calls`));
      assertFlat(before, "after the last round");
    } finally {
      combos.forEach((c) => c.free());
    }
  });

  it("after errors before and during a call, and the next call is right", LONG, () => {
    const combos = CASES.map((cs) => combo(cs, PATHS[3])), fresh = CASES.map((cs) => combo(cs, PATHS[5]));
    try {
      const round = () => [...combos, ...fresh].forEach((c) => c.run());
      round();
      const before = stats();
      // Each error case, thrown by one loss: then every loss is right and memory as before.
      const errors: [string, RegExp, (cs: Case) => (() => unknown) | null][] = [
        ["a bad label", /labels\[0\]/, (cs) => {
          if (!("labels" in cs.inputs)) return null;
          const labels = Int32Array.from(cs.inputs.labels as Int32Array);
          labels[0] = -7; // a class of no loss (the metric staples take any label >= 0), nor the default ignoreIndex
          const p = place(cs, "alloc");
          return () => {
            try {
              call(wasm, cs, { ...p, inputs: { ...p.inputs, labels } }, undefined);
            } finally {
              p.free();
            }
          };
        }],
        ["an out buffer of the wrong shape", /options\.out\./, (cs) => {
          if (isMetric(cs)) return null;
          // (a list gradient, expert logits or features: a list of wrong-shaped buffers)
          const k = cs.spec.grads[0], input = cs.inputs[k], [r, c] = (Array.isArray(input) ? input[0] : input).shape;
          const p = place(cs, "alloc"), bad = alloc([r, c + 1]);
          const out = Array.isArray(input) ? input.map(() => bad) : bad;
          return () => {
            try {
              call(wasm, cs, p, cs.spec.matrixOutput ? { x: bad, output: bad } : { [k]: out });
            } finally {
              [p.free(), bad.free()];
            }
          };
        }],
        ["a freed matrix", /freed/, (cs) => {
          const p = place(cs, "alloc");
          p.free();
          return () => call(wasm, cs, p, undefined);
        }],
        ["NaN under checkFinite", /NaN/, (cs) => {
          const p = place(cs, "alloc");
          const [first] = Object.values(p.inputs);
          (Array.isArray(first) ? first[0] : first).data[1] = NaN;
          return () => {
            try {
              call(wasm, cs, p, undefined, "valueAndGrad", { checkFinite: true });
            } finally {
              p.free();
            }
          };
        }],
      ];
      for (const [what, message, make] of errors) {
        for (const cs of CASES) {
          const bad = make(cs);
          if (!bad) continue;
          assert.throws(
            bad,
            (e: Error) => (e instanceof TypeError || e instanceof RangeError) && message.test(e.message),
            `${cs.spec.name} with ${what}: a TypeError or RangeError matching ${message}`,
          );
          assertFlat(before, `${cs.spec.name} after ${what}`);
          combos.forEach((c) => c.check(`after ${what} in ${cs.spec.name}`));
          assertFlat(before, `after ${what} in ${cs.spec.name}, then every loss`);
        }
      }
      // A head whose [N, 128] scratch blocks need more than 4 GiB: the arena is freed and its
      // replacement refused while it is being placed, inside the call.
      const n = 3_000_000;
      const big: Any = {
        x: { data: new Float32Array(n).fill(1), shape: [n, 1] },
        W: { data: new Float32Array(128).fill(1), shape: [128, 1] },
        labels: new Int32Array(n),
      };
      for (let k = 0; k < 2; k++) {
        assert.throws(
          () => wasm.marginHead.forward(big),
          (e: Error) => e instanceof RangeError && /4 GiB/.test(e.message),
        );
        // Matrices allocated now must not share memory with the arena the next call places.
        fresh.forEach((c) => c.check("after a problem too large for memory"));
        combos.forEach((c) => c.check("after a problem too large for memory"));
        round();
        assertFlat(before, "after a problem too large for memory, then every loss");
      }
    } finally {
      [...combos, ...fresh].forEach((c) => c.free());
    }
  });
});
