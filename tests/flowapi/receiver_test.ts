import assert from "node:assert/strict";
import { decodeFlowEventAck, encodeFlowEvent, type StoredEvent } from "../../lib/flowapi/proto.ts";
import {
  type EventsCall,
  type EventsCallHandlers,
  FlowReceiver,
  formatReceiverStats,
  GrpcStatus,
  type StreamStatus,
} from "../../lib/flowapi/server.ts";
import { type EventStore, MemoryEventStore } from "../../lib/flowapi/store.ts";
import { mintToken } from "../../lib/flowapi/token.ts";
import { FakeCall, ManualStore, SECRET, settle, wireEvent } from "./_events.ts";

function receiver(store: EventStore, maxInFlightPerStream?: number): FlowReceiver {
  return new FlowReceiver({
    store,
    tokenSecret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
    ...(maxInFlightPerStream === undefined ? {} : { maxInFlightPerStream }),
  });
}

function bearer(ttlMs = 3_600_000, secret = SECRET, now = Date.now()): string[] {
  return [`Bearer ${mintToken(secret, { ttlMs, now })}`];
}

/** The status, read through a call so that an earlier assertion does not narrow it. */
function statusOf(call: FakeCall): StreamStatus | undefined {
  return call.status;
}

/** Event `n` with a timestamp of 10^15 seconds appended (field 2, after the encoder's fields). */
function withHugeTimestamp(n: number): Uint8Array {
  const { timestamp: _, ...rest } = wireEvent(n);
  const varint: number[] = [];
  for (let v = 10n ** 15n;; v >>= 7n) {
    if (v < 0x80n) {
      varint.push(Number(v));
      break;
    }
    varint.push(Number(v & 0x7fn) | 0x80);
  }
  const ts = [0x08, ...varint];
  return new Uint8Array([...encodeFlowEvent(rest), 0x12, ts.length, ...ts]);
}

/** Opens an authenticated stream. */
function open(r: FlowReceiver): FakeCall {
  const call = new FakeCall(bearer());
  r.handleEventsCall(call);
  return call;
}

Deno.test("FlowReceiver sends the initiator ack first, then acks each event once stored", async () => {
  const store = new ManualStore();
  const r = receiver(store);
  const call = open(r);
  assert.deepEqual(call.acks, [{ eventId: new Uint8Array(0), isInitiator: true }]);
  call.send(wireEvent(1));
  call.send(wireEvent(2));
  await settle();
  assert.deepEqual(call.ackedIds(), [], "nothing is acked before it is stored");
  assert.equal(store.pending.length, 2);
  store.storeNext();
  await settle();
  assert.deepEqual(call.ackedIds(), [1]);
  store.storeNext();
  await settle();
  assert.deepEqual(call.ackedIds(), [1, 2]);
  assert.equal(store.events[0]!.eventId, "00000000-0000-0000-0000-000000000001");
  const s = r.stats();
  assert.deepEqual([s.received, s.stored, s.acks, s.streams, s.activeStreams], [2, 2, 2, 1, 1]);
  await r.stop();
});

Deno.test("FlowReceiver ignores initiator messages from the client (no ack, not an event)", async () => {
  const store = new MemoryEventStore();
  const r = receiver(store);
  const call = open(r);
  call.send({ ...wireEvent(0), eventId: new Uint8Array(0), isInitiator: true });
  call.send({ ...wireEvent(9), isInitiator: true });
  await settle();
  assert.equal(call.acks.length, 1, "only the receiver's own initiator ack");
  assert.equal(store.size, 0);
  assert.equal(r.stats().received, 0);
  await r.stop();
});

Deno.test("FlowReceiver stores a resent event once and acks every copy", async () => {
  const store = new MemoryEventStore();
  const r = receiver(store);
  const first = open(r);
  first.send(wireEvent(1));
  first.send(wireEvent(1));
  await settle();
  const second = open(r); // the sender reconnected and resends
  second.send(wireEvent(1));
  await settle();
  assert.deepEqual(first.ackedIds(), [1, 1]);
  assert.deepEqual(second.ackedIds(), [1]);
  assert.equal(store.size, 1);
  const s = r.stats();
  assert.deepEqual([s.received, s.stored, s.duplicates, s.acks], [3, 1, 2, 3]);
  await r.stop();
});

Deno.test("FlowReceiver refuses missing, malformed, expired and forged tokens with UNAUTHENTICATED", async () => {
  const r = receiver(new MemoryEventStore());
  const other = new TextEncoder().encode("another secret of 32 bytes......");
  const cases: [string, string[]][] = [
    ["missing", []],
    ["not bearer", ["Basic dXNlcjpwYXNz"]],
    ["no dot", ["Bearer abcdef"]],
    ["two values", [...bearer(), ...bearer()]],
    ["expired", bearer(60_000, SECRET, Date.now() - 120_000)],
    ["forged", bearer(60_000, other)],
  ];
  for (const [name, authorization] of cases) {
    const call = new FakeCall(authorization);
    r.handleEventsCall(call);
    assert.equal(statusOf(call)?.code, GrpcStatus.UNAUTHENTICATED, name);
    assert.equal(call.acks.length, 0, `${name}: no initiator ack`);
  }
  assert.equal(r.stats().authFailures, cases.length);
  assert.equal(r.stats().streams, 0);
  await r.stop();
});

