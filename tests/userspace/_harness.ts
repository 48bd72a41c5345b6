/**
 * Shared fixtures of the userspace-tracker tests: a fake monotonic clock, a recording sink,
 * deterministic IDs, packet builders, and the step runner that drives the TCP tracker through the
 * spec's case notation (OUT / IN / TIN / OUTr / EST, §7 of the spec).
 */

import assert from "node:assert/strict";
import type { FlowRecord } from "../../lib/record.ts";
import type { TrackerBaseOptions } from "../../lib/userspace/common.ts";
import { createPacket, TcpFlag, type TrackerPacket } from "../../lib/userspace/packet.ts";
import {
  type TcpConnection,
  TcpState,
  tcpStateName,
  TcpTracker,
  type TcpTrackerOptions,
} from "../../lib/userspace/tcp.ts";

export const { FIN, SYN, RST, PSH, ACK } = TcpFlag;

/** C = local initiator, S = remote server (spec §7 notation). */
export const C = "100.64.0.1";
export const S = "100.64.0.2";
export const C_PORT = 12345;
export const S_PORT = 80;

/** The wall-clock time every record is stamped with. */
export const WALL = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678));

/** A fake monotonic clock, a recording sink and counting IDs, ready to spread into options. */
export interface Fixture {
  /** Current monotonic time (ms); tests move it. */
  now: number;
  /** Every record written, in order. */
  records: FlowRecord[];
  /** Number of `write` calls (batches). */
  batches: number;
  /** Options wiring the above into a tracker. */
  options: Required<TrackerBaseOptions>;
}

/** A fixture starting at `start` ms. */
export function fixture(start = 1_000): Fixture {
  let id = 0;
  const f: Fixture = {
    now: start,
    records: [],
    batches: 0,
    options: {
      clock: () => f.now,
      wallClock: () => WALL,
      randomId: () => `id-${++id}`,
      sink: {
        write(batch: readonly FlowRecord[]): void {
          f.batches++;
          f.records.push(...batch);
        },
      },
    },
  };
  return f;
}

/** A TCP segment. */
export function tcp(
  source: string,
  destination: string,
  sourcePort: number,
  destinationPort: number,
  tcpFlags: number,
  length = 0,
): TrackerPacket {
  return createPacket({
    source,
    destination,
    protocol: 6,
    sourcePort,
    destinationPort,
    tcpFlags,
    ipLength: length,
  });
}

/** A UDP datagram. */
export function udp(
  source: string,
  destination: string,
  sourcePort: number,
  destinationPort: number,
  length = 0,
): TrackerPacket {
  return createPacket({
    source,
    destination,
    protocol: 17,
    sourcePort,
    destinationPort,
    ipLength: length,
  });
}

/** An ICMP (IPv4 addresses) or ICMPv6 (IPv6 addresses) message. */
export function icmp(
  source: string,
  destination: string,
  icmpType: number,
  icmpId = 0,
  length = 0,
  icmpCode = 0,
): TrackerPacket {
  const v6 = source.includes(":");
  return createPacket({
    source,
    destination,
    protocol: v6 ? 58 : 1,
    icmpType,
    icmpCode,
    icmpId,
    ipLength: length,
  });
}

/** A compact view of a record for exact comparisons: everything but event ID and timestamp. */
export function view(r: FlowRecord): Record<string, unknown> {
  const { eventId: _e, timestamp: _t, ...rest } = r;
  return rest;
}

/**
 * One step of a TCP case.
 *
 * Operations (spec §7 notation, C = 100.64.0.1:`port` (12345 unless given), S = 100.64.0.2:80):
 * `OUT` TrackOutbound(C→S), `IN` IsValidInbound(S→C), `TIN` TrackInbound(C→S), `OUTr`
 * TrackOutbound(S→C), `TINr` TrackInbound(S→C), `EST` OUT(SYN), IN(SYN|ACK) = true, OUT(ACK),
 * `advance` moves the clock by `ms`, `cleanup` runs cleanup(), `flush` flush(), `close` close(),
 * `check` only checks.
 *
 * Checks apply after the step to the entry under `key` (default C→S).
 */
