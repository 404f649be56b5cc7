/**
 * Bad-input cases shared by the losses (SPEC.md "Edge cases"): each names the
 * argument and the actual value the message must contain. Every builder takes a
 * function returning a fresh, valid 3 x 4 problem and breaks one thing in it.
 *
 * @module
 */
import type { ErrorCase } from "./suite.ts";

// deno-lint-ignore no-explicit-any
type Any = any;
type Make = () => Record<string, Any>;

const with_ = (make: Make, key: string, value: unknown) => () => ({ ...make(), [key]: value });

/** The argument's name as a whole word (so "x" does not match inside "Expected"). */
export const word = (name: string): RegExp => new RegExp(`(^|[^\\w.])${name.replace(/[.[\]]/g, "\\$&")}($|[^\\w])`);

/**
 * The matrix input `key` broken in every way: not a matrix, wrong data type, data
 * length not matching the shape, negative and non-integer sizes; with `first`, also
 * N = 0 (an empty batch) and C = 0; otherwise a shape not matching the first input.
 */
export function matrixErrors(make: Make, key: string, first: boolean, firstKey = "logits"): ErrorCase[] {
  const cases: ErrorCase[] = [
    {
      name: `${key} missing`,
      inputs: with_(make, key, undefined),
      type: TypeError,
      includes: [word(key), "undefined"],
    },
    {
      name: `${key} not a matrix`,
      inputs: with_(make, key, new Float32Array(12)),
      type: TypeError,
      includes: [word(key), "Float32Array"],
    },
    {
      name: `${key}.data not a Float32Array`,
      inputs: with_(make, key, { data: new Float64Array(12), shape: [3, 4] }),
      type: TypeError,
      includes: [`${key}.data`, "Float64Array"],
    },
    {
      name: `${key}.data length does not match its shape`,
      inputs: with_(make, key, { data: new Float32Array(11), shape: [3, 4] }),
      type: RangeError,
      includes: [`${key}.data`, "11"],
    },
    {
      name: `${key}: negative size`,
      inputs: with_(make, key, { data: new Float32Array(4), shape: [-3, 4] }),
      type: RangeError,
      includes: [`${key}.shape[0]`, "-3"],
    },
    {
      name: `${key}: non-integer size`,
      inputs: with_(make, key, { data: new Float32Array(12), shape: [3, 4.5] }),
      type: RangeError,
      includes: [`${key}.shape[1]`, "4.5"],
    },
  ];
  if (first) {
    cases.push(
      {
        name: "N = 0 (empty batch)",
        inputs: () => {
          const p = make();
          const out: Record<string, Any> = {};
          // Every matrix input empty, labels empty.
          for (const [k, v] of Object.entries(p)) {
            if (v && typeof v === "object" && "shape" in v) {
              out[k] = { data: new Float32Array(0), shape: [0, v.shape[1]] };
            } else out[k] = [];
          }
          return out;
        },
        type: RangeError,
        includes: [word(key), "0"],
      },
      {
        name: "C = 0",
        inputs: () => {
          const p = make();
          const out: Record<string, Any> = {};
          for (const [k, v] of Object.entries(p)) {
            if (v && typeof v === "object" && "shape" in v) {
              out[k] = { data: new Float32Array(0), shape: [v.shape[0], 0] };
            } else out[k] = v;
          }
          return out;
        },
        type: RangeError,
        includes: [word(key), "0"],
      },
    );
  } else {
    cases.push(
      {
        name: `${key} with more columns than ${firstKey}`,
        inputs: with_(make, key, { data: new Float32Array(15), shape: [3, 5] }),
        type: RangeError,
        includes: [`${key}.shape[1]`, "5"],
      },
      {
        name: `${key} with fewer rows than ${firstKey}`,
        inputs: with_(make, key, { data: new Float32Array(8), shape: [2, 4] }),
        type: RangeError,
        includes: [`${key}.shape[0]`, "2"],
      },
    );
  }
  return cases;
}

/** Labels broken in every way (for a 3-row, 4-class problem). */
export function labelErrors(make: Make): ErrorCase[] {
  return [
    {
      name: "labels missing",
      inputs: with_(make, "labels", undefined),
      type: TypeError,
      includes: ["labels", "undefined"],
    },
    {
      name: "labels of the wrong type",
      inputs: with_(make, "labels", new Float32Array([0, 1, 2])),
      type: TypeError,
      includes: ["labels", "Float32Array"],
    },
    {
      name: "labels length does not match N",
      inputs: with_(make, "labels", [0, 1]),
      type: RangeError,
      includes: ["labels", "2"],
    },
    { name: "label >= C", inputs: with_(make, "labels", [0, 1, 4]), type: RangeError, includes: ["labels[2]", "4"] },
    {
      name: "negative label that is not ignoreIndex",
      inputs: with_(make, "labels", [0, -1, 2]),
      type: RangeError,
      includes: ["labels[1]", "-1"],
    },
    {
      name: "label -100 when ignoreIndex is -1",
      inputs: with_(make, "labels", [-100, 1, 2]),
      options: { ignoreIndex: -1 },
      type: RangeError,
      includes: ["labels[0]", "-100"],
    },
    {
      name: "non-integer label",
      inputs: with_(make, "labels", [0, 2.5, 1]),
      type: RangeError,
      includes: ["labels[1]", "2.5"],
    },
    {
      name: "ignoreIndex not an integer",
      inputs: make,
      options: { ignoreIndex: 0.5 },
      type: [TypeError, RangeError],
      includes: ["options.ignoreIndex", "0.5"],
    },
  ];
}

