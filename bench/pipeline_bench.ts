/**
 * Per-event cost of the userspace pipeline (decode → classify → record → JSON line), without the
 * kernel. Run: deno bench bench/
 */

import { decodeEvent } from "../ffi/decode.ts";
import { JsonLinesSink } from "../lib/jsonl.ts";
import { Overlay } from "../lib/overlay.ts";
import { buildRecord, toJsonLine } from "../lib/record.ts";
import { ConntrackTracker } from "../lib/tracker.ts";
import { FlowIdGenerator, uuidV4 } from "../lib/uuid.ts";
import { FakeAttrReader, ipv4Attrs } from "../tests/_fakes/fake_attr_reader.ts";
import { event } from "../tests/_fakes/flows.ts";
import { FakeSource } from "../tests/_fakes/fake_source.ts";

const NS = "1cc4bb85-0ca9-5a5d-a913-81b334076105";
const overlay = new Overlay({ networks: ["100.64.0.0/10"], addresses: ["100.64.0.1"] });
const ids = new FlowIdGenerator(NS);
const reader = new FakeAttrReader(
  ipv4Attrs({
    src: "100.64.0.1",
    dst: "100.64.3.7",
    proto: 17,
    sport: 40000,
    dport: 53,
    id: 123456,
    counters: { op: 1n, ob: 60n, rp: 1n, rb: 60n },
  }),
);
const ev = decodeEvent(4, reader)!;
const ts = new Date();

Deno.bench("decodeEvent (fake reader, IPv4 UDP with counters)", () => {
  decodeEvent(4, reader);
});
Deno.bench("Overlay.classify", () => {
  overlay.classify(ev.flow);
});
Deno.bench("FlowIdGenerator.flowId (UUIDv5)", () => {
  ids.flowId(123456);
});
Deno.bench("uuidV4", () => {
  uuidV4();
});
Deno.bench("buildRecord + toJsonLine", () => {
  toJsonLine(
    buildRecord("end", ev.flow, "egress", { eventId: "e", flowId: "f", timestamp: ts }),
  );
});

const batch = Array.from(
  { length: 4096 },
  (_, i) =>
    event(i % 2 === 0 ? "new" : "destroy", {
      id: i >> 1,
      src: "100.64.0.1",
      dst: "100.64.3.7",
      proto: 17,
      sport: 40000 + (i >> 1),
      dport: 53,
    }),
);
Deno.bench("tracker: 4096-event batch to a JSON-lines sink (/dev/null)", async (b) => {
  const devnull = Deno.openSync("/dev/null", { write: true });
  const src = new FakeSource();
  src.push(...batch);
  const tracker = new ConntrackTracker(() => src, new JsonLinesSink(devnull), {
    overlay,
    flowIds: ids,
  });
  b.start();
  await tracker.start();
  await tracker.stop();
  b.end();
  devnull.close();
});
