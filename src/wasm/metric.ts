export { metric } from "../reference/metric.ts";
