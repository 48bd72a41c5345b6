import assert from "node:assert/strict";
import { Overlay } from "../../lib/overlay.ts";
import type { FlowRecord } from "../../lib/record.ts";
import { ConntrackTracker, type TrackerOptions } from "../../lib/tracker.ts";
import { FlowIdGenerator } from "../../lib/uuid.ts";
import { FakeDialer, FakeSource } from "../_fakes/fake_source.ts";
import { event, flow } from "../_fakes/flows.ts";

const NAMESPACE = "1cc4bb85-0ca9-5a5d-a913-81b334076105";

class Clock {
  ms = 0;
  readonly now = (): number => this.ms;
}

function options(clock: Clock, extra: Partial<TrackerOptions> = {}): TrackerOptions {
  return {
    overlay: new Overlay({ networks: ["100.64.0.0/16"], addresses: ["100.64.0.1"] }),
    flowIds: new FlowIdGenerator(NAMESPACE),
    backoff: { initialMs: 5, maxMs: 20, randomization: 0 },
    resync: { minIntervalMs: 1000, endGraceMs: 500 },
    monotonic: clock.now,
    ...extra,
  };
}

class Sink {
  records: FlowRecord[] = [];
  write(records: readonly FlowRecord[]): void {
    this.records.push(...records);
  }
  of(id: number): string[] {
    return this.records.filter((r) => r.conntrackId === id).map((r) =>
      r.reason === undefined ? r.type : `${r.type}:${r.reason}`
    );
  }
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const A = (id: number, dport = 80) => ({ id, src: "100.64.0.1", dst: "100.64.0.2", dport });

Deno.test("ConntrackTracker learns open flows from the startup dump and attributes their DESTROY", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(1)), flow(A(2)), flow({ id: 3, src: "8.8.8.8", dst: "1.1.1.1" })];
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(clock));
  await tracker.start();
  assert.equal(tracker.stats().existing, 2, "the non-overlay entry is not tracked");
  assert.equal(sink.records.length, 0, "no start records without emitExisting");
  src.push(event("destroy", { ...A(1), orig: [3n, 180n], reply: [2n, 120n] }));
  await until(() => sink.records.length === 1, 2000, "the end record");
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["end"], "a known flow's DESTROY needs no synthesized start");
  assert.equal(tracker.stats().synthesizedStarts, 0);
  assert.equal(tracker.stats().live, 1);
});

Deno.test("ConntrackTracker with emitExisting emits startup starts without counters", async () => {
  const src = new FakeSource();
  src.table = [flow({ ...A(1), orig: [5n, 500n], reply: [4n, 400n] })];
  const sink = new Sink();
  const tracker = new ConntrackTracker(
    () => src,
    sink,
    options(new Clock(), { emitExisting: true }),
  );
  await tracker.start();
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["start:startup"]);
  assert.equal(sink.records[0]!.txBytes, 0n, "counters belong to the end record");
});

Deno.test("ConntrackTracker does not emit a second start for a flow whose start it already wrote from a dump", async () => {
  const src = new FakeSource();
  src.table = [flow(A(1))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(
    () => src,
    sink,
    options(new Clock(), { emitExisting: true }),
  );
  await tracker.start();
  src.push(event("new", A(1)), event("new", A(2)));
  await until(() => tracker.stats().events === 2, 2000, "two events");
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["start:startup"]);
  assert.deepEqual(sink.of(2), ["start"]);
  assert.equal(tracker.stats().duplicates, 1);
});

Deno.test("ConntrackTracker synthesizes the start of a flow whose NEW was lost", async () => {
  const src = new FakeSource();
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(new Clock()));
  await tracker.start();
  src.push(event("destroy", { ...A(7), orig: [1n, 60n], reply: [1n, 60n] }));
  await until(() => sink.records.length === 2, 2000, "two records");
  await tracker.stop();
  assert.deepEqual(sink.of(7), ["start:resync", "end"]);
  assert.equal(sink.records[0]!.flowId, sink.records[1]!.flowId);
  assert.equal(tracker.stats().synthesizedStarts, 1);
});

