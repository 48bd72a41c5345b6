import assert from "node:assert/strict";
import { Accounting } from "../../lib/accounting.ts";
import { Overlay } from "../../lib/overlay.ts";
import type { FlowRecord } from "../../lib/record.ts";
import type { ConntrackSource } from "../../lib/source.ts";
import { ConntrackTracker, type TrackerOptions } from "../../lib/tracker.ts";
import { FlowIdGenerator } from "../../lib/uuid.ts";
import { FakeDialer, FakeSource } from "../_fakes/fake_source.ts";
import { event } from "../_fakes/flows.ts";

const NAMESPACE = "1cc4bb85-0ca9-5a5d-a913-81b334076105";

function options(extra: Partial<TrackerOptions> = {}): TrackerOptions {
  return {
    overlay: new Overlay({ networks: ["100.64.0.0/16"], addresses: ["100.64.0.5"] }),
    flowIds: new FlowIdGenerator(NAMESPACE),
    backoff: { initialMs: 5, maxMs: 20, randomization: 0 },
    ...extra,
  };
}

class CollectingSink {
  records: FlowRecord[] = [];
  writes = 0;
  write(records: readonly FlowRecord[]): void {
    this.writes++;
    this.records.push(...records);
  }
}

/** Resolves when `cond` holds, polling every few ms; rejects after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

class FakeSysctl {
  value: string;
  writes: string[] = [];
  readonly name = "net.netfilter.nf_conntrack_acct";
  constructor(value: string) {
    this.value = value;
  }
  read(): string {
    return this.value;
  }
  write(v: string): void {
    this.writes.push(v);
    this.value = v;
  }
}

// §7.1 (NetBird's conntrack_test.go), against the fake source.

Deno.test("ConntrackTracker reopens the source after an error and survives a second error (§7.1 ReconnectAfterError)", async () => {
  const l1 = new FakeSource("L1");
  const l2 = new FakeSource("L2");
  const l3 = new FakeSource("L3");
  const dialer = new FakeDialer([() => l1, () => l2, () => l3]);
  const tracker = new ConntrackTracker(dialer.dial, new CollectingSink(), options());
  await tracker.start();
  l1.fail();
  await withTimeout(dialer.called(2), 2000, "second dial");
  await withTimeout(l1.closed, 2000, "L1 to be closed");
  await until(() => tracker.hasSource, 2000, "L2 to be installed");
  l2.fail();
  await withTimeout(dialer.called(3), 2000, "third dial");
  await until(() => tracker.hasSource, 2000, "L3 to be installed");
  assert.equal(tracker.stats().reopens, 2);
  await tracker.stop();
  assert.ok(l2.isClosed && l3.isClosed, "every source is closed after stop");
});

Deno.test("ConntrackTracker.stop() during the reopen backoff leaves no source and no timer (§7.1 StopDuringReconnectBackoff)", async () => {
  const l1 = new FakeSource("L1");
  const dialer = new FakeDialer([() => l1]);
  const tracker = new ConntrackTracker(
    dialer.dial,
    new CollectingSink(),
    options({ backoff: { initialMs: 60_000, maxMs: 60_000, randomization: 0 } }),
  );
  await tracker.start();
  l1.fail();
  await withTimeout(l1.closed, 2000, "L1 to be closed");
  await withTimeout(tracker.stop(), 1000, "stop during backoff");
  assert.equal(tracker.started, false);
  assert.equal(tracker.hasSource, false);
  assert.equal(dialer.calls, 1, "no reopen after stop");
});

for (const method of ["stop", "close"] as const) {
  Deno.test(
    `ConntrackTracker.${method}() while a reopen dial is in flight closes the late source (§7.1 ${
      method === "stop" ? "StopRaceWithReconnectDial" : "CloseRaceWithReconnectDial"
    })`,
    async () => {
      const l1 = new FakeSource("L1");
      const l2 = new FakeSource("L2");
      const release = Promise.withResolvers<void>();
      const dialer = new FakeDialer([
        () => l1,
        async (): Promise<ConntrackSource> => {
          await release.promise;
          return l2;
        },
      ]);
      const tracker = new ConntrackTracker(dialer.dial, new CollectingSink(), options());
      await tracker.start();
      l1.fail();
      await withTimeout(dialer.called(2), 2000, "the second dial to begin");
      await withTimeout(tracker[method](), 1000, `${method} while dialing`);
      release.resolve();
      await withTimeout(l2.closed, 2000, "the late source to be closed (no leak)");
      assert.equal(tracker.started, false);
      assert.equal(tracker.hasSource, false);
    },
  );
}

Deno.test("ConntrackTracker.start() is idempotent and dials once (§7.1 StartIsIdempotent)", async () => {
  const l1 = new FakeSource();
  const dialer = new FakeDialer([() => l1]);
  const tracker = new ConntrackTracker(dialer.dial, new CollectingSink(), options());
  await tracker.start();
  await tracker.start();
  assert.equal(dialer.calls, 1);
  await tracker.stop();
});

Deno.test("ConntrackTracker.stop() and close() are idempotent and close the source once", async () => {
  const l1 = new FakeSource();
  const tracker = new ConntrackTracker(() => l1, new CollectingSink(), options());
  await tracker.start();
  await tracker.stop();
  await tracker.stop();
  await tracker.close();
  assert.equal(l1.closeCalls, 1);
  assert.equal(tracker.started, false);
});

Deno.test("ConntrackTracker keeps retrying with backoff while the dial fails", async () => {
  const l1 = new FakeSource("L1");
  const l4 = new FakeSource("L4");
  const dialer = new FakeDialer([
    () => l1,
    () => {
      throw new Error("dial failed");
    },
    () => {
      throw new Error("dial failed again");
    },
    () => l4,
  ]);
  const tracker = new ConntrackTracker(dialer.dial, new CollectingSink(), options());
  await tracker.start();
  l1.fail();
  await withTimeout(dialer.called(4), 2000, "the fourth dial");
  await until(() => tracker.hasSource, 2000, "L4 to be installed");
  await tracker.stop();
  assert.ok(l4.isClosed);
});

Deno.test("ConntrackTracker backoff delays grow by the multiplier and stop at the cap", async () => {
  const delays: number[] = [];
  const realSetTimeout = globalThis.setTimeout;
  const l1 = new FakeSource("L1");
  let n = 0;
  const dialer = new FakeDialer([() => l1, () => {
    throw new Error(`dial ${++n}`);
  }]);
  const tracker = new ConntrackTracker(
    dialer.dial,
    new CollectingSink(),
    options({ backoff: { initialMs: 1, multiplier: 2, maxMs: 8, randomization: 0 } }),
  );
  await tracker.start();
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    if (ms !== undefined && ms > 0 && ms < 1000) delays.push(ms); // skip the test's own timeout
    return realSetTimeout(fn, ms);
  }) as typeof setTimeout;
  try {
    l1.fail();
    await withTimeout(dialer.called(7), 2000, "seven dials");
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  await tracker.stop();
  assert.deepEqual(delays.slice(0, 6), [1, 2, 4, 8, 8, 8]);
});

// Event handling.

Deno.test("ConntrackTracker turns NEW into start and DESTROY into end with one flow ID", async () => {
  const src = new FakeSource();
  const sink = new CollectingSink();
  const tracker = new ConntrackTracker(() => src, sink, options());
  await tracker.start();
  src.push(event("new", { id: 77, src: "100.64.0.5", dst: "100.64.0.9", sport: 40000, dport: 22 }));
  src.push(
    event("destroy", {
      id: 77,
      src: "100.64.0.5",
      dst: "100.64.0.9",
      sport: 40000,
      dport: 22,
      orig: [3n, 180n],
      reply: [2n, 120n],
    }),
  );
  await until(() => sink.records.length === 2, 2000, "two records");
  await tracker.stop();
  const [start, end] = sink.records;
  assert.equal(start!.type, "start");
  assert.equal(end!.type, "end");
  assert.equal(start!.flowId, end!.flowId);
  assert.equal(start!.flowId, new FlowIdGenerator(NAMESPACE).flowId(77));
  assert.notEqual(start!.eventId, end!.eventId);
  assert.equal(end!.direction, "egress");
  assert.deepEqual(
    [end!.rxPackets, end!.rxBytes, end!.txPackets, end!.txBytes],
    [2n, 120n, 3n, 180n],
  );
});

Deno.test("ConntrackTracker ignores UPDATE events and protocol 0, and filters non-overlay flows", async () => {
  const src = new FakeSource();
  const sink = new CollectingSink();
  const tracker = new ConntrackTracker(() => src, sink, options());
  await tracker.start();
  src.push(
    event("update", { src: "100.64.0.5", dst: "100.64.0.9" }),
    event("new", { src: "100.64.0.5", dst: "100.64.0.9", proto: 0 }),
    event("new", { src: "8.8.8.8", dst: "1.1.1.1", proto: 17 }),
    event("new", { id: 9, src: "10.0.0.1", dst: "10.0.0.3", proto: 17, mark: 0x1bd10 }),
  );
  await until(() => tracker.stats().events === 4, 2000, "four events");
  await tracker.stop();
  const s = tracker.stats();
  assert.equal(s.ignored, 2);
  assert.equal(s.filtered, 1);
  assert.equal(s.records, 1);
  assert.equal(sink.records.length, 1);
  assert.equal(sink.records[0]!.conntrackId, 9);
  assert.equal(sink.records[0]!.direction, "ingress");
});

Deno.test("ConntrackTracker writes each batch with one sink call and one timestamp", async () => {
  const src = new FakeSource();
  const sink = new CollectingSink();
  let clock = 0;
  const tracker = new ConntrackTracker(
    () => src,
    sink,
    options({ now: () => new Date(Date.UTC(2026, 0, 1) + clock++) }),
  );
  await tracker.start();
  src.push(
    event("new", { id: 1, src: "100.64.0.5", dst: "100.64.0.9" }),
    event("new", { id: 2, src: "100.64.0.5", dst: "100.64.0.9" }),
    event("new", { id: 3, src: "100.64.0.5", dst: "100.64.0.9" }),
  );
  await until(() => sink.records.length === 3, 2000, "three records");
  await tracker.stop();
  assert.equal(sink.writes, 1);
  assert.equal(new Set(sink.records.map((r) => r.timestamp.getTime())).size, 1);
  const t = sink.records[0]!.timestamp.getTime() - Date.UTC(2026, 0, 1);
  assert.ok(t >= 0 && t < clock, "the timestamp comes from the injected clock");
});

Deno.test("ConntrackTracker.stop() delivers every batch the source had already received", async () => {
  const src = new FakeSource();
  const sink = new CollectingSink();
  const tracker = new ConntrackTracker(() => src, sink, options());
  await tracker.start();
  for (let i = 0; i < 50; i++) {
    src.push(event("new", { id: i, src: "100.64.0.5", dst: "100.64.0.9" }));
  }
  await tracker.stop();
  assert.equal(sink.records.length, 50);
});

Deno.test("ConntrackTracker calls onFatal and closes the source when the sink throws", async () => {
  const src = new FakeSource();
  const fatal: unknown[] = [];
  const tracker = new ConntrackTracker(
    () => src,
    {
      write: () => {
        throw new Error("disk full");
      },
    },
    options({ onFatal: (e) => fatal.push(e) }),
  );
  await tracker.start();
  src.push(event("new", { src: "100.64.0.5", dst: "100.64.0.9" }));
  await withTimeout(src.closed, 2000, "the source to be closed");
  await tracker.stop();
  assert.equal(fatal.length, 1);
  assert.match(String(fatal[0]), /disk full/);
  assert.equal(tracker.stats().reopens, 0, "a sink failure is not a source failure");
});

// Accounting.

Deno.test("ConntrackTracker enables accounting on start and restores the previous value on stop", async () => {
  const sysctl = new FakeSysctl("0");
  const tracker = new ConntrackTracker(
    () => new FakeSource(),
    new CollectingSink(),
    options({ accounting: new Accounting(sysctl) }),
  );
  await tracker.start();
  assert.equal(sysctl.value, "1");
  await tracker.stop();
  assert.equal(sysctl.value, "0");
  assert.deepEqual(sysctl.writes, ["1", "0"]);
});

Deno.test("ConntrackTracker enables accounting before it opens the source", async () => {
  const sysctl = new FakeSysctl("0");
  let valueAtDial = "";
  const tracker = new ConntrackTracker(
    () => {
      valueAtDial = sysctl.value;
      return new FakeSource();
    },
    new CollectingSink(),
    options({ accounting: new Accounting(sysctl) }),
  );
  await tracker.start();
  await tracker.stop();
  assert.equal(valueAtDial, "1", "counters need acct=1 before entries are created");
});

Deno.test("ConntrackTracker.start() failure restores accounting and rethrows", async () => {
  const sysctl = new FakeSysctl("0");
  const tracker = new ConntrackTracker(
    () => {
      throw new Error("Cannot subscribe to conntrack events: EPERM");
    },
    new CollectingSink(),
    options({ accounting: new Accounting(sysctl) }),
  );
  await assert.rejects(tracker.start(), /EPERM/);
  assert.equal(sysctl.value, "0");
  assert.equal(tracker.started, false);
});

Deno.test("ConntrackTracker leaves accounting alone when it was already on", async () => {
  const sysctl = new FakeSysctl("1");
  const tracker = new ConntrackTracker(
    () => new FakeSource(),
    new CollectingSink(),
    options({ accounting: new Accounting(sysctl) }),
  );
  await tracker.start();
  await tracker.stop();
  assert.deepEqual(sysctl.writes, []);
});

Deno.test("ConntrackTracker.stats() sums source counters across reopens", async () => {
  const l1 = new FakeSource("L1");
  const l2 = new FakeSource("L2");
  l1.stat.overruns = 3;
  l2.stat.overruns = 4;
  const dialer = new FakeDialer([() => l1, () => l2]);
  const tracker = new ConntrackTracker(dialer.dial, new CollectingSink(), options());
  await tracker.start();
  l1.fail();
  await until(() => tracker.hasSource && dialer.calls === 2, 2000, "L2");
  assert.equal(tracker.stats().source.overruns, 7);
  await tracker.stop();
  assert.equal(tracker.stats().source.overruns, 7);
});
