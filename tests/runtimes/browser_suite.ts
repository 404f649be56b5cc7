/**
 * The browser bundle's entry: the fixture suite (registered as it loads, through
 * shims/test.ts), the function that runs it, and which backends it runs on.
 *
 * @module
 */
import "./fixture_suite.ts";

export { run } from "./shims/test.ts";
export { backends, webgpuMissing } from "../helpers/backends.ts";
