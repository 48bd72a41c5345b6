import assert from "node:assert/strict";
import { DEFAULT_UNACKED_MAX, MemoryUnackedStore } from "../../lib/flowapi/unacked.ts";

const data = (n: number): Uint8Array => new Uint8Array([n]);

Deno.test("MemoryUnackedStore defaults to 100000 events and starts empty", () => {
  const store = new MemoryUnackedStore();
  assert.equal(DEFAULT_UNACKED_MAX, 100_000);
  assert.equal(store.maxEvents, 100_000);
  assert.equal(store.size, 0);
  assert.equal(store.dropped, 0);
  assert.deepEqual(store.events(), []);
});

Deno.test("MemoryUnackedStore rejects a capacity below 1", () => {
  assert.throws(() => new MemoryUnackedStore({ maxEvents: 0 }), RangeError);
  assert.throws(() => new MemoryUnackedStore({ maxEvents: 1.5 }), RangeError);
});

Deno.test("MemoryUnackedStore holds events oldest first until deleted", async () => {
  const store = new MemoryUnackedStore({ maxEvents: 10 });
  assert.deepEqual(await store.add({ id: "a", data: data(1) }), []);
  assert.deepEqual(await store.add({ id: "b", data: data(2) }), []);
  assert.deepEqual(store.events(), [{ id: "a", data: data(1) }, { id: "b", data: data(2) }]);
  assert.ok(store.has("a"));
  assert.equal(await store.delete("a"), true);
  assert.equal(await store.delete("a"), false);
  assert.ok(!store.has("a"));
  assert.deepEqual(store.events().map((e) => e.id), ["b"]);
});

Deno.test("MemoryUnackedStore drops the oldest event when full and counts every drop", async () => {
  const store = new MemoryUnackedStore({ maxEvents: 3 });
  for (const id of ["a", "b", "c"]) await store.add({ id, data: data(0) });
  assert.deepEqual(await store.add({ id: "d", data: data(0) }), ["a"]);
  assert.deepEqual(await store.add({ id: "e", data: data(0) }), ["b"]);
  assert.equal(store.size, 3);
  assert.equal(store.dropped, 2);
  assert.deepEqual(store.events().map((e) => e.id), ["c", "d", "e"]);
});

Deno.test("MemoryUnackedStore replaces an event with the same ID in place, dropping nothing", async () => {
  const store = new MemoryUnackedStore({ maxEvents: 2 });
  await store.add({ id: "a", data: data(1) });
  await store.add({ id: "b", data: data(2) });
  assert.deepEqual(await store.add({ id: "a", data: data(3) }), []);
  assert.equal(store.dropped, 0);
  assert.deepEqual(store.events(), [{ id: "a", data: data(3) }, { id: "b", data: data(2) }]);
});

Deno.test("MemoryUnackedStore reflects add and delete synchronously, before the promise", () => {
  const store = new MemoryUnackedStore({ maxEvents: 1 });
  const added = store.add({ id: "a", data: data(1) });
  assert.equal(store.size, 1);
  const deleted = store.delete("a");
  assert.equal(store.size, 0);
  return Promise.all([added, deleted]).then(() => {});
});
