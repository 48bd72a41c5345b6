/**
 * Shared by the userspace-tracker oracle tests (replay of a capture, live capture): the traffic
 * mix, and the matching of the tracker's records against the kernel's conntrack DESTROY events.
 */

import assert from "node:assert/strict";
import { ADDR, type Proc } from "./_netns.ts";
import { type KernelEvent, peer, ping, type RecordLine } from "./_cli.ts";

/** Whether an address is in the test overlay (100.64.0.0/16, fd00:64::/64). */
export function inOverlay(address: string): boolean {
  return address.startsWith("100.64.") || address.startsWith("fd00:64::");
}

/**
 * The traffic mix: TCP A→B over v4 and v6, TCP B→A, UDP both ways, a non-overlay TCP
 * connection, pings over v4 and v6. Ports are `base + 1` … `base + 7`.
 */
export async function traffic(a: string, b: string, base: number): Promise<void> {
  const servers = [
    peer(b, "tcp-server", ADDR.b4, base + 1, 1),
    peer(b, "tcp-server", ADDR.b6, base + 2, 1),
    peer(a, "tcp-server", ADDR.a4, base + 3, 1),
    peer(b, "udp-server", ADDR.b4, base + 4, 1),
    peer(b, "udp-server", ADDR.b6, base + 5, 1),
    peer(a, "udp-server", ADDR.a4, base + 6, 1),
    peer(b, "tcp-server", ADDR.bOther4, base + 7, 1),
  ];
  const clients: Proc[] = [];
  try {
    await Promise.all(servers.map((s) => s.waitFor("ready")));
    clients.push(
      peer(a, "tcp-client", ADDR.b4, base + 1, 5000),
      peer(a, "tcp-client", ADDR.b6, base + 2, 2000),
      peer(b, "tcp-client", ADDR.a4, base + 3, 3000),
      peer(a, "udp-client", ADDR.b4, base + 4, 100),
      peer(a, "udp-client", ADDR.b6, base + 5, 200),
      peer(b, "udp-client", ADDR.a4, base + 6, 300),
      peer(a, "tcp-client", ADDR.bOther4, base + 7, 700),
    );
    await Promise.all([...clients, ...servers].map((p) => p.success()));
    await ping(a, ADDR.b4);
    await ping(a, ADDR.b6);
  } finally {
    for (const p of [...clients, ...servers]) await p[Symbol.asyncDispose]();
  }
}

/** This host's counters of one flow. */
export interface Counters {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

/** One kernel flow with the tracker's end record for it. */
export interface OracleFlow {
  /** For messages: protocol and tuple. */
  name: string;
  /** The kernel's DESTROY. */
  kernel: KernelEvent;
  /** Expected direction (own address as source = egress). */
  direction: "egress" | "ingress";
  /** The kernel's counters, mapped to this host (egress: tx = orig). */
  want: Counters;
  /** The end record's counters. */
  got: Counters;
}

/**
 * Asserts what every oracle test checks (8 overlay flows in the mix and at least one outside
 * it; exactly one start and one end per kernel flow with one flow_id and the right direction;
 * nothing else; overlay only; rule_id null) and pairs each kernel flow with its counters.
 */
export function matchKernelFlows(
  records: (RecordLine & { rule_id: string | null })[],
  destroys: KernelEvent[],
  detail: string,
): OracleFlow[] {
  const kernel = destroys.filter((e) => inOverlay(e.source) || inOverlay(e.dest));
  const nonOverlay = destroys.filter((e) => !inOverlay(e.source) && !inOverlay(e.dest));
  // 3 TCP, 3 UDP, 2 pings; the non-overlay TCP connection is only in the kernel's view.
  assert.equal(kernel.length, 8, `overlay DESTROYs${detail}`);
  assert.ok(nonOverlay.length >= 1, "the kernel saw the non-overlay connection");
  const ends = records.filter((r) => r.type === "end");
  const starts = records.filter((r) => r.type === "start");
  assert.equal(starts.length, kernel.length, `one start per kernel flow${detail}`);
  assert.equal(ends.length, kernel.length, `one end per kernel flow${detail}`);
  assert.equal(records.length, 2 * kernel.length, `nothing else (no ARP/NDP flows)${detail}`);
  for (const r of records) {
    assert.ok(inOverlay(r.source_ip) || inOverlay(r.dest_ip), `overlay only${detail}`);
    assert.equal(r.rule_id, null, "rule_id");
  }
  return kernel.map((k) => {
    const icmp = k.protocol === 1 || k.protocol === 58;
    const name = `${k.protocol} ${k.source}:${k.sourcePort} → ${k.dest}:${k.destPort}`;
    const match = (r: RecordLine): boolean =>
      r.protocol === k.protocol && r.source_ip === k.source && r.dest_ip === k.dest &&
      (icmp
        ? r.icmp_type === k.icmpType && r.icmp_code === k.icmpCode
        : r.source_port === k.sourcePort && r.dest_port === k.destPort);
    const start = starts.filter(match);
    const end = ends.filter(match);
    assert.equal(start.length, 1, `${name}: one start${detail}`);
    assert.equal(end.length, 1, `${name}: one end${detail}`);
    assert.equal(start[0]!.flow_id, end[0]!.flow_id, `${name}: flow_id`);
    const direction = k.source === ADDR.a4 || k.source === ADDR.a6 ? "egress" : "ingress";
    const e = end[0]!;
    assert.equal(e.direction, direction, `${name}: direction`);
    assert.equal(start[0]!.direction, direction, `${name}: start direction`);
    assert.ok(k.orig !== undefined && k.reply !== undefined, `${name}: kernel counters`);
    const [tx, rx] = direction === "egress" ? [k.orig, k.reply] : [k.reply, k.orig];
    return {
      name,
      kernel: k,
      direction,
      want: { txPackets: tx.packets, txBytes: tx.bytes, rxPackets: rx.packets, rxBytes: rx.bytes },
      got: {
        txPackets: e.tx_packets,
        txBytes: e.tx_bytes,
        rxPackets: e.rx_packets,
        rxBytes: e.rx_bytes,
      },
    };
  });
}
