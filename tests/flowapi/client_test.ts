/**
 * FlowClient against a fake receiver (tests/_fakes/fake_flow_transport.ts): the stream protocol
 * (initiator first, store before send, delete on ack), resends with the same bytes and growing
 * per-event delays, the bounded store, reconnects with NetBird's backoff, setInterval, close.
 * The real gRPC transport is tested against Python's grpcio in
 * tests/integration/flow_client_test.ts.
 */

import assert from "node:assert/strict";
import {
  EVENTS_METHOD,
  FlowClient,
  type FlowClientOptions,
  flowTarget,
  RECONNECT_INITIAL_MS,
  RESEND_GRACE_MS,
  RETRY_INTERVAL_MS,
  STREAM_RESET_MS,
} from "../../lib/flowapi/client.ts";
import { encodeFlowEvent, recordToFlowEvent } from "../../lib/flowapi/proto.ts";
import {
  MemoryUnackedStore,
  type UnackedEvent,
  type UnackedStore,
} from "../../lib/flowapi/unacked.ts";
import { bytesToUuid, uuidToBytes } from "../../lib/uuid.ts";
import { FakeReceiver, sleep, until, windowRecord } from "../_fakes/fake_flow_transport.ts";

const KEY = new Uint8Array(32).map((_, i) => i + 1);

/** A client on a fake receiver with fast timings; dispose it. */
function client(
  receiver: FakeReceiver,
  options: Partial<FlowClientOptions> = {},
): FlowClient {
  return new FlowClient({
    publicKey: KEY,
    intervalMs: 60_000,
    dial: receiver.dial,
    retryIntervalMs: 10,
    graceMs: 40,
    reconnectInitialMs: 20,
    random: () => 0.5, // no jitter
    ...options,
  });
}

const ids = (events: { eventId: Uint8Array }[]): string[] =>
  events.map((e) => bytesToUuid(e.eventId));

Deno.test("NetBird's timings are the defaults", () => {
  assert.equal(EVENTS_METHOD, "/flow.FlowService/Events");
  assert.equal(RETRY_INTERVAL_MS, 1000);
  assert.equal(RESEND_GRACE_MS, 1000);
  assert.equal(RECONNECT_INITIAL_MS, 800);
  assert.equal(STREAM_RESET_MS, 5000);
});

Deno.test("flowTarget() maps https to TLS on 443 and http to h2c on 80, ignoring the path", () => {
  assert.deepEqual(flowTarget("https://flow.example.com"), {
    target: "flow.example.com:443",
    tls: true,
  });
  assert.deepEqual(flowTarget("https://flow.example.com:8443/x"), {
    target: "flow.example.com:8443",
    tls: true,
  });
  assert.deepEqual(flowTarget("http://127.0.0.1:9090"), { target: "127.0.0.1:9090", tls: false });
  assert.deepEqual(flowTarget("http://[::1]"), { target: "[::1]:80", tls: false });
  assert.throws(() => flowTarget("ftp://x"), TypeError);
  assert.throws(() => flowTarget("flow.example.com:443"), TypeError);
});

Deno.test("FlowClient rejects a public key that is not 32 bytes and a non-positive interval", () => {
  const r = new FakeReceiver();
  assert.throws(() => client(r, { publicKey: new Uint8Array(31) }), /31 bytes, want 32/);
  assert.throws(() => client(r, { intervalMs: 0 }), RangeError);
  assert.throws(
    () => new FlowClient({ publicKey: KEY, intervalMs: 1000 }),
    /url and token are required/,
  );
});

Deno.test("FlowClient opens the stream with FlowEvent{isInitiator: true} and nothing else", async () => {
  const r = new FakeReceiver();
  using c = client(r);
  c.start();
  await until("a stream", () => r.streams.length === 1 && c.connected);
  const first = r.last.received[0]!;
  assert.deepEqual(first.bytes, new Uint8Array([0x28, 0x01])); // field 5 (bool) = true
  assert.equal(first.event.isInitiator, true);
  assert.equal(first.event.eventId.length, 0);
  assert.equal(first.event.flowFields, undefined);
});

