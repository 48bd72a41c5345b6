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

const f = (id: number, dport: number) => flow({ id, src: "100.64.0.1", dst: "100.64.0.2", dport });

Deno.test("LiveFlowTable agrees with a Map keyed by id and tuple under random adds and removes", () => {
  const rand = prng(42);
  const table = new LiveFlowTable();
  const oracle = new Map<string, number>(); // "id/dport" → slot
  // Few distinct ids and ports (collisions, shared ids, long probe chains), plus the full u32 range.
  const pickId = (): number =>
    rand() < 0.5 ? Math.floor(rand() * 3000) : Math.floor(rand() * 2 ** 32);
  for (let op = 0; op < 60_000; op++) {
    const id = pickId();
    const dport = Math.floor(rand() * 3);
    const key = `${id}/${dport}`;
    if (rand() < 0.6) {
      const slot = table.add(f(id, dport), "egress");
      if (oracle.has(key)) assert.equal(slot, oracle.get(key), `re-add returns the slot, op ${op}`);
      oracle.set(key, slot);
    } else {
      const slot = table.find(f(id, dport));
      assert.equal(slot, oracle.get(key) ?? -1, `find(${key}) at op ${op}`);
      if (slot >= 0) {
        assert.equal(table.remove(slot), true);
        oracle.delete(key);
      }
    }
    if (op % 997 === 0) {
      for (const [k, slot] of oracle) {
        const [id2, port] = k.split("/").map(Number);
        assert.equal(table.find(f(id2!, port!)), slot, `${k} at op ${op}`);
        assert.equal(table.get(slot)?.flow.original.proto.destinationPort, port);
      }
    }
  }
  assert.equal(table.size, oracle.size);
  assert.deepEqual(table.slots().sort((a, b) => a - b), [...oracle.values()].sort((a, b) => a - b));
});

Deno.test("LiveFlowTable keeps two open connections that share a conntrack id apart", () => {
  const table = new LiveFlowTable();
  const a = table.add(f(7, 1000), "egress");
  const b = table.add(f(7, 2000), "ingress");
  assert.notEqual(a, b);
  assert.equal(table.size, 2);
  assert.equal(table.find(f(7, 1000)), a);
  assert.equal(table.find(f(7, 2000)), b);
  table.remove(a);
  assert.equal(table.find(f(7, 1000)), -1);
  assert.equal(table.find(f(7, 2000)), b, "removing one leaves the other");
  assert.equal(table.get(b)!.direction, "ingress");
  assert.equal(table.has(7), true);
  table.remove(b);
  assert.equal(table.has(7), false);
});

Deno.test("LiveFlowTable.get() rebuilds IPv4 and IPv6 flows with id, direction and mark", () => {
  const table = new LiveFlowTable();
  const a = table.add(
    flow({ id: 1, src: "100.64.0.1", dst: "192.0.2.9", sport: 4000, dport: 443, mark: 0x1bd11 }),
    "egress",
  );
  const b = table.add(
    flow({ id: 2, src: "fd00::9", dst: "fd00::1", proto: 58, icmpType: 128 }),
    "ingress",
  );
  const x = table.get(a)!;
  assert.equal(x.direction, "egress");
  assert.deepEqual(
    [
      x.flow.id,
      x.flow.original.source,
      x.flow.original.destination,
      x.flow.original.proto.sourcePort,
      x.flow.mark,
    ],
    [1, "100.64.0.1", "192.0.2.9", 4000, 0x1bd11],
  );
  const y = table.get(b)!;
  assert.deepEqual([y.flow.family, y.flow.original.source, y.flow.original.proto.icmpType], [
    6,
    "fd00::9",
    128,
  ]);
  table.remove(b);
  assert.equal(table.get(b), undefined);
});

