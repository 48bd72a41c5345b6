import { ACK, FIN, flagNames, RST, runTcpCase, SYN, T, type TcpCase } from "./_harness.ts";

const ESTABLISHED_COUNTERS = { packetsTx: 2, packetsRx: 1, bytesTx: 200, bytesRx: 100 };

// NetBird's tcp_rst_bugs_test.go (spec §7.8): RSTs that cannot be legitimate, and illegal flag
// combinations, must neither tear down nor advance an entry.
const CASES: TcpCase[] = [
  {
    name: "RST from the SYN's own direction does not tear down SYN-SENT",
    steps: [
      { op: "OUT", flags: SYN, state: T.SYN_SENT },
      {
        op: "OUT",
        flags: RST | ACK,
        state: T.SYN_SENT,
        tombstoned: false,
        counters: { packetsTx: 2, packetsRx: 0, bytesTx: 0, bytesRx: 0 },
      },
    ],
    records: ["start"],
  },
  {
    name: "RST in TIME-WAIT is accepted (NetBird returns true) but ignored",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK },
      { op: "IN", flags: ACK, ok: true },
      { op: "IN", flags: FIN | ACK, ok: true },
      { op: "OUT", flags: ACK, state: T.TIME_WAIT, tombstoned: false },
      { op: "IN", flags: RST, ok: true, state: T.TIME_WAIT, tombstoned: false },
    ],
    records: ["start", "end"],
  },
  ...[SYN | RST, FIN | RST, SYN | FIN, SYN | FIN | RST].map((flags): TcpCase => ({
    name: `illegal ${flagNames(flags)} on ESTABLISHED is rejected and not counted`,
    steps: [
      { op: "EST" },
      { op: "advance", ms: 5_000 },
      {
        op: "IN",
        flags,
        size: 100,
        ok: false,
        state: T.ESTABLISHED,
        tombstoned: false,
        lastSeen: 0,
        counters: ESTABLISHED_COUNTERS,
      },
    ],
    records: ["start"],
  })),
  {
    name: "derived: illegal flags sent outbound are counted but neither refresh nor advance",
    steps: [
      { op: "EST" },
      { op: "advance", ms: 5_000 },
      {
        op: "OUT",
        flags: SYN | FIN,
        size: 40,
        state: T.ESTABLISHED,
        lastSeen: 0,
        counters: { packetsTx: 3, packetsRx: 1, bytesTx: 240, bytesRx: 100 },
      },
      { op: "OUT", flags: FIN | RST, state: T.ESTABLISHED, tombstoned: false, lastSeen: 0 },
    ],
    records: ["start"],
  },
];

Deno.test("TcpTracker ignores illegitimate RSTs and illegal flag combinations", async (t) => {
  for (const c of CASES) await t.step(c.name, () => runTcpCase(c));
});
