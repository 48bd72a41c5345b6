import assert from "node:assert/strict";
import { TCP_DEFAULTS, TcpTracker } from "../../lib/userspace/tcp.ts";
import {
  ACK,
  C,
  FIN,
  fixture,
  PSH,
  RST,
  runTcpCase,
  S,
  S_PORT,
  SYN,
  T,
  tcp,
  type TcpCase,
} from "./_harness.ts";

// NetBird's tcp_test.go (spec §7.6), one case per test function, with exact record types added.
const NETBIRD_CASES: TcpCase[] = [
  {
    name: "IsValidInbound rejects every segment on an empty tracker (Security)",
    steps: [SYN | ACK, SYN | FIN, RST, ACK, ACK | PSH].map((flags) => ({
      op: "IN" as const,
      flags,
      ok: false,
      state: "absent" as const,
      count: 0,
    })),
    records: [],
  },
  {
    name: "normal handshake is accepted inbound",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      { op: "IN", flags: SYN | ACK, ok: true, state: T.ESTABLISHED },
      { op: "OUT", flags: ACK, state: T.ESTABLISHED },
      { op: "IN", flags: PSH | ACK, ok: true, state: T.ESTABLISHED },
    ],
    records: ["start"],
  },
  {
    name: "normal close goes through FIN-WAIT to TIME-WAIT and ends there",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: ACK, ok: true, state: T.FIN_WAIT_2 },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT, tombstoned: false },
    ],
    records: ["start", "end"],
  },
  {
    name: "RST during an established connection is accepted and closes it",
    steps: [
      { op: "EST" },
      { op: "IN", flags: RST, ok: true, state: T.CLOSED, tombstoned: true },
    ],
    records: ["start", "end"],
  },
  {
    name: "simultaneous close: peer FIN|ACK in FIN-WAIT-1 goes straight to TIME-WAIT",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT },
      { op: "IN", flags: ACK, ok: true, state: T.TIME_WAIT },
    ],
    records: ["start", "end"],
  },
  {
    name: "RST tombstones the entry; a second RST on the tombstone is rejected (RSTHandling)",
    steps: [
      { op: "EST" },
      { op: "IN", flags: RST, ok: true, state: T.CLOSED, tombstoned: true },
      { op: "IN", flags: RST, ok: false, state: T.CLOSED, count: 1 },
    ],
    records: ["start", "end"],
  },
  {
    name: "SYN retransmission keeps SYN-SENT and the handshake completes",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      { op: "OUT", flags: SYN, state: T.SYN_SENT, newEntry: false },
      { op: "IN", flags: SYN | ACK, ok: true, state: T.ESTABLISHED },
      { op: "OUT", flags: ACK, state: T.ESTABLISHED },
    ],
    records: ["start"],
  },
  {
    name: "ACK retransmission keeps ESTABLISHED",
    steps: [
      { op: "EST", state: T.ESTABLISHED },
      { op: "OUT", flags: ACK, state: T.ESTABLISHED },
    ],
    records: ["start"],
  },
  {
    name: "FIN retransmission keeps FIN-WAIT-1 until the peer's ACK",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: ACK, ok: true, state: T.FIN_WAIT_2 },
    ],
    records: ["start"],
  },
  {
    name: "data transfer counts whole packets per direction (DataTransfer)",
    steps: [
      { op: "EST", size: 100 },
      { op: "OUT", flags: PSH | ACK, size: 1000 },
      { op: "IN", flags: ACK, size: 100, ok: true },
      { op: "IN", flags: PSH | ACK, size: 1500, ok: true },
      {
        op: "OUT",
        flags: ACK,
        size: 100,
        state: T.ESTABLISHED,
        counters: { packetsTx: 4, packetsRx: 3, bytesTx: 1300, bytesRx: 1700 },
      },
    ],
    records: ["start"],
  },
  {
    name: "half-close by this host: data still flows in FIN-WAIT-2, peer FIN ends in TIME-WAIT",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: ACK, ok: true, state: T.FIN_WAIT_2 },
      { op: "IN", flags: PSH | ACK, size: 1000, ok: true, state: T.FIN_WAIT_2 },
      { op: "OUT", flags: ACK, state: T.FIN_WAIT_2 },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT },
    ],
    records: ["start", "end"],
  },
  {
    name: "half-close by the peer: CLOSE-WAIT, LAST-ACK, then CLOSED",
    steps: [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: PSH | ACK, size: 1000, state: T.CLOSE_WAIT },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: FIN | ACK, state: T.LAST_ACK },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSED, tombstoned: true },
    ],
    records: ["start", "end"],
  },
  {
    name: "unsolicited RST in SYN-SENT is rejected, RST|ACK is accepted and closes",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      { op: "IN", flags: RST, ok: false, state: T.SYN_SENT, tombstoned: false },
      { op: "IN", flags: RST | ACK, ok: true, state: T.CLOSED, tombstoned: true },
    ],
    records: ["start", "end"],
  },
  {
    name: "port reuse after a graceful close replaces the tombstone with a new entry",
    steps: [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: FIN | ACK, state: T.LAST_ACK },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSED, tombstoned: true },
      { op: "OUT", flags: SYN, size: 100, state: T.SYN_SENT, tombstoned: false, newEntry: true },
      { op: "IN", flags: SYN | ACK, size: 100, ok: true, state: T.ESTABLISHED },
      { op: "OUT", flags: ACK, size: 100 },
      { op: "IN", flags: PSH | ACK, size: 500, ok: true, state: T.ESTABLISHED, count: 1 },
    ],
    records: ["start", "end", "start"],
  },
  {
    name: "port reuse after RST replaces the tombstone with a new entry",
    steps: [
      { op: "EST" },
      { op: "IN", flags: RST | ACK, ok: true, state: T.CLOSED, tombstoned: true },
      { op: "OUT", flags: SYN, size: 100, state: T.SYN_SENT, tombstoned: false, newEntry: true },
      { op: "IN", flags: SYN | ACK, size: 100, ok: true, state: T.ESTABLISHED },
    ],
    records: ["start", "end", "start"],
  },
  {
    name: "inbound port reuse after close: the peer's new SYN opens a new entry",
    steps: [
      { op: "TIN", flags: SYN, size: 100, state: T.SYN_RECEIVED },
      { op: "OUTr", flags: SYN | ACK, size: 100, state: T.SYN_RECEIVED },
      { op: "TIN", flags: ACK, size: 100, state: T.ESTABLISHED },
      { op: "OUTr", flags: FIN | ACK, size: 100, state: T.CLOSE_WAIT },
      { op: "TIN", flags: FIN | ACK, size: 100, state: T.LAST_ACK },
      { op: "OUTr", flags: ACK, size: 100, state: T.CLOSED, tombstoned: true },
      {
        op: "TIN",
        flags: SYN,
        size: 100,
        state: T.SYN_RECEIVED,
        tombstoned: false,
        newEntry: true,
      },
      { op: "OUTr", flags: SYN | ACK, size: 100, state: T.SYN_RECEIVED },
      { op: "TIN", flags: ACK, size: 100, state: T.ESTABLISHED, count: 1 },
    ],
    records: ["start", "end", "start"],
  },
  {
    name: "late ACK on a tombstone is rejected and no entry appears without a SYN",
    steps: [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: FIN | ACK, state: T.LAST_ACK },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSED, tombstoned: true },
      { op: "IN", flags: ACK, ok: false, tombstoned: true },
      { op: "OUT", flags: ACK, tombstoned: true, newEntry: false, count: 1 },
    ],
    records: ["start", "end"],
  },
  {
    name: "TIME-WAIT is superseded by a new outbound SYN on the same 4-tuple",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: ACK, ok: true, state: T.FIN_WAIT_2 },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.TIME_WAIT },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT, tombstoned: false },
      { op: "OUT", flags: SYN, size: 100, state: T.SYN_SENT, tombstoned: false, newEntry: true },
      { op: "IN", flags: SYN | ACK, size: 100, ok: true, state: T.ESTABLISHED },
    ],
    records: ["start", "end", "start"],
  },
  {
    name: "inbound SYN during TIME-WAIT is not valid but TrackInbound opens the reverse entry",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK },
      { op: "IN", flags: ACK, ok: true },
      { op: "IN", flags: FIN | ACK, ok: true },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT },
      { op: "IN", flags: SYN, ok: false, state: T.TIME_WAIT },
      { op: "TINr", flags: SYN, size: 100, key: "S→C", state: T.SYN_RECEIVED, tombstoned: false },
      { op: "check", state: T.TIME_WAIT, count: 2 },
    ],
    records: ["start", "end", "start"],
  },
  {
    name: "late retransmitted ACK in TIME-WAIT is accepted",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK },
      { op: "IN", flags: ACK, ok: true },
      { op: "IN", flags: FIN | ACK, ok: true },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT },
      { op: "IN", flags: ACK, ok: true, state: T.TIME_WAIT },
    ],
    records: ["start", "end"],
  },
  {
    name: "established entry times out at cleanup with an end record (100 ms tracker)",
    options: { timeoutMs: 100 },
    steps: [
      { op: "EST", state: T.ESTABLISHED },
      { op: "advance", ms: 200 },
      { op: "cleanup", state: "absent", count: 0 },
    ],
    records: ["start", "end"],
  },
  {
    name: "TIME-WAIT times out at timeout/45 without a second end (100 ms tracker)",
    options: { timeoutMs: 100 },
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK },
      { op: "IN", flags: ACK, ok: true },
      { op: "IN", flags: FIN | ACK, ok: true },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT },
      { op: "advance", ms: 200 },
      { op: "cleanup", state: "absent", count: 0 },
    ],
    records: ["start", "end"],
  },
  {
    name: "SYN flood: 1000 half-open entries all go after the 60 s handshake timeout",
    steps: [
      ...Array.from({ length: 1000 }, (_, i) => ({
        op: "OUT" as const,
        flags: SYN,
        port: 10000 + i,
        state: T.SYN_SENT,
      })),
      { op: "check", count: 1000 },
      { op: "advance", ms: 61_000 },
      { op: "cleanup", count: 0 },
    ],
    records: [...Array(1000).fill("start"), ...Array(1000).fill("end")],
  },
  {
    name: "inbound-initiated connection counts received and sent from this host's view",
    steps: [
      { op: "TIN", flags: SYN, size: 100, state: T.SYN_RECEIVED },
      { op: "OUTr", flags: SYN | ACK, size: 100 },
      { op: "TIN", flags: ACK, size: 100, state: T.ESTABLISHED },
      { op: "TIN", flags: PSH | ACK, size: 1000 },
      { op: "OUTr", flags: ACK, size: 100 },
      { op: "OUTr", flags: PSH | ACK, size: 1500 },
      {
        op: "TIN",
        flags: ACK,
        size: 100,
        state: T.ESTABLISHED,
        counters: { packetsTx: 3, packetsRx: 4, bytesTx: 1700, bytesRx: 1300 },
      },
    ],
    records: ["start"],
  },
];

