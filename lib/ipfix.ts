/**
 * IPFIX (RFC 7011) export encoding: turns {@linkcode IpfixFlow} (biflow) and {@linkcode IpfixDrop}
 * (drop) records into IPFIX messages for nfcapd, pmacct, goflow2 and friends. Pure: no sockets, no
 * clocks (callers pass `nowMs`).
 *
 * Decisions, in one place:
 *
 * - **Counters** are 64-bit, in one of two encodings per exporter: `rfc5103` (default)
 *   octetDeltaCount/packetDeltaCount for the original direction and their RFC 5103 reverse
 *   elements (enterprise bit, PEN 29305, same element IDs) for the reply direction; or
 *   `initiator`: initiatorOctets/responderOctets (231/232) and initiatorPackets/responderPackets
 *   (298/299). Either way the values are what the {@linkcode IpfixFlow} holds (deltas since the
 *   previous report of the flow) and count whole IP packets as conntrack does, although IANA
 *   describes 231/232 as layer 4 payload bytes. nfdump maps the reverse PEN counters and 298/299
 *   but not 231/232; pmacct maps 231/232 but not the reverse PEN.
 * - **Templates**: 8 data templates per encoding, IPv4/IPv6 × ports/ICMP × without/with NAT, with
 *   stable IDs (see {@linkcode dataTemplateId}: 256–263 rfc5103, 264–271 initiator), plus the
 *   statistics options template 272. NAT fields live in separate templates, used only for records
 *   with `postNat`, so un-NATed flows cost nothing extra and collectors never show a fake
 *   translation. Other protocols (GRE, ESP, ...) use the ports templates with ports 0.
 * - **Drop templates** 273–276 (IPv4/IPv6 × ports/ICMP, the same for both encodings; see
 *   {@linkcode dropTemplates}) carry packets a firewall rule dropped: firewallEvent 233 = 3
 *   (flow denied), forwardingStatus 89 = 0x81 (dropped, ACL deny), one time for start and end,
 *   octetDeltaCount/packetDeltaCount of the dropped packets, and the rule ID as a fixed-length
 *   string in an enterprise-specific element ({@linkcode RULE_ID_PEN} explains the choice). They
 *   are announced with the first drop record (whose message carries all templates) and refreshed
 *   with the others from then on, so an exporter that never sees a drop never sends them.
 * - **Template refresh**: all templates of the encoding (and the options template) go out in the
 *   first message (and with the first drop record), then again when `templateRefreshMs` has passed
 *   or `templateRefreshPackets` messages have been built since the last time, and after
 *   {@linkcode IpfixEncoder.resetTemplates}.
 *   Template records precede data records; when they do not all fit in one message they spill
 *   into the next ones (a record is never split).
 * - **Sequence numbers** count Data Records sent before the message in this observation domain,
 *   modulo 2^32, as RFC 7011 §3.1 says (not messages, as NetFlow v9 does). Options data records
 *   are Data Records too and are counted; nfdump counts only flow records and would report one
 *   sequence failure per statistics message, so `countOptionsRecords: false` is offered.
 * - **Padding**: by default every set is padded with zero bytes to a 4-byte boundary (RFC 7011
 *   §3.3.1 allows it; padding is always shorter than any record). `padding: false` turns it off.
 * - **Order**: within one {@linkcode IpfixEncoder.encode} call, records are grouped by template
 *   (in template-ID order, so drops come after flows) to save set headers; within a template the
 *   input order is kept.
 * - **Statistics** (one options record, scope observationDomainId): systemInitTimeMilliseconds,
 *   exportedMessageTotalCount, exportedOctetTotalCount, exportedFlowRecordTotalCount (these three
 *   exclude the message carrying them, as IANA defines; drop records count as flow records),
 *   notSentFlowTotalCount (records dropped before sending) and ignoredPacketTotalCount, which
 *   carries **conntrack events lost** (kernel drops/ENOBUFS): IANA has no element for lost
 *   metering events, 164 is the Metering Process reliability element of RFC 7011 §4.2, and an
 *   enterprise element would need a PEN netbird-ct does not have. Its unit is events, not
 *   packets.
 * - **flowDirection** 0 ingress, 1 egress, 0xff unknown; **flowEndReason** per
 *   {@linkcode IpfixEndReason}.
 *
 * @module
 */