Deno.test("FlowReceiver does not ack an event the store failed to keep, and keeps the stream", async () => {
  const store = new ManualStore();
  const r = receiver(store);
  const call = open(r);
  call.send(wireEvent(1));
  await settle();
  store.failNext("The client is offline");
  await settle();
  assert.deepEqual(call.ackedIds(), []);
  assert.equal(call.status, undefined, "the stream stays open");
  call.send(wireEvent(1)); // resent after the outage
  await settle();
  store.storeNext();
  await settle();
  assert.deepEqual(call.ackedIds(), [1]);
  assert.deepEqual([r.stats().storeErrors, r.stats().stored], [1, 1]);
  await r.stop();
});

Deno.test("FlowReceiver drops undecodable messages and events without a 16-byte ID", async () => {
  const store = new MemoryEventStore();
  const r = receiver(store);
  const call = open(r);
  call.sendRaw(new Uint8Array([0x0a, 0x05, 0x01])); // field 1 longer than the message
  call.sendRaw(new Uint8Array([0x08, 0xff])); // truncated varint
  call.send({ ...wireEvent(1), eventId: new TextEncoder().encode("test-event-id") });
  call.sendRaw(withHugeTimestamp(2)); // seconds beyond what a Date can hold
  call.send(wireEvent(3));
  await settle();
  assert.deepEqual(call.ackedIds(), [3]);
  assert.equal(call.status, undefined);
  assert.equal(r.stats().rejected, 4);
  assert.equal(store.size, 1);
  await r.stop();
});

Deno.test("FlowReceiver pauses reading while too many events are being stored", async () => {
  const store = new ManualStore();
  const r = receiver(store, 2);
  const call = open(r);
  call.send(wireEvent(1));
  assert.equal(call.paused, false);
  call.send(wireEvent(2));
  assert.equal(call.paused, true);
  store.storeNext();
  await settle();
  assert.equal(call.paused, false);
  store.storeNext();
  await settle();
  assert.deepEqual(call.ackedIds(), [1, 2]);
  await r.stop();
});

Deno.test("FlowReceiver pauses reading until unsent acks are flushed", async () => {
  const r = receiver(new MemoryEventStore());
  const call = open(r);
  call.writeResult = false;
  call.send(wireEvent(1));
  await settle();
  assert.equal(call.paused, true);
  call.writeResult = true;
  call.drain();
  assert.equal(call.paused, false);
  await r.stop();
});

Deno.test("FlowReceiver ends a half-closed stream with OK once its events are stored", async () => {
  const store = new ManualStore();
  const r = receiver(store);
  const call = open(r);
  call.send(wireEvent(1));
  call.end();
  await settle();
  assert.equal(call.status, undefined, "still storing");
  store.storeNext();
  await settle();
  assert.deepEqual(call.ackedIds(), [1]);
  assert.equal(statusOf(call)?.code, GrpcStatus.OK);
  assert.equal(r.stats().activeStreams, 0);
  await r.stop();
});

Deno.test("FlowReceiver does not write to a stream whose client went away", async () => {
  const store = new ManualStore();
  const r = receiver(store);
  const call = open(r);
  call.send(wireEvent(1));
  call.cancel();
  store.storeNext();
  await settle();
  assert.deepEqual(call.ackedIds(), []);
  assert.equal(store.events.length, 1, "stored anyway: the resend will be a duplicate");
  assert.equal(r.stats().activeStreams, 0);
  await r.stop();
});

Deno.test("FlowReceiver.stop() finishes stores in flight and acks them before closing streams", async () => {
  const store = new ManualStore();
  const r = receiver(store);
  const call = open(r);
  call.send(wireEvent(1));
  call.send(wireEvent(2));
  await settle();
  const stopped = r.stop();
  await settle();
  assert.equal(call.paused, true, "reading stops");
  assert.equal(call.status, undefined, "streams stay open while stores are in flight");
  const late = new FakeCall(bearer());
  r.handleEventsCall(late);
  assert.equal(statusOf(late)?.code, GrpcStatus.UNAVAILABLE, "no new streams");
  store.storeNext();
  store.storeNext();
  await stopped;
  assert.deepEqual(call.ackedIds(), [1, 2]);
  assert.equal(statusOf(call)?.code, GrpcStatus.UNAVAILABLE);
  assert.equal(r.stats().inFlight, 0);
});