Deno.test("ConntrackTracker resyncs after an overrun: missed starts now, missed ends after the grace period", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(1)), flow(A(2))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(clock));
  await tracker.start();
  clock.ms = 10_000;
  // The kernel lost: NEW of 3, DESTROY of 1. Table now: 2 (unchanged, new counters), 3.
  src.table = [flow({ ...A(2), orig: [9n, 900n], reply: [8n, 800n] }), flow(A(3)), flow(A(4))];
  src.overrun(2);
  src.push(event("new", A(4)));
  await until(() => tracker.stats().resyncs === 1, 2000, "a resync");
  assert.deepEqual(sink.of(3), ["start:resync"]);
  assert.deepEqual(sink.of(1), [], "the end waits for the grace period");
  assert.deepEqual(sink.of(2), [], "an unchanged flow gets no record");
  clock.ms += 600;
  await until(() => sink.of(1).length === 1, 2000, "the synthesized end");
  assert.deepEqual(sink.of(1), ["end:resync"]);
  await tracker.stop();
  const s = tracker.stats();
  assert.equal(s.synthesizedStarts, 1);
  assert.equal(s.synthesizedEnds, 1);
  assert.equal(s.source.overruns, 1);
  assert.equal(s.source.kernelDrops, 2);
});

Deno.test("ConntrackTracker synthesized end carries the counters of the last dump", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(1))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(clock));
  await tracker.start();
  clock.ms = 10_000;
  src.table = [flow({ ...A(1), orig: [3n, 300n], reply: [2n, 200n] })];
  src.overrun();
  src.push(event("new", A(9)));
  await until(() => tracker.stats().resyncs === 1, 2000, "the first resync");
  clock.ms = 20_000;
  src.table = [];
  src.overrun();
  src.push(event("new", A(10)));
  await until(() => tracker.stats().resyncs === 2, 2000, "the second resync");
  clock.ms = 30_000;
  await until(() => sink.of(1).length === 1, 2000, "the synthesized end");
  await tracker.stop();
  const end = sink.records.find((r) => r.conntrackId === 1)!;
  assert.deepEqual([end.txPackets, end.txBytes, end.rxPackets, end.rxBytes], [3n, 300n, 2n, 200n]);
});

Deno.test("ConntrackTracker prefers a real DESTROY that arrives within the grace period", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(1))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(clock));
  await tracker.start();
  clock.ms = 10_000;
  src.table = [flow(A(5))];
  src.overrun();
  src.push(event("new", A(5)));
  await until(() => tracker.stats().resyncs === 1, 2000, "a resync");
  src.push(event("destroy", { ...A(1), orig: [4n, 400n], reply: [4n, 400n] }));
  await until(() => sink.of(1).length === 1, 2000, "the real end");
  clock.ms += 10_000;
  await new Promise((r) => setTimeout(r, 300)); // a ticker round
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["end"]);
  assert.equal(tracker.stats().synthesizedEnds, 0);
});

Deno.test("ConntrackTracker rate-limits resyncs and serves overruns inside the interval later", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(clock));
  await tracker.start();
  clock.ms = 10_000;
  src.overrun();
  src.push(event("new", A(1)));
  await until(() => tracker.stats().resyncs === 1, 2000, "the first resync");
  const dumpsAfterFirst = src.dumps;
  clock.ms += 100;
  src.overrun();
  src.push(event("new", A(2)));
  src.overrun();
  src.push(event("new", A(3)));
  await until(() => tracker.stats().events === 3, 2000, "the events");
  assert.equal(src.dumps, dumpsAfterFirst, "no dump inside the interval");
  clock.ms += 1000;
  await until(() => tracker.stats().resyncs === 2, 2000, "the deferred resync");
  await tracker.stop();
  assert.equal(tracker.stats().resyncs, 2);
});

Deno.test("ConntrackTracker waits for the source to drain before it resyncs", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  let drained = false;
  src.drained = () => drained;
  const tracker = new ConntrackTracker(() => src, new Sink(), options(clock));
  await tracker.start();
  clock.ms = 10_000;
  src.overrun();
  src.push(event("new", A(1)));
  await until(() => tracker.stats().events === 1, 2000, "the event");
  assert.equal(tracker.stats().resyncs, 0);
  drained = true;
  await until(() => tracker.stats().resyncs === 1, 2000, "the resync once drained");
  await tracker.stop();
});

