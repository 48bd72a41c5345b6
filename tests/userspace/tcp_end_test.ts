/**
 * When the TCP tracker writes a connection's end record (`end: "close"`, NetBird's timing, vs
 * `end: "expire"`, when the entry leaves the table like conntrack's DESTROY). Every case runs in
 * both modes with the records expected in each; the runner also checks that every flow has
 * exactly one start followed by exactly one end once the tracker is closed.
 */

import assert from "node:assert/strict";
import type { FlowRecord } from "../../lib/record.ts";
import { type TcpEndMode, TcpTracker, type TcpTrackerOptions } from "../../lib/userspace/tcp.ts";
import { UserspaceTracker } from "../../lib/userspace/tracker.ts";
import {
  ACK,
  assertOneStartOneEnd,
  C,
  FIN,
  fixture,
  PSH,
  recordLines,
  RST,
  runTcpCase,
  S,
  SYN,
  T,
  tcp,
  type TcpStep,
} from "./_harness.ts";

interface EndCase {
  name: string;
  options?: TcpTrackerOptions;
  /** The steps; `m` is the mode, for checks that differ. */
  steps: (m: TcpEndMode) => TcpStep[];
  /** Records (see `recordLines`) with `end: "close"`. */
  close: string[];
  /** Records with `end: "expire"`. */
  expire: string[];
}

/** `c` with `end: "close"`, `e` with `end: "expire"`. */
const by = <V>(m: TcpEndMode, c: V, e: V): V => m === "close" ? c : e;

/** EST (100-byte handshake: tx 2/200 rx 1/100), then this host closes first into TIME-WAIT. */
const toTimeWait = (m: TcpEndMode): TcpStep[] => [
  { op: "EST" },
  { op: "OUT", flags: FIN | ACK, size: 52, state: T.FIN_WAIT_1 },
  { op: "IN", flags: ACK, size: 52, ok: true, state: T.FIN_WAIT_2 },
  {
    op: "IN",
    flags: FIN | ACK,
    size: 52,
    ok: true,
    state: T.TIME_WAIT,
    tombstoned: false,
    ended: by(m, true, false),
  },
];