Deno.test("TcpTracker passes NetBird's tcp_test.go cases", async (t) => {
  for (const c of NETBIRD_CASES) await t.step(c.name, () => runTcpCase(c));
});

// Derived from NetBird's code (not in its suite).
const DERIVED_CASES: TcpCase[] = [
  {
    name: "derived: SYN|ACK without an entry creates one that stays in NEW",
    steps: [
      { op: "OUT", flags: SYN | ACK, state: T.NEW },
      { op: "OUT", flags: ACK, state: T.NEW },
    ],
    records: ["start"],
  },
  {
    name: "derived: a segment without SYN creates no entry",
    steps: [
      { op: "OUT", flags: ACK, state: "absent" },
      { op: "TIN", flags: PSH | ACK, state: "absent" },
      { op: "OUT", flags: FIN, state: "absent", count: 0 },
    ],
    records: [],
  },
  {
    name: "derived: SYN|FIN and SYN|RST create no entry",
    steps: [
      { op: "OUT", flags: SYN | FIN, state: "absent" },
      { op: "TIN", flags: SYN | RST, state: "absent", count: 0 },
    ],
    records: [],
  },
  {
    name: "derived: own SYN|ACK in SYN-SENT is a simultaneous open (SYN-RECEIVED)",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      { op: "OUT", flags: SYN | ACK, state: T.SYN_RECEIVED },
      { op: "OUT", flags: ACK, state: T.ESTABLISHED },
    ],
    records: ["start"],
  },
  {
    name: "derived: the peer's ACK does not complete an inbound handshake (same-direction rule)",
    steps: [
      { op: "TIN", flags: SYN, state: T.SYN_RECEIVED },
      { op: "OUTr", flags: SYN | ACK, state: T.SYN_RECEIVED },
      { op: "OUTr", flags: ACK, state: T.SYN_RECEIVED },
      { op: "TIN", flags: ACK, state: T.ESTABLISHED },
    ],
    records: ["start"],
  },
  {
    name:
      "derived: FIN without ACK in FIN-WAIT-1 goes to CLOSING, then the peer's ACK to TIME-WAIT",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: FIN, ok: true, state: T.CLOSING },
      { op: "OUT", flags: ACK, state: T.CLOSING },
      { op: "IN", flags: ACK, ok: true, state: T.TIME_WAIT },
    ],
    records: ["start", "end"],
  },
  {
    name: "derived: inbound validation in SYN-SENT rejects a bare SYN (no simultaneous open)",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      { op: "IN", flags: SYN, ok: false, state: T.SYN_SENT },
      { op: "IN", flags: ACK, ok: false, state: T.SYN_SENT },
    ],
    records: ["start"],
  },
  {
    name: "derived: IsValidInbound ignores timeouts, as in NetBird (entry lives until cleanup)",
    options: { timeoutMs: 100 },
    steps: [
      { op: "EST" },
      { op: "advance", ms: 1_000 },
      { op: "IN", flags: ACK, ok: true, state: T.ESTABLISHED, lastSeen: 1_000 },
    ],
    records: ["start"],
  },
  {
    name: "derived: timeouts are strict (exactly the timeout keeps the entry)",
    options: { timeoutMs: 100 },
    steps: [
      { op: "EST" },
      { op: "advance", ms: 100 },
      { op: "cleanup", state: T.ESTABLISHED },
      { op: "advance", ms: 1 },
      { op: "cleanup", state: "absent" },
    ],
    records: ["start", "end"],
  },
  {
    name: "derived: handshake states time out after 60 s, not the established timeout",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      { op: "advance", ms: 60_000 },
      { op: "cleanup", state: T.SYN_SENT },
      { op: "advance", ms: 1 },
      { op: "cleanup", state: "absent" },
    ],
    records: ["start", "end"],
  },
  {
    name: "derived: cleanup deletes a tombstone without a record, whatever its age",
    steps: [
      { op: "EST" },
      { op: "IN", flags: RST, ok: true, tombstoned: true },
      { op: "cleanup", state: "absent", count: 0 },
    ],
    records: ["start", "end"],
  },
];