Deno.test("FlowClient sends each record as recordToFlowEvent() bytes and deletes it on its ack", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  using c = client(r);
  c.start();
  await until("connected", () => c.connected);
  const records = [windowRecord(), windowRecord({ protocol: 1, icmpType: 8, destPort: 0 })];
  c.write(records);
  await until("2 events", () => r.last.events.length === 2);
  assert.deepEqual(
    r.last.received.slice(1).map((m) => m.bytes),
    records.map((rec) => encodeFlowEvent(recordToFlowEvent(rec, KEY))),
  );
  assert.equal(c.stats().unacked, 2);
  r.last.ack(uuidToBytes(records[0]!.eventId));
  await until("1 acked", () => c.stats().acked === 1);
  assert.deepEqual(c.store.events().map((e) => e.id), [records[1]!.eventId]);
  r.last.ack(uuidToBytes(records[1]!.eventId));
  await until("2 acked", () => c.stats().unacked === 0);
  assert.deepEqual(
    { ...c.stats(), connected: undefined },
    {
      events: 2,
      restored: 0,
      sent: 2,
      resent: 0,
      acked: 2,
      duplicateAcks: 0,
      unacked: 0,
      overflowDrops: 0,
      reconnects: 0,
      storeErrors: 0,
      connected: undefined,
    },
  );
});

Deno.test("FlowClient stores an event before sending it", async () => {
  const r = new FakeReceiver();
  const inner = new MemoryUnackedStore();
  const log: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  // A store whose add completes only when the test says so.
  const slow: UnackedStore = {
    get maxEvents() {
      return inner.maxEvents;
    },
    get size() {
      return inner.size;
    },
    get dropped() {
      return inner.dropped;
    },
    has: (id) => inner.has(id),
    events: () => inner.events(),
    add: async (e: UnackedEvent) => {
      log.push(`add ${e.id}`);
      const dropped = inner.addSync(e);
      await gate;
      log.push(`stored ${e.id}`);
      return dropped;
    },
    delete: (id) => inner.delete(id),
  };
  using c = client(r, { store: slow });
  c.start();
  await until("connected", () => c.connected);
  const rec = windowRecord();
  c.write([rec]);
  await sleep(50);
  assert.equal(r.last.events.length, 0, "nothing sent before the store has it");
  release();
  await until("sent", () => r.last.events.length === 1);
  assert.deepEqual(log, [`add ${rec.eventId}`, `stored ${rec.eventId}`]);
});

Deno.test("FlowClient resends an un-acked event with the same bytes until its ack arrives", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  using c = client(r);
  c.start();
  await until("connected", () => c.connected);
  const rec = windowRecord();
  c.write([rec]);
  await until("3 sends", () => r.last.events.length >= 3);
  const sends = r.last.received.slice(1);
  assert.ok(sends.every((s) => bytesToUuid(s.event.eventId) === rec.eventId), "same event_id");
  assert.ok(sends.every((s) => String(s.bytes) === String(sends[0]!.bytes)), "same bytes");
  assert.equal(c.stats().sent, 1);
  assert.ok(c.stats().resent >= 2);
  r.last.ack(uuidToBytes(rec.eventId));
  await until("acked", () => c.stats().unacked === 0);
  const count = r.last.events.length;
  await sleep(200);
  assert.equal(r.last.events.length, count, "no resend after the ack");
});

Deno.test("FlowClient waits the grace period, then grows each event's resend delay ×1.7 up to interval/2", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  // grace 40 ms, cap = max(grace, 300/2) = 150 ms: delays 40, 68, 116, 150, 150.
  using c = client(r, { intervalMs: 300, retryIntervalMs: 5 });
  c.start();
  await until("connected", () => c.connected);
  c.write([windowRecord()]);
  await until("6 sends", () => r.last.events.length >= 6, 5000);
  const at = r.last.received.slice(1).map((m) => m.at);
  const gaps = at.slice(1).map((t, i) => t - at[i]!);
  const want = [40, 68, 115.6, 150, 150];
  for (const [i, w] of want.entries()) {
    const g = gaps[i]!;
    assert.ok(g >= w - 1 && g <= w + 40, `gap ${i} is ${g.toFixed(1)} ms, want ~${w} ms`);
  }
});

