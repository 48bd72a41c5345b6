/**
 * NetBird's Flow API wire format (`flow/proto/flow.proto`, package `flow`): the messages of the
 * `FlowService.Events` bidi stream, encoded and decoded by hand (proto3, no reflection), plus the
 * mapping between netbird-ct's records and `FlowEvent`.
 *
 * @module
 */

import type { FlowRecord } from "../record.ts";
import { formatIp, parseIp } from "../net.ts";
import { bytesToUuid, uuidToBytes } from "../uuid.ts";

/** The `.proto` file, as NetBird publishes it (field numbers and types are the contract). */
export const FLOW_PROTO = `syntax = "proto3";

import "google/protobuf/timestamp.proto";

option go_package = "/proto";

package flow;

service FlowService {
  // Client to receiver streams of events and acknowledgements
  rpc Events(stream FlowEvent) returns (stream FlowEventAck) {}
}

message FlowEvent {
  // Unique client event identifier
  bytes event_id = 1;

  // When the event occurred
  google.protobuf.Timestamp timestamp = 2;

  // Public key of the sending peer
  bytes public_key = 3;

  FlowFields flow_fields = 4;

  bool isInitiator = 5;

  google.protobuf.Timestamp window_start = 6;
  google.protobuf.Timestamp window_end = 7;
}

message FlowEventAck {
  // Unique client event identifier that has been ack'ed
  bytes event_id = 1;
  bool isInitiator = 2;
}

message FlowFields {
  // Unique client flow session identifier
  bytes flow_id = 1;

  // Flow type
  Type type = 2;

  // RuleId identifies the rule that allowed or denied the connection
  bytes rule_id = 3;

  // Initiating traffic direction
  Direction direction = 4;

  // IP protocol number
  uint32 protocol = 5;

  // Source IP address
  bytes source_ip = 6;

  // Destination IP address
  bytes dest_ip = 7;

  // Layer 4 -specific information
  oneof connection_info {
    // TCP/UDP port information
    PortInfo port_info = 8;

    // ICMP type and code
    ICMPInfo icmp_info = 9;
  }

  // Number of packets
  uint64 rx_packets = 10;
  uint64 tx_packets = 11;

  // Number of bytes
  uint64 rx_bytes = 12;
  uint64 tx_bytes = 13;

  // Resource ID
  bytes source_resource_id = 14;
  bytes dest_resource_id = 15;

  uint64 num_of_starts = 16;
  uint64 num_of_ends = 17;
  uint64 num_of_drops = 18;
}

// Flow event types
enum Type {
  TYPE_UNKNOWN = 0;
  TYPE_START = 1;
  TYPE_END = 2;
  TYPE_DROP = 3;
}

// Flow direction
enum Direction {
  DIRECTION_UNKNOWN = 0;
  INGRESS = 1;
  EGRESS = 2;
}

// TCP/UDP port information
message PortInfo {
  uint32 source_port = 1;
  uint32 dest_port = 2;
}

// ICMP message information
message ICMPInfo {
  uint32 icmp_type = 1;
  uint32 icmp_code = 2;
}
`;

/** `flow.Type`. */
export const ProtoType = { UNKNOWN: 0, START: 1, END: 2, DROP: 3 } as const;
/** `flow.Direction`. */
export const ProtoDirection = { UNKNOWN: 0, INGRESS: 1, EGRESS: 2 } as const;

/** `flow.PortInfo`. */
export interface PortInfo {
  /** Source port. */
  sourcePort: number;
  /** Destination port. */
  destPort: number;
}

/** `flow.ICMPInfo`. */
export interface IcmpInfo {
  /** ICMP type. */
  icmpType: number;
  /** ICMP code. */
  icmpCode: number;
}

/** `flow.FlowFields`. Absent scalars decode as zero, absent bytes as empty. */
export interface FlowFields {
  /** 16-byte flow UUID. */
  flowId: Uint8Array;
  /** `flow.Type`. */
  type: number;
  /** Rule (policy) ID bytes. */
  ruleId: Uint8Array;
  /** `flow.Direction`. */
  direction: number;
  /** IP protocol number. */
  protocol: number;
  /** 4 bytes (IPv4) or 16 (IPv6), empty when unknown. */
  sourceIp: Uint8Array;
  /** 4 bytes (IPv4) or 16 (IPv6), empty when unknown. */
  destIp: Uint8Array;
  /** Set for every protocol but ICMP/ICMPv6 (oneof `connection_info`). */
  portInfo?: PortInfo;
  /** Set for ICMP and ICMPv6 (oneof `connection_info`). */
  icmpInfo?: IcmpInfo;
  /** Packets received. */
  rxPackets: bigint;
  /** Packets sent. */
  txPackets: bigint;
  /** Bytes received. */
  rxBytes: bigint;
  /** Bytes sent. */
  txBytes: bigint;
  /** Resource ID bytes of the source, empty when none. */
  sourceResourceId: Uint8Array;
  /** Resource ID bytes of the destination, empty when none. */
  destResourceId: Uint8Array;
  /** Aggregated start count. */
  numOfStarts: bigint;
  /** Aggregated end count. */
  numOfEnds: bigint;
  /** Aggregated drop count. */
  numOfDrops: bigint;
}

