import assert from "node:assert/strict";
import { Overlay } from "../../lib/overlay.ts";
import type { FlowRecord } from "../../lib/record.ts";
import { ConntrackTracker, type TrackerOptions } from "../../lib/tracker.ts";
import { FlowIdGenerator } from "../../lib/uuid.ts";
import { FakeSource } from "../_fakes/fake_source.ts";
import { event, flow } from "../_fakes/flows.ts";

class Clock {
  ms = 0;
  readonly now = (): number => this.ms;
}

function options(clock: Clock, extra: Partial<TrackerOptions> = {}): TrackerOptions {
  return {
    overlay: new Overlay({ networks: ["100.64.0.0/16"], addresses: ["100.64.0.1"] }),
    flowIds: new FlowIdGenerator("1cc4bb85-0ca9-5a5d-a913-81b334076105"),
    monotonic: clock.now,
    activeTimeoutMs: 1000,
    ...extra,
  };
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 300));
const A = { id: 1, src: "100.64.0.1", dst: "100.64.0.2", sport: 5000, dport: 80 };
const sum = (rs: FlowRecord[], k: "txBytes" | "rxBytes" | "txPackets" | "rxPackets"): bigint =>
  rs.reduce((s, r) => s + r[k], 0n);

Deno.test("ConntrackTracker with an active timeout emits updates whose sum with the end equals the kernel's totals", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  const records: FlowRecord[] = [];
  const tracker = new ConntrackTracker(
    () => src,
    { write: (r) => records.push(...r) },
    options(clock),
  );
  await tracker.start();
  src.push(event("new", A));
  await until(() => records.length === 1, 2000, "the start");
  src.table = [flow({ ...A, orig: [10n, 1000n], reply: [5n, 500n] })];
  clock.ms = 600; // a dump is due (half the timeout), but the flow is younger than the timeout
  await tick();
  assert.equal(records.length, 1);
  src.table = [flow({ ...A, orig: [20n, 2000n], reply: [8n, 800n] })];
  clock.ms = 1200;
  await until(() => records.length === 2, 2000, "the first update");
  src.table = [flow({ ...A, orig: [50n, 5000n], reply: [9n, 900n] })];
  clock.ms = 2300;
  await until(() => records.length === 3, 2000, "the second update");
  src.push(event("destroy", { ...A, orig: [60n, 6000n], reply: [12n, 1200n] }));
  await until(() => records.length === 4, 2000, "the end");
  await tracker.stop();
  assert.deepEqual(records.map((r) => r.type), ["start", "update", "update", "end"]);
  assert.deepEqual(
    records.map((r) => r.txBytes),
    [0n, 2000n, 3000n, 1000n],
    "egress: tx = orig deltas",
  );
  assert.deepEqual(records.map((r) => r.rxPackets), [0n, 8n, 1n, 3n], "egress: rx = reply deltas");
  assert.equal(sum(records, "txBytes"), 6000n);
  assert.equal(sum(records, "rxBytes"), 1200n);
  assert.equal(sum(records, "txPackets"), 60n);
  assert.equal(new Set(records.map((r) => r.flowId)).size, 1);
  assert.equal(tracker.stats().updates, 2);
});

Deno.test("ConntrackTracker without an active timeout never dumps for updates and ends carry totals", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  const records: FlowRecord[] = [];
  const tracker = new ConntrackTracker(
    () => src,
    { write: (r) => records.push(...r) },
    (({ activeTimeoutMs: _, ...rest }) => rest)(options(clock)),
  );
  await tracker.start();
  const dumps = src.dumps;
  src.push(event("new", A));
  clock.ms = 60_000;
  await tick();
  src.push(event("destroy", { ...A, orig: [60n, 6000n], reply: [12n, 1200n] }));
  await until(() => records.length === 2, 2000, "start and end");
  await tracker.stop();
  assert.equal(src.dumps, dumps + 0, "no periodic dump");
  assert.equal(records[1]!.txBytes, 6000n);
});

Deno.test("ConntrackTracker synthesized end after updates carries only the rest of the last known counters", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  const records: FlowRecord[] = [];
  const tracker = new ConntrackTracker(
    () => src,
    { write: (r) => records.push(...r) },
    options(clock, { resync: { minIntervalMs: 0, endGraceMs: 0, preexistingPollMs: 10_000 } }),
  );
  await tracker.start();
  src.push(event("new", A));
  await until(() => records.length === 1, 2000, "the start");
  src.table = [flow({ ...A, orig: [20n, 2000n], reply: [8n, 800n] })];
  clock.ms = 1200;
  await until(() => records.length === 2, 2000, "the update");
  // A resync sees newer counters; a later one finds the flow gone (its DESTROY was lost).
  src.table = [flow({ ...A, orig: [30n, 2500n], reply: [9n, 850n] })];
  src.overrun();
  src.push(event("new", { ...A, id: 2, sport: 5001 }));
  await until(() => tracker.stats().resyncs === 1, 2000, "the first resync");
  src.table = [flow({ ...A, id: 2, sport: 5001 })];
  src.overrun();
  src.push(event("new", { ...A, id: 3, sport: 5002 }));
  await until(() => records.some((r) => r.type === "end" && r.conntrackId === 1), 2000, "the end");
  await tracker.stop();
  const end = records.find((r) => r.type === "end" && r.conntrackId === 1)!;
  assert.equal(end.reason, "resync");
  assert.deepEqual([end.txBytes, end.rxBytes, end.txPackets], [500n, 50n, 10n]);
  const all = records.filter((r) => r.conntrackId === 1);
  assert.equal(sum(all, "txBytes"), 2500n, "start + update + synthesized end = last known total");
});
