// Entry point of the test build (tests/helpers/wasm_testing.generated.ts), never shipped:
// array wrappers around the vectorised math of math.ts for its accuracy test
// (tests/math_test.ts). Each applies a function to n floats at p, in place, through the
// vector code and through the scalar tail the kernels use (the same numerics).
import { expNeg, expNeg1, expv, exp1, logv, log1 } from "./math";

/** e^x of n floats at p, in place: the general exp, or with neg the softmax variant. */
export function exp_array(p: usize, n: i32, neg: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const x = v128.load(p + (<usize>i << 2));
    v128.store(p + (<usize>i << 2), neg ? expNeg(x) : expv(x));
  }
  for (; i < n; i++) {
    const x = load<f32>(p + (<usize>i << 2));
    store<f32>(p + (<usize>i << 2), neg ? expNeg1(x) : exp1(x));
  }
}

/** log(x) of n floats at p, in place. */
export function log_array(p: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(p + (<usize>i << 2), logv(v128.load(p + (<usize>i << 2))));
  for (; i < n; i++) store<f32>(p + (<usize>i << 2), log1(load<f32>(p + (<usize>i << 2))));
}

/** First free byte above the static data: the test's buffers start here. */
export function heap_base(): usize {
  return __heap_base;
}