/** `flow.FlowEvent`. */
export interface FlowEventMessage {
  /** 16-byte event UUID. */
  eventId: Uint8Array;
  /** When the event occurred. */
  timestamp?: Date;
  /** The sending peer's WireGuard public key (32 bytes). */
  publicKey: Uint8Array;
  /** The flow. */
  flowFields?: FlowFields;
  /** The stream's first message from a client sets this (and nothing else). */
  isInitiator: boolean;
  /** Aggregation window start. */
  windowStart?: Date;
  /** Aggregation window end. */
  windowEnd?: Date;
}

/** `flow.FlowEventAck`. */
export interface FlowEventAck {
  /** The acknowledged event's ID. */
  eventId: Uint8Array;
  /** The receiver's first message on a stream sets this. */
  isInitiator: boolean;
}

/** Error for bytes that are not a valid message. */
export class ProtoError extends Error {
  /** The error name, `"ProtoError"`. */
  override name = "ProtoError";
}

// --- writer -------------------------------------------------------------------------------

class Writer {
  #buf = new Uint8Array(256);
  #len = 0;

  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
    bigger.set(this.#buf.subarray(0, this.#len));
    this.#buf = bigger;
  }

  varint(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.#ensure(10);
    while (x >= 0x80n) {
      this.#buf[this.#len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.#buf[this.#len++] = Number(x);
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, b: Uint8Array): void {
    if (b.length === 0) return;
    this.tag(field, 2);
    this.varint(b.length);
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  uint(field: number, v: bigint | number): void {
    if (BigInt(v) === 0n) return;
    this.tag(field, 0);
    this.varint(v);
  }

  bool(field: number, v: boolean): void {
    if (v) this.uint(field, 1);
  }

  message(field: number, inner: Writer): void {
    this.tag(field, 2);
    const b = inner.finish();
    this.varint(b.length);
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

function timestampWriter(d: Date): Writer {
  const w = new Writer();
  const ms = d.getTime();
  const seconds = Math.floor(ms / 1000);
  w.uint(1, seconds < 0 ? BigInt.asUintN(64, BigInt(seconds)) : seconds);
  w.uint(2, (ms - seconds * 1000) * 1_000_000);
  return w;
}

// --- reader -------------------------------------------------------------------------------

class Reader {
  #b: Uint8Array;
  #pos = 0;

  constructor(b: Uint8Array) {
    this.#b = b;
  }

  get done(): boolean {
    return this.#pos >= this.#b.length;
  }

  varint(): bigint {
    let shift = 0n;
    let v = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.#pos >= this.#b.length) {
        throw new ProtoError("Cannot decode message: truncated varint");
      }
      const byte = this.#b[this.#pos++]!;
      v |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return BigInt.asUintN(64, v);
      shift += 7n;
    }
    throw new ProtoError("Cannot decode message: varint longer than 10 bytes");
  }

  bytes(): Uint8Array {
    const n = Number(this.varint());
    if (this.#pos + n > this.#b.length) {
      throw new ProtoError("Cannot decode message: field longer than the message");
    }
    const out = this.#b.slice(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.#advance(8);
        return;
      case 2:
        this.bytes();
        return;
      case 5:
        this.#advance(4);
        return;
      default:
        throw new ProtoError(`Cannot decode message: unsupported wire type ${wire}`);
    }
  }

  #advance(n: number): void {
    if (this.#pos + n > this.#b.length) throw new ProtoError("Cannot decode message: truncated");
    this.#pos += n;
  }

  /** Calls `fn(field, wire)` per field; `fn` must consume the value or return false to skip. */
  fields(fn: (field: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = Number(this.varint());
      const field = key >>> 3;
      const wire = key & 7;
      if (field === 0) throw new ProtoError("Cannot decode message: field number 0");
      if (!fn(field, wire)) this.skip(wire);
    }
  }
}

function expectWire(field: number, wire: number, want: number): void {
  if (wire !== want) {
    throw new ProtoError(
      `Cannot decode message: field ${field} has wire type ${wire}, want ${want}`,
    );
  }
}

function readTimestamp(b: Uint8Array): Date {
  let seconds = 0n;
  let nanos = 0n;
  const r = new Reader(b);
  r.fields((field, wire) => {
    if (field === 1) {
      expectWire(field, wire, 0);
      seconds = BigInt.asIntN(64, r.varint());
    } else if (field === 2) {
      expectWire(field, wire, 0);
      nanos = BigInt.asIntN(32, r.varint());
    } else return false;
    return true;
  });
  return new Date(Number(seconds) * 1000 + Math.floor(Number(nanos) / 1_000_000));
}

// --- FlowFields ---------------------------------------------------------------------------

function writeFlowFields(f: FlowFields): Writer {
  const w = new Writer();
  w.bytes(1, f.flowId);
  w.uint(2, f.type);
  w.bytes(3, f.ruleId);
  w.uint(4, f.direction);
  w.uint(5, f.protocol);
  w.bytes(6, f.sourceIp);
  w.bytes(7, f.destIp);
  if (f.portInfo !== undefined) {
    const p = new Writer();
    p.uint(1, f.portInfo.sourcePort);
    p.uint(2, f.portInfo.destPort);
    w.message(8, p);
  } else if (f.icmpInfo !== undefined) {
    const i = new Writer();
    i.uint(1, f.icmpInfo.icmpType);
    i.uint(2, f.icmpInfo.icmpCode);
    w.message(9, i);
  }
  w.uint(10, f.rxPackets);
  w.uint(11, f.txPackets);
  w.uint(12, f.rxBytes);
  w.uint(13, f.txBytes);
  w.bytes(14, f.sourceResourceId);
  w.bytes(15, f.destResourceId);
  w.uint(16, f.numOfStarts);
  w.uint(17, f.numOfEnds);
  w.uint(18, f.numOfDrops);
  return w;
}

function emptyFields(): FlowFields {
  return {
    flowId: new Uint8Array(0),
    type: 0,
    ruleId: new Uint8Array(0),
    direction: 0,
    protocol: 0,
    sourceIp: new Uint8Array(0),
    destIp: new Uint8Array(0),
    rxPackets: 0n,
    txPackets: 0n,
    rxBytes: 0n,
    txBytes: 0n,
    sourceResourceId: new Uint8Array(0),
    destResourceId: new Uint8Array(0),
    numOfStarts: 0n,
    numOfEnds: 0n,
    numOfDrops: 0n,
  };
}

function readPair(b: Uint8Array): [number, number] {
  let a = 0;
  let c = 0;
  const r = new Reader(b);
  r.fields((field, wire) => {
    if (field === 1) {
      expectWire(field, wire, 0);
      a = Number(r.varint() & 0xffffffffn);
    } else if (field === 2) {
      expectWire(field, wire, 0);
      c = Number(r.varint() & 0xffffffffn);
    } else return false;
    return true;
  });
  return [a, c];
}

function readFlowFields(b: Uint8Array): FlowFields {
  const f = emptyFields();
  const r = new Reader(b);
  const u32 = (): number => Number(r.varint() & 0xffffffffn);
  r.fields((field, wire) => {
    switch (field) {
      case 1:
      case 3:
      case 6:
      case 7:
      case 14:
      case 15: {
        expectWire(field, wire, 2);
        const v = r.bytes();
        if (field === 1) f.flowId = v;
        else if (field === 3) f.ruleId = v;
        else if (field === 6) f.sourceIp = v;
        else if (field === 7) f.destIp = v;
        else if (field === 14) f.sourceResourceId = v;
        else f.destResourceId = v;
        return true;
      }
      case 2:
        expectWire(field, wire, 0);
        f.type = u32();
        return true;
      case 4:
        expectWire(field, wire, 0);
        f.direction = u32();
        return true;
      case 5:
        expectWire(field, wire, 0);
        f.protocol = u32();
        return true;
      case 8: {
        expectWire(field, wire, 2);
        const [sourcePort, destPort] = readPair(r.bytes());
        f.portInfo = { sourcePort, destPort };
        delete f.icmpInfo;
        return true;
      }
      case 9: {
        expectWire(field, wire, 2);
        const [icmpType, icmpCode] = readPair(r.bytes());
        f.icmpInfo = { icmpType, icmpCode };
        delete f.portInfo;
        return true;
      }
      case 10:
      case 11:
      case 12:
      case 13:
      case 16:
      case 17:
      case 18: {
        expectWire(field, wire, 0);
        const v = r.varint();
        if (field === 10) f.rxPackets = v;
        else if (field === 11) f.txPackets = v;
        else if (field === 12) f.rxBytes = v;
        else if (field === 13) f.txBytes = v;
        else if (field === 16) f.numOfStarts = v;
        else if (field === 17) f.numOfEnds = v;
        else f.numOfDrops = v;
        return true;
      }
      default:
        return false;
    }
  });
  return f;
}

// --- FlowEvent / FlowEventAck -------------------------------------------------------------

/**
 * Encodes a `flow.FlowEvent`.
 *
 * @param e The message.
 * @returns Its protobuf bytes.
 */
export function encodeFlowEvent(e: FlowEventMessage): Uint8Array {
  const w = new Writer();
  w.bytes(1, e.eventId);
  if (e.timestamp !== undefined) w.message(2, timestampWriter(e.timestamp));
  w.bytes(3, e.publicKey);
  if (e.flowFields !== undefined) w.message(4, writeFlowFields(e.flowFields));
  w.bool(5, e.isInitiator);
  if (e.windowStart !== undefined) w.message(6, timestampWriter(e.windowStart));
  if (e.windowEnd !== undefined) w.message(7, timestampWriter(e.windowEnd));
  return w.finish();
}

/**
 * Decodes a `flow.FlowEvent`. Unknown fields are skipped.
 *
 * @param b Protobuf bytes.
 * @returns The message.
 * @throws {ProtoError} On malformed input.
 */
export function decodeFlowEvent(b: Uint8Array): FlowEventMessage {
  const e: FlowEventMessage = {
    eventId: new Uint8Array(0),
    publicKey: new Uint8Array(0),
    isInitiator: false,
  };
  const r = new Reader(b);
  r.fields((field, wire) => {
    switch (field) {
      case 1:
        expectWire(field, wire, 2);
        e.eventId = r.bytes();
        return true;
      case 2:
        expectWire(field, wire, 2);
        e.timestamp = readTimestamp(r.bytes());
        return true;
      case 3:
        expectWire(field, wire, 2);
        e.publicKey = r.bytes();
        return true;
      case 4:
        expectWire(field, wire, 2);
        e.flowFields = readFlowFields(r.bytes());
        return true;
      case 5:
        expectWire(field, wire, 0);
        e.isInitiator = r.varint() !== 0n;
        return true;
      case 6:
        expectWire(field, wire, 2);
        e.windowStart = readTimestamp(r.bytes());
        return true;
      case 7:
        expectWire(field, wire, 2);
        e.windowEnd = readTimestamp(r.bytes());
        return true;
      default:
        return false;
    }
  });
  return e;
}

/**
 * Encodes a `flow.FlowEventAck`.
 *
 * @param a The message.
 * @returns Its protobuf bytes.
 */
export function encodeFlowEventAck(a: FlowEventAck): Uint8Array {
  const n = a.eventId.length;
  if (n > 0 && n < 128 && !a.isInitiator) {
    // The common case (one per event): field 1, a one-byte length, the ID.
    const out = new Uint8Array(2 + n);
    out[0] = 0x0a;
    out[1] = n;
    out.set(a.eventId, 2);
    return out;
  }
  const w = new Writer();
  w.bytes(1, a.eventId);
  w.bool(2, a.isInitiator);
  return w.finish();
}

/**
 * Decodes a `flow.FlowEventAck`.
 *
 * @param b Protobuf bytes.
 * @returns The message.
 * @throws {ProtoError} On malformed input.
 */
export function decodeFlowEventAck(b: Uint8Array): FlowEventAck {
  const a: FlowEventAck = { eventId: new Uint8Array(0), isInitiator: false };
  const r = new Reader(b);
  r.fields((field, wire) => {
    if (field === 1) {
      expectWire(field, wire, 2);
      a.eventId = r.bytes();
    } else if (field === 2) {
      expectWire(field, wire, 0);
      a.isInitiator = r.varint() !== 0n;
    } else return false;
    return true;
  });
  return a;
}

// --- records ↔ messages -------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const TYPE_OF: Record<FlowRecord["type"], number> = {
  start: ProtoType.START,
  end: ProtoType.END,
  drop: ProtoType.DROP,
  update: ProtoType.UNKNOWN,
  window: ProtoType.UNKNOWN,
};
const DIRECTION_OF: Record<FlowRecord["direction"], number> = {
  unknown: ProtoDirection.UNKNOWN,
  ingress: ProtoDirection.INGRESS,
  egress: ProtoDirection.EGRESS,
};