Deno.test("TcpTracker follows NetBird's code in derived cases", async (t) => {
  for (const c of DERIVED_CASES) await t.step(c.name, () => runTcpCase(c));
});

Deno.test("TcpTracker derives TIME-WAIT from the timeout as NetBird does", async (t) => {
  const cases: { timeoutMs?: number; established: number; timeWait: number }[] = [
    { established: 3 * 3600_000, timeWait: 240_000 },
    { timeoutMs: 0, established: 3 * 3600_000, timeWait: 240_000 },
    { timeoutMs: 100, established: 100, timeWait: 100 / 45 },
    { timeoutMs: 3600_000, established: 3600_000, timeWait: 80_000 },
  ];
  for (const c of cases) {
    await t.step(`timeoutMs ${c.timeoutMs ?? "omitted"}`, () => {
      const tracker = new TcpTracker(c.timeoutMs === undefined ? {} : { timeoutMs: c.timeoutMs });
      assert.deepEqual([tracker.timeoutMs, tracker.timeWaitTimeoutMs], [
        c.established,
        c.timeWait,
      ]);
      assert.deepEqual(
        [
          tracker.handshakeTimeoutMs,
          tracker.finWaitTimeoutMs,
          tracker.closeWaitTimeoutMs,
          tracker.lastAckTimeoutMs,
          tracker.cleanupIntervalMs,
          tracker.maxEntries,
        ],
        [60_000, 60_000, 60_000, 30_000, 300_000, 65_536],
      );
    });
  }
  assert.equal(TCP_DEFAULTS.maxEntries, 65_536);
});

