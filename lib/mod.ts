/**
 * netbird-ct: NetBird-style traffic events from Linux conntrack.
 *
 * This module is the domain library. It knows nothing of pointers or C: a
 * {@linkcode ConntrackSource} (the real one is in `netbird-ct/ffi`) delivers decoded
 * {@linkcode FlowEvent}s, and a {@linkcode ConntrackTracker} turns the ones that concern the
 * overlay network into start/end {@linkcode FlowRecord}s with NetBird's direction, counter and
 * flow-ID rules.
 *
 * ```ts
 * import { ConntrackTracker, FlowIdGenerator, JsonLinesSink, Overlay } from "./mod.ts";
 *
 * const tracker = new ConntrackTracker(
 *   () => ({
 *     async *batches() {},
 *     dump: () => 0,
 *     stats: () => ({ received: 0, overruns: 0, kernelDrops: 0 }),
 *     close() {},
 *     [Symbol.dispose]() {},
 *   }),
 *   new JsonLinesSink(Deno.stdout),
 *   {
 *     overlay: new Overlay({ networks: ["100.64.0.0/10"], addresses: ["100.64.0.1"] }),
 *     flowIds: new FlowIdGenerator("1cc4bb85-0ca9-5a5d-a913-81b334076105"),
 *   },
 * );
 * await tracker.start();
 * await tracker.stop();
 * ```
 *
 * @module
 */

export * from "./flow.ts";
export * from "./net.ts";
export * from "./overlay.ts";
export * from "./record.ts";
export * from "./source.ts";
export * from "./tracker.ts";
export * from "./accounting.ts";
export * from "./jsonl.ts";
export * from "./uuid.ts";
export * from "./live.ts";
export * from "./routes.ts";
export * from "./aggregate.ts";
export * from "./logger.ts";
export * from "./ipfix.ts";
export * from "./ipfix_export.ts";
export * from "./drops.ts";