/**
 * Maps a record to the `FlowEvent` NetBird's manager sends (its `toProto`): 16-byte event and
 * flow IDs, 4- or 16-byte addresses, ICMP info for ICMP/ICMPv6 and port info for every other
 * protocol, window times and counts for aggregated records (whose type is UNKNOWN on the wire).
 *
 * @param r The record.
 * @param publicKey The peer's WireGuard public key (32 bytes).
 * @returns The message.
 */
export function recordToFlowEvent(r: FlowRecord, publicKey: Uint8Array): FlowEventMessage {
  const icmp = r.protocol === 1 || r.protocol === 58;
  const flowFields: FlowFields = {
    flowId: uuidToBytes(r.flowId),
    type: TYPE_OF[r.type],
    // NetBird: the policy ID as bytes; empty for kernel-conntrack events. Windows keep the first
    // non-empty rule ID of the records they merge (a drop's NFLOG prefix, for example).
    ruleId: encoder.encode(r.ruleId ?? ""),
    direction: DIRECTION_OF[r.direction],
    protocol: r.protocol,
    sourceIp: parseIp(r.sourceIp) ?? new Uint8Array(0),
    destIp: parseIp(r.destIp) ?? new Uint8Array(0),
    rxPackets: r.rxPackets,
    txPackets: r.txPackets,
    rxBytes: r.rxBytes,
    txBytes: r.txBytes,
    sourceResourceId: encoder.encode(r.sourceResourceId ?? ""),
    destResourceId: encoder.encode(r.destResourceId ?? ""),
    numOfStarts: BigInt(r.window?.numOfStarts ?? 0),
    numOfEnds: BigInt(r.window?.numOfEnds ?? 0),
    numOfDrops: BigInt(r.window?.numOfDrops ?? 0),
  };
  if (icmp) flowFields.icmpInfo = { icmpType: r.icmpType, icmpCode: r.icmpCode };
  else flowFields.portInfo = { sourcePort: r.sourcePort, destPort: r.destPort };
  const e: FlowEventMessage = {
    eventId: uuidToBytes(r.eventId),
    timestamp: r.timestamp,
    publicKey,
    flowFields,
    isInitiator: false,
  };
  if (r.window !== undefined) {
    e.windowStart = r.window.windowStart;
    e.windowEnd = r.window.windowEnd;
  }
  return e;
}

