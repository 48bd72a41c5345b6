import assert from "node:assert/strict";
import { decodeIp } from "../../lib/capture/packet.ts";
import {
  buildDropRecord,
  type DropSource,
  type DropSourceStats,
  DropTracker,
  type LoggedPacket,
} from "../../lib/drops.ts";
import { Overlay } from "../../lib/overlay.ts";
import type { FlowRecord } from "../../lib/record.ts";
import { toJsonLine } from "../../lib/record.ts";
import { FlowLogger, WindowAggregator } from "../../lib/logger.ts";

const OVERLAY = new Overlay({
  networks: ["100.64.0.0/16", "fd00:64::/64"],
  addresses: ["100.64.0.1", "fd00:64::1"],
});
const CONTEXT = {
  eventId: "0b6c2a3e-8f4e-4d4b-9a51-2f1d7c0e9a11",
  flowId: "7f1d7c0e-9a11-4d4b-9a51-2f1d0b6c2a3e",
  timestamp: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)),
};

function ip4(src: number[], dst: number[], protocol: number, transport: number[]): Uint8Array {
  const total = 20 + transport.length;
  return new Uint8Array([
    0x45,
    0,
    total >> 8,
    total & 0xff,
    0,
    0,
    0x40,
    0,
    64,
    protocol,
    0,
    0,
    ...src,
    ...dst,
    ...transport,
  ]);
}

/** A 20-byte TCP SYN header from sport to dport. */
function tcp(sport: number, dport: number): number[] {
  return [
    sport >> 8,
    sport & 0xff,
    dport >> 8,
    dport & 0xff,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0x50,
    0x02,
    0xff,
    0xff,
    0,
    0,
    0,
    0,
  ];
}

const B = [100, 64, 0, 2];
const A = [100, 64, 0, 1];
const SYN_IN = ip4(B, A, 6, tcp(40000, 9099));

Deno.test("buildDropRecord() makes an ingress TCP drop with rule_id, one rx packet, no conntrack id", () => {
  const r = buildDropRecord(decodeIp(SYN_IN)!, "rule-abc ", OVERLAY, CONTEXT);
  assert.deepEqual(
    r,
    {
      ...CONTEXT,
      type: "drop",
      direction: "ingress",
      protocol: 6,
      sourceIp: "100.64.0.2",
      destIp: "100.64.0.1",
      sourcePort: 40000,
      destPort: 9099,
      icmpType: 0,
      icmpCode: 0,
      rxPackets: 1n,
      txPackets: 0n,
      rxBytes: 40n,
      txBytes: 0n,
      conntrackId: 0,
      ruleId: "rule-abc",
    } satisfies FlowRecord,
  );
  assert.match(toJsonLine(r!), /"type":"drop".*"rule_id":"rule-abc"/);
});

Deno.test("buildDropRecord() counts an egress drop as tx and keeps ICMP type/code, not ports", () => {
  const echo = ip4(A, B, 1, [8, 0, 0, 0, 0x12, 0x34, 0, 1]);
  const r = buildDropRecord(decodeIp(echo)!, "deny-icmp", OVERLAY, CONTEXT)!;
  assert.equal(r.direction, "egress");
  assert.deepEqual(
    [r.protocol, r.icmpType, r.icmpCode, r.sourcePort, r.destPort],
    [1, 8, 0, 0, 0],
  );
  assert.deepEqual([r.rxPackets, r.txPackets, r.rxBytes, r.txBytes], [0n, 1n, 0n, 28n]);
});