Deno.test("FlowClient counts and ignores duplicate acks, initiator acks and acks of the wrong size", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  using c = client(r);
  c.start();
  await until("connected", () => c.connected);
  const rec = windowRecord();
  c.write([rec]);
  await until("sent", () => r.last.events.length === 1);
  r.last.ack(uuidToBytes(rec.eventId), true); // initiator ack: not an event ack
  r.last.ack(new Uint8Array(15));
  await sleep(20);
  assert.equal(c.stats().unacked, 1);
  r.last.ack(uuidToBytes(rec.eventId));
  r.last.ack(uuidToBytes(rec.eventId));
  r.last.ack(uuidToBytes(crypto.randomUUID()));
  await until("acked", () => c.stats().duplicateAcks === 2);
  assert.equal(c.stats().acked, 1);
  assert.equal(c.stats().unacked, 0);
});

Deno.test("FlowClient bounds the un-acked store: the oldest events are dropped and counted", async () => {
  const r = new FakeReceiver();
  r.autoReady = false; // the stream never becomes ready: nothing is sent
  using c = client(r, { store: new MemoryUnackedStore({ maxEvents: 3 }) });
  c.start();
  const records = Array.from({ length: 5 }, () => windowRecord());
  c.write(records);
  await until("stored", () => c.stats().events === 5 && c.store.size === 3);
  await sleep(10);
  assert.equal(c.stats().overflowDrops, 2);
  assert.equal(c.stats().unacked, 3);
  r.last.ready();
  await until("sent", () => c.stats().unacked === 0);
  assert.deepEqual(ids(r.last.events), records.slice(2).map((rec) => rec.eventId));
  assert.equal(c.stats().sent, 3);
});

Deno.test("FlowClient reconnects after a stream error and resends every un-acked event on the new stream", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  using c = client(r, { graceMs: 10_000 }); // no retry-loop resends in this test
  c.start();
  await until("connected", () => c.connected);
  const records = [windowRecord(), windowRecord(), windowRecord()];
  c.write(records);
  await until("3 sent", () => r.last.events.length === 3);
  r.last.ack(uuidToBytes(records[1]!.eventId));
  await until("1 acked", () => c.stats().acked === 1);
  r.last.fail("server restarted");
  await until("a second stream", () => r.streams.length === 2 && c.connected);
  await until("2 resent", () => r.last.events.length === 2);
  const second = r.streams[1]!;
  assert.equal(second.received[0]!.event.isInitiator, true, "initiator first on the new stream");
  assert.deepEqual(ids(second.events), [records[0]!.eventId, records[2]!.eventId]);
  assert.deepEqual(
    second.received.slice(1).map((m) => m.bytes),
    r.streams[0]!.received.filter((m) =>
      !m.event.isInitiator && bytesToUuid(m.event.eventId) !== records[1]!.eventId
    ).map((m) => m.bytes),
    "the same bytes as the first time",
  );
  assert.equal(r.closedConnections >= 1, true, "the old connection is closed");
  assert.equal(r.dials.length, 2, "a new connection per attempt");
  const s = c.stats();
  assert.equal(s.reconnects, 1);
  assert.equal(s.sent, 3);
  assert.equal(s.resent, 2);
});

Deno.test("FlowClient backs reconnects off ×1.7 from the initial delay up to interval/2", async () => {
  const r = new FakeReceiver();
  r.refuse = true;
  // initial 20 ms, cap 400/2 = 200 ms: 20, 34, 57.8, 98.3, 167, 200, 200.
  using c = client(r, { intervalMs: 400 });
  c.start();
  await until("8 dials", () => r.dials.length >= 8, 5000);
  const gaps = r.dials.slice(1).map((t, i) => t - r.dials[i]!);
  const want = [20, 34, 57.8, 98.3, 167, 200, 200];
  for (const [i, w] of want.entries()) {
    const g = gaps[i]!;
    assert.ok(g >= w - 1 && g <= w + 40, `gap ${i} is ${g.toFixed(1)} ms, want ~${w} ms`);
  }
  assert.equal(c.stats().reconnects, 7);
});

Deno.test("FlowClient jitters reconnect delays by ±50 %", async () => {
  const r = new FakeReceiver();
  r.refuse = true;
  const draws = [0, 0.999];
  using c = client(r, { reconnectInitialMs: 100, random: () => draws.shift() ?? 0.5 });
  c.start();
  await until("3 dials", () => r.dials.length >= 3, 5000);
  const [a, b, d] = r.dials;
  assert.ok(b! - a! >= 49 && b! - a! < 90, `first delay ${b! - a!}: 100 × 0.5`);
  assert.ok(d! - b! >= 254 && d! - b! < 300, `second delay ${d! - b!}: 170 × 1.5`);
});

