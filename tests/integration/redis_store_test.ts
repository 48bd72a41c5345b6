/**
 * RedisEventStore against a real redis-server: the same answers as MemoryEventStore for random
 * queries over more events than one scan batch, with many timestamp ties; dedupe; errors while
 * Redis is down. Needs no root (redis-server, redis-tools).
 */

import assert from "node:assert/strict";
import type { StoredEvent } from "../../lib/flowapi/proto.ts";
import {
  type EventQuery,
  MemoryEventStore,
  RedisEventStore,
  StoreError,
} from "../../lib/flowapi/store.ts";
import { RedisServer } from "./_collect.ts";

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BASE = Date.UTC(2026, 4, 1);
const REPORTERS = ["AQID", "BAUG", "+/v7"];
const TYPES = ["unknown", "start", "end", "drop"] as const;
const DIRECTIONS = ["unknown", "ingress", "egress"] as const;

function event(n: number, rnd: () => number): StoredEvent {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)]!;
  return {
    eventId: crypto.randomUUID(),
    // 300 distinct milliseconds for 1500 events: ties everywhere, across batch boundaries.
    timestamp: new Date(BASE + Math.floor(rnd() * 300)).toISOString(),
    reporterId: pick(REPORTERS),
    flowId: crypto.randomUUID(),
    type: pick(TYPES),
    direction: pick(DIRECTIONS),
    protocol: pick([1, 6, 17, 58]),
    sourceIp: `100.64.${n % 7}.${n % 250}`,
    destIp: pick(["fd00::1", "192.0.2.1", "100.64.0.9"]),
    sourcePort: n % 65536,
    destPort: 443,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: String(n),
    txPackets: "0",
    rxBytes: "18446744073709551615",
    txBytes: "0",
    sourceResourceId: pick(["", "", "db-main", "web"]),
    destResourceId: "",
    ruleId: "",
    numOfStarts: "0",
    numOfEnds: "0",
    numOfDrops: "0",
    windowStart: "",
    windowEnd: "",
  };
}

function randomQuery(rnd: () => number): EventQuery {
  const q: EventQuery = {
    page: 1 + Math.floor(rnd() * 3),
    pageSize: [1, 7, 100, 700][Math.floor(rnd() * 4)]!,
  };
  if (rnd() < 0.3) q.reporterId = REPORTERS[Math.floor(rnd() * REPORTERS.length)]!;
  if (rnd() < 0.3) q.protocol = [1, 6, 17, 58][Math.floor(rnd() * 4)]!;
  if (rnd() < 0.3) q.type = TYPES[Math.floor(rnd() * TYPES.length)]!;
  if (rnd() < 0.3) q.direction = DIRECTIONS[Math.floor(rnd() * DIRECTIONS.length)]!;
  if (rnd() < 0.2) q.search = ["DB-", "fd00", "100.64.3.", "bau"][Math.floor(rnd() * 4)]!;
  if (rnd() < 0.4) q.startMs = BASE + Math.floor(rnd() * 300);
  if (rnd() < 0.4) q.endMs = (q.startMs ?? BASE) + Math.floor(rnd() * 200);
  return q;
}

Deno.test("RedisEventStore answers like MemoryEventStore (random queries, ties, batches)", async () => {
  await using redis = new RedisServer();
  await redis.start();
  const store = await RedisEventStore.open(redis.url(4));
  try {
    const memory = new MemoryEventStore();
    const rnd = random(20260501);
    const events = Array.from({ length: 1500 }, (_, i) => event(i, rnd));
    // Writes in parallel batches, as concurrent streams would.
    for (let i = 0; i < events.length; i += 100) {
      const batch = events.slice(i, i + 100);
      assert.deepEqual(await Promise.all(batch.map((e) => store.put(e))), batch.map(() => true));
      for (const e of batch) await memory.put(e);
    }
    for (let i = 0; i < 120; i++) {
      const q = randomQuery(rnd);
      const [want, got] = await Promise.all([memory.query(q), store.query(q)]);
      assert.equal(got.total, want.total, JSON.stringify(q));
      assert.deepEqual(
        got.events.map((e) => e.eventId),
        want.events.map((e) => e.eventId),
        JSON.stringify(q),
      );
    }
    const all = await store.query({ page: 1, pageSize: 50_000, search: "" });
    assert.equal(all.total, 1500);
    assert.deepEqual(all.events, (await memory.query({ page: 1, pageSize: 50_000 })).events);
    const scanned = await store.query({ page: 2, pageSize: 600, search: "." });
    assert.equal(scanned.total, 1500, "the filtered path scans every batch exactly once");
    assert.equal(new Set(scanned.events.map((e) => e.eventId)).size, 600);
  } finally {
    await store.close();
  }
});