/** What a receiver stores: the event in plain values, with its sender. */
export interface StoredEvent {
  /** Event UUID text. */
  eventId: string;
  /** When the event occurred (ISO 8601 UTC). */
  timestamp: string;
  /** Sender's public key, base64. */
  reporterId: string;
  /** Flow UUID text, or "" when not 16 bytes. */
  flowId: string;
  /** `unknown` | `start` | `end` | `drop`. */
  type: "unknown" | "start" | "end" | "drop";
  /** `unknown` | `ingress` | `egress`. */
  direction: "unknown" | "ingress" | "egress";
  /** IP protocol number. */
  protocol: number;
  /** Source address text, or "". */
  sourceIp: string;
  /** Destination address text, or "". */
  destIp: string;
  /** Ports, when the event carried port info. */
  sourcePort: number;
  /** Ports, when the event carried port info. */
  destPort: number;
  /** ICMP type/code, when the event carried ICMP info. */
  icmpType: number;
  /** ICMP code. */
  icmpCode: number;
  /** Counters as decimal strings (uint64). */
  rxPackets: string;
  /** Packets sent. */
  txPackets: string;
  /** Bytes received. */
  rxBytes: string;
  /** Bytes sent. */
  txBytes: string;
  /** Resource IDs as text, or "". */
  sourceResourceId: string;
  /** Destination resource ID, or "". */
  destResourceId: string;
  /** Rule ID as text, or "". */
  ruleId: string;
  /** Aggregation counts (decimal strings). */
  numOfStarts: string;
  /** Ends. */
  numOfEnds: string;
  /** Drops. */
  numOfDrops: string;
  /** Window, ISO 8601, or "". */
  windowStart: string;
  /** Window end, or "". */
  windowEnd: string;
}

