/**
 * A tiny, strict IPFIX (RFC 7011) message parser for tests. It deliberately shares no code or
 * constants with lib/ipfix*.ts: element IDs and types are written out here again.
 */

import { formatIp } from "../../lib/net.ts";

export interface FieldSpec {
  id: number;
  length: number;
  enterprise?: number;
}

export interface ParsedTemplate {
  id: number;
  /** 0 for a plain template. */
  scopeCount: number;
  fields: FieldSpec[];
}

/**
 * Field values keyed by IANA-ish name ("reverse" prefix for PEN 29305; `ruleId` for element 1 of
 * PEN 32473, a zero-padded UTF-8 string).
 */
export type RecordValues = Record<string, bigint | number | string>;

export interface ParsedRecord {
  templateId: number;
  values: RecordValues;
  /** The record's raw bytes. */
  raw: Uint8Array;
}

export interface ParsedSet {
  id: number;
  length: number;
  /** Bytes after the last record (or template) up to the set end. */
  padding: number;
  templates: ParsedTemplate[];
  records: ParsedRecord[];
}

export interface ParsedMessage {
  version: number;
  length: number;
  exportTime: number;
  sequence: number;
  domain: number;
  sets: ParsedSet[];
}

const NAMES: Record<number, string> = {
  1: "octetDeltaCount",
  2: "packetDeltaCount",
  4: "protocolIdentifier",
  7: "sourceTransportPort",
  8: "sourceIPv4Address",
  11: "destinationTransportPort",
  12: "destinationIPv4Address",
  27: "sourceIPv6Address",
  28: "destinationIPv6Address",
  32: "icmpTypeCodeIPv4",
  40: "exportedOctetTotalCount",
  41: "exportedMessageTotalCount",
  42: "exportedFlowRecordTotalCount",
  61: "flowDirection",
  89: "forwardingStatus",
  136: "flowEndReason",
  139: "icmpTypeCodeIPv6",
  148: "flowId",
  149: "observationDomainId",
  152: "flowStartMilliseconds",
  153: "flowEndMilliseconds",
  160: "systemInitTimeMilliseconds",
  164: "ignoredPacketTotalCount",
  166: "notSentFlowTotalCount",
  225: "postNATSourceIPv4Address",
  226: "postNATDestinationIPv4Address",
  227: "postNAPTSourceTransportPort",
  228: "postNAPTDestinationTransportPort",
  231: "initiatorOctets",
  232: "responderOctets",
  233: "firewallEvent",
  281: "postNATSourceIPv6Address",
  282: "postNATDestinationIPv6Address",
  298: "initiatorPackets",
  299: "responderPackets",
};

const ADDRESSES = new Set([8, 12, 27, 28, 225, 226, 281, 282]);

/** The drop templates' rule ID: element 1 of PEN 32473, a zero-padded UTF-8 string. */
function isRuleId(f: FieldSpec): boolean {
  return f.enterprise === 32473 && f.id === 1;
}

/** The data template IDs of drop records. */
export const DROP_TEMPLATE_IDS: ReadonlySet<number> = new Set([273, 274, 275, 276]);

/** Unknown elements are an error: the encoder must send only the ones listed here. */
function fieldName(f: FieldSpec): string {
  if (isRuleId(f)) return "ruleId";
  const base = NAMES[f.id] ?? fail(`unknown element ${f.id}`);
  if (f.enterprise === undefined) return base;
  if (f.enterprise === 29305) return "reverse" + base[0]!.toUpperCase() + base.slice(1);
  fail(`unknown element ${f.id} of PEN ${f.enterprise}`);
}

/** Templates known to the collector, per observation domain. */
export class TemplateCache {
  readonly byDomain = new Map<number, Map<number, ParsedTemplate>>();

  get(domain: number, id: number): ParsedTemplate | undefined {
    return this.byDomain.get(domain)?.get(id);
  }

  set(domain: number, t: ParsedTemplate): void {
    let m = this.byDomain.get(domain);
    if (m === undefined) this.byDomain.set(domain, m = new Map());
    m.set(t.id, t);
  }
}

function fail(msg: string): never {
  throw new Error(`IPFIX parse error: ${msg}`);
}

function recordLength(t: ParsedTemplate): number {
  return t.fields.reduce((n, f) => n + f.length, 0);
}

