/**
 * The browser bundle's entry of the TF.js webgpu check (tfjs_webgpu_check.ts):
 * tests/tfjs_webgpu_test.ts, registered as it loads through shims/test.ts, and the
 * function that runs it.
 *
 * @module
 */
import "../tfjs_webgpu_test.ts";

export { run } from "./shims/test.ts";