const TYPE_NAMES = ["unknown", "start", "end", "drop"] as const;
const DIRECTION_NAMES = ["unknown", "ingress", "egress"] as const;

function base64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

/**
 * Turns a received `FlowEvent` into plain values for storage and queries.
 *
 * @param e The message (not an initiator message).
 * @returns The stored form.
 * @throws {ProtoError} When the event ID is not 16 bytes or flow fields are missing.
 */
export function flowEventToStored(e: FlowEventMessage): StoredEvent {
  if (e.eventId.length !== 16) {
    throw new ProtoError(`Cannot store event: event_id has ${e.eventId.length} bytes, want 16`);
  }
  const f = e.flowFields ?? emptyFields();
  const ip = (b: Uint8Array): string => b.length === 4 || b.length === 16 ? formatIp(b) : "";
  return {
    eventId: bytesToUuid(e.eventId),
    timestamp: (e.timestamp ?? new Date(0)).toISOString(),
    reporterId: base64(e.publicKey),
    flowId: f.flowId.length === 16 ? bytesToUuid(f.flowId) : "",
    type: TYPE_NAMES[f.type] ?? "unknown",
    direction: DIRECTION_NAMES[f.direction] ?? "unknown",
    protocol: f.protocol,
    sourceIp: ip(f.sourceIp),
    destIp: ip(f.destIp),
    sourcePort: f.portInfo?.sourcePort ?? 0,
    destPort: f.portInfo?.destPort ?? 0,
    icmpType: f.icmpInfo?.icmpType ?? 0,
    icmpCode: f.icmpInfo?.icmpCode ?? 0,
    rxPackets: String(f.rxPackets),
    txPackets: String(f.txPackets),
    rxBytes: String(f.rxBytes),
    txBytes: String(f.txBytes),
    sourceResourceId: decoder.decode(f.sourceResourceId),
    destResourceId: decoder.decode(f.destResourceId),
    ruleId: decoder.decode(f.ruleId),
    numOfStarts: String(f.numOfStarts),
    numOfEnds: String(f.numOfEnds),
    numOfDrops: String(f.numOfDrops),
    windowStart: e.windowStart?.toISOString() ?? "",
    windowEnd: e.windowEnd?.toISOString() ?? "",
  };
}

// --- receiver fast path: bytes → StoredEvent ------------------------------------------------

/**
 * The bytes are a valid `FlowEvent`, but not one that can be stored (see
 * {@linkcode flowEventToStored}).
 */
export class UnstorableEventError extends ProtoError {
  /** The error name, `"UnstorableEventError"`. */
  override name = "UnstorableEventError";
}

/** A received event in stored form, with its ID bytes (for the ack). */
export interface DecodedStoredEvent {
  /** The stored form. */
  event: StoredEvent;
  /** The 16 event ID bytes (a copy). */
  eventId: Uint8Array;
}

// Scratch state of the decoder below (one event at a time, no allocation per field).
let vLo = 0; // bits 0-27 of the last varint
let vHi = 0; // bits 28-63
let vPos = 0; // position after it

const truncatedVarint = (): ProtoError => new ProtoError("Cannot decode message: truncated varint");

/** Reads a varint at `pos` into vLo/vHi/vPos (64 bits, as `Reader.varint`). */
function varintAt(b: Uint8Array, pos: number, end: number): void {
  let lo = 0;
  let i = pos;
  for (let k = 0; k < 4; k++) {
    if (i >= end) throw truncatedVarint();
    const byte = b[i++]!;
    lo |= (byte & 0x7f) << (7 * k);
    if (byte < 0x80) {
      vLo = lo;
      vHi = 0;
      vPos = i;
      return;
    }
  }
  let hi = 0;
  let mul = 1;
  for (let k = 4; k < 10; k++) {
    if (i >= end) throw truncatedVarint();
    const byte = b[i++]!;
    hi += (byte & 0x7f) * mul;
    mul *= 128;
    if (byte < 0x80) {
      vLo = lo;
      vHi = hi % 2 ** 36; // BigInt.asUintN(64, …)
      vPos = i;
      return;
    }
  }
  throw new ProtoError("Cannot decode message: varint longer than 10 bytes");
}

/** The low 32 bits of a varint read as `lo`/`hi` (as vLo/vHi). */
function u32Of(lo: number, hi: number): number {
  return (lo | ((hi & 0xf) << 28)) >>> 0;
}

/** The low 32 bits of the last varint. */
function u32Last(): number {
  return u32Of(vLo, vHi);
}

/** The last varint as uint64 decimal text. */
function u64TextLast(): string {
  if (vHi < 2 ** 25) return String(vLo + vHi * 2 ** 28);
  return String((BigInt(vHi) << 28n) + BigInt(vLo));
}

/** A varint read as `lo`/`hi` as int64 (exact within ±2^53; beyond that no valid Date anyway). */
function i64Of(lo: number, hi: number): number {
  return hi >= 2 ** 35 ? (hi - 2 ** 36) * 2 ** 28 + lo : hi * 2 ** 28 + lo;
}