function readSpecifiers(
  v: DataView,
  off: number,
  end: number,
  count: number,
): [FieldSpec[], number] {
  const fields: FieldSpec[] = [];
  for (let i = 0; i < count; i++) {
    if (off + 4 > end) fail("field specifier overruns its set");
    const raw = v.getUint16(off);
    const length = v.getUint16(off + 2);
    off += 4;
    if (length === 0 || length === 0xffff) fail(`unsupported field length ${length}`);
    if (raw & 0x8000) {
      if (off + 4 > end) fail("enterprise number overruns its set");
      fields.push({ id: raw & 0x7fff, length, enterprise: v.getUint32(off) });
      off += 4;
    } else {
      fields.push({ id: raw, length });
    }
  }
  return [fields, off];
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeValue(
  v: DataView,
  bytes: Uint8Array,
  off: number,
  f: FieldSpec,
): bigint | number | string {
  if (isRuleId(f)) {
    const raw = bytes.subarray(off, off + f.length);
    const end = raw.indexOf(0) < 0 ? raw.length : raw.indexOf(0);
    if (!raw.subarray(end).every((b) => b === 0)) fail("bytes after the rule ID's zero padding");
    return utf8.decode(raw.subarray(0, end));
  }
  if (f.enterprise === undefined && ADDRESSES.has(f.id)) {
    if (f.length !== 4 && f.length !== 16) fail(`address of length ${f.length}`);
    return formatIp(bytes.slice(off, off + f.length));
  }
  switch (f.length) {
    case 1:
      return v.getUint8(off);
    case 2:
      return v.getUint16(off);
    case 4:
      return v.getUint32(off);
    case 8:
      return v.getBigUint64(off);
    default:
      fail(`cannot decode a ${f.length}-byte field`);
  }
}

/**
 * Parses one message, learning templates into `cache` and decoding data sets whose template is
 * known (unknown ones are an error: the encoder must send templates first).
 */
export function parseMessage(bytes: Uint8Array, cache: TemplateCache): ParsedMessage {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 16) fail("message shorter than its header");
  const msg: ParsedMessage = {
    version: v.getUint16(0),
    length: v.getUint16(2),
    exportTime: v.getUint32(4),
    sequence: v.getUint32(8),
    domain: v.getUint32(12),
    sets: [],
  };
  if (msg.version !== 10) fail(`version ${msg.version}`);
  if (msg.length !== bytes.length) fail(`header length ${msg.length} != ${bytes.length} bytes`);
  let off = 16;
  while (off < bytes.length) {
    if (off + 4 > bytes.length) fail("set header overruns the message");
    const id = v.getUint16(off);
    const length = v.getUint16(off + 2);
    if (length < 4) fail(`set length ${length}`);
    const end = off + length;
    if (end > bytes.length) fail(`set of ${length} bytes overruns the message`);
    const set: ParsedSet = { id, length, padding: 0, templates: [], records: [] };
    let p = off + 4;
    if (id === 2 || id === 3) {
      const header = id === 2 ? 4 : 6;
      while (end - p >= 4) {
        const tid = v.getUint16(p);
        const count = v.getUint16(p + 2);
        if (tid < 256) fail(`template ID ${tid}`);
        if (count === 0) fail("template withdrawal not expected");
        if (p + header > end) fail("options template header overruns its set");
        const scopeCount = id === 3 ? v.getUint16(p + 4) : 0;
        if (id === 3 && (scopeCount === 0 || scopeCount > count)) fail(`scope count ${scopeCount}`);
        const [fields, next] = readSpecifiers(v, p + header, end, count);
        const t: ParsedTemplate = { id: tid, scopeCount, fields };
        set.templates.push(t);
        cache.set(msg.domain, t);
        p = next;
      }
    } else if (id >= 256) {
      const t = cache.get(msg.domain, id) ?? fail(`data set ${id} before its template`);
      const n = recordLength(t);
      while (end - p >= n) {
        const values: RecordValues = {};
        let q = p;
        for (const f of t.fields) {
          const name = fieldName(f);
          if (name in values) fail(`duplicate field ${name}`);
          values[name] = decodeValue(v, bytes, q, f);
          q += f.length;
        }
        set.records.push({ templateId: id, values, raw: bytes.slice(p, q) });
        p = q;
      }
      if (set.records.length === 0) fail(`empty data set ${id}`);
    } else {
      fail(`set ID ${id}`);
    }
    set.padding = end - p;
    // The encoder pads to a 4-byte boundary: never 4 bytes or more.
    if (set.padding >= 4) fail(`${set.padding} bytes of padding`);
    for (let i = p; i < end; i++) if (bytes[i] !== 0) fail("non-zero padding");
    msg.sets.push(set);
    off = end;
  }
  return msg;
}

/** Parses messages in order with one cache; returns them and all data records. */
export function parseStream(
  messages: readonly Uint8Array[],
  cache: TemplateCache = new TemplateCache(),
): { messages: ParsedMessage[]; records: ParsedRecord[] } {
  const parsed = messages.map((m) => parseMessage(m, cache));
  return { messages: parsed, records: parsed.flatMap((m) => m.sets.flatMap((s) => s.records)) };
}

/**
 * As {@linkcode parseStream}, with the drop records apart: `records` holds the others, `drops`
 * the values of the drop records.
 */
export function parseWithDrops(
  messages: readonly Uint8Array[],
  cache: TemplateCache = new TemplateCache(),
): { messages: ParsedMessage[]; records: ParsedRecord[]; drops: RecordValues[] } {
  const parsed = parseStream(messages, cache);
  return {
    messages: parsed.messages,
    records: parsed.records.filter((r) => !DROP_TEMPLATE_IDS.has(r.templateId)),
    drops: parsed.records.filter((r) => DROP_TEMPLATE_IDS.has(r.templateId)).map((r) => r.values),
  };
}