Deno.test("LiveFlowTable keeps the last known counters", () => {
  const table = new LiveFlowTable();
  const slot = table.add(flow({ id: 5, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  assert.equal(table.get(slot)!.flow.countersOriginal.packets, 0n);
  table.updateCounters(slot, { packets: 3n, bytes: 300n }, { packets: 2n, bytes: 200n });
  const c = table.get(slot)!.flow;
  assert.deepEqual(
    [
      c.countersOriginal.packets,
      c.countersOriginal.bytes,
      c.countersReply.packets,
      c.countersReply.bytes,
    ],
    [3n, 300n, 2n, 200n],
  );
});

Deno.test("LiveFlowTable.delta() subtracts reported counters and records new reports", () => {
  const table = new LiveFlowTable({ reports: true });
  const slot = table.add(flow({ id: 5, src: "100.64.0.1", dst: "100.64.0.2" }), "egress", 100);
  assert.equal(table.reportedAt(slot), 100);
  const first = table.delta(slot, { packets: 3n, bytes: 300n }, { packets: 2n, bytes: 200n }, 900);
  assert.deepEqual([first.original.bytes, first.reply.bytes], [300n, 200n]);
  assert.equal(table.reportedAt(slot), 900);
  const second = table.delta(slot, { packets: 5n, bytes: 450n }, { packets: 2n, bytes: 200n });
  assert.deepEqual([second.original.packets, second.original.bytes, second.reply.bytes], [
    2n,
    150n,
    0n,
  ]);
  assert.equal(table.reportedAt(slot), 900, "without now, nothing is recorded");
});

Deno.test("LiveFlowTable.find() tells a reused id with another tuple apart", () => {
  const table = new LiveFlowTable();
  const slot = table.add(
    flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 2 }),
    "egress",
  );
  assert.equal(
    table.find(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 2 })),
    slot,
  );
  assert.equal(
    table.find(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.3", sport: 1, dport: 2 })),
    -1,
  );
  assert.equal(
    table.find(flow({ id: 9, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 3 })),
    -1,
  );
  assert.equal(
    table.find(flow({ id: 10, src: "100.64.0.1", dst: "100.64.0.2", sport: 1, dport: 2 })),
    -1,
  );
});

Deno.test("LiveFlowTable.unseen() lists the slots a dump epoch did not mark", () => {
  const table = new LiveFlowTable();
  const slots = [1, 2, 3].map((id) =>
    table.add(flow({ id, src: "100.64.0.1", dst: "100.64.0.2" }), "egress")
  );
  table.markSeen(slots[0]!, 7);
  table.markSeen(slots[2]!, 7);
  assert.deepEqual([...table.unseen(7)], [slots[1]]);
  assert.equal(table.seenIn(slots[0]!, 7), true);
  assert.deepEqual([...table.unseen(8)].sort(), [...slots].sort());
});

Deno.test("LiveFlowTable tells ICMP flows apart by type and code and rebuilds them", () => {
  const table = new LiveFlowTable();
  const echo = flow({ id: 5, src: "100.64.0.1", dst: "100.64.0.2", proto: 1, icmpType: 8 });
  const unreachable = flow({
    id: 5,
    src: "100.64.0.1",
    dst: "100.64.0.2",
    proto: 1,
    icmpType: 3,
    icmpCode: 1,
  });
  const a = table.add(echo, "egress");
  assert.equal(table.find(unreachable), -1);
  const b = table.add(unreachable, "ingress");
  assert.notEqual(a, b);
  const proto = table.get(b)!.flow.original.proto;
  assert.deepEqual([proto.icmpType, proto.icmpCode, proto.sourcePort, proto.destinationPort], [
    3,
    1,
    0,
    0,
  ]);
  assert.equal(table.get(a)!.flow.original.proto.icmpType, 8);
});

Deno.test("LiveFlowTable keeps marks once any flow has one, and 0 for the others", () => {
  const table = new LiveFlowTable();
  const plain = table.add(flow({ id: 1, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  const marked = table.add(
    flow({ id: 2, src: "100.64.0.1", dst: "100.64.0.2", mark: 0xdeadbeef }),
    "egress",
  );
  assert.equal(table.get(plain)!.flow.mark, 0);
  assert.equal(table.get(marked)!.flow.mark, 0xdeadbeef);
  table.remove(marked);
  const reused = table.add(flow({ id: 3, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  assert.equal(reused, marked, "the freed slot is reused");
  assert.equal(table.get(reused)!.flow.mark, 0, "a reused slot does not keep the old mark");
});

Deno.test("LiveFlowTable never mistakes an old epoch's mark for a new one across 600 dumps", () => {
  const table = new LiveFlowTable();
  const stale = table.add(flow({ id: 1, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  const fresh = table.add(flow({ id: 2, src: "100.64.0.1", dst: "100.64.0.2" }), "egress");
  table.markSeen(stale, 1);
  for (let epoch = 2; epoch <= 600; epoch++) {
    table.markSeen(fresh, epoch);
    assert.equal(table.seenIn(stale, epoch), false, `stale slot seen in epoch ${epoch}`);
    assert.equal(table.seenIn(fresh, epoch), true);
    assert.deepEqual([...table.unseen(epoch)], [stale]);
  }
  assert.throws(() => table.markSeen(fresh, 3), RangeError);
});
