import assert from "node:assert/strict";
import { conntrackOptionsFromEnv } from "../../lib/userspace/env.ts";
import { type TcpState, TcpTracker } from "../../lib/userspace/tcp.ts";
import { ACK, FIN, PSH, runTcpCase, T, type TcpCase } from "./_harness.ts";

// NetBird's tcp_state_bugs_test.go (spec §7.7): retransmitted or wrong-direction segments must
// not advance the state.
const CASES: TcpCase[] = [
  {
    name: "CLOSE-WAIT ignores the peer's retransmitted FIN",
    steps: [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: FIN | ACK, state: T.LAST_ACK },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSED },
    ],
    records: ["start", "end"],
  },
  {
    name: "FIN-WAIT-2 ignores this host's retransmitted FIN",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "IN", flags: ACK, ok: true, state: T.FIN_WAIT_2 },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_2 },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.TIME_WAIT },
    ],
    records: ["start", "end"],
  },
  {
    name: "LAST-ACK closes only on the peer's ACK, not this host's",
    steps: [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "OUT", flags: FIN | ACK, state: T.LAST_ACK },
      { op: "OUT", flags: ACK, state: T.LAST_ACK },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSED },
    ],
    records: ["start", "end"],
  },
  {
    name: "FIN-WAIT-1 ignores this host's own ACK",
    steps: [
      { op: "EST" },
      { op: "OUT", flags: FIN | ACK, state: T.FIN_WAIT_1 },
      { op: "OUT", flags: ACK, state: T.FIN_WAIT_1 },
    ],
    records: ["start"],
  },
  {
    name: "FIN|PSH|ACK in CLOSE-WAIT is accepted",
    steps: [
      { op: "EST" },
      { op: "IN", flags: FIN | ACK, ok: true, state: T.CLOSE_WAIT },
      { op: "IN", flags: FIN | PSH | ACK, size: 100, ok: true, state: T.CLOSE_WAIT },
      { op: "IN", flags: ACK, ok: true, state: T.CLOSE_WAIT },
    ],
    records: ["start"],
  },
];

Deno.test("TcpTracker does not advance on retransmitted or wrong-direction segments", async (t) => {
  for (const c of CASES) await t.step(c.name, () => runTcpCase(c));
});

const ENV = new Map([
  ["NB_CONNTRACK_TCP_FIN_WAIT_TIMEOUT", "50ms"],
  ["NB_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT", "80ms"],
  ["NB_CONNTRACK_TCP_LAST_ACK_TIMEOUT", "30ms"],
]);
const FROM_ENV = conntrackOptionsFromEnv((name) => ENV.get(name)).tcp;

Deno.test("TcpTracker takes the per-state teardown timeouts from NB_CONNTRACK_TCP_* variables", () => {
  const tracker = new TcpTracker(FROM_ENV);
  assert.deepEqual(
    [tracker.finWaitTimeoutMs, tracker.closeWaitTimeoutMs, tracker.lastAckTimeoutMs],
    [50, 80, 30],
  );
});

// Each teardown state, with its own port (12346..12349) on a fresh tracker: gone after 500 ms.
// Derived addition: present at exactly its timeout, gone 1 ms later (timeouts are strict).
const TEARDOWN: {
  name: string;
  state: TcpState;
  port: number;
  timeout: number;
  steps: TcpCase["steps"];
}[] = [
  {
    name: "FIN-WAIT-1",
    state: T.FIN_WAIT_1,
    port: 12346,
    timeout: 50,
    steps: [{ op: "EST" }, { op: "OUT", flags: FIN | ACK }],
  },
  {
    name: "FIN-WAIT-2",
    state: T.FIN_WAIT_2,
    port: 12347,
    timeout: 50,
    steps: [{ op: "EST" }, { op: "OUT", flags: FIN | ACK }, { op: "IN", flags: ACK, ok: true }],
  },
  {
    name: "CLOSE-WAIT",
    state: T.CLOSE_WAIT,
    port: 12348,
    timeout: 80,
    steps: [{ op: "EST" }, { op: "IN", flags: FIN | ACK, ok: true }],
  },
  {
    name: "LAST-ACK",
    state: T.LAST_ACK,
    port: 12349,
    timeout: 30,
    steps: [{ op: "EST" }, { op: "IN", flags: FIN | ACK, ok: true }, {
      op: "OUT",
      flags: FIN | ACK,
    }],
  },
];

Deno.test("TcpTracker times out each teardown state after its own timeout", async (t) => {
  for (const d of TEARDOWN) {
    const name = d.name;
    await t.step(`${name} after 500 ms`, () =>
      runTcpCase({
        name,
        options: FROM_ENV,
        steps: [
          ...d.steps.map((s) => ({ ...s, port: d.port })),
          { op: "check", port: d.port, state: d.state },
          { op: "advance", ms: 500 },
          { op: "cleanup", port: d.port, state: "absent", count: 0 },
        ],
        records: ["start", "end"],
      }));
    await t.step(
      `derived: ${name} kept at exactly ${d.timeout} ms, gone 1 ms later`,
      () =>
        runTcpCase({
          name,
          options: FROM_ENV,
          steps: [
            ...d.steps.map((s) => ({ ...s, port: d.port })),
            { op: "advance", ms: d.timeout },
            { op: "cleanup", port: d.port, state: d.state },
            { op: "advance", ms: 1 },
            { op: "cleanup", port: d.port, state: "absent" },
          ],
          records: ["start", "end"],
        }),
    );
  }
});
