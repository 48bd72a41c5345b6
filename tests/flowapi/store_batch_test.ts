/** MemoryEventStore.putMany() and events that arrive out of timestamp order. */

import assert from "node:assert/strict";
import { MemoryEventStore } from "../../lib/flowapi/store.ts";
import { stored } from "./_events.ts";

const at = (s: number): string => new Date(Date.UTC(2026, 2, 1, 12, 0, s)).toISOString();

Deno.test("MemoryEventStore.putMany() dedupes within the list and against earlier puts", async () => {
  const store = new MemoryEventStore();
  assert.equal(await store.put(stored(1)), true);
  assert.deepEqual(
    await store.putMany([stored(2), stored(1), stored(3), stored(2, { timestamp: at(59) })]),
    [true, false, true, false],
  );
  assert.equal(store.size, 3);
  const { events } = await store.query({ page: 1, pageSize: 10 });
  assert.equal(events.find((e) => e.eventId === stored(2).eventId)?.timestamp, stored(2).timestamp);
});

Deno.test("MemoryEventStore answers newest first whatever the arrival order, also between puts", async () => {
  const store = new MemoryEventStore();
  // Four senders interleaved, each in order: the arrival order is nearly, not exactly, sorted.
  const order = [3, 7, 1, 5, 4, 8, 2, 6, 12, 10, 9, 11];
  await store.putMany(order.slice(0, 6).map((n) => stored(n, { timestamp: at(n) })));
  const ids = async (q = {}): Promise<number[]> =>
    (await store.query({ page: 1, pageSize: 100, ...q })).events.map((e) =>
      parseInt(e.eventId.slice(-12), 16)
    );
  assert.deepEqual(await ids(), [8, 7, 5, 4, 3, 1]);
  for (const n of order.slice(6)) await store.put(stored(n, { timestamp: at(n) }));
  assert.deepEqual(await ids(), [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
  assert.deepEqual(
    await ids({ startMs: Date.parse(at(4)), endMs: Date.parse(at(6)) }),
    [6, 5, 4],
  );
  // Ties on the timestamp: event ID descending.
  await store.putMany([stored(20, { timestamp: at(0) }), stored(19, { timestamp: at(0) })]);
  assert.deepEqual((await ids()).slice(-3), [1, 20, 19]);
});