Deno.test("TcpTracker rejects negative or NaN options with RangeError", async (t) => {
  for (const [name, value] of [["timeoutMs", -1], ["maxEntries", NaN], ["finWaitTimeoutMs", -5]]) {
    await t.step(`${name} = ${value}`, () => {
      assert.throws(() => new TcpTracker({ [name as string]: value }), RangeError);
    });
  }
});

Deno.test("TcpTracker.trackOutbound() returns the DNAT original port for replies", () => {
  const f = fixture();
  const tracker = new TcpTracker(f.options);
  tracker.trackInbound(tcp(C, S, 12345, S_PORT, SYN, 60), { dnatOrigPort: 8080 });
  assert.equal(tracker.trackOutbound(tcp(S, C, S_PORT, 12345, SYN | ACK, 60)), 8080);
  assert.equal(tracker.trackOutbound(tcp(C, S, 40000, S_PORT, SYN, 60)), 0);
});

Deno.test("TcpTracker.tick() cleans up at NetBird's 5-minute cadence only", () => {
  const f = fixture(0);
  const tracker = new TcpTracker({ ...f.options, timeoutMs: 100 });
  tracker.trackOutbound(tcp(C, S, 12345, S_PORT, SYN, 60));
  tracker.trackOutbound(tcp(C, S, 12345, S_PORT, ACK, 60)); // stays SYN-SENT
  f.now = 299_999;
  assert.equal(tracker.tick(), false);
  assert.equal(tracker.size, 1);
  f.now = 300_000;
  assert.equal(tracker.tick(), true);
  assert.equal(tracker.size, 0);
  f.now = 400_000;
  assert.equal(tracker.tick(), false, "next cleanup is due at 600 000 ms");
});

Deno.test("TcpTracker writes each call's records as one batch", () => {
  const f = fixture();
  const tracker = new TcpTracker({ ...f.options, timeoutMs: 100 });
  for (let port = 1; port <= 3; port++) tracker.trackOutbound(tcp(C, S, port, S_PORT, SYN));
  assert.equal(f.batches, 3);
  f.now += 60_001;
  tracker.cleanup();
  assert.equal(f.batches, 4, "three ends from one cleanup arrive in one batch");
  assert.deepEqual(f.records.map((r) => r.type), ["start", "start", "start", "end", "end", "end"]);
});