/** Skips a field value of wire type `wire` at `pos`; returns the position after it. */
function skipAt(b: Uint8Array, pos: number, end: number, wire: number): number {
  switch (wire) {
    case 0:
      varintAt(b, pos, end);
      return vPos;
    case 1:
    case 5: {
      const n = wire === 1 ? 8 : 4;
      if (pos + n > end) throw new ProtoError("Cannot decode message: truncated");
      return pos + n;
    }
    case 2:
      return lengthAt(b, pos, end) + vLo;
    default:
      throw new ProtoError(`Cannot decode message: unsupported wire type ${wire}`);
  }
}

/** Reads a length prefix; returns the start of the bytes (length in vLo). */
function lengthAt(b: Uint8Array, pos: number, end: number): number {
  varintAt(b, pos, end);
  const n = vLo + vHi * 2 ** 28;
  if (n > end - vPos) {
    throw new ProtoError("Cannot decode message: field longer than the message");
  }
  vLo = n;
  return vPos;
}

/** Reads a field key at `pos`: returns `field * 8 + wire` (field 0 rejected). */
function keyAt(b: Uint8Array, pos: number, end: number): number {
  varintAt(b, pos, end);
  const key = u32Last();
  if (key >>> 3 === 0) throw new ProtoError("Cannot decode message: field number 0");
  return key;
}

function wireCheck(key: number, want: number): void {
  if ((key & 7) !== want) expectWire(key >>> 3, key & 7, want);
}

/** Varint fields 1 and 2 read by {@linkcode varintPairAt}, as vLo/vHi (0 when absent). */
let v1Lo = 0;
let v1Hi = 0;
let v2Lo = 0;
let v2Hi = 0;

/**
 * Reads a message of two varint fields, 1 and 2 (`Timestamp`, `PortInfo`, `ICMPInfo`), in
 * `[pos, end)` into v1Lo/v1Hi and v2Lo/v2Hi: the last occurrence counts, other fields are skipped.
 */
function varintPairAt(b: Uint8Array, pos: number, end: number): void {
  let lo1 = 0;
  let hi1 = 0;
  let lo2 = 0;
  let hi2 = 0;
  while (pos < end) {
    const key = keyAt(b, pos, end);
    pos = vPos;
    const field = key >>> 3;
    if (field === 1 || field === 2) {
      wireCheck(key, 0);
      varintAt(b, pos, end);
      pos = vPos;
      if (field === 1) {
        lo1 = vLo;
        hi1 = vHi;
      } else {
        lo2 = vLo;
        hi2 = vHi;
      }
    } else pos = skipAt(b, pos, end, key & 7);
  }
  v1Lo = lo1;
  v1Hi = hi1;
  v2Lo = lo2;
  v2Hi = hi2;
}

/** Milliseconds of a `google.protobuf.Timestamp` in `[pos, end)` (as `readTimestamp`). */
function timestampMs(b: Uint8Array, pos: number, end: number): number {
  varintPairAt(b, pos, end);
  const seconds = i64Of(v1Lo, v1Hi);
  const nanos = u32Of(v2Lo, v2Hi) | 0;
  return seconds * 1000 + Math.floor(nanos / 1_000_000);
}

// Strings built here are made flat (one sequential string, not a rope of concatenations): they
// are kept by the store, and a rope costs many objects and is flattened again by every hash and
// JSON.stringify.
const CODES = new Uint16Array(64);

/** A string of the first `n` char codes in {@linkcode CODES}. */
function codesString(n: number): string {
  return String.fromCharCode.apply(null, CODES.subarray(0, n) as unknown as number[]);
}

/** UTF-8 text of `b[pos, pos + n)` (ASCII without a decoder call). */
function textAt(b: Uint8Array, pos: number, n: number): string {
  if (n === 0) return "";
  const view = b.subarray(pos, pos + n);
  if (n <= 256) {
    let ascii = true;
    for (let i = 0; i < n; i++) {
      if (view[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, view as unknown as number[]);
  }
  return decoder.decode(view);
}

const HEX_CODE: Uint8Array = new TextEncoder().encode("0123456789abcdef");

/** UUID text of the 16 bytes at `pos`. */
function uuidAt(b: Uint8Array, p: number): string {
  const c = CODES;
  let k = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) c[k++] = 0x2d;
    const x = b[p + i]!;
    c[k++] = HEX_CODE[x >> 4]!;
    c[k++] = HEX_CODE[x & 15]!;
  }
  return codesString(36);
}

/** Writes the decimal digits of 0 ≤ v < 1000 at CODES[k]; returns the next index. */
function decimalCodes(v: number, k: number): number {
  if (v >= 100) CODES[k++] = 0x30 + Math.floor(v / 100);
  if (v >= 10) CODES[k++] = 0x30 + Math.floor(v / 10) % 10;
  CODES[k++] = 0x30 + v % 10;
  return k;
}

/** Address text of `n` bytes at `pos` ("" unless 4 or 16). */
function ipAt(b: Uint8Array, p: number, n: number): string {
  if (n === 4) {
    let k = decimalCodes(b[p]!, 0);
    for (let i = 1; i < 4; i++) {
      CODES[k++] = 0x2e;
      k = decimalCodes(b[p + i]!, k);
    }
    return codesString(k);
  }
  return n === 16 ? formatIp(b.subarray(p, p + 16)) : "";
}