export interface TcpStep {
  op:
    | "OUT"
    | "IN"
    | "TIN"
    | "OUTr"
    | "TINr"
    | "EST"
    | "advance"
    | "cleanup"
    | "flush"
    | "close"
    | "check";
  flags?: number;
  /** Packet length (default 0; EST default 100). */
  size?: number;
  /** Client port (default 12345). */
  port?: number;
  /** Clock step for `advance`. */
  ms?: number;
  /** Rule ID for TIN/TINr. */
  ruleId?: string;
  /** Expected return of IN. */
  ok?: boolean;
  /** Which entry the checks look at. */
  key?: "C→S" | "S→C";
  /** Expected state, or `"absent"`. */
  state?: TcpState | "absent";
  /** Expected tombstone flag. */
  tombstoned?: boolean;
  /** `true`: a different entry (flow ID) than before the step; `false`: the same one. */
  newEntry?: boolean;
  /** Expected table size. */
  count?: number;
  /** Expected `lastSeen`, relative to the fixture's start. */
  lastSeen?: number;
  /** Expected counters of the entry. */
  counters?: { packetsTx: number; packetsRx: number; bytesTx: number; bytesRx: number };
  /** Expected `ended` flag of the entry (its end record was written). */
  ended?: boolean;
  /** Expected number of records written so far. */
  written?: number;
}

/** One data-driven TCP case. */
export interface TcpCase {
  name: string;
  options?: TcpTrackerOptions;
  steps: TcpStep[];
  /** Expected record types, in order. */
  records: string[];
  /**
   * Expected records with their counters, in order, as {@linkcode recordLine} writes them
   * (checked after the last step, before the runner's final `close()`).
   */
  log?: string[];
}

/**
 * A record as one line: flow IDs numbered by first appearance (`F1`, `F2`, …), type, initiator
 * port, and this host's counters, e.g. `F1 end 12345 tx 4/304 rx 3/204`.
 */
export function recordLines(records: readonly FlowRecord[]): string[] {
  const names = new Map<string, string>();
  return records.map((r) => {
    if (!names.has(r.flowId)) names.set(r.flowId, `F${names.size + 1}`);
    return `${names.get(r.flowId)} ${r.type} ${r.sourcePort} tx ${r.txPackets}/${r.txBytes} ` +
      `rx ${r.rxPackets}/${r.rxBytes}`;
  });
}

/**
 * Asserts that every flow has exactly one `start` followed by exactly one `end` (after the
 * tracker was closed), and no other record types.
 */
export function assertOneStartOneEnd(records: readonly FlowRecord[], label = ""): void {
  const byFlow = Map.groupBy(records, (r) => r.flowId);
  for (const [flowId, flow] of byFlow) {
    assert.deepEqual(flow.map((r) => r.type), ["start", "end"], `${label}flow ${flowId}`);
  }
}

function describe(step: TcpStep, index: number): string {
  const flags = step.flags === undefined ? "" : flagNames(step.flags);
  return `step ${index + 1} ${step.op}(${flags}${step.size ? `,${step.size}` : ""})`;
}

/** `SYN|ACK`-style names. */
export function flagNames(flags: number): string {
  const names = (["FIN", "SYN", "RST", "PSH", "ACK", "URG"] as const).filter((n) =>
    (flags & TcpFlag[n]) !== 0
  );
  return names.join("|") || "0";
}

