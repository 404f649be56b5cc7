/**
 * Stands in for `src/backend.ts` in the bundled fixture suite (tests/helpers/backends.ts
 * imports `findAdapter` from it, and the package does not export it): the same lookup
 * through `navigator.gpu`, done only when the harness asked for WebGPU by setting
 * `globalThis.SOFTMARGIN_SUITE_WEBGPU` (the browser page with `?webgpu`), so that a run
 * meant for the CPU backends never waits on a software adapter.
 *
 * @module
 */

/** An adapter, or null and why. */
export interface Found {
  adapter: GPUAdapter | null;
  note: string;
}

/** The adapter the suite's WebGPU backend would use, when the harness asked for one. */
export async function findAdapter(): Promise<Found> {
  if ((globalThis as { SOFTMARGIN_SUITE_WEBGPU?: boolean }).SOFTMARGIN_SUITE_WEBGPU !== true) {
    return { adapter: null, note: "WebGPU not requested by this run" };
  }
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return { adapter: null, note: "navigator.gpu is undefined" };
  const adapter = await gpu.requestAdapter();
  if (!adapter) return { adapter: null, note: "navigator.gpu.requestAdapter() gave null" };
  const { vendor, architecture, description } = adapter.info;
  return { adapter, note: [vendor, architecture, description].filter((s) => s).join(" ") || "unnamed adapter" };
}