// A sender's public key repeats on every event of its stream: its base64 is kept.
let lastKey = new Uint8Array(0);
let lastKeyText = base64(lastKey);

function keyTextAt(b: Uint8Array, p: number, n: number): string {
  if (n === lastKey.length) {
    let same = true;
    for (let i = 0; i < n; i++) {
      if (b[p + i] !== lastKey[i]) {
        same = false;
        break;
      }
    }
    if (same) return lastKeyText;
  }
  lastKey = b.slice(p, p + n);
  lastKeyText = base64(lastKey);
  return lastKeyText;
}

/** 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z in ms. */
const ISO_FAST_MIN = -62_167_219_200_000;
const ISO_FAST_END = 253_402_300_800_000;

/**
 * `new Date(ms).toISOString()` (what `flowEventToStored` stores), computed directly for years
 * 0000–9999 (days to civil date: Howard Hinnant's algorithm).
 */
function isoAt(ms: number): string {
  if (!(ms >= ISO_FAST_MIN && ms < ISO_FAST_END) || !Number.isInteger(ms)) {
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) {
      throw new UnstorableEventError("Cannot store event: timestamp out of range");
    }
    return d.toISOString();
  }
  const days = Math.floor(ms / 86_400_000);
  let rest = ms - days * 86_400_000;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) -
      Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const minutes = Math.floor(rest / 60_000);
  rest -= minutes * 60_000;
  const seconds = Math.floor(rest / 1000);
  const millis = rest - seconds * 1000;
  // YYYY-MM-DDTHH:mm:ss.sssZ
  const c = CODES;
  c[0] = 0x30 + Math.floor(year / 1000);
  c[1] = 0x30 + Math.floor(year / 100) % 10;
  c[2] = 0x30 + Math.floor(year / 10) % 10;
  c[3] = 0x30 + year % 10;
  c[4] = c[7] = 0x2d;
  c[5] = 0x30 + Math.floor(month / 10);
  c[6] = 0x30 + month % 10;
  c[8] = 0x30 + Math.floor(day / 10);
  c[9] = 0x30 + day % 10;
  c[10] = 0x54;
  c[11] = 0x30 + Math.floor(hours / 10);
  c[12] = 0x30 + hours % 10;
  c[13] = c[16] = 0x3a;
  c[14] = 0x30 + Math.floor(minutes / 10);
  c[15] = 0x30 + minutes % 10;
  c[17] = 0x30 + Math.floor(seconds / 10);
  c[18] = 0x30 + seconds % 10;
  c[19] = 0x2e;
  c[20] = 0x30 + Math.floor(millis / 100);
  c[21] = 0x30 + Math.floor(millis / 10) % 10;
  c[22] = 0x30 + millis % 10;
  c[23] = 0x5a;
  return codesString(24);
}

/**
 * Decodes a received `FlowEvent` straight into its stored form: the same result as
 * `flowEventToStored(decodeFlowEvent(b))`, without the intermediate message (the receiver's hot
 * path).
 *
 * @param b Protobuf bytes (not kept: the result owns its data).
 * @returns The event and its ID bytes, or `null` for a client initiator message.
 * @throws {ProtoError} On malformed input; {@linkcode UnstorableEventError} (a `ProtoError`) for
 * a valid message that cannot be stored (event ID not 16 bytes, a time out of range).
 *
 * @example Usage
 * ```ts
 * import { decodeStoredEvent, encodeFlowEvent } from "./proto.ts";
 * const bytes = encodeFlowEvent({
 *   eventId: new Uint8Array(16).fill(1), publicKey: new Uint8Array(32), isInitiator: false,
 *   timestamp: new Date("2026-01-01T00:00:00Z"),
 * });
 * const d = decodeStoredEvent(bytes);
 * if (d?.event.eventId !== "01010101-0101-0101-0101-010101010101") throw new Error();
 * ```
 */