import {
  type CounterEncoding,
  type DataTemplate,
  dataTemplateId,
  dataTemplates,
  type DropTemplate,
  dropTemplateId,
  dropTemplates,
  IPFIX_VERSION,
  MAX_MESSAGE_LENGTH,
  MESSAGE_HEADER_LENGTH,
  type OptionsTemplate,
  SET_HEADER_LENGTH,
  SetId,
  STATS_TEMPLATE,
} from "./ipfix_elements.ts";
import type { IpfixDrop, IpfixFlow, IpfixRecord } from "./ipfix_flow.ts";
import {
  checkNow,
  IpfixError,
  optionsTemplateRecord,
  templateRecord,
  u64,
  writeDrop,
  writeFlow,
} from "./ipfix_wire.ts";

export * from "./ipfix_elements.ts";
export * from "./ipfix_flow.ts";
export { IpfixError } from "./ipfix_wire.ts";

/** Options of an {@linkcode IpfixEncoder}. */
export interface IpfixEncoderOptions {
  /** Observation Domain ID in every header and in the statistics scope. Default 0. */
  observationDomainId?: number;
  /** Counter encoding. Default `rfc5103`. */
  counters?: CounterEncoding;
  /** Largest message in bytes (the UDP payload). Default 1400. */
  mtu?: number;
  /** Re-send templates when this much time has passed (ms). Default 60 000; `Infinity`: never. */
  templateRefreshMs?: number;
  /** Re-send templates every this many messages. Default 100; `Infinity`: never. */
  templateRefreshPackets?: number;
  /** Pad every set to a 4-byte boundary. Default `true`. */
  padding?: boolean;
  /** Count options data records in the sequence number (RFC 7011). Default `true`. */
  countOptionsRecords?: boolean;
}

/** Exporter statistics for {@linkcode IpfixEncoder.encodeStats}. */
export interface IpfixStats {
  /** Flow records generated but never sent (queue overflow, send errors). */
  notSentFlowRecords: number | bigint;
  /** Conntrack events the kernel dropped before netbird-ct read them. */
  lostEvents: number | bigint;
  /** Messages sent before this one; default: messages this encoder built. */
  exportedMessages?: number | bigint;
  /** Bytes of messages sent before this one; default: bytes this encoder built. */
  exportedOctets?: number | bigint;
  /** Flow records sent before this message; default: flow records this encoder built. */
  exportedFlowRecords?: number | bigint;
  /** When the exporter (re)started, ms; default: the first `nowMs` this encoder was given. */
  systemInitTimeMs?: number;
}

/** Default message size: fits a 1500-byte MTU minus IPv6 and UDP headers. */
export const DEFAULT_MTU = 1400;
/** Default template refresh interval (ms). */
export const DEFAULT_TEMPLATE_REFRESH_MS = 60_000;
/** Default template refresh interval (messages). */
export const DEFAULT_TEMPLATE_REFRESH_PACKETS = 100;

const TWO_32 = 0x1_0000_0000;

/** A template record serialized once, with the set it goes in. */
interface TemplateBytes {
  readonly setId: number;
  readonly bytes: Uint8Array;
}

/** A record waiting to be written: a flow or a drop with its template, or the statistics record. */
type Pending =
  | { readonly template: DataTemplate; readonly flow: IpfixFlow }
  | { readonly template: DropTemplate; readonly drop: IpfixDrop }
  | { readonly template: OptionsTemplate; readonly stats: IpfixStats };

/** Encoder state that one call changes; copied, changed, and committed only on success. */
interface State {
  sequence: number;
  messages: number;
  octets: number;
  flowRecords: number;
  lastTemplateMs: number | undefined;
  sinceTemplates: number;
  forced: boolean;
  initMs: number | undefined;
  /** The drop templates were announced: they are part of every template refresh. */
  drops: boolean;
}

/**
 * Builds IPFIX messages for one observation domain and one collector. Stateful: it keeps the
 * sequence number, the template refresh schedule and the exporter counters. Every method is
 * atomic: when it throws, the state is unchanged.
 *
 * @example Usage
 * ```ts
 * import { IpfixEncoder } from "./ipfix.ts";
 * const encoder = new IpfixEncoder({ observationDomainId: 1 });
 * const [message] = encoder.encode([{
 *   family: 4, source: "100.64.0.1", destination: "100.64.0.2", protocol: 6,
 *   sourcePort: 40000, destinationPort: 22, icmpType: 0, icmpCode: 0,
 *   originalPackets: 10n, originalBytes: 1000n, replyPackets: 8n, replyBytes: 4000n,
 *   startMs: 1_700_000_000_000, endMs: 1_700_000_005_000,
 *   direction: "egress", endReason: "end", flowId: 1n,
 * }], 1_700_000_005_100);
 * if (message === undefined || message[1] !== 10) throw new Error("expected version 10");
 * ```
 */