Deno.test("RedisEventStore.put() stores an event ID once, whatever the copy says", async () => {
  await using redis = new RedisServer();
  await redis.start();
  const store = await RedisEventStore.open(redis.url(5));
  try {
    const e = event(1, random(1));
    assert.equal(await store.put(e), true);
    assert.equal(
      await store.put({ ...e, timestamp: new Date(BASE + 99_999).toISOString() }),
      false,
    );
    const { events, total } = await store.query({ page: 1, pageSize: 10 });
    assert.equal(total, 1);
    assert.deepEqual(events, [e]);
    assert.equal(
      (await redis.cli("-n", "5", "ZSCORE", "netbird-ct:flow:by_time", e.eventId)).trim(),
      String(Date.parse(e.timestamp)),
      "the index keeps the first timestamp",
    );
  } finally {
    await store.close();
  }
});

Deno.test("RedisEventStore.put() groups concurrent writes: copies stored once, close() flushes", async () => {
  await using redis = new RedisServer();
  await redis.start();
  const store = await RedisEventStore.open(redis.url(7));
  let pending: Promise<boolean> | undefined;
  try {
    const rnd = random(7);
    const e = event(1, rnd);
    const later = { ...e, timestamp: new Date(BASE + 99_999).toISOString() };
    const others = Array.from({ length: 2500 }, (_, i) => event(i + 2, rnd));
    // More than one transaction's worth at once, with two copies of one ID in the same one.
    const results = await Promise.all([e, later, ...others].map((x) => store.put(x)));
    assert.deepEqual(results, [true, false, ...others.map(() => true)]);
    assert.equal((await redis.cli("-n", "7", "ZCARD", "netbird-ct:flow:by_time")).trim(), "2501");
    assert.equal(
      (await redis.cli("-n", "7", "ZSCORE", "netbird-ct:flow:by_time", e.eventId)).trim(),
      String(Date.parse(e.timestamp)),
      "the first copy's timestamp",
    );
    assert.deepEqual(
      JSON.parse(await redis.cli("-n", "7", "GET", `netbird-ct:flow:event:${e.eventId}`)),
      e,
      "the first copy's content",
    );
    pending = store.put(event(9999, rnd));
  } finally {
    await store.close();
  }
  assert.equal(await pending, true, "close() writes what was put before it");
  assert.equal((await redis.cli("-n", "7", "ZCARD", "netbird-ct:flow:by_time")).trim(), "2502");
});

Deno.test("RedisEventStore.putMany() shares the group commit with put(): one result per event", async () => {
  await using redis = new RedisServer();
  await redis.start();
  const store = await RedisEventStore.open(redis.url(8));
  try {
    const rnd = random(8);
    const events = Array.from({ length: 2600 }, (_, i) => event(i, rnd));
    const copy = { ...events[5]!, timestamp: new Date(BASE + 99_999).toISOString() };
    // Larger than one transaction, a copy inside the list, and single puts in between.
    const [many, single, again, empty] = await Promise.all([
      store.putMany([...events.slice(0, 2500), copy]),
      store.put(events[2500]!),
      store.putMany([events[0]!, ...events.slice(2501)]),
      store.putMany([]),
    ]);
    assert.deepEqual(many, [...events.slice(0, 2500).map(() => true), false]);
    assert.equal(single, true);
    assert.deepEqual(again, [false, ...events.slice(2501).map(() => true)]);
    assert.deepEqual(empty, []);
    assert.equal((await redis.cli("-n", "8", "ZCARD", "netbird-ct:flow:by_time")).trim(), "2600");
    assert.deepEqual(
      JSON.parse(await redis.cli("-n", "8", "GET", `netbird-ct:flow:event:${copy.eventId}`)),
      events[5],
      "the first copy stays",
    );
  } finally {
    await store.close();
  }
});

Deno.test("RedisEventStore fails fast while Redis is down and works again after", async () => {
  await using redis = new RedisServer();
  await redis.start();
  const store = await RedisEventStore.open(redis.url(6));
  try {
    await redis.kill();
    const started = Date.now();
    await assert.rejects(() => store.put(event(1, random(2))), StoreError);
    await assert.rejects(() => store.query({ page: 1, pageSize: 1 }), StoreError);
    assert.ok(Date.now() - started < 2000, "no waiting for a reconnect");
    await redis.start();
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        assert.equal(await store.put(event(2, random(3))), true);
        break;
      } catch (err) {
        assert.ok(err instanceof StoreError);
        assert.ok(Date.now() < deadline, "reconnected within 10 s");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    await store.close();
  }
  await assert.rejects(() => store.put(event(3, random(4))), /the store is closed/);
});

Deno.test("RedisEventStore.open() fails within the connect timeout when Redis is unreachable", async () => {
  const redis = new RedisServer(); // not started
  const started = Date.now();
  await assert.rejects(
    () => RedisEventStore.open(redis.url(0), { connectTimeoutMs: 500 }),
    (err: unknown) =>
      err instanceof StoreError &&
      /Cannot connect to redis:\/\/127\.0\.0\.1:.*ECONNREFUSED/.test(err.message),
  );
  assert.ok(Date.now() - started < 3000);
});