export function decodeStoredEvent(b: Uint8Array): DecodedStoredEvent | null {
  const end = b.length;
  let idPos = 0;
  let idLen = 0;
  let keyPos = 0;
  let keyLen = 0;
  let ts = 0;
  let hasTs = false;
  let ws = 0;
  let hasWs = false;
  let we = 0;
  let hasWe = false;
  let initiator = false;
  let ffPos = -1;
  let pos = 0;
  while (pos < end) {
    const key = keyAt(b, pos, end);
    pos = vPos;
    switch (key >>> 3) {
      case 1:
        wireCheck(key, 2);
        idPos = lengthAt(b, pos, end);
        idLen = vLo;
        pos = idPos + idLen;
        break;
      case 2:
      case 6:
      case 7: {
        wireCheck(key, 2);
        const start = lengthAt(b, pos, end);
        pos = start + vLo;
        const ms = timestampMs(b, start, pos);
        if (key >>> 3 === 2) {
          ts = ms;
          hasTs = true;
        } else if (key >>> 3 === 6) {
          ws = ms;
          hasWs = true;
        } else {
          we = ms;
          hasWe = true;
        }
        break;
      }
      case 3:
        wireCheck(key, 2);
        keyPos = lengthAt(b, pos, end);
        keyLen = vLo;
        pos = keyPos + keyLen;
        break;
      case 4:
        wireCheck(key, 2);
        ffPos = lengthAt(b, pos, end);
        pos = ffPos + vLo;
        // Every occurrence must decode; the last one counts.
        flowFieldsAt(b, ffPos, pos);
        break;
      case 5:
        wireCheck(key, 0);
        varintAt(b, pos, end);
        pos = vPos;
        initiator = vLo !== 0 || vHi !== 0;
        break;
      default:
        pos = skipAt(b, pos, end, key & 7);
    }
  }
  if (initiator) return null;
  if (idLen !== 16) {
    throw new UnstorableEventError(`Cannot store event: event_id has ${idLen} bytes, want 16`);
  }
  if (ffPos < 0) resetFields();
  const f = FF;
  const event: StoredEvent = {
    eventId: uuidAt(b, idPos),
    timestamp: hasTs ? isoAt(ts) : "1970-01-01T00:00:00.000Z",
    reporterId: keyTextAt(b, keyPos, keyLen),
    flowId: f.flowLen === 16 ? uuidAt(b, f.flowPos) : "",
    type: TYPE_NAMES[f.type] ?? "unknown",
    direction: DIRECTION_NAMES[f.direction] ?? "unknown",
    protocol: f.protocol,
    sourceIp: ipAt(b, f.srcPos, f.srcLen),
    destIp: ipAt(b, f.dstPos, f.dstLen),
    sourcePort: f.conn === 8 ? f.connA : 0,
    destPort: f.conn === 8 ? f.connB : 0,
    icmpType: f.conn === 9 ? f.connA : 0,
    icmpCode: f.conn === 9 ? f.connB : 0,
    rxPackets: f.counters[0]!,
    txPackets: f.counters[1]!,
    rxBytes: f.counters[2]!,
    txBytes: f.counters[3]!,
    sourceResourceId: textAt(b, f.srcResPos, f.srcResLen),
    destResourceId: textAt(b, f.dstResPos, f.dstResLen),
    ruleId: textAt(b, f.rulePos, f.ruleLen),
    numOfStarts: f.counters[4]!,
    numOfEnds: f.counters[5]!,
    numOfDrops: f.counters[6]!,
    windowStart: hasWs ? isoAt(ws) : "",
    windowEnd: hasWe ? isoAt(we) : "",
  };
  return { event, eventId: b.slice(idPos, idPos + 16) };
}

/** Flow fields of the event being decoded (positions into its bytes). */
const FF = {
  flowPos: 0,
  flowLen: 0,
  type: 0,
  rulePos: 0,
  ruleLen: 0,
  direction: 0,
  protocol: 0,
  srcPos: 0,
  srcLen: 0,
  dstPos: 0,
  dstLen: 0,
  conn: 0,
  connA: 0,
  connB: 0,
  counters: ["0", "0", "0", "0", "0", "0", "0"],
  srcResPos: 0,
  srcResLen: 0,
  dstResPos: 0,
  dstResLen: 0,
};

function resetFields(): void {
  const f = FF;
  f.flowLen =
    f.ruleLen =
    f.srcLen =
    f.dstLen =
    f.srcResLen =
    f.dstResLen =
      0;
  f.type =
    f.direction =
    f.protocol =
    f.conn =
    f.connA =
    f.connB =
      0;
  f.counters = ["0", "0", "0", "0", "0", "0", "0"];
}

/** Counter index of FlowFields fields 10-13 and 16-18. */
const COUNTER_INDEX: (number | undefined)[] = [];
[10, 11, 12, 13, 16, 17, 18].forEach((field, i) => COUNTER_INDEX[field] = i);

/** Decodes `FlowFields` in `[pos, end)` into {@linkcode FF} (as `readFlowFields`). */
function flowFieldsAt(b: Uint8Array, pos: number, end: number): void {
  resetFields();
  const f = FF;
  while (pos < end) {
    const key = keyAt(b, pos, end);
    pos = vPos;
    const field = key >>> 3;
    switch (field) {
      case 1:
      case 3:
      case 6:
      case 7:
      case 14:
      case 15: {
        wireCheck(key, 2);
        const at = lengthAt(b, pos, end);
        const n = vLo;
        pos = at + n;
        if (field === 1) {
          f.flowPos = at;
          f.flowLen = n;
        } else if (field === 3) {
          f.rulePos = at;
          f.ruleLen = n;
        } else if (field === 6) {
          f.srcPos = at;
          f.srcLen = n;
        } else if (field === 7) {
          f.dstPos = at;
          f.dstLen = n;
        } else if (field === 14) {
          f.srcResPos = at;
          f.srcResLen = n;
        } else {
          f.dstResPos = at;
          f.dstResLen = n;
        }
        break;
      }
      case 2:
      case 4:
      case 5:
        wireCheck(key, 0);
        varintAt(b, pos, end);
        pos = vPos;
        if (field === 2) f.type = u32Last();
        else if (field === 4) f.direction = u32Last();
        else f.protocol = u32Last();
        break;
      case 8:
      case 9: {
        wireCheck(key, 2);
        const at = lengthAt(b, pos, end);
        pos = at + vLo;
        // The two uint32 fields of `PortInfo` / `ICMPInfo`.
        varintPairAt(b, at, pos);
        f.conn = field;
        f.connA = u32Of(v1Lo, v1Hi);
        f.connB = u32Of(v2Lo, v2Hi);
        break;
      }
      case 10:
      case 11:
      case 12:
      case 13:
      case 16:
      case 17:
      case 18:
        wireCheck(key, 0);
        varintAt(b, pos, end);
        pos = vPos;
        f.counters[COUNTER_INDEX[field]!] = u64TextLast();
        break;
      default:
        pos = skipAt(b, pos, end, key & 7);
    }
  }
}
