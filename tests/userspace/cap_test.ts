import assert from "node:assert/strict";
import { conntrackOptionsFromEnv } from "../../lib/userspace/env.ts";
import { IcmpTracker } from "../../lib/userspace/icmp.ts";
import { UdpTracker } from "../../lib/userspace/udp.ts";
import {
  ACK,
  C,
  FIN,
  fixture,
  icmp,
  RST,
  runTcpCase,
  S,
  SYN,
  T,
  type TcpCase,
  type TcpStep,
  udp,
} from "./_harness.ts";

const env = (vars: Record<string, string>) => conntrackOptionsFromEnv((name) => vars[name]);

const syn = (port: number, extra: Partial<TcpStep> = {}): TcpStep => ({
  op: "OUT",
  flags: SYN,
  port,
  ...extra,
});

// NetBird's cap_test.go (spec §7.10.3–4). With a fixed clock every entry has the same lastSeen,
// so the creation order decides: the evicted entries are exactly the oldest ones, in order.
const TCP_CASES: TcpCase[] = [
  {
    name: "TCP cap evicts the oldest entry to admit a new one (NB_CONNTRACK_TCP_MAX=4)",
    options: env({ NB_CONNTRACK_TCP_MAX: "4" }).tcp,
    steps: [
      ...Array.from({ length: 10 }, (_, i) => syn(10000 + i, { count: Math.min(i + 1, 4) })),
      { op: "check", port: 10009, state: T.SYN_SENT },
      { op: "check", port: 10000, state: "absent" },
      { op: "check", port: 10005, state: "absent" },
      { op: "check", port: 10006, state: T.SYN_SENT },
    ],
    records: ["start", "start", "start", "start", ...Array(6).fill(["end", "start"]).flat()],
  },
  {
    name: "TCP cap evicts a tombstone first, silently, and keeps the live entries",
    options: { maxEntries: 3 },
    steps: [
      syn(20000),
      syn(20001),
      syn(20002, { count: 3 }),
      { op: "IN", flags: RST | ACK, port: 20001, ok: true, tombstoned: true },
      syn(29999, { count: 3 }),
      { op: "check", port: 20001, state: "absent" },
      { op: "check", port: 20000, state: T.SYN_SENT },
      { op: "check", port: 20002, state: T.SYN_SENT },
    ],
    records: ["start", "start", "start", "end", "start"],
  },
  {
    name: "derived: TCP cap evicts the least recently seen entry, not the oldest created",
    options: { maxEntries: 3 },
    steps: [
      syn(30000),
      { op: "advance", ms: 1 },
      syn(30001),
      { op: "advance", ms: 1 },
      syn(30002),
      { op: "advance", ms: 1 },
      { op: "OUT", flags: ACK, port: 30000, state: T.SYN_SENT, lastSeen: 3 },
      { op: "advance", ms: 1 },
      syn(30003, { count: 3 }),
      { op: "check", port: 30001, state: "absent" },
      { op: "check", port: 30000, state: T.SYN_SENT },
    ],
    records: ["start", "start", "start", "end", "start"],
  },
  {
    name: "derived: evicting a TIME-WAIT entry adds no second end",
    options: { maxEntries: 2 },
    steps: [
      { op: "EST", port: 40000 },
      { op: "OUT", flags: FIN | ACK, port: 40000 },
      { op: "IN", flags: FIN | ACK, port: 40000, ok: true, state: T.TIME_WAIT },
      { op: "advance", ms: 1 },
      syn(40001),
      { op: "advance", ms: 1 },
      syn(40002, { count: 2 }),
      { op: "check", port: 40000, state: "absent" },
    ],
    records: ["start", "end", "start", "start"],
  },
  {
    name: "derived: replacing a superseded entry under its own key evicts nothing",
    options: { maxEntries: 2 },
    steps: [
      syn(50001),
      { op: "advance", ms: 1 },
      { op: "EST", port: 50000 },
      { op: "OUT", flags: FIN | ACK, port: 50000 },
      { op: "IN", flags: FIN | ACK, port: 50000, ok: true, state: T.TIME_WAIT, count: 2 },
      { op: "advance", ms: 1 },
      syn(50000, { state: T.SYN_SENT, newEntry: true, count: 2 }),
      { op: "check", port: 50001, state: T.SYN_SENT },
    ],
    records: ["start", "start", "end", "start"],
  },
  {
    name: "derived: busy flows created first survive, the stalest goes (netbird-ct: LRU order)",
    options: { maxEntries: 10 },
    steps: [
      ...Array.from({ length: 10 }, (_, i): TcpStep[] => [syn(51000 + i), {
        op: "advance",
        ms: 1,
      }]).flat(),
      ...Array.from({ length: 8 }, (_, i): TcpStep[] => [
        { op: "OUT", flags: ACK, port: 51000 + i },
        { op: "advance", ms: 1 },
      ]).flat(),
      syn(51999, { count: 10 }),
      { op: "check", port: 51008, state: "absent" },
      ...Array.from({ length: 8 }, (_, i): TcpStep => ({
        op: "check",
        port: 51000 + i,
        state: T.SYN_SENT,
      })),
    ],
    records: [...Array(10).fill("start"), "end", "start"],
  },
  {
    name: "derived: maxEntries 0 means no cap",
    options: { maxEntries: 0 },
    steps: Array.from({ length: 100 }, (_, i) => syn(60000 + i, { count: i + 1 })),
    records: Array(100).fill("start"),
  },
];