/** Runs one TCP case on a fresh tracker and checks every expectation. */
export function runTcpCase(c: TcpCase): void {
  const start = 1_000;
  const f = fixture(start);
  const tracker = new TcpTracker({ ...c.options, ...f.options });
  c.steps.forEach((step, i) => {
    const label = describe(step, i);
    const port = step.port ?? C_PORT;
    const keyOf = (k: "C→S" | "S→C" = "C→S"): TcpConnection | undefined =>
      k === "C→S"
        ? tracker.getConnection({
          source: C,
          destination: S,
          sourcePort: port,
          destinationPort: S_PORT,
        })
        : tracker.getConnection({
          source: S,
          destination: C,
          sourcePort: S_PORT,
          destinationPort: port,
        });
    const before = keyOf(step.key);
    const flags = step.flags ?? 0;
    const size = step.size ?? 0;
    switch (step.op) {
      case "OUT":
        tracker.trackOutbound(tcp(C, S, port, S_PORT, flags, size));
        break;
      case "IN": {
        const ok = tracker.isValidInbound(tcp(S, C, S_PORT, port, flags, size));
        if (step.ok !== undefined) assert.equal(ok, step.ok, `${label}: IsValidInbound`);
        break;
      }
      case "TIN":
        tracker.trackInbound(
          tcp(C, S, port, S_PORT, flags, size),
          step.ruleId === undefined ? {} : { ruleId: step.ruleId },
        );
        break;
      case "OUTr":
        tracker.trackOutbound(tcp(S, C, S_PORT, port, flags, size));
        break;
      case "TINr":
        tracker.trackInbound(tcp(S, C, S_PORT, port, flags, size));
        break;
      case "EST": {
        const n = step.size ?? 100;
        tracker.trackOutbound(tcp(C, S, port, S_PORT, SYN, n));
        assert.equal(
          tracker.isValidInbound(tcp(S, C, S_PORT, port, SYN | ACK, n)),
          true,
          `${label}: SYN|ACK of the handshake`,
        );
        tracker.trackOutbound(tcp(C, S, port, S_PORT, ACK, n));
        break;
      }
      case "advance":
        f.now += step.ms ?? 0;
        break;
      case "cleanup":
        tracker.cleanup();
        break;
      case "flush":
        tracker.flush();
        break;
      case "close":
        tracker.close();
        break;
      case "check":
        break;
    }
    const conn = keyOf(step.key);
    if (step.state === "absent") assert.equal(conn, undefined, `${label}: entry must be gone`);
    else if (step.state !== undefined) {
      assert.ok(conn, `${label}: entry must exist`);
      assert.equal(tcpStateName(conn.state), tcpStateName(step.state), `${label}: state`);
    }
    if (step.tombstoned !== undefined) {
      assert.equal(conn?.tombstoned, step.tombstoned, `${label}: tombstoned`);
    }
    if (step.newEntry !== undefined) {
      assert.ok(conn && before, `${label}: entries before and after`);
      assert.equal(conn.flowId !== before.flowId, step.newEntry, `${label}: new entry`);
    }
    if (step.count !== undefined) assert.equal(tracker.size, step.count, `${label}: table size`);
    if (step.lastSeen !== undefined) {
      assert.equal(conn?.lastSeen, start + step.lastSeen, `${label}: lastSeen`);
    }
    if (step.counters !== undefined) {
      assert.ok(conn, `${label}: entry must exist`);
      const { packetsTx, packetsRx, bytesTx, bytesRx } = conn;
      assert.deepEqual({ packetsTx, packetsRx, bytesTx, bytesRx }, step.counters, label);
    }
    if (step.ended !== undefined) assert.equal(conn?.ended, step.ended, `${label}: ended`);
    if (step.written !== undefined) {
      assert.equal(f.records.length, step.written, `${label}: records written`);
    }
  });
  assert.deepEqual(f.records.map((r) => r.type), c.records, "record types");
  if (c.log !== undefined) assert.deepEqual(recordLines(f.records), c.log, "records");
  tracker.close();
  assertOneStartOneEnd(f.records, "after close: ");
}

/** The states as short names for tables. */
export const T = TcpState;