const CASES: EndCase[] = [
  {
    name: "normal close: the final ACK after TIME-WAIT is in the end only with expire, " +
      "which writes it when TIME-WAIT expires",
    steps: (m) => [
      ...toTimeWait(m),
      { op: "check", written: by(m, 2, 1) },
      {
        op: "OUT",
        flags: ACK,
        size: 40,
        state: T.TIME_WAIT,
        counters: { packetsTx: 4, bytesTx: 292, packetsRx: 3, bytesRx: 204 },
      },
      { op: "advance", ms: 240_000 },
      { op: "cleanup", state: T.TIME_WAIT, written: by(m, 2, 1) },
      { op: "advance", ms: 1 },
      { op: "cleanup", state: "absent", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 3/252 rx 3/204"],
    expire: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 4/292 rx 3/204"],
  },
  {
    name: "retransmissions and a late RST in TIME-WAIT are counted until the entry leaves",
    steps: (m) => [
      ...toTimeWait(m),
      { op: "OUT", flags: ACK, size: 40 },
      { op: "IN", flags: FIN | ACK, size: 52, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, size: 40 },
      { op: "IN", flags: RST, size: 40, state: T.TIME_WAIT, tombstoned: false },
      { op: "flush", state: "absent", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 3/252 rx 3/204"],
    expire: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 5/332 rx 5/296"],
  },
  {
    name: "the peer closes first (LAST-ACK to CLOSED): same counters, end at the close or when " +
      "the closed entry is deleted at the next cleanup",
    steps: (m) => [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, size: 52, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: FIN | ACK, size: 52, state: T.LAST_ACK },
      { op: "IN", flags: ACK, size: 40, ok: true, tombstoned: true, written: by(m, 2, 1) },
      { op: "cleanup", state: "absent", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 3/252 rx 3/192"],
    expire: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 3/252 rx 3/192"],
  },
  {
    name: "segments after CLOSED are counted on the closed entry with expire; the verdicts are " +
      "NetBird's in both modes (rejected, no new entry)",
    steps: () => [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, size: 52, ok: true },
      { op: "OUT", flags: FIN | ACK, size: 52 },
      { op: "IN", flags: ACK, size: 40, ok: true, tombstoned: true },
      // The peer retransmits its FIN: not valid inbound, then the filter's ACL path.
      { op: "IN", flags: FIN | ACK, size: 52, ok: false },
      { op: "TINr", flags: FIN | ACK, size: 52, key: "S→C", state: "absent" },
      { op: "OUT", flags: ACK, size: 40, tombstoned: true, newEntry: false, count: 1 },
      { op: "check", state: T.CLOSED },
      { op: "flush", state: "absent", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 3/252 rx 3/192"],
    expire: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 4/292 rx 4/244"],
  },
  {
    name: "RST close: end at the RST, or with expire when the closed entry is deleted, with " +
      "the segments that hit it after the RST",
    steps: (m) => [
      { op: "EST" },
      { op: "OUT", flags: PSH | ACK, size: 500 },
      { op: "IN", flags: RST, size: 40, ok: true, tombstoned: true, written: by(m, 2, 1) },
      { op: "OUT", flags: PSH | ACK, size: 500, tombstoned: true },
      { op: "IN", flags: RST, size: 40, ok: false },
      { op: "TINr", flags: RST, size: 40, key: "S→C", state: "absent" },
      { op: "cleanup", state: "absent", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 3/700 rx 2/140"],
    expire: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 4/1200 rx 3/180"],
  },
  {
    name: "refused connection (RST|ACK in SYN-SENT): the same records in both modes",
    steps: (m) => [
      { op: "OUT", flags: SYN, size: 60, state: T.SYN_SENT },
      { op: "IN", flags: RST | ACK, size: 40, ok: true, state: T.CLOSED, written: by(m, 2, 1) },
      { op: "flush", state: "absent", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/60 rx 0/0", "F1 end 12345 tx 1/60 rx 1/40"],
    expire: ["F1 start 12345 tx 1/60 rx 0/0", "F1 end 12345 tx 1/60 rx 1/40"],
  },
  {
    name: "a new SYN superseding a TIME-WAIT entry ends the old flow (with its final ACK with " +
      "expire) before the new flow starts",
    steps: (m) => [
      ...toTimeWait(m),
      { op: "OUT", flags: ACK, size: 40 },
      { op: "OUT", flags: SYN, size: 60, state: T.SYN_SENT, newEntry: true, count: 1 },
      { op: "check", written: 3, ended: false },
    ],
    close: [
      "F1 start 12345 tx 1/100 rx 0/0",
      "F1 end 12345 tx 3/252 rx 3/204",
      "F2 start 12345 tx 1/60 rx 0/0",
    ],
    expire: [
      "F1 start 12345 tx 1/100 rx 0/0",
      "F1 end 12345 tx 4/292 rx 3/204",
      "F2 start 12345 tx 1/60 rx 0/0",
    ],
  },
  {
    name: "a new SYN superseding a closed entry (after RST) ends it before the new flow starts",
    steps: () => [
      { op: "EST" },
      { op: "IN", flags: RST | ACK, size: 40, ok: true, tombstoned: true },
      { op: "OUT", flags: ACK, size: 40, tombstoned: true },
      { op: "OUT", flags: SYN, size: 60, state: T.SYN_SENT, newEntry: true, tombstoned: false },
    ],
    close: [
      "F1 start 12345 tx 1/100 rx 0/0",
      "F1 end 12345 tx 2/200 rx 2/140",
      "F2 start 12345 tx 1/60 rx 0/0",
    ],
    expire: [
      "F1 start 12345 tx 1/100 rx 0/0",
      "F1 end 12345 tx 3/240 rx 2/140",
      "F2 start 12345 tx 1/60 rx 0/0",
    ],
  },
  {
    name: "the peer's new SYN superseding its TIME-WAIT flow ends it with the peer's final ACK " +
      "(inbound-opened, expire)",
    steps: () => [
      { op: "TIN", flags: SYN, size: 100, state: T.SYN_RECEIVED },
      { op: "OUTr", flags: SYN | ACK, size: 100 },
      { op: "TIN", flags: ACK, size: 100, state: T.ESTABLISHED },
      { op: "TIN", flags: FIN | ACK, size: 52, state: T.FIN_WAIT_1 },
      { op: "OUTr", flags: FIN | ACK, size: 52, state: T.TIME_WAIT },
      { op: "TIN", flags: ACK, size: 40, state: T.TIME_WAIT },
      { op: "TIN", flags: SYN, size: 60, state: T.SYN_RECEIVED, newEntry: true },
    ],
    close: [
      "F1 start 12345 tx 0/0 rx 1/100",
      "F1 end 12345 tx 2/152 rx 3/252",
      "F2 start 12345 tx 0/0 rx 1/60",
    ],
    expire: [
      "F1 start 12345 tx 0/0 rx 1/100",
      "F1 end 12345 tx 2/152 rx 4/292",
      "F2 start 12345 tx 0/0 rx 1/60",
    ],
  },
  {
    name: "eviction at the cap ends a TIME-WAIT entry with its final ACK (expire) or drops it " +
      "silently (close: ended already)",
    options: { maxEntries: 2 },
    steps: (m) => [
      { op: "EST", port: 40000 },
      { op: "OUT", flags: FIN | ACK, size: 52, port: 40000 },
      { op: "IN", flags: FIN | ACK, size: 52, port: 40000, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, size: 40, port: 40000 },
      { op: "advance", ms: 1 },
      { op: "OUT", flags: SYN, size: 60, port: 40001 },
      { op: "advance", ms: 1 },
      { op: "OUT", flags: SYN, size: 60, port: 40002, count: 2, written: by(m, 4, 4) },
      { op: "check", port: 40000, state: "absent" },
    ],
    close: [
      "F1 start 40000 tx 1/100 rx 0/0",
      "F1 end 40000 tx 3/252 rx 2/152",
      "F2 start 40001 tx 1/60 rx 0/0",
      "F3 start 40002 tx 1/60 rx 0/0",
    ],
    expire: [
      "F1 start 40000 tx 1/100 rx 0/0",
      "F2 start 40001 tx 1/60 rx 0/0",
      "F1 end 40000 tx 4/292 rx 2/152",
      "F3 start 40002 tx 1/60 rx 0/0",
    ],
  },
  {
    name: "eviction takes a closed entry first: silently with close, with its end with expire",
    options: { maxEntries: 2 },
    steps: () => [
      { op: "OUT", flags: SYN, size: 60, port: 20000 },
      { op: "IN", flags: RST | ACK, size: 40, port: 20000, ok: true, tombstoned: true },
      { op: "OUT", flags: SYN, size: 60, port: 20001 },
      { op: "OUT", flags: SYN, size: 60, port: 20002, count: 2 },
      { op: "check", port: 20000, state: "absent" },
      { op: "check", port: 20001, state: T.SYN_SENT },
    ],
    close: [
      "F1 start 20000 tx 1/60 rx 0/0",
      "F1 end 20000 tx 1/60 rx 1/40",
      "F2 start 20001 tx 1/60 rx 0/0",
      "F3 start 20002 tx 1/60 rx 0/0",
    ],
    expire: [
      "F1 start 20000 tx 1/60 rx 0/0",
      "F2 start 20001 tx 1/60 rx 0/0",
      "F1 end 20000 tx 1/60 rx 1/40",
      "F3 start 20002 tx 1/60 rx 0/0",
    ],
  },
  {
    name: "shutdown ends every entry once (TIME-WAIT with its final ACK with expire, closed, " +
      "live); a second close and later packets write nothing",
    steps: (m) => [
      { op: "EST", port: 1 },
      { op: "OUT", flags: FIN | ACK, size: 52, port: 1 },
      { op: "IN", flags: FIN | ACK, size: 52, port: 1, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, size: 40, port: 1 },
      { op: "EST", port: 2 },
      { op: "IN", flags: RST, size: 40, port: 2, ok: true, tombstoned: true },
      { op: "EST", port: 3 },
      { op: "OUT", flags: PSH | ACK, size: 500, port: 3, written: by(m, 5, 3) },
      { op: "close", count: 0, written: 6 },
      { op: "close", written: 6 },
      { op: "OUT", flags: SYN, size: 60, port: 4, state: "absent", written: 6 },
    ],
    close: [
      "F1 start 1 tx 1/100 rx 0/0",
      "F1 end 1 tx 3/252 rx 2/152",
      "F2 start 2 tx 1/100 rx 0/0",
      "F2 end 2 tx 2/200 rx 2/140",
      "F3 start 3 tx 1/100 rx 0/0",
      "F3 end 3 tx 3/700 rx 1/100",
    ],
    expire: [
      "F1 start 1 tx 1/100 rx 0/0",
      "F2 start 2 tx 1/100 rx 0/0",
      "F3 start 3 tx 1/100 rx 0/0",
      "F1 end 1 tx 4/292 rx 2/152",
      "F2 end 2 tx 2/200 rx 2/140",
      "F3 end 3 tx 3/700 rx 1/100",
    ],
  },
  {
    name: "flush ends every entry once and the tracker keeps tracking",
    steps: (m) => [
      ...toTimeWait(m),
      { op: "OUT", flags: ACK, size: 40 },
      { op: "flush", count: 0, written: 2 },
      { op: "flush", written: 2 },
      { op: "OUT", flags: SYN, size: 60, state: T.SYN_SENT, written: 3 },
    ],
    close: [
      "F1 start 12345 tx 1/100 rx 0/0",
      "F1 end 12345 tx 3/252 rx 3/204",
      "F2 start 12345 tx 1/60 rx 0/0",
    ],
    expire: [
      "F1 start 12345 tx 1/100 rx 0/0",
      "F1 end 12345 tx 4/292 rx 3/204",
      "F2 start 12345 tx 1/60 rx 0/0",
    ],
  },
  {
    name: "a live entry that times out gets one end in both modes",
    options: { timeoutMs: 100 },
    steps: () => [
      { op: "EST" },
      { op: "advance", ms: 101 },
      { op: "cleanup", state: "absent", written: 2 },
      { op: "cleanup", written: 2 },
    ],
    close: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 2/200 rx 1/100"],
    expire: ["F1 start 12345 tx 1/100 rx 0/0", "F1 end 12345 tx 2/200 rx 1/100"],
  },
  {
    name: "packets that start no flow write no record in either mode (no end without a start)",
    steps: () => [
      { op: "OUT", flags: ACK, size: 40, state: "absent" },
      { op: "IN", flags: ACK, size: 40, ok: false },
      { op: "TINr", flags: FIN | ACK, size: 40, key: "S→C", state: "absent" },
      { op: "OUT", flags: SYN | FIN, size: 40, state: "absent" },
      { op: "TIN", flags: SYN | RST, size: 40, state: "absent" },
      { op: "close", count: 0, written: 0 },
    ],
    close: [],
    expire: [],
  },
];

Deno.test("TcpTracker writes each flow's end at the close or when its entry leaves", async (t) => {
  for (const c of CASES) {
    for (const end of ["close", "expire"] as const) {
      await t.step(`${end}: ${c.name}`, () => {
        const log = end === "close" ? c.close : c.expire;
        runTcpCase({
          name: c.name,
          options: { ...c.options, end },
          steps: c.steps(end),
          records: log.map((l) => l.split(" ")[1]!),
          log,
        });
      });
    }
  }
});

Deno.test("TcpTracker defaults to NetBird's end at the close and rejects unknown modes", () => {
  assert.equal(new TcpTracker().end, "close");
  assert.equal(new TcpTracker({ end: "expire" }).end, "expire");
  assert.throws(
    () => new TcpTracker({ end: "destroy" as TcpEndMode }),
    (err: unknown) => err instanceof RangeError && /end: destroy/.test(err.message),
  );
});

Deno.test("UserspaceTracker with tcp.end expire counts the whole close through the filter path", () => {
  // The filter's call pattern (as `netbird-ct replay` feeds it): outbound packets go to
  // trackOutbound, inbound ones through inbound() (isValidInbound, then the ACL path).
  const run = (end: TcpEndMode): FlowRecord[] => {
    const f = fixture();
    const tracker = new UserspaceTracker({ ...f.options, tcp: { end } });
    assert.equal(tracker.tcp.end, end);
    tracker.trackOutbound(tcp(C, S, 12345, 80, SYN, 60));
    tracker.inbound(tcp(S, C, 80, 12345, SYN | ACK, 60));
    tracker.trackOutbound(tcp(C, S, 12345, 80, ACK, 52));
    tracker.inbound(tcp(S, C, 80, 12345, FIN | ACK, 52)); // the peer closes first
    tracker.trackOutbound(tcp(C, S, 12345, 80, FIN | ACK, 52));
    assert.equal(tracker.inbound(tcp(S, C, 80, 12345, ACK, 52)), "established"); // CLOSED
    // A retransmitted FIN of the peer hits the closed entry: not established, counted with
    // expire (the ACL path finds no entry and makes none).
    assert.equal(tracker.inbound(tcp(S, C, 80, 12345, FIN | ACK, 52)), "accepted");
    tracker.close();
    assertOneStartOneEnd(f.records);
    return f.records;
  };
  assert.deepEqual(recordLines(run("close")), [
    "F1 start 12345 tx 1/60 rx 0/0",
    "F1 end 12345 tx 3/164 rx 3/164",
  ]);
  assert.deepEqual(recordLines(run("expire")), [
    "F1 start 12345 tx 1/60 rx 0/0",
    "F1 end 12345 tx 3/164 rx 4/216",
  ]);
});
