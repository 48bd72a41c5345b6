/**
 * Shared by the userspace-tracker oracle tests (replay of a capture, live capture): the traffic
 * mix, and the matching of the tracker's records against the kernel's conntrack DESTROY events.
 */

import assert from "node:assert/strict";
import { ADDR, checkIn, type Proc, spawnIn, waitUntil } from "./_netns.ts";
import { flush, type KernelEvent, parseKernel, peer, ping, type RecordLine } from "./_cli.ts";

/** Whether an address is in the test overlay (100.64.0.0/16, fd00:64::/64). */
export function inOverlay(address: string): boolean {
  return address.startsWith("100.64.") || address.startsWith("fd00:64::");
}

/**
 * A TCP peer for the closes `_peer.ts` has no mode for, run with `python3 -c` (SO_LINGER):
 *
 *   server HOST PORT BYTES wait|first   accept one connection, read BYTES, echo them; `first`:
 *                                       then close its sending side first (FIN before the
 *                                       client's); then read to EOF or reset and close
 *   client HOST PORT BYTES rst|wait     connect, send BYTES, read the BYTES echoed; `rst`: then
 *                                       abort with a RST (SO_LINGER 0); `wait`: read to EOF
 *                                       (the server's FIN), then close
 *
 * Servers print "ready" once listening; both print "done" and exit 0 when finished.
 */
const PY_PEER = `
import socket, struct, sys
role, host, port, size, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
def read_exactly(s, n):
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        if not chunk:
            raise SystemExit("EOF after %d of %d bytes" % (got, n))
        got += len(chunk)
def drain(s):
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
if role == "server":
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    print("ready", flush=True)
    conn, _ = listener.accept()
    listener.close()
    read_exactly(conn, size)
    conn.sendall(b"e" * size)
    if how == "first":
        conn.shutdown(socket.SHUT_WR)
    drain(conn)
    conn.close()
else:
    conn = socket.create_connection((host, port), timeout=10)
    conn.sendall(b"c" * size)
    read_exactly(conn, size)
    if how == "rst":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        drain(conn)
    conn.close()
print("done", flush=True)
`;

/** Starts {@linkcode PY_PEER} in a namespace. */
function pyPeer(
  ns: string,
  role: "server" | "client",
  host: string,
  port: number,
  bytes: number,
  how: string,
): Proc {
  return spawnIn(ns, ["python3", "-c", PY_PEER, role, host, String(port), String(bytes), how]);
}

/**
 * Turns on conntrack accounting in `ns` and starts `conntrack -E` (NEW and DESTROY, with ids)
 * there; `conntrack -E` prints nothing until an event, so a non-overlay ping probes until it
 * reports one, then the table is flushed.
 *
 * @param ns The namespace.
 * @returns The running `conntrack -E` (dispose it) and the ids of the probe's entries, to leave out.
 */