Deno.test("TcpTracker keeps its table under the cap", async (t) => {
  for (const c of TCP_CASES) await t.step(c.name, () => runTcpCase(c));
});

Deno.test("TcpTracker reads its cap from NB_CONNTRACK_TCP_MAX", () => {
  assert.equal(env({ NB_CONNTRACK_TCP_MAX: "4" }).tcp.maxEntries, 4);
});

Deno.test("UdpTracker cap evicts the oldest flows with an end each (NB_CONNTRACK_UDP_MAX=5)", () => {
  const f = fixture();
  const tracker = new UdpTracker({ ...f.options, ...env({ NB_CONNTRACK_UDP_MAX: "5" }).udp });
  assert.equal(tracker.maxEntries, 5);
  for (let i = 0; i < 12; i++) tracker.trackOutbound(udp(C, S, 30000 + i, 53));
  assert.equal(tracker.size, 5);
  const has = (port: number): boolean =>
    tracker.getConnection({ source: C, destination: S, sourcePort: port, destinationPort: 53 }) !==
      undefined;
  assert.deepEqual([has(30011), has(30007), has(30006), has(30000)], [true, true, false, false]);
  assert.deepEqual(
    f.records.filter((r) => r.type === "end").map((r) => r.sourcePort),
    [30000, 30001, 30002, 30003, 30004, 30005, 30006],
  );
});

Deno.test("IcmpTracker cap evicts the oldest echo flows (NB_CONNTRACK_ICMP_MAX=3)", () => {
  const f = fixture();
  const tracker = new IcmpTracker({ ...f.options, ...env({ NB_CONNTRACK_ICMP_MAX: "3" }).icmp });
  assert.equal(tracker.maxEntries, 3);
  for (let id = 0; id < 8; id++) tracker.trackOutbound(icmp(C, S, 8, id, 64));
  assert.equal(tracker.size, 3);
  const has = (id: number): boolean =>
    tracker.getConnection({ source: C, destination: S, id }) !== undefined;
  assert.deepEqual([has(7), has(5), has(4), has(0)], [true, true, false, false]);
  assert.deepEqual(
    f.records.filter((r) => r.type === "end").map((r) => [r.icmpType, r.txBytes]),
    [[8, 64n], [8, 64n], [8, 64n], [8, 64n], [8, 64n]],
  );
});

Deno.test("UdpTracker cap evicts the least recently seen flow (derived)", () => {
  const f = fixture();
  const tracker = new UdpTracker({ ...f.options, maxEntries: 2 });
  tracker.trackOutbound(udp(C, S, 1, 53));
  f.now += 1;
  tracker.trackOutbound(udp(C, S, 2, 53));
  f.now += 1;
  assert.equal(tracker.isValidInbound(udp(S, C, 53, 1)), true); // refreshes port 1
  f.now += 1;
  tracker.trackOutbound(udp(C, S, 3, 53));
  assert.deepEqual(
    f.records.map((r) => `${r.type} ${r.sourcePort}`),
    ["start 1", "start 2", "end 2", "start 3"],
  );
});

Deno.test("UdpTracker cap takes the smallest lastSeen of the sample when the clock steps back (derived)", () => {
  const f = fixture(10);
  const tracker = new UdpTracker({ ...f.options, maxEntries: 3 });
  for (const [port, now] of [[1, 10], [2, 5], [3, 7], [4, 8]]) {
    f.now = now!;
    tracker.trackOutbound(udp(C, S, port!, 53));
  }
  assert.deepEqual(
    f.records.map((r) => `${r.type} ${r.sourcePort}`),
    ["start 1", "start 2", "start 3", "end 2", "start 4"],
  );
});

Deno.test("UdpTracker cap looks at no more than 8 entries per eviction (derived)", () => {
  const f = fixture();
  const tracker = new UdpTracker({ ...f.options, maxEntries: 9 });
  // Ports 1..8 seen at 100..107, port 9 at 1 (clock stepped back): the 9th is the stalest
  // but outside the sample, so the stalest of the first eight goes.
  for (let port = 1; port <= 9; port++) {
    f.now = port === 9 ? 1 : 99 + port;
    tracker.trackOutbound(udp(C, S, port, 53));
  }
  f.now = 200;
  tracker.trackOutbound(udp(C, S, 10, 53));
  assert.deepEqual(
    f.records.filter((r) => r.type === "end").map((r) => r.sourcePort),
    [1],
  );
});