/**
 * A number option out of its domain or of the wrong type: one case per bad value.
 * A number out of the domain is a RangeError, a value of another type a TypeError; for
 * an integer option (`integer`), a non-integer number may be either (SPEC allows both,
 * and `validate.integer` calls it a TypeError).
 */
export function numberOptionErrors(make: Make, option: string, bad: readonly unknown[], integer = false): ErrorCase[] {
  return bad.map((value) => ({
    name: `options.${option} = ${typeof value === "string" ? JSON.stringify(value) : String(value)}`,
    inputs: make,
    options: { [option]: value },
    type: typeof value !== "number"
      ? TypeError
      : integer && !Number.isInteger(value)
      ? [RangeError, TypeError]
      : RangeError,
    includes: [`options.${option}`, typeof value === "string" ? JSON.stringify(value) : String(value)],
  }));
}

/** A per-class vector option (weight, alpha) broken: wrong length, non-finite, wrong type. */
export function vectorOptionErrors(make: Make, option: string): ErrorCase[] {
  return [
    {
      name: `options.${option} of the wrong length`,
      inputs: make,
      options: { [option]: [1, 1] },
      type: RangeError,
      includes: [`options.${option}`, "2"],
    },
    {
      name: `options.${option} with NaN`,
      inputs: make,
      options: { [option]: [1, NaN, 1, 1] },
      type: RangeError,
      includes: [`options.${option}[1]`, "NaN"],
    },
    {
      name: `options.${option} of the wrong type`,
      inputs: make,
      options: { [option]: "1111" },
      type: TypeError,
      includes: [`options.${option}`, '"1111"'],
    },
  ];
}

/** Options that every loss rejects the same way: not an object, unknown reduction, checkFinite. */
export function commonOptionErrors(make: Make, nanInput: string, reduction = true, grads = true): ErrorCase[] {
  const cases: ErrorCase[] = [
    // Unknown keys are refused, naming the key and the accepted ones (never silently ignored).
    {
      name: "unknown option key",
      inputs: make,
      options: { label_smoothing: 0.1 },
      type: TypeError,
      includes: ["options", '"label_smoothing"', "checkFinite"],
    },
    {
      name: "unknown input key",
      inputs: () => ({ ...make(), weights: [1, 2, 3] }),
      type: TypeError,
      includes: ["inputs", '"weights"', nanInput],
    },
    grads
      ? {
        name: "unknown out key",
        inputs: make,
        options: { out: { [`${nanInput}s`]: make()[nanInput] } },
        type: TypeError,
        includes: ["options.out", `"${nanInput}s"`, nanInput],
      }
      : { name: "out refused by a metric", inputs: make, options: { out: {} }, type: TypeError, includes: ['"out"'] },
    { name: "options not an object", inputs: make, options: "mean", type: TypeError, includes: ["options", '"mean"'] },
    {
      name: "checkFinite not a boolean",
      inputs: make,
      options: { checkFinite: 1 },
      type: TypeError,
      includes: ["options.checkFinite", "1"],
    },
    {
      name: `checkFinite: NaN in ${nanInput}`,
      inputs: () => {
        const p = make();
        const m = p[nanInput];
        const data = m.data.slice();
        data[6] = NaN; // [1, 2] of a 3 x 4 matrix
        return { ...p, [nanInput]: { data, shape: m.shape } };
      },
      options: { checkFinite: true },
      type: RangeError,
      includes: [word(nanInput), "[1, 2]", "NaN"],
    },
  ];
  if (reduction) {
    cases.push({
      name: "unknown reduction",
      inputs: make,
      options: { reduction: "avg" },
      type: RangeError,
      includes: ["options.reduction", '"avg"'],
    });
  }
  return cases;
}

/** Bad upstream gradients of a reduced loss over 3 rows. */
export function upstreamErrors(make: Make): ErrorCase[] {
  return [
    {
      name: "upstream vector for a reduced loss",
      inputs: make,
      upstream: new Float32Array(3),
      methods: ["backward"],
      type: TypeError,
      includes: ["upstream", "Float32Array"],
    },
    {
      name: "upstream vector of the wrong length (reduction none)",
      inputs: make,
      options: { reduction: "none" },
      upstream: new Float32Array(4),
      methods: ["backward"],
      type: RangeError,
      includes: ["upstream", "4"],
    },
  ];
}
