import assert from "node:assert/strict";
import { UDP_DEFAULTS, UdpTracker } from "../../lib/userspace/udp.ts";
import { fixture, udp } from "./_harness.ts";

// Spec §7.9 notation: L = 192.168.1.2:12345 (local), R = 192.168.1.3:53 (remote).
const L = "192.168.1.2";
const R = "192.168.1.3";
const OUT = udp(L, R, 12345, 53, 60);
const REPLY = udp(R, L, 53, 12345, 120);
const KEY = { source: L, destination: R, sourcePort: 12345, destinationPort: 53 };

Deno.test("UdpTracker takes its timeout, 0 meaning NetBird's 30 s default", async (t) => {
  const cases = [
    { timeoutMs: 60_000, expected: 60_000 },
    { timeoutMs: 0, expected: 30_000 },
    { timeoutMs: undefined, expected: 30_000 },
  ];
  for (const c of cases) {
    await t.step(`timeoutMs ${c.timeoutMs}`, () => {
      const tracker = new UdpTracker(c.timeoutMs === undefined ? {} : { timeoutMs: c.timeoutMs });
      assert.deepEqual(
        [tracker.timeoutMs, tracker.cleanupIntervalMs, tracker.maxEntries, tracker.size],
        [c.expected, 15_000, 16_384, 0],
      );
    });
  }
  assert.deepEqual(UDP_DEFAULTS, {
    timeoutMs: 30_000,
    cleanupIntervalMs: 15_000,
    maxEntries: 16_384,
  });
});

Deno.test("UdpTracker.trackOutbound() creates an entry for the initiator's 4-tuple", () => {
  const f = fixture(5_000);
  const tracker = new UdpTracker(f.options);
  assert.equal(tracker.trackOutbound(udp(L, R, 12345, 53, 0)), 0);
  const conn = tracker.getConnection(KEY);
  assert.ok(conn);
  const {
    flowId,
    direction,
    source,
    destination,
    sourcePort,
    destinationPort,
    dnatOrigPort,
    lastSeen,
    packetsTx,
    packetsRx,
    bytesTx,
    bytesRx,
  } = conn;
  assert.deepEqual(
    {
      flowId,
      direction,
      source,
      destination,
      sourcePort,
      destinationPort,
      dnatOrigPort,
      lastSeen,
      packetsTx,
      packetsRx,
      bytesTx,
      bytesRx,
    },
    {
      flowId: "id-1",
      direction: "egress",
      source: L,
      destination: R,
      sourcePort: 12345,
      destinationPort: 53,
      dnatOrigPort: 0,
      lastSeen: 5_000,
      packetsTx: 1,
      packetsRx: 0,
      bytesTx: 0,
      bytesRx: 0,
    },
  );
});

// Each probe on a fresh tracker (timeout 1 s) after TrackOutbound(L→R).
const INBOUND_PROBES = [
  { name: "the reply R→L is valid", probe: REPLY, advanceMs: 0, valid: true },
  { name: "another source address is not", probe: udp("192.168.1.4", L, 53, 12345), valid: false },
  {
    name: "another destination address is not",
    probe: udp(R, "192.168.1.4", 53, 12345),
    valid: false,
  },
  { name: "another source port is not", probe: udp(R, L, 54321, 12345), valid: false },
  { name: "another destination port is not", probe: udp(R, L, 53, 54321), valid: false },
  { name: "the reply after 2 s (expired) is not", probe: REPLY, advanceMs: 2_000, valid: false },
  {
    name: "derived: the reply at exactly the timeout still is",
    probe: REPLY,
    advanceMs: 1_000,
    valid: true,
  },
  { name: "derived: the request direction L→R is not", probe: OUT, valid: false },
];

Deno.test("UdpTracker.isValidInbound() accepts only unexpired replies", async (t) => {
  for (const c of INBOUND_PROBES) {
    await t.step(c.name, () => {
      const f = fixture();
      const tracker = new UdpTracker({ ...f.options, timeoutMs: 1_000 });
      tracker.trackOutbound(OUT);
      f.now += c.advanceMs ?? 0;
      assert.equal(tracker.isValidInbound(c.probe), c.valid);
      const conn = tracker.getConnection(KEY);
      assert.deepEqual(
        [conn?.packetsRx, conn?.bytesRx, conn?.lastSeen],
        c.valid ? [1, c.probe.ipLength, f.now] : [0, 0, 1_000],
        "only a valid reply is counted and refreshes",
      );
    });
  }
});

Deno.test("UdpTracker.cleanup() removes idle entries with an end record each", () => {
  const f = fixture();
  const tracker = new UdpTracker({ ...f.options, timeoutMs: 50, maxEntries: 0 });
  tracker.trackOutbound(udp("192.168.1.2", "192.168.1.3", 12345, 53));
  tracker.trackOutbound(udp("192.168.1.4", "192.168.1.5", 12346, 53));
  assert.equal(tracker.size, 2);
  f.now += 100;
  tracker.cleanup();
  assert.equal(tracker.size, 0);
  assert.deepEqual(
    f.records.map((r) => `${r.type} ${r.sourceIp}:${r.sourcePort}`),
    [
      "start 192.168.1.2:12345",
      "start 192.168.1.4:12346",
      "end 192.168.1.2:12345",
      "end 192.168.1.4:12346",
    ],
  );
});

Deno.test("UdpTracker counts an inbound-opened flow and returns its DNAT port to replies", () => {
  const f = fixture();
  const tracker = new UdpTracker(f.options);
  tracker.trackInbound(udp(R, L, 5353, 53, 70), { ruleId: "rule-1", dnatOrigPort: 5300 });
  assert.equal(tracker.trackOutbound(udp(L, R, 53, 5353, 300)), 5300);
  tracker.trackInbound(udp(R, L, 5353, 53, 80));
  const conn = tracker.getConnection({
    source: R,
    destination: L,
    sourcePort: 5353,
    destinationPort: 53,
  });
  assert.deepEqual(
    [conn?.direction, conn?.packetsRx, conn?.bytesRx, conn?.packetsTx, conn?.bytesTx],
    ["ingress", 2, 150, 1, 300],
  );
  assert.equal(tracker.size, 1);
  assert.deepEqual(f.records.map((r) => [r.type, r.ruleId]), [["start", "rule-1"]]);
});

Deno.test("UdpTracker.trackOutbound() revives an expired entry not yet cleaned up, as NetBird does", () => {
  const f = fixture();
  const tracker = new UdpTracker({ ...f.options, timeoutMs: 1_000 });
  tracker.trackOutbound(OUT);
  f.now += 5_000;
  tracker.trackOutbound(OUT);
  tracker.cleanup();
  assert.equal(tracker.getConnection(KEY)?.packetsTx, 2);
  assert.deepEqual(f.records.map((r) => r.type), ["start"]);
});

Deno.test("UdpTracker.tick() cleans up at NetBird's 15 s cadence", () => {
  const f = fixture(0);
  const tracker = new UdpTracker({ ...f.options, timeoutMs: 1_000 });
  tracker.trackOutbound(OUT);
  f.now = 14_999;
  assert.equal(tracker.tick(), false);
  assert.equal(tracker.size, 1);
  f.now = 15_000;
  assert.equal(tracker.tick(), true);
  assert.equal(tracker.size, 0);
});