Deno.test("FlowClient resets the reconnect backoff after a stream that lived long enough", async () => {
  const r = new FakeReceiver();
  using c = client(r, { reconnectInitialMs: 30, streamResetMs: 100 });
  c.start();
  await until("connected", () => c.connected);
  // Two quick failures grow the backoff (30, then 51 ms)...
  r.last.fail();
  await until("stream 2", () => r.streams.length === 2 && c.connected);
  r.last.fail();
  await until("stream 3", () => r.streams.length === 3 && c.connected);
  // ...a stream that lived ≥ 100 ms resets it: the next delay is 30 ms again, not 86.
  await sleep(120);
  const failedAt = performance.now();
  r.last.fail();
  await until("stream 4", () => r.streams.length === 4);
  const delay = r.dials[3]! - failedAt;
  assert.ok(delay < 70, `delay after a long-lived stream ${delay.toFixed(1)} ms, want ~30`);
  assert.ok(r.dials[2]! - r.dials[1]! >= 50, "the second delay had grown");
});

Deno.test("FlowClient gives up a stream whose response headers never come, and reconnects", async () => {
  const r = new FakeReceiver();
  r.autoReady = false;
  using c = client(r, { readyTimeoutMs: 50 });
  c.start();
  await until("2 dials", () => r.dials.length >= 2);
  assert.equal(r.streams[0]!.cancelled, true);
  r.autoReady = true;
  r.last.ready();
  await until("connected", () => c.connected);
});

Deno.test("FlowClient.setInterval() moves a pending reconnect to the new cap (interval/2)", async () => {
  const r = new FakeReceiver();
  r.refuse = true;
  using c = client(r, { intervalMs: 60_000, reconnectInitialMs: 5000 });
  c.start();
  await until("first dial failed", () => r.dials.length === 1 && r.streams[0]!.ended);
  await sleep(20);
  assert.equal(r.dials.length, 1, "the next attempt is ~5 s away");
  const changed = performance.now();
  c.setInterval(100);
  assert.equal(c.intervalMs, 100);
  await until("second dial", () => r.dials.length === 2, 1000);
  assert.ok(r.dials[1]! - changed < 100, `redialed ${r.dials[1]! - changed} ms after the change`);
  assert.equal(r.dialIntervals[1], 100, "the new connection gets the new interval");
  // Later attempts stay under the new cap (50 ms) too.
  await until("4 dials", () => r.dials.length >= 4, 1000);
  assert.ok(r.dials[3]! - r.dials[2]! < 90);
});

Deno.test("FlowClient.setInterval() moves the retry timer and shortens per-event resend delays", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  // The retry loop ticks every 5 s: without the change nothing would be resent for 5 s.
  using c = client(r, { intervalMs: 60_000, retryIntervalMs: 5000, graceMs: 10 });
  c.start();
  await until("connected", () => c.connected);
  c.write([windowRecord()]);
  await until("sent", () => r.last.events.length === 1);
  await sleep(100);
  assert.equal(r.last.events.length, 1);
  const changed = performance.now();
  c.setInterval(100); // cap 50 ms: the loop ticks within 50 ms and then every 50 ms
  await until("resent", () => r.last.events.length >= 3, 1000);
  const resends = r.last.received.slice(2).map((m) => m.at - changed);
  assert.ok(resends[0]! < 100, `first resend ${resends[0]} ms after the change`);
});

Deno.test("FlowClient.setInterval() rejects a non-positive interval", () => {
  using c = client(new FakeReceiver());
  assert.throws(() => c.setInterval(0), RangeError);
  assert.throws(() => c.setInterval(Number.NaN), RangeError);
  assert.equal(c.intervalMs, 60_000);
});

Deno.test("FlowClient backs the retry loop off while there is no stream, and catches up on connect", async () => {
  const r = new FakeReceiver();
  r.autoReady = false;
  using c = client(r, { readyTimeoutMs: 60_000 });
  c.start();
  c.write([windowRecord(), windowRecord()]);
  await sleep(100);
  assert.equal(c.stats().sent, 0);
  r.last.ready();
  await until("both sent and acked", () => c.stats().acked === 2);
  assert.equal(c.stats().sent, 2);
  assert.equal(c.stats().resent, 0);
});