Deno.test("FlowReceiver.stop() gives up on a store that never answers, without acking", async () => {
  const store = new ManualStore();
  const r = receiver(store);
  const call = open(r);
  call.send(wireEvent(1));
  await r.stop({ timeoutMs: 50 });
  assert.equal(statusOf(call)?.code, GrpcStatus.UNAVAILABLE);
  store.storeNext(); // answers after the stream was closed
  await settle();
  assert.deepEqual(call.ackedIds(), []);
});

Deno.test("FlowReceiver ends a stream when its token expires", async () => {
  const r = receiver(new MemoryEventStore());
  // Expires at the next whole second: within 1 s.
  const call = new FakeCall([`Bearer ${mintToken(SECRET, { ttlMs: 1000 })}`]);
  r.handleEventsCall(call);
  assert.equal(call.status, undefined);
  const deadline = Date.now() + 2000;
  while (call.status === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(statusOf(call)?.code, GrpcStatus.UNAUTHENTICATED);
  assert.equal(statusOf(call)?.details, "token expired");
  await r.stop();
});

Deno.test("formatReceiverStats() lists every counter", () => {
  const r = receiver(new MemoryEventStore());
  assert.equal(
    formatReceiverStats(r.stats()),
    "received=0 stored=0 duplicates=0 acks=0 rejected=0 auth_failures=0 store_errors=0 " +
      "in_flight=0 streams=0 active_streams=0 queries=0 query_errors=0",
  );
  assert.ok(encodeFlowEvent(wireEvent(1)).length < 200, "a typical event is small");
});

/** A call driven through the batch handler (`messages`), as the HTTP/2 transport does. */
class BatchCall implements EventsCall {
  readonly authorization: readonly string[] = bearer();
  readonly peer = "batch:1";
  readonly acked: number[] = [];
  status: StreamStatus | undefined;
  paused = false;
  handlers: EventsCallHandlers | undefined;
  listen(h: EventsCallHandlers): void {
    this.handlers = h;
  }
  write(message: Uint8Array): boolean {
    const ack = decodeFlowEventAck(message);
    if (!ack.isInitiator) this.acked.push(ack.eventId[15]!);
    return true;
  }
  close(status: StreamStatus): void {
    this.status = status;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  offer(...events: (number | Uint8Array)[]): number {
    return this.handlers!.messages(
      events.map((e) => typeof e === "number" ? encodeFlowEvent(wireEvent(e)) : e),
    );
  }
}

/** A memory store that counts its calls (and can fail `putMany`). */
class CountingStore extends MemoryEventStore {
  puts = 0;
  putManys: number[] = [];
  fail = false;
  override put(event: StoredEvent): Promise<boolean> {
    this.puts++;
    return super.put(event);
  }
  override putMany(events: readonly StoredEvent[]): Promise<boolean[]> {
    this.putManys.push(events.length);
    if (this.fail) return Promise.reject(new Error("Redis is down"));
    return super.putMany(events);
  }
}

Deno.test("FlowReceiver takes a batch up to the in-flight limit and stores it with one putMany", async () => {
  const store = new CountingStore();
  const r = receiver(store, 3);
  const call = new BatchCall();
  r.handleEventsCall(call);
  assert.equal(call.offer(1, 2, 3, 4, 5), 3, "takes 3 of 5");
  assert.equal(call.paused, true);
  assert.equal(r.stats().inFlight, 3);
  await settle();
  assert.deepEqual(call.acked, [1, 2, 3]);
  assert.equal(call.paused, false);
  assert.equal(call.offer(4, 5), 2);
  await settle();
  assert.deepEqual(call.acked, [1, 2, 3, 4, 5]);
  assert.deepEqual([store.putManys, store.puts], [[3, 2], 0], "one putMany per batch, no put");
  await r.stop();
});

Deno.test("FlowReceiver counts a batch's initiator, undecodable and unstorable messages like single ones", async () => {
  const store = new CountingStore();
  const r = receiver(store);
  const call = new BatchCall();
  r.handleEventsCall(call);
  const initiator = encodeFlowEvent({ ...wireEvent(0), isInitiator: true });
  const badId = encodeFlowEvent({ ...wireEvent(1), eventId: new Uint8Array(2) });
  assert.equal(call.offer(initiator, 1, new Uint8Array([0x0a, 0x05]), badId, 2, 1), 6);
  await settle();
  assert.deepEqual(call.acked, [1, 2, 1]);
  const s = r.stats();
  assert.deepEqual([s.received, s.rejected, s.stored, s.duplicates], [4, 2, 2, 1]);
  await r.stop();
});

Deno.test("FlowReceiver acks nothing of a batch the store failed to keep", async () => {
  const store = new CountingStore();
  store.fail = true;
  const r = receiver(store);
  const call = new BatchCall();
  r.handleEventsCall(call);
  assert.equal(call.offer(1, 2, 3), 3);
  await settle();
  assert.deepEqual(call.acked, []);
  assert.deepEqual([r.stats().storeErrors, r.stats().inFlight], [3, 0]);
  assert.equal(call.status, undefined, "the stream stays open");
  await r.stop();
});
