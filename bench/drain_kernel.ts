/**
 * Drain rate against the real kernel: queue 2·N conntrack events (N UDP flows, then a flush) on a
 * subscribed but idle socket, then time how fast they are read. Root only; needs an `ip netns`
 * namespace prepared like the storm harness's (overlay 100.64.0.0/16, stormgen built).
 *
 *   deno run -A bench/drain_kernel.ts NETNS [N] [source|tracker]
 */
// deno-lint-ignore-file no-console
import { openEventSource, openLibrary } from "../ffi/mod.ts";
import { ConntrackTracker, FlowIdGenerator, JsonLinesSink, Overlay } from "../lib/mod.ts";

const [netns = "smokeA", nText = "40000", mode = "tracker", batchText = "4096"] = Deno.args;
const n = Number(nText);
using lib = openLibrary();
const source = openEventSource(lib, { netns, maxBatch: Number(batchText) });
const run = (cmd: string[]): void => {
  const r = new Deno.Command("ip", {
    args: ["netns", "exec", netns, ...cmd],
    stdout: "null",
    stderr: "piped",
  })
    .outputSync();
  if (!r.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
};
run([`${Deno.env.get("HOME")}/.cache/ct-storm/stormgen`, "-n", String(n), "-f"]);
run(["conntrack", "-F"]);
const t0 = performance.now();
let events = 0;
if (mode === "source") {
  setTimeout(() => source.close(), 0);
  for await (const batch of source.batches()) events += batch.length;
} else {
  const out = Deno.openSync("/dev/null", { write: true });
  const sink = mode === "nosink" ? { write: () => {}, written: 0 } : new JsonLinesSink(out);
  const tracker = new ConntrackTracker(() => source, sink, {
    overlay: new Overlay({ networks: ["100.64.0.0/10"], addresses: ["100.64.0.1"] }),
    flowIds: new FlowIdGenerator(lib.flowNamespace(netns)),
  });
  await tracker.start();
  while (tracker.stats().events < 2 * n) await new Promise((r) => setTimeout(r, 1));
  await tracker.stop();
  events = tracker.stats().events;
  out.close();
}
const ms = performance.now() - t0;
const memory = Object.entries(Deno.memoryUsage())
  .map(([k, v]) => `${k}=${(v / 2 ** 20).toFixed(0)}MB`).join(" ");
console.log(
  `${mode}: ${events} events in ${ms.toFixed(0)} ms = ${Math.round((events / ms) * 1000)} ev/s, ` +
    `overruns ${source.stats().overruns}, ${memory}`,
);