export async function watchKernel(ns: string): Promise<{ events: Proc; probeIds: Set<number> }> {
  await checkIn(ns, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1"]);
  const events = spawnIn(ns, ["conntrack", "-E", "-e", "NEW,DESTROY", "-o", "id,extended"]);
  try {
    await waitUntil(
      "conntrack -E to report a probe ping",
      async () => {
        await ping(ns, ADDR.bOther4);
        return parseKernel(events.stdout).some((e) => e.dest === ADDR.bOther4);
      },
      10_000,
      100,
    );
    await flush(ns);
    return { events, probeIds: new Set(parseKernel(events.stdout).map((e) => e.id)) };
  } catch (err) {
    await events[Symbol.asyncDispose]();
    throw err;
  }
}

/**
 * The traffic mix, by destination port (`base + offset`). TCP, each a flow of its own:
 *
 * | offset | flow | how it closes (as NetBird's TCP tracker sees it) |
 * |---|---|---|
 * | 1 | A → B v4, 5000 B echoed | A half-closes first: TIME-WAIT, then A's final ACK |
 * | 2 | A → B v6, 2000 B | the same |
 * | 3 | B → A v4, 3000 B (inbound) | B half-closes first: TIME-WAIT, then B's final ACK |
 * | 8 | A → B v4, 1 MB (long transfer) | A half-closes first: TIME-WAIT, final ACK |
 * | 9 | A → B v4, 4000 B | A aborts with a RST after the echo: CLOSED, nothing after it |
 * | 10 | B → A v6, 4000 B (inbound) | B aborts with a RST: CLOSED |
 * | 11 | A → B v4, 4000 B | B closes first (FIN), A follows: LAST-ACK, B's ACK → CLOSED |
 * | 12 | A → B v4, refused | no listener: SYN, RST|ACK |
 * | 7 | A → B outside the overlay | the kernel's only |
 *
 * UDP A → B v4 (4) and v6 (5), B → A v4 (6); one ping each over v4 and v6. 13 overlay flows.
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
    peer(b, "tcp-server", ADDR.b4, base + 8, 1),
    pyPeer(b, "server", ADDR.b4, base + 9, 4000, "wait"),
    pyPeer(a, "server", ADDR.a6, base + 10, 4000, "wait"),
    pyPeer(b, "server", ADDR.b4, base + 11, 4000, "first"),
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
      peer(a, "tcp-client", ADDR.b4, base + 8, 1_000_000),
      pyPeer(a, "client", ADDR.b4, base + 9, 4000, "rst"),
      pyPeer(b, "client", ADDR.a6, base + 10, 4000, "rst"),
      pyPeer(a, "client", ADDR.b4, base + 11, 4000, "wait"),
      peer(a, "tcp-connect", ADDR.b4, base + 12, 1),
    );
    await Promise.all([...clients, ...servers].map((p) => p.success()));
    await ping(a, ADDR.b4);
    await ping(a, ADDR.b6);
  } finally {
    for (const p of [...clients, ...servers]) await p[Symbol.asyncDispose]();
  }
}

/** Overlay flows in {@linkcode traffic}: 8 TCP, 3 UDP, 2 pings. */
export const OVERLAY_FLOWS = 13;

/**
 * How each TCP flow of {@linkcode traffic} (by port offset) closes: `time-wait` (the initiator
 * sends the first FIN; the last packet is its bare final ACK), `rst` (the initiator aborts
 * with a RST, the last packet), `peer-first` (the responder sends the first FIN; the last packet
 * is its bare ACK of the initiator's FIN), `refused` (SYN, RST|ACK).
 */
export const TCP_CLOSES: ReadonlyMap<number, "time-wait" | "rst" | "peer-first" | "refused"> =
  new Map([
    [1, "time-wait"],
    [2, "time-wait"],
    [3, "time-wait"],
    [8, "time-wait"],
    [9, "rst"],
    [10, "rst"],
    [11, "peer-first"],
    [12, "refused"],
  ]);

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
 * Asserts what every oracle test checks ({@linkcode OVERLAY_FLOWS} overlay flows in the mix and
 * at least one outside it; exactly one start and one end per kernel flow with one flow_id and
 * the right direction; nothing else; overlay only; rule_id null) and pairs each kernel flow with
 * its counters.
 */
export function matchKernelFlows(
  records: (RecordLine & { rule_id: string | null })[],
  destroys: KernelEvent[],
  detail: string,
): OracleFlow[] {
  const kernel = destroys.filter((e) => inOverlay(e.source) || inOverlay(e.dest));
  const nonOverlay = destroys.filter((e) => !inOverlay(e.source) && !inOverlay(e.dest));
  // The non-overlay TCP connection is only in the kernel's view.
  assert.equal(kernel.length, OVERLAY_FLOWS, `overlay DESTROYs${detail}`);
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

/**
 * Asserts that every flow's counters are exactly the kernel's: packets and bytes per direction.
 *
 * @param flows From {@linkcode matchKernelFlows}.
 * @param detail Appended to failure messages.
 */
export function assertKernelCounters(flows: readonly OracleFlow[], detail: string): void {
  for (const { name, direction, want, got } of flows) {
    assert.deepEqual(
      got,
      want,
      `${name}: counters (kernel ${direction}: tx = ${
        direction === "egress" ? "orig" : "reply"
      })${detail}`,
    );
  }
}
