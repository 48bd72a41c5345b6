import assert from "node:assert/strict";
import { type EventQuery, matchesQuery, MemoryEventStore } from "../../lib/flowapi/store.ts";
import { stored } from "./_events.ts";

const at = (seconds: number): string =>
  new Date(Date.UTC(2026, 2, 1, 12, 0, seconds)).toISOString();
const ms = (seconds: number): number => Date.UTC(2026, 2, 1, 12, 0, seconds);

function ids(events: { eventId: string }[]): number[] {
  return events.map((e) => parseInt(e.eventId.slice(-12), 16));
}

async function filled(): Promise<MemoryEventStore> {
  const store = new MemoryEventStore();
  // Out of time order on purpose, with a tie at second 20.
  for (const [n, s] of [[1, 10], [2, 30], [3, 20], [4, 20], [5, 0], [6, 40]] as const) {
    assert.equal(await store.put(stored(n, { timestamp: at(s) })), true);
  }
  return store;
}

Deno.test("MemoryEventStore.put() stores an event ID once", async () => {
  const store = new MemoryEventStore();
  assert.equal(await store.put(stored(1)), true);
  assert.equal(await store.put(stored(1, { protocol: 17, timestamp: at(50) })), false);
  assert.equal(store.size, 1);
  const { events, total } = await store.query({ page: 1, pageSize: 10 });
  assert.equal(total, 1);
  assert.equal(events[0]!.protocol, 6, "the first version is kept");
});

Deno.test("MemoryEventStore.query() returns newest first, ties by event ID descending", async () => {
  const store = await filled();
  const { events, total } = await store.query({ page: 1, pageSize: 100 });
  assert.equal(total, 6);
  assert.deepEqual(ids(events), [6, 2, 4, 3, 1, 5]);
});

Deno.test("MemoryEventStore.query() pages through the sorted events", async () => {
  const store = await filled();
  const pages: number[][] = [];
  for (let page = 1; page <= 4; page++) {
    const r = await store.query({ page, pageSize: 2 });
    assert.equal(r.total, 6);
    pages.push(ids(r.events));
  }
  assert.deepEqual(pages, [[6, 2], [4, 3], [1, 5], []]);
});

Deno.test("MemoryEventStore.query() applies inclusive time bounds", async () => {
  const store = await filled();
  const q = (startMs?: number, endMs?: number): Promise<number[]> => {
    const query: EventQuery = { page: 1, pageSize: 100 };
    if (startMs !== undefined) query.startMs = startMs;
    if (endMs !== undefined) query.endMs = endMs;
    return store.query(query).then((r) => ids(r.events));
  };
  assert.deepEqual(await q(ms(20), ms(30)), [2, 4, 3]);
  assert.deepEqual(await q(ms(20) + 1, ms(30) - 1), []);
  assert.deepEqual(await q(ms(20)), [6, 2, 4, 3]);
  assert.deepEqual(await q(undefined, ms(10)), [1, 5]);
  assert.deepEqual(await q(ms(41)), []);
  assert.deepEqual(await q(undefined, ms(-1)), []);
});

Deno.test("MemoryEventStore.query() counts every match and pages within the matches", async () => {
  const store = new MemoryEventStore();
  for (let n = 1; n <= 30; n++) {
    await store.put(stored(n, { timestamp: at(n), protocol: n % 3 === 0 ? 17 : 6 }));
  }
  const r = await store.query({ page: 2, pageSize: 4, protocol: 17 });
  assert.equal(r.total, 10);
  assert.deepEqual(ids(r.events), [18, 15, 12, 9]);
  const beyond = await store.query({ page: 4, pageSize: 4, protocol: 17 });
  assert.deepEqual(ids(beyond.events), []);
  assert.equal(beyond.total, 10);
});

Deno.test("MemoryEventStore.close() forgets everything", async () => {
  const store = await filled();
  await store.close();
  assert.equal(store.size, 0);
  assert.equal((await store.query({ page: 1, pageSize: 10 })).total, 0);
});

Deno.test("matchesQuery() checks each filter", () => {
  const e = stored(1, {
    reporterId: "AQID",
    protocol: 58,
    type: "drop",
    direction: "ingress",
    sourceIp: "fd00:64::1",
    destIp: "192.0.2.7",
    sourceResourceId: "",
    destResourceId: "Web-Server",
    timestamp: at(5),
  });
  const base = { page: 1, pageSize: 1 };
  const cases: [Partial<EventQuery>, boolean][] = [
    [{}, true],
    [{ reporterId: "AQID" }, true],
    [{ reporterId: "AQIE" }, false],
    [{ protocol: 58 }, true],
    [{ protocol: 1 }, false],
    [{ type: "drop" }, true],
    [{ type: "start" }, false],
    [{ direction: "ingress" }, true],
    [{ direction: "unknown" }, false],
    [{ search: "FD00:64" }, true], // address, case-insensitive
    [{ search: "0.2.7" }, true],
    [{ search: "web-server" }, true], // resource ID
    [{ search: "aqi" }, true], // reporter
    [{ search: "100.64" }, false],
    [{ search: "" }, true],
    [{ startMs: ms(5), endMs: ms(5) }, true],
    [{ startMs: ms(5) + 1 }, false],
    [{ endMs: ms(5) - 1 }, false],
    [{ protocol: 58, type: "drop", search: "web" }, true],
    [{ protocol: 58, type: "end", search: "web" }, false],
  ];
  for (const [filter, want] of cases) {
    assert.equal(matchesQuery(e, { ...base, ...filter }), want, JSON.stringify(filter));
  }
});