Deno.test("FlowClient pauses sends while the stream's buffer is full and resumes on drain", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  using c = client(r, { graceMs: 10_000 });
  c.start();
  await until("connected", () => c.connected);
  r.full = true;
  c.write([windowRecord(), windowRecord(), windowRecord()]);
  await sleep(50);
  assert.equal(r.last.events.length, 1, "one write, then wait for drain");
  r.full = false;
  r.last.drain();
  await until("all sent", () => r.last.events.length === 3);
  assert.equal(c.stats().sent, 3);
});

Deno.test("FlowClient.close() waits for the last acks, up to its bound", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  const c = client(r);
  c.start();
  await until("connected", () => c.connected);
  const rec = windowRecord();
  c.write([rec]);
  setTimeout(() => r.last.ack(uuidToBytes(rec.eventId)), 80);
  const t0 = performance.now();
  const s = await c.close(2000);
  const took = performance.now() - t0;
  assert.equal(s.unacked, 0);
  assert.equal(s.acked, 1);
  assert.ok(took >= 70 && took < 1000, `close took ${took} ms`);
  assert.ok(r.last.cancelled, "the stream is closed afterwards");
});

Deno.test("FlowClient.close() gives up after its bound and keeps the un-acked events in the store", async () => {
  const r = new FakeReceiver();
  r.autoAck = false;
  const store = new MemoryUnackedStore();
  const c = client(r, { store });
  c.start();
  await until("connected", () => c.connected);
  const records = [windowRecord(), windowRecord()];
  c.write(records);
  const t0 = performance.now();
  const s = await c.close(150);
  const took = performance.now() - t0;
  assert.ok(took >= 140 && took < 600, `close took ${took} ms`);
  assert.equal(s.unacked, 2);
  assert.deepEqual(store.events().map((e) => e.id), records.map((rec) => rec.eventId));
  assert.deepEqual(await c.close(), s, "idempotent");
});

Deno.test("FlowClient.close() reconnects at once to deliver what a down stream left", async () => {
  const r = new FakeReceiver();
  r.refuse = true;
  const c = client(r, { reconnectInitialMs: 10_000 }); // the next attempt would be 10 s away
  c.start();
  await until("first attempt failed", () => r.streams.length === 1 && r.last.ended);
  c.write([windowRecord()]);
  r.refuse = false;
  const s = await c.close(1000);
  assert.equal(s.unacked, 0);
  assert.equal(s.acked, 1);
  assert.equal(r.dials.length, 2);
});

Deno.test("FlowClient takes writes after close into the store without sending them", async () => {
  const r = new FakeReceiver();
  const c = client(r);
  c.start();
  await until("connected", () => c.connected);
  await c.close(0);
  c.write([windowRecord()]);
  await sleep(20);
  assert.equal(c.stats().unacked, 1);
  assert.equal(r.last.events.length, 0);
});

Deno.test("FlowClient sends events left in the store by a previous run once the stream is ready", async () => {
  const store = new MemoryUnackedStore();
  const old = [windowRecord(), windowRecord()];
  for (const rec of old) {
    await store.add({ id: rec.eventId, data: encodeFlowEvent(recordToFlowEvent(rec, KEY)) });
  }
  const r = new FakeReceiver();
  using c = client(r, { store });
  c.start();
  await until("acked", () => c.stats().acked === 2);
  assert.deepEqual(ids(r.last.events), old.map((rec) => rec.eventId));
  assert.equal(c.stats().restored, 2);
});

Deno.test("FlowClient disposal stops every timer at once", async () => {
  const r = new FakeReceiver();
  r.refuse = true;
  {
    using c = client(r);
    c.start();
    c.write([windowRecord()]);
    await until("a failed attempt", () => r.streams.length >= 1 && r.last.ended);
  }
  const dials = r.dials.length;
  await sleep(100);
  assert.equal(r.dials.length, dials, "no reconnect after disposal");
});

Deno.test("FlowClient skips a record it cannot encode without throwing", async () => {
  const r = new FakeReceiver();
  using c = client(r);
  c.start();
  await until("connected", () => c.connected);
  const good = windowRecord();
  c.write([windowRecord({ eventId: "not-a-uuid" }), good]);
  await until("acked", () => c.stats().acked === 1);
  assert.deepEqual(ids(r.last.events), [good.eventId]);
  assert.equal(c.stats().events, 1);
});
