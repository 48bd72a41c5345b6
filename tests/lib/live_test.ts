import assert from "node:assert/strict";
import { LiveFlowTable } from "../../lib/live.ts";
import { flow } from "../_fakes/flows.ts";

/** A small deterministic PRNG (mulberry32) so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("LiveFlowTable agrees with a Map under random inserts and deletes (growth and backward-shift deletion)", () => {
  const rand = prng(42);
  const table = new LiveFlowTable();
  const oracle = new Map<number, number>();
  // Few distinct ids (collisions and long probe chains), plus the full u32 range.
  const pick = (): number =>
    rand() < 0.5 ? Math.floor(rand() * 5000) : Math.floor(rand() * 2 ** 32);
  for (let op = 0; op < 60_000; op++) {
    const id = pick();
    if (rand() < 0.6) {
      const dport = Math.floor(rand() * 65536);
      table.set(flow({ id, src: "100.64.0.1", dst: "100.64.0.2", dport }), "egress");
      oracle.set(id, dport);
    } else {
      assert.equal(table.delete(id), oracle.delete(id), `delete(${id}) at op ${op}`);
    }
    if (op % 997 === 0) {
      for (const [k, dport] of oracle) {
        assert.equal(
          table.get(k)?.flow.original.proto.destinationPort,
          dport,
          `id ${k} at op ${op}`,
        );
      }
    }
  }
  assert.equal(table.size, oracle.size);
  assert.deepEqual(table.ids().sort((a, b) => a - b), [...oracle.keys()].sort((a, b) => a - b));
});

Deno.test("LiveFlowTable.get() rebuilds IPv4 and IPv6 flows with direction and mark", () => {
  const table = new LiveFlowTable();
  table.set(
    flow({
      id: 1,
      src: "100.64.0.1",
      dst: "192.0.2.9",
      proto: 6,
      sport: 4000,
      dport: 443,
      mark: 0x1bd11,
    }),
    "egress",
  );
  table.set(flow({ id: 2, src: "fd00::9", dst: "fd00::1", proto: 58, icmpType: 128 }), "ingress");
  const a = table.get(1)!;
  assert.equal(a.direction, "egress");
  assert.deepEqual(
    [
      a.flow.original.source,
      a.flow.original.destination,
      a.flow.original.proto.sourcePort,
      a.flow.original.proto.destinationPort,
      a.flow.mark,
    ],
    ["100.64.0.1", "192.0.2.9", 4000, 443, 0x1bd11],
  );
  const b = table.get(2)!;
  assert.equal(b.direction, "ingress");
  assert.equal(b.flow.family, 6);
  assert.deepEqual([b.flow.original.source, b.flow.original.proto.icmpType], ["fd00::9", 128]);
  assert.equal(table.get(3), undefined);
});

Deno.test("LiveFlowTable keeps the last known counters", () => {
  const table = new LiveFlowTable();
  table.set(flow({ id: 5, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  assert.equal(table.get(5)!.flow.countersOriginal.packets, 0n);
  table.updateCounters(5, { packets: 3n, bytes: 300n }, { packets: 2n, bytes: 200n });
  const f = table.get(5)!.flow;
  assert.deepEqual(
    [
      f.countersOriginal.packets,
      f.countersOriginal.bytes,
      f.countersReply.packets,
      f.countersReply.bytes,
    ],
    [3n, 300n, 2n, 200n],
  );
  assert.equal(
    table.updateCounters(6, { packets: 1n, bytes: 1n }, { packets: 1n, bytes: 1n }),
    false,
  );
});

Deno.test("LiveFlowTable.matches() tells a reused id with another tuple apart", () => {
  const table = new LiveFlowTable();
  table.set(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 2 }), "egress");
  assert.equal(
    table.matches(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 2 })),
    true,
  );
  assert.equal(
    table.matches(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.3", sport: 1, dport: 2 })),
    false,
  );
  assert.equal(
    table.matches(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 3 })),
    false,
  );
  assert.equal(
    table.matches(flow({ id: 10, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 2 })),
    false,
  );
});

Deno.test("LiveFlowTable.unseen() lists the flows a dump epoch did not mark", () => {
  const table = new LiveFlowTable();
  for (const id of [1, 2, 3]) {
    table.set(flow({ id, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  }
  table.markSeen(1, 7);
  table.markSeen(3, 7);
  assert.deepEqual(table.unseen(7), [2]);
  assert.deepEqual(table.unseen(8).sort(), [1, 2, 3]);
});