Deno.test("buildDropRecord() handles IPv6, an empty prefix (rule_id null) and fresh IDs", () => {
  const v6 = new Uint8Array(48);
  v6.set([0x60, 0, 0, 0, 0, 8, 17, 64]);
  v6.set([0xfd, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 8);
  v6.set([0xfd, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 24);
  v6.set([0x30, 0x39, 0, 53, 0, 8, 0, 0], 40);
  const packet = decodeIp(v6)!;
  const r1 = buildDropRecord(packet, "  ", OVERLAY)!;
  const r2 = buildDropRecord(packet, "", OVERLAY)!;
  assert.equal(r1.direction, "ingress");
  assert.deepEqual([r1.sourceIp, r1.destIp, r1.sourcePort, r1.destPort], [
    "fd00:64::2",
    "fd00:64::1",
    12345,
    53,
  ]);
  assert.equal(r1.ruleId, null);
  assert.notEqual(r1.flowId, r2.flowId);
  assert.notEqual(r1.eventId, r2.eventId);
});

Deno.test("buildDropRecord() skips packets that do not touch the overlay", () => {
  const other = ip4([10, 0, 0, 1], [10, 0, 0, 2], 6, tcp(1, 2));
  assert.equal(buildDropRecord(decodeIp(other)!, "r", OVERLAY), undefined);
});

class FakeSource implements DropSource {
  closed = 0;
  #queue: (readonly LoggedPacket[])[];
  #wake: (() => void) | undefined;
  #stop = false;
  constructor(batches: (readonly LoggedPacket[])[]) {
    this.#queue = batches;
  }
  async *batches(): AsyncGenerator<readonly LoggedPacket[]> {
    while (true) {
      const next = this.#queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.#stop) return;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }
  close(): void {
    this.closed++;
    this.#stop = true;
    this.#wake?.();
  }
  stats(): DropSourceStats {
    return { received: 3, overruns: 1 };
  }
}

Deno.test("DropTracker writes drop records to the sink, counts the rest, stops idempotently", async () => {
  const written: FlowRecord[] = [];
  const source = new FakeSource([[
    { prefix: "rule-abc", payload: SYN_IN },
    { prefix: "x", payload: new Uint8Array([0x00, 1, 2]) },
    { prefix: "y", payload: ip4([10, 0, 0, 1], [10, 0, 0, 2], 17, [0, 1, 0, 2, 0, 8, 0, 0]) },
  ]]);
  const tracker = new DropTracker(() => source, { write: (r) => written.push(...r) }, {
    overlay: OVERLAY,
    now: () => CONTEXT.timestamp,
  });
  tracker.start();
  await new Promise((r) => setTimeout(r, 0));
  await tracker.stop();
  await tracker.stop();
  assert.equal(written.length, 1);
  assert.deepEqual([written[0]!.ruleId, written[0]!.timestamp], ["rule-abc", CONTEXT.timestamp]);
  assert.deepEqual(tracker.stats(), {
    drops: 1,
    undecodable: 1,
    irrelevant: 1,
    source: { received: 3, overruns: 1 },
  });
  assert.ok(source.closed >= 1);
});

Deno.test("DropTracker reports a failing sink through onFatal", async () => {
  const source = new FakeSource([[{ prefix: "r", payload: SYN_IN }]]);
  const failed = Promise.withResolvers<unknown>();
  const tracker = new DropTracker(() => source, {
    write: () => {
      throw new Error("disk full");
    },
  }, { overlay: OVERLAY, onFatal: failed.resolve });
  tracker.start();
  assert.equal(((await failed.promise) as Error).message, "disk full");
  await tracker.stop();
  assert.ok(source.closed >= 1);
});

Deno.test("drop records pass the flow logger and count as num_of_drops in a window", () => {
  const out: FlowRecord[] = [];
  const agg = new WindowAggregator({ write: (r: readonly FlowRecord[]) => out.push(...r) }, {
    windowMs: 60_000,
  });
  const logger = new FlowLogger(agg, { overlay: OVERLAY });
  logger.write([buildDropRecord(decodeIp(SYN_IN)!, "rule-abc", OVERLAY, CONTEXT)!]);
  agg.close();
  assert.equal(out.length, 1);
  assert.equal(out[0]!.window?.numOfDrops, 1);
});