Deno.test("ConntrackTracker resyncs after reopening a failed source", async () => {
  const clock = new Clock();
  const l1 = new FakeSource("L1");
  const l2 = new FakeSource("L2");
  l1.table = [flow(A(1))];
  l2.table = [flow(A(2))];
  const sink = new Sink();
  const dialer = new FakeDialer([() => l1, () => l2]);
  const tracker = new ConntrackTracker(dialer.dial, sink, options(clock));
  await tracker.start();
  l1.fail();
  await until(() => tracker.stats().resyncs === 1, 2000, "a resync after reopen");
  await tracker.stop();
  assert.deepEqual(sink.of(2), ["start:resync"]);
  assert.deepEqual(sink.of(1), ["end:resync"], "stop flushes ends still waiting for their grace");
});

Deno.test("ConntrackTracker counts a failed dump and retries the resync", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  const tracker = new ConntrackTracker(() => src, new Sink(), options(clock));
  await tracker.start();
  clock.ms = 10_000;
  src.dumpError = new Error("EBUSY");
  src.overrun();
  src.push(event("new", A(1)));
  await until(() => tracker.stats().resyncFailures === 1, 2000, "a failed resync");
  src.dumpError = undefined;
  clock.ms += 2000;
  await until(() => tracker.stats().resyncs === 1, 2000, "the retried resync");
  await tracker.stop();
});

Deno.test("ConntrackTracker with reliable DESTROY synthesizes no end after an overrun (the kernel re-delivers it)", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(1))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(
    () => src,
    sink,
    options(clock, { reliableDestroy: true }),
  );
  await tracker.start();
  clock.ms = 10_000;
  src.table = [];
  src.overrun();
  src.push(event("new", A(2)));
  await until(() => tracker.stats().resyncs === 1, 2000, "a resync");
  clock.ms += 60_000;
  await new Promise((r) => setTimeout(r, 300)); // a ticker round
  assert.deepEqual(sink.of(1), []);
  src.push(event("destroy", A(1)));
  await until(() => sink.of(1).length === 1, 2000, "the re-delivered DESTROY");
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["end"]);
  assert.equal(tracker.stats().synthesizedEnds, 0);
});

Deno.test("ConntrackTracker with reliable DESTROY still synthesizes ends after a reopen (nobody listened)", async () => {
  const clock = new Clock();
  const l1 = new FakeSource("L1");
  const l2 = new FakeSource("L2");
  l1.table = [flow(A(1))];
  const sink = new Sink();
  const dialer = new FakeDialer([() => l1, () => l2]);
  const tracker = new ConntrackTracker(
    dialer.dial,
    sink,
    options(clock, { reliableDestroy: true }),
  );
  await tracker.start();
  l1.fail();
  await until(() => tracker.stats().resyncs === 1, 2000, "a resync after reopen");
  clock.ms += 1000;
  await until(() => sink.of(1).length === 1, 2000, "the synthesized end");
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["end:resync"]);
});

Deno.test("ConntrackTracker hands a big startup dump to the sink in chunks of at most 4096", async () => {
  const src = new FakeSource();
  src.table = Array.from({ length: 10_000 }, (_, i) => flow(A(i + 1, 1000 + (i % 50000))));
  const sizes: number[] = [];
  const tracker = new ConntrackTracker(
    () => src,
    { write: (r) => sizes.push(r.length) },
    options(new Clock(), { emitExisting: true }),
  );
  await tracker.start();
  await tracker.stop();
  assert.deepEqual(sizes, [4096, 4096, 1808]);
  assert.equal(tracker.stats().live, 10_000);
});