export class IpfixEncoder {
  #domain: number;
  #counters: CounterEncoding;
  #mtu: number;
  #refreshMs: number;
  #refreshPackets: number;
  #padding: boolean;
  #countOptions: boolean;
  #templates: readonly DataTemplate[];
  #dropTemplates: readonly DropTemplate[] = dropTemplates();
  /** Flow data templates and the options template. */
  #templateBytes: readonly TemplateBytes[];
  /** The same plus the drop templates (after the flow templates, in the same set). */
  #allTemplateBytes: readonly TemplateBytes[];
  #state: State = {
    sequence: 0,
    messages: 0,
    octets: 0,
    flowRecords: 0,
    lastTemplateMs: undefined,
    sinceTemplates: 0,
    forced: true,
    initMs: undefined,
    drops: false,
  };

  /**
   * Creates an encoder.
   *
   * @param options Domain, counter encoding, MTU, refresh schedule, padding.
   * @throws {IpfixError} When an option is out of range, or the MTU cannot hold the largest
   *   template or data record in a message of its own.
   */
  constructor(options: IpfixEncoderOptions = {}) {
    const domain = options.observationDomainId ?? 0;
    if (!Number.isInteger(domain) || domain < 0 || domain >= TWO_32) {
      throw new IpfixError(`Cannot use observation domain ${domain}: must be 0-4294967295`);
    }
    const counters = options.counters ?? "rfc5103";
    if (counters !== "rfc5103" && counters !== "initiator") {
      throw new IpfixError(`Cannot use counter encoding "${counters}": use rfc5103 or initiator`);
    }
    const refreshMs = options.templateRefreshMs ?? DEFAULT_TEMPLATE_REFRESH_MS;
    if (!(refreshMs > 0)) {
      throw new IpfixError(`Cannot refresh templates every ${refreshMs} ms: must be positive`);
    }
    const refreshPackets = options.templateRefreshPackets ?? DEFAULT_TEMPLATE_REFRESH_PACKETS;
    if (
      !(refreshPackets >= 1) || (refreshPackets !== Infinity && !Number.isInteger(refreshPackets))
    ) {
      throw new IpfixError(
        `Cannot refresh templates every ${refreshPackets} messages: must be a positive integer`,
      );
    }
    this.#domain = domain;
    this.#counters = counters;
    this.#refreshMs = refreshMs;
    this.#refreshPackets = refreshPackets;
    this.#padding = options.padding ?? true;
    this.#countOptions = options.countOptionsRecords ?? true;
    this.#templates = dataTemplates(counters);
    const flowTemplates = this.#templates.map((t) => ({
      setId: SetId.TEMPLATE,
      bytes: templateRecord(t),
    }));
    const stats = { setId: SetId.OPTIONS_TEMPLATE, bytes: optionsTemplateRecord(STATS_TEMPLATE) };
    this.#templateBytes = [...flowTemplates, stats];
    this.#allTemplateBytes = [
      ...flowTemplates,
      ...this.#dropTemplates.map((t) => ({ setId: SetId.TEMPLATE, bytes: templateRecord(t) })),
      stats,
    ];
    const mtu = options.mtu ?? DEFAULT_MTU;
    const needed = this.minimumMtu();
    if (!Number.isInteger(mtu) || mtu > MAX_MESSAGE_LENGTH) {
      throw new IpfixError(`Cannot use an MTU of ${mtu} bytes: must be an integer up to 65535`);
    }
    if (mtu < needed) {
      throw new IpfixError(
        `Cannot use an MTU of ${mtu} bytes: the largest template or record needs ${needed}`,
      );
    }
    this.#mtu = mtu;
  }

  /** Observation Domain ID. */
  get observationDomainId(): number {
    return this.#domain;
  }

  /** Counter encoding. */
  get counters(): CounterEncoding {
    return this.#counters;
  }

  /** Largest message in bytes. */
  get mtu(): number {
    return this.#mtu;
  }

  /** Sequence number the next message will carry. */
  get sequence(): number {
    return this.#state.sequence;
  }

  /** Messages built so far. */
  get messages(): number {
    return this.#state.messages;
  }

  /** Bytes of all messages built so far. */
  get octets(): number {
    return this.#state.octets;
  }

  /** Data records (flows and drops) built so far; options records excluded. */
  get flowRecords(): number {
    return this.#state.flowRecords;
  }

  /** The data templates of this encoder's counter encoding. */
  get templates(): readonly DataTemplate[] {
    return this.#templates;
  }

  /** The drop templates (273–276). */
  get dropTemplates(): readonly DropTemplate[] {
    return this.#dropTemplates;
  }

  /** Whether the drop templates were announced (a drop record was encoded). */
  get dropsAnnounced(): boolean {
    return this.#state.drops;
  }

  /**
   * The smallest MTU this encoder's templates and records fit in (a message holding only the
   * largest template record, or only the largest data record).
   *
   * @returns Bytes.
   */
  minimumMtu(): number {
    let largest = 0;
    for (const t of this.#allTemplateBytes) largest = Math.max(largest, t.bytes.length);
    for (const t of [...this.#templates, ...this.#dropTemplates]) {
      largest = Math.max(largest, t.recordLength);
    }
    largest = Math.max(largest, STATS_TEMPLATE.recordLength);
    return MESSAGE_HEADER_LENGTH + SET_HEADER_LENGTH + this.#pad(largest);
  }

  /**
   * The data template a record is encoded with.
   *
   * @param flow The record.
   * @returns The template.
   * @throws {IpfixError} When the family is neither 4 nor 6.
   */
  templateFor(flow: IpfixFlow): DataTemplate {
    if (flow.family !== 4 && flow.family !== 6) {
      throw new IpfixError(`Cannot encode flow: address family ${flow.family}`);
    }
    const icmp = flow.protocol === 1 || flow.protocol === 58;
    const id = dataTemplateId(this.#counters, flow.family, icmp, flow.postNat !== undefined);
    return this.#templates[id & 7]!;
  }

  /**
   * The drop template a drop record is encoded with.
   *
   * @param drop The record.
   * @returns The template.
   * @throws {IpfixError} When the family is neither 4 nor 6.
   */
  dropTemplateFor(drop: IpfixDrop): DropTemplate {
    if (drop.family !== 4 && drop.family !== 6) {
      throw new IpfixError(`Cannot encode drop: address family ${drop.family}`);
    }
    const icmp = drop.protocol === 1 || drop.protocol === 58;
    return this.#dropTemplates[dropTemplateId(drop.family, icmp) - this.#dropTemplates[0]!.id]!;
  }

  /**
   * Encodes flow and drop records into messages of at most `mtu` bytes, with the templates first
   * when they are due (and when this is the first drop record). No record is split across
   * messages.
   *
   * @param records The records; none yields no message (templates stay due).
   * @param nowMs Current time, ms since the epoch (export time and template schedule).
   * @returns The messages, in sending order.
   * @throws {IpfixError} When a record cannot be encoded (bad address, port, counter...).
   */
  encode(records: readonly IpfixRecord[], nowMs: number): Uint8Array[] {
    checkNow(nowMs);
    if (records.length === 0) return [];
    const groups: IpfixFlow[][] = this.#templates.map(() => []);
    const dropGroups: IpfixDrop[][] = this.#dropTemplates.map(() => []);
    const firstDrop = this.#dropTemplates[0]!.id;
    for (const r of records) {
      if (r.kind === "drop") dropGroups[this.dropTemplateFor(r).id - firstDrop]!.push(r);
      else groups[this.templateFor(r).id & 7]!.push(r);
    }
    const pending: Pending[] = [];
    groups.forEach((group, i) => {
      const template = this.#templates[i]!;
      for (const flow of group) pending.push({ template, flow });
    });
    dropGroups.forEach((group, i) => {
      const template = this.#dropTemplates[i]!;
      for (const drop of group) pending.push({ template, drop });
    });
    return this.#build(pending, nowMs, false);
  }

  /**
   * Encodes all templates now, in messages of their own (e.g. right after a TCP connect, or to
   * refresh templates of an idle UDP exporter). Restarts the refresh schedule.
   *
   * @param nowMs Current time, ms since the epoch.
   * @returns The messages.
   */
  encodeTemplates(nowMs: number): Uint8Array[] {
    checkNow(nowMs);
    return this.#build([], nowMs, true);
  }

  /**
   * Encodes one exporter-statistics options record (with the templates first when due).
   *
   * @param stats The counters; omitted exported* values come from this encoder.
   * @param nowMs Current time, ms since the epoch.
   * @returns The messages (one, unless templates spill over).
   * @throws {IpfixError} When a counter is negative or above 2^64 - 1.
   */
  encodeStats(stats: IpfixStats, nowMs: number): Uint8Array[] {
    checkNow(nowMs);
    return this.#build([{ template: STATS_TEMPLATE, stats }], nowMs, false);
  }

  /**
   * Makes the next message carry all templates (e.g. after a TCP reconnect: a new transport
   * session knows no templates).
   */
  resetTemplates(): void {
    this.#state.forced = true;
  }

  #pad(n: number): number {
    return this.#padding ? (n + 3) & ~3 : n;
  }

  #due(st: State, nowMs: number): boolean {
    const last = st.lastTemplateMs;
    return st.forced || last === undefined || nowMs < last || nowMs - last >= this.#refreshMs ||
      st.sinceTemplates >= this.#refreshPackets;
  }

  #build(pending: readonly Pending[], nowMs: number, force: boolean): Uint8Array[] {
    const st: State = { ...this.#state };
    if (force) st.forced = true;
    if (!st.drops && pending.some((p) => "drop" in p)) {
      // The first drop record: announce the drop templates, with all the others, before it.
      st.drops = true;
      st.forced = true;
    }
    st.initMs ??= nowMs;
    const out: Uint8Array[] = [];
    const mtu = this.#mtu;
    const exportTime = Math.floor(nowMs / 1000) % TWO_32;
    let queue: readonly TemplateBytes[] = [];
    let q = 0;
    let buf = new Uint8Array(0);
    let view = new DataView(buf.buffer);
    let off = 0;
    let setStart = -1;
    let setId = -1;
    let flowRecords = 0;
    let optionRecords = 0;
    let open = false;

    const closeSet = (): void => {
      if (setStart < 0) return;
      off = this.#pad(off);
      view.setUint16(setStart + 2, off - setStart);
      setStart = -1;
      setId = -1;
    };
    const openMessage = (): void => {
      buf = new Uint8Array(mtu);
      view = new DataView(buf.buffer);
      off = MESSAGE_HEADER_LENGTH;
      flowRecords = 0;
      optionRecords = 0;
      open = true;
      if (q === queue.length && this.#due(st, nowMs)) {
        queue = st.drops ? this.#allTemplateBytes : this.#templateBytes;
        q = 0;
        st.forced = false;
        st.lastTemplateMs = nowMs;
        st.sinceTemplates = 0;
      }
    };
    const closeMessage = (): void => {
      closeSet();
      view.setUint16(0, IPFIX_VERSION);
      view.setUint16(2, off);
      view.setUint32(4, exportTime);
      view.setUint32(8, st.sequence);
      view.setUint32(12, this.#domain);
      out.push(buf.slice(0, off));
      st.sequence = (st.sequence + flowRecords + (this.#countOptions ? optionRecords : 0)) %
        TWO_32;
      st.messages++;
      st.octets += off;
      st.flowRecords += flowRecords;
      st.sinceTemplates++;
      open = false;
    };
    /** Reserves room for a record of `length` bytes in set `id`; false if it does not fit. */
    const reserve = (id: number, length: number): boolean => {
      const start = setId === id ? off : this.#pad(off) + SET_HEADER_LENGTH;
      if (this.#pad(start + length) > mtu) return false;
      if (setId !== id) {
        closeSet();
        setStart = off;
        setId = id;
        view.setUint16(off, id);
        off += SET_HEADER_LENGTH;
      }
      return true;
    };

    openMessage();
    let i = 0;
    while (q < queue.length || i < pending.length) {
      if (q < queue.length) {
        const t = queue[q]!;
        if (!reserve(t.setId, t.bytes.length)) {
          closeMessage();
          openMessage();
          continue;
        }
        buf.set(t.bytes, off);
        off += t.bytes.length;
        q++;
        continue;
      }
      const p = pending[i]!;
      if (!reserve(p.template.id, p.template.recordLength)) {
        closeMessage();
        openMessage();
        continue;
      }
      if ("flow" in p) {
        off = writeFlow(view, off, p.template, p.flow);
        flowRecords++;
      } else if ("drop" in p) {
        off = writeDrop(view, off, p.template, p.drop);
        flowRecords++;
      } else {
        off = this.#writeStats(view, off, p.stats, st);
        optionRecords++;
      }
      i++;
    }
    if (open && off > MESSAGE_HEADER_LENGTH) closeMessage();
    this.#state = st;
    return out;
  }

  #writeStats(view: DataView, off: number, stats: IpfixStats, st: State): number {
    view.setUint32(off, this.#domain);
    off += 4;
    const values = [
      stats.systemInitTimeMs ?? st.initMs ?? 0,
      stats.exportedMessages ?? st.messages,
      stats.exportedOctets ?? st.octets,
      stats.exportedFlowRecords ?? st.flowRecords,
      stats.notSentFlowRecords,
      stats.lostEvents,
    ];
    const fields = STATS_TEMPLATE.fields;
    values.forEach((v, k) => {
      view.setBigUint64(off, u64(v, fields[k]!));
      off += 8;
    });
    return off;
  }
}