for (const reliableDestroy of [false, true]) {
  Deno.test(`ConntrackTracker.stop() reconciles losses not yet resynced and ends flows the kernel no longer has (reliableDestroy=${reliableDestroy})`, async () => {
    const clock = new Clock();
    const src = new FakeSource();
    src.table = [flow(A(1)), flow(A(2))];
    const sink = new Sink();
    const tracker = new ConntrackTracker(() => src, sink, options(clock, { reliableDestroy }));
    await tracker.start();
    src.push(event("new", A(3)));
    await until(() => tracker.stats().events === 1, 2000, "the event");
    // Lost: DESTROY of 1, NEW of 4; inside the rate limit, so no resync has run yet.
    src.table = [flow(A(2)), flow(A(3)), flow(A(4))];
    src.overrun(2);
    await tracker.stop();
    assert.deepEqual(sink.of(1), ["end:resync"]);
    assert.deepEqual(sink.of(4), ["start:resync"]);
    assert.deepEqual(sink.of(2), []);
    assert.equal(tracker.stats().resyncs, 1);
  });
}

Deno.test("ConntrackTracker polls for the end of flows older than itself (nf_conntrack_events=2 sends them no DESTROY)", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(1)), flow(A(2))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(
    () => src,
    sink,
    options(clock, { resync: { minIntervalMs: 1000, endGraceMs: 500, preexistingPollMs: 2000 } }),
  );
  await tracker.start();
  const dumps = src.dumps;
  clock.ms = 1000;
  await new Promise((r) => setTimeout(r, 300)); // a ticker round: too early to poll
  assert.equal(src.dumps, dumps);
  src.table = [flow({ ...A(2), orig: [7n, 700n], reply: [6n, 600n] })];
  clock.ms = 2500;
  await until(() => src.dumps === dumps + 1, 2000, "the poll");
  clock.ms = 3100;
  await until(() => sink.of(1).length === 1, 2000, "the synthesized end of flow 1");
  assert.deepEqual(sink.of(1), ["end:resync"]);
  assert.deepEqual(sink.of(2), []);
  src.push(event("destroy", { ...A(2), orig: [8n, 800n], reply: [6n, 600n] }));
  await until(() => sink.of(2).length === 1, 2000, "the real end of flow 2");
  clock.ms = 10_000;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(src.dumps, dumps + 1, "no more polling once no old flow is open");
  await tracker.stop();
  assert.deepEqual(sink.of(2), ["end"]);
});

Deno.test("ConntrackTracker keeps two open flows that share a conntrack id apart (ids are 32-bit hashes)", async () => {
  const src = new FakeSource();
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(new Clock()));
  await tracker.start();
  src.push(
    event("new", A(7, 1000)),
    event("new", A(7, 2000)),
    event("destroy", A(7, 1000)),
    event("destroy", A(7, 2000)),
  );
  await until(() => sink.records.length === 4, 2000, "four records");
  await tracker.stop();
  assert.deepEqual(sink.records.map((r) => `${r.type}:${r.destPort}:${r.reason ?? ""}`), [
    "start:1000:",
    "start:2000:",
    "end:1000:",
    "end:2000:",
  ]);
  assert.equal(tracker.stats().synthesizedStarts, 0);
});

Deno.test("ConntrackTracker resync keeps both of two open flows with one id (no synthesized end)", async () => {
  const clock = new Clock();
  const src = new FakeSource();
  src.table = [flow(A(7, 1000)), flow(A(7, 2000))];
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(clock));
  await tracker.start();
  clock.ms = 10_000;
  src.overrun();
  src.push(event("new", A(8)));
  src.table.push(flow(A(8)));
  await until(() => tracker.stats().resyncs === 1, 2000, "a resync");
  clock.ms += 10_000;
  await new Promise((r) => setTimeout(r, 300));
  await tracker.stop();
  assert.equal(tracker.stats().synthesizedEnds, 0);
  assert.deepEqual(sink.of(7), [], "both are still open: no record for either");
});

Deno.test("ConntrackTracker writes the start of a flow created between subscribing and the startup dump", async () => {
  const src = new FakeSource();
  src.table = [flow(A(1))]; // the dump sees it, its NEW is still queued
  const sink = new Sink();
  const tracker = new ConntrackTracker(() => src, sink, options(new Clock()));
  await tracker.start();
  src.push(event("new", A(1)), event("destroy", A(1)));
  await until(() => sink.records.length === 2, 2000, "start and end");
  await tracker.stop();
  assert.deepEqual(sink.of(1), ["start", "end"]);
  assert.equal(tracker.stats().duplicates, 0);
});
