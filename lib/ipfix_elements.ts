/**
 * IPFIX (RFC 7011) constants, the information elements netbird-ct exports, and the fixed
 * template layouts built from them. Plain data: nothing here encodes bytes.
 *
 * Element IDs and lengths follow the IANA registry
 * (https://www.iana.org/assignments/ipfix/ipfix.xhtml); reverse elements follow RFC 5103.
 *
 * @module
 */

/** IPFIX message header version (RFC 7011 §3.1). */
export const IPFIX_VERSION = 10;

/** Length of the IPFIX message header in bytes. */
export const MESSAGE_HEADER_LENGTH = 16;

/** Length of a set header (set ID + length) in bytes. */
export const SET_HEADER_LENGTH = 4;

/** Largest possible IPFIX message: the header's length field is 16 bits. */
export const MAX_MESSAGE_LENGTH = 65535;

/** Set IDs (RFC 7011 §3.3.2). */
export const SetId = {
  /** Template Set. */
  TEMPLATE: 2,
  /** Options Template Set. */
  OPTIONS_TEMPLATE: 3,
  /** Lowest Data Set ID; a Data Set's ID is the ID of its template. */
  MIN_DATA: 256,
} as const;

/** IANA private enterprise number for RFC 5103 reverse information elements. */
export const REVERSE_PEN = 29305;

/**
 * Private enterprise number of the rule ID element ({@linkcode IE}`.ruleId`) of drop records.
 *
 * IANA defines no information element for the firewall rule that denied a flow: its string
 * elements name interfaces, applications, VRFs, NAT pools, selectors, users and the like, and
 * Cisco's ACL IDs (NSEL 33000/33001) exist in NetFlow v9 only. An enterprise-specific element
 * needs a PEN, and netbird-ct has none of its own; rather than borrow a vendor's number (and
 * claim its semantics), it uses 32473, the number RFC 5612 reserves for documentation, which no
 * vendor's elements use. Collectors show the field as an unknown enterprise element. Replace
 * this constant once netbird-ct has a PEN registered with IANA.
 */
export const RULE_ID_PEN = 32473;

/**
 * Bytes of the rule ID field of drop records: a fixed-length, zero-padded UTF-8 string, long
 * enough for a UUID or a NetBird policy ID (20 characters). Longer rule IDs are cut at a character
 * boundary. (Fixed rather than variable length: every record of a template then has the same
 * length, which the encoder and the exporter's record counting rely on.)
 */
export const RULE_ID_LENGTH = 48;

/** One information element as it appears in a field specifier. */
export interface InformationElement {
  /** IANA name (reverse elements: RFC 5103 name). */
  readonly name: string;
  /** Element ID, without the enterprise bit. */
  readonly id: number;
  /** Encoded length in bytes (always the full, non-reduced size here). */
  readonly length: number;
  /** Private enterprise number; present only for enterprise-specific elements. */
  readonly enterprise?: number;
}

/**
 * The information elements netbird-ct uses, by IANA name. All counters use their full 8 bytes
 * (no reduced-size encoding): ulogd's 32-bit counters are a known defect.
 */
export const IE = {
  /** Bytes of the original (initiator → responder) direction, IP headers included. */
  octetDeltaCount: { name: "octetDeltaCount", id: 1, length: 8 },
  /** Packets of the original direction. */
  packetDeltaCount: { name: "packetDeltaCount", id: 2, length: 8 },
  /** IANA protocol number. */
  protocolIdentifier: { name: "protocolIdentifier", id: 4, length: 1 },
  /** Original source port. */
  sourceTransportPort: { name: "sourceTransportPort", id: 7, length: 2 },
  /** Original IPv4 source. */
  sourceIPv4Address: { name: "sourceIPv4Address", id: 8, length: 4 },
  /** Original destination port. */
  destinationTransportPort: { name: "destinationTransportPort", id: 11, length: 2 },
  /** Original IPv4 destination. */
  destinationIPv4Address: { name: "destinationIPv4Address", id: 12, length: 4 },
  /** Original IPv6 source. */
  sourceIPv6Address: { name: "sourceIPv6Address", id: 27, length: 16 },
  /** Original IPv6 destination. */
  destinationIPv6Address: { name: "destinationIPv6Address", id: 28, length: 16 },
  /** ICMP type * 256 + code. */
  icmpTypeCodeIPv4: { name: "icmpTypeCodeIPv4", id: 32, length: 2 },
  /** Exporter statistic: bytes of messages sent before the one carrying the value. */
  exportedOctetTotalCount: { name: "exportedOctetTotalCount", id: 40, length: 8 },
  /** Exporter statistic: messages sent before the one carrying the value. */
  exportedMessageTotalCount: { name: "exportedMessageTotalCount", id: 41, length: 8 },
  /** Exporter statistic: flow records sent before the message carrying the value. */
  exportedFlowRecordTotalCount: { name: "exportedFlowRecordTotalCount", id: 42, length: 8 },
  /** 0 ingress, 1 egress (netbird-ct: 0xff unknown). */
  flowDirection: { name: "flowDirection", id: 61, length: 1 },
  /** RFC 7270: status (2 bits) and reason (6 bits); see {@linkcode ForwardingStatus}. */
  forwardingStatus: { name: "forwardingStatus", id: 89, length: 1 },
  /** Why the record was exported; see {@linkcode FlowEndReason}. */
  flowEndReason: { name: "flowEndReason", id: 136, length: 1 },
  /** ICMPv6 type * 256 + code. */
  icmpTypeCodeIPv6: { name: "icmpTypeCodeIPv6", id: 139, length: 2 },
  /** 64-bit flow identifier. */
  flowId: { name: "flowId", id: 148, length: 8 },
  /** Observation domain; the scope of the statistics options record. */
  observationDomainId: { name: "observationDomainId", id: 149, length: 4 },
  /** Start of the flow, ms since the epoch. */
  flowStartMilliseconds: { name: "flowStartMilliseconds", id: 152, length: 8 },
  /** End of the flow (or of the reported interval), ms since the epoch. */
  flowEndMilliseconds: { name: "flowEndMilliseconds", id: 153, length: 8 },
  /** Exporter statistic: when the exporter (re)started, ms since the epoch. */
  systemInitTimeMilliseconds: { name: "systemInitTimeMilliseconds", id: 160, length: 8 },
  /** Exporter statistic; netbird-ct carries lost conntrack events here (see the encoder docs). */
  ignoredPacketTotalCount: { name: "ignoredPacketTotalCount", id: 164, length: 8 },
  /** Exporter statistic: flow records generated but never sent. */
  notSentFlowTotalCount: { name: "notSentFlowTotalCount", id: 166, length: 8 },
  /** Source after NAT (reply tuple's destination). */
  postNATSourceIPv4Address: { name: "postNATSourceIPv4Address", id: 225, length: 4 },
  /** Destination after NAT (reply tuple's source). */
  postNATDestinationIPv4Address: { name: "postNATDestinationIPv4Address", id: 226, length: 4 },
  /** Source port after NAPT (reply tuple's destination port). */
  postNAPTSourceTransportPort: { name: "postNAPTSourceTransportPort", id: 227, length: 2 },
  /** Destination port after NAPT (reply tuple's source port). */
  postNAPTDestinationTransportPort: {
    name: "postNAPTDestinationTransportPort",
    id: 228,
    length: 2,
  },
  /** Bytes from the initiator (original direction). */
  initiatorOctets: { name: "initiatorOctets", id: 231, length: 8 },
  /** Bytes from the responder (reply direction). */
  responderOctets: { name: "responderOctets", id: 232, length: 8 },
  /** A firewall event; see {@linkcode FirewallEvent}. */
  firewallEvent: { name: "firewallEvent", id: 233, length: 1 },
  /** IPv6 source after NAT. */
  postNATSourceIPv6Address: { name: "postNATSourceIPv6Address", id: 281, length: 16 },
  /** IPv6 destination after NAT. */
  postNATDestinationIPv6Address: { name: "postNATDestinationIPv6Address", id: 282, length: 16 },
  /** Packets from the initiator. */
  initiatorPackets: { name: "initiatorPackets", id: 298, length: 8 },
  /** Packets from the responder. */
  responderPackets: { name: "responderPackets", id: 299, length: 8 },
  /** RFC 5103: bytes of the reply direction (octetDeltaCount with PEN 29305). */
  reverseOctetDeltaCount: {
    name: "reverseOctetDeltaCount",
    id: 1,
    length: 8,
    enterprise: REVERSE_PEN,
  },
  /** RFC 5103: packets of the reply direction (packetDeltaCount with PEN 29305). */
  reversePacketDeltaCount: {
    name: "reversePacketDeltaCount",
    id: 2,
    length: 8,
    enterprise: REVERSE_PEN,
  },
  /**
   * netbird-ct: the rule that denied a dropped packet (`rule_id`), a zero-padded UTF-8 string of
   * {@linkcode RULE_ID_LENGTH} bytes (all zero without a rule ID). Element 1 of
   * {@linkcode RULE_ID_PEN}, which explains the choice.
   */
  ruleId: { name: "ruleId", id: 1, length: RULE_ID_LENGTH, enterprise: RULE_ID_PEN },
} as const satisfies Record<string, InformationElement>;

/** `flowDirection` values. IANA defines 0 and 1 only; 0xff is netbird-ct's "unknown". */
export const FlowDirection = {
  /** 0x00: ingress flow. */
  INGRESS: 0x00,
  /** 0x01: egress flow. */
  EGRESS: 0x01,
  /**
   * Undefined by IANA. Used when the tracker could not tell who initiated the flow; the value
   * ipt-netflow uses for the same case (a field of a fixed template cannot be left out).
   */
  UNKNOWN: 0xff,
} as const;

/** `flowEndReason` values (IANA). */
export const FlowEndReason = {
  /** 0x01: the flow was idle. */
  IDLE_TIMEOUT: 0x01,
  /** 0x02: interim report of a flow that is still active. */
  ACTIVE_TIMEOUT: 0x02,
  /** 0x03: the metering process saw the end of the flow (conntrack DESTROY). */
  END_OF_FLOW: 0x03,
  /** 0x04: an external event ended the flow (exporter shutdown). */
  FORCED_END: 0x04,
  /** 0x05: lack of resources in the metering or exporting process. */
  LACK_OF_RESOURCES: 0x05,
} as const;

/** `firewallEvent` values (IANA). */
export const FirewallEvent = {
  /** 0: ignore (invalid). */
  IGNORE: 0,
  /** 1: flow created. */
  FLOW_CREATED: 1,
  /** 2: flow deleted. */
  FLOW_DELETED: 2,
  /** 3: flow denied: what every drop record reports. */
  FLOW_DENIED: 3,
  /** 4: flow alert. */
  FLOW_ALERT: 4,
  /** 5: flow update. */
  FLOW_UPDATE: 5,
} as const;

/**
 * `forwardingStatus` values netbird-ct uses (RFC 7270 and IANA's "Forwarding Status" registry:
 * the top two bits are the status, 0b10 dropped; the low six bits the reason).
 */
export const ForwardingStatus = {
  /** 0x81 (129): dropped, reason 1 "ACL deny": what every drop record reports. */
  DROPPED_ACL_DENY: 0x81,
} as const;

/** How the two directions' counters are encoded. */
export type CounterEncoding = "rfc5103" | "initiator";

/**
 * What a template field holds, named after `IpfixFlow`'s properties. `icmpTypeCode` is
 * `icmpType * 256 + icmpCode`; the `postNat*` slots come from `IpfixFlow.postNat`.
 */
export type FieldSlot =
  | "source"
  | "destination"
  | "sourcePort"
  | "destinationPort"
  | "icmpTypeCode"
  | "protocol"
  | "direction"
  | "endReason"
  | "startMs"
  | "endMs"
  | "flowId"
  | "originalBytes"
  | "originalPackets"
  | "replyBytes"
  | "replyPackets"
  | "postNatSource"
  | "postNatDestination"
  | "postNatSourcePort"
  | "postNatDestinationPort";

/** One field of a data template: the element and where its value comes from. */
export interface TemplateField {
  /** The element in the field specifier. */
  readonly ie: InformationElement;
  /** The value it carries. */
  readonly slot: FieldSlot;
}

/** A data template: which flows it carries and its field layout. */
export interface DataTemplate {
  /** Template ID (= Data Set ID), 256–271. */
  readonly id: number;
  /** Human-readable name, e.g. `ipv4-ports-nat/rfc5103`. */
  readonly name: string;
  /** Address family of the flows it carries. */
  readonly family: 4 | 6;
  /** ICMP/ICMPv6 flows (type/code) rather than flows with ports. */
  readonly icmp: boolean;
  /** Carries post-NAT fields. */
  readonly nat: boolean;
  /** Counter encoding. */
  readonly counters: CounterEncoding;
  /** Fields in wire order. */
  readonly fields: readonly TemplateField[];
  /** Length of one data record in bytes. */
  readonly recordLength: number;
  /** Length of the template record (field specifiers included) in bytes. */
  readonly templateRecordLength: number;
}

/** An options template: scope fields first, then the rest. */
export interface OptionsTemplate {
  /** Template ID. */
  readonly id: number;
  /** Human-readable name. */
  readonly name: string;
  /** Scope fields in wire order. */
  readonly scope: readonly InformationElement[];
  /** Non-scope fields in wire order. */
  readonly fields: readonly InformationElement[];
  /** Length of one data record in bytes. */
  readonly recordLength: number;
  /** Length of the options template record in bytes (unpadded). */
  readonly templateRecordLength: number;
}

/** Template ID of the exporter-statistics options template. */
export const STATS_TEMPLATE_ID = 272;

/**
 * The exporter-statistics options template (RFC 7011 §4.1's Metering Process Statistics template,
 * scoped by observationDomainId, plus loss counters):
 * observationDomainId (scope), systemInitTimeMilliseconds, exportedMessageTotalCount,
 * exportedOctetTotalCount, exportedFlowRecordTotalCount, notSentFlowTotalCount,
 * ignoredPacketTotalCount (lost conntrack events).
 */
export const STATS_TEMPLATE: OptionsTemplate = optionsTemplate(
  STATS_TEMPLATE_ID,
  "exporter-stats",
  [IE.observationDomainId],
  [
    IE.systemInitTimeMilliseconds,
    IE.exportedMessageTotalCount,
    IE.exportedOctetTotalCount,
    IE.exportedFlowRecordTotalCount,
    IE.notSentFlowTotalCount,
    IE.ignoredPacketTotalCount,
  ],
);

/**
 * Template ID of a data template: `256 | encoding << 3 | nat << 2 | ipv6 << 1 | icmp`, so
 * rfc5103 uses 256–263 and initiator 264–271. Distinct IDs per encoding keep a collector's cached
 * templates from misdecoding records after an exporter switches encodings.
 *
 * @param counters Counter encoding.
 * @param family Address family.
 * @param icmp ICMP (type/code) rather than ports.
 * @param nat With post-NAT fields.
 * @returns The template ID.
 */
export function dataTemplateId(
  counters: CounterEncoding,
  family: 4 | 6,
  icmp: boolean,
  nat: boolean,
): number {
  return 256 | (counters === "initiator" ? 8 : 0) | (nat ? 4 : 0) | (family === 6 ? 2 : 0) |
    (icmp ? 1 : 0);
}

const f = (ie: InformationElement, slot: FieldSlot): TemplateField => ({ ie, slot });

/** What the fields that open every data and drop template hold. */
type TupleSlot = "source" | "destination" | "sourcePort" | "destinationPort" | "icmpTypeCode";

/** One of those fields: a {@linkcode TemplateField} and a {@linkcode DropTemplateField}. */
interface TupleField {
  readonly ie: InformationElement;
  readonly slot: TupleSlot;
}

/**
 * The fields every data and drop template opens with: the addresses of the family, then the
 * ports, or the ICMP type/code for ICMP.
 */
function tupleFields(
  family: 4 | 6,
  icmp: boolean,
): TupleField[] {
  const v6 = family === 6;
  const t = (ie: InformationElement, slot: TupleSlot): TupleField => ({ ie, slot });
  return [
    t(v6 ? IE.sourceIPv6Address : IE.sourceIPv4Address, "source"),
    t(v6 ? IE.destinationIPv6Address : IE.destinationIPv4Address, "destination"),
    ...(icmp ? [t(v6 ? IE.icmpTypeCodeIPv6 : IE.icmpTypeCodeIPv4, "icmpTypeCode")] : [
      t(IE.sourceTransportPort, "sourcePort"),
      t(IE.destinationTransportPort, "destinationPort"),
    ]),
  ];
}

/**
 * The lengths of a template's data record and template record, from its elements in wire order
 * and the bytes of its template record header (4, or 6 for an options template).
 */
function templateLengths(
  elements: readonly InformationElement[],
  header: 4 | 6,
): { recordLength: number; templateRecordLength: number } {
  return {
    recordLength: elements.reduce((n, ie) => n + ie.length, 0),
    templateRecordLength: header + elements.reduce((n, ie) => n + specifierLength(ie), 0),
  };
}

function buildDataTemplate(
  counters: CounterEncoding,
  family: 4 | 6,
  icmp: boolean,
  nat: boolean,
): DataTemplate {
  const v6 = family === 6;
  const fields: TemplateField[] = [
    ...tupleFields(family, icmp),
    f(IE.protocolIdentifier, "protocol"),
    f(IE.flowDirection, "direction"),
    f(IE.flowEndReason, "endReason"),
    f(IE.flowStartMilliseconds, "startMs"),
    f(IE.flowEndMilliseconds, "endMs"),
    f(IE.flowId, "flowId"),
    ...(counters === "rfc5103"
      ? [
        f(IE.octetDeltaCount, "originalBytes"),
        f(IE.packetDeltaCount, "originalPackets"),
        f(IE.reverseOctetDeltaCount, "replyBytes"),
        f(IE.reversePacketDeltaCount, "replyPackets"),
      ]
      : [
        f(IE.initiatorOctets, "originalBytes"),
        f(IE.responderOctets, "replyBytes"),
        f(IE.initiatorPackets, "originalPackets"),
        f(IE.responderPackets, "replyPackets"),
      ]),
  ];
  if (nat) {
    fields.push(
      f(v6 ? IE.postNATSourceIPv6Address : IE.postNATSourceIPv4Address, "postNatSource"),
      f(
        v6 ? IE.postNATDestinationIPv6Address : IE.postNATDestinationIPv4Address,
        "postNatDestination",
      ),
    );
    if (!icmp) {
      fields.push(
        f(IE.postNAPTSourceTransportPort, "postNatSourcePort"),
        f(IE.postNAPTDestinationTransportPort, "postNatDestinationPort"),
      );
    }
  }
  const name = `ipv${family}-${icmp ? "icmp" : "ports"}${nat ? "-nat" : ""}/${counters}`;
  return {
    id: dataTemplateId(counters, family, icmp, nat),
    name,
    family,
    icmp,
    nat,
    counters,
    fields,
    ...templateLengths(fields.map((x) => x.ie), 4),
  };
}

function optionsTemplate(
  id: number,
  name: string,
  scope: readonly InformationElement[],
  fields: readonly InformationElement[],
): OptionsTemplate {
  return { id, name, scope, fields, ...templateLengths([...scope, ...fields], 6) };
}

/**
 * Bytes of one field specifier: 4, or 8 with an enterprise number.
 *
 * @param ie The element.
 * @returns 4 or 8.
 */
export function specifierLength(ie: InformationElement): number {
  return ie.enterprise === undefined ? 4 : 8;
}

function buildAll(counters: CounterEncoding): readonly DataTemplate[] {
  const out: DataTemplate[] = [];
  for (const nat of [false, true]) {
    for (const family of [4, 6] as const) {
      for (const icmp of [false, true]) out.push(buildDataTemplate(counters, family, icmp, nat));
    }
  }
  return Object.freeze(out);
}

const TEMPLATES: Record<CounterEncoding, readonly DataTemplate[]> = {
  rfc5103: buildAll("rfc5103"),
  initiator: buildAll("initiator"),
};

/**
 * The eight data templates of one counter encoding, in template-ID order: IPv4/IPv6 × ports/ICMP,
 * without and with post-NAT fields.
 *
 * @param counters Counter encoding.
 * @returns The templates.
 *
 * @example Usage
 * ```ts
 * import { dataTemplates } from "./ipfix_elements.ts";
 * const [first] = dataTemplates("rfc5103");
 * if (first?.id !== 256 || first.name !== "ipv4-ports/rfc5103") throw new Error("layout changed");
 * ```
 */
export function dataTemplates(counters: CounterEncoding): readonly DataTemplate[] {
  return TEMPLATES[counters];
}

/**
 * What a drop template field holds, named after `IpfixDrop`'s properties: `startMs` and `endMs`
 * both carry its `timeMs`; `firewallEvent` and `forwardingStatus` are constants.
 */
export type DropFieldSlot =
  | "source"
  | "destination"
  | "sourcePort"
  | "destinationPort"
  | "icmpTypeCode"
  | "protocol"
  | "direction"
  | "firewallEvent"
  | "forwardingStatus"
  | "startMs"
  | "endMs"
  | "flowId"
  | "bytes"
  | "packets"
  | "ruleId";

/** One field of a drop template: the element and where its value comes from. */
export interface DropTemplateField {
  /** The element in the field specifier. */
  readonly ie: InformationElement;
  /** The value it carries. */
  readonly slot: DropFieldSlot;
}

/** A template for drop records (packets a firewall rule dropped). */
export interface DropTemplate {
  /** Template ID (= Data Set ID), 273–276. */
  readonly id: number;
  /** Human-readable name, e.g. `ipv4-ports-drop`. */
  readonly name: string;
  /** Address family of the records it carries. */
  readonly family: 4 | 6;
  /** ICMP/ICMPv6 drops (type/code) rather than drops with ports. */
  readonly icmp: boolean;
  /** Fields in wire order. */
  readonly fields: readonly DropTemplateField[];
  /** Length of one data record in bytes. */
  readonly recordLength: number;
  /** Length of the template record (field specifiers included) in bytes. */
  readonly templateRecordLength: number;
}

/** Template ID of the first drop template. */
export const DROP_TEMPLATE_BASE = 273;

/**
 * Template ID of a drop template: `273 + ipv6 * 2 + icmp` (273–276). The same for both counter
 * encodings: drop records carry one direction only, as octetDeltaCount/packetDeltaCount.
 *
 * @param family Address family.
 * @param icmp ICMP (type/code) rather than ports.
 * @returns The template ID.
 */
export function dropTemplateId(family: 4 | 6, icmp: boolean): number {
  return DROP_TEMPLATE_BASE + (family === 6 ? 2 : 0) + (icmp ? 1 : 0);
}

const d = (ie: InformationElement, slot: DropFieldSlot): DropTemplateField => ({ ie, slot });

function buildDropTemplate(family: 4 | 6, icmp: boolean): DropTemplate {
  const fields: DropTemplateField[] = [
    ...tupleFields(family, icmp),
    d(IE.protocolIdentifier, "protocol"),
    d(IE.flowDirection, "direction"),
    d(IE.firewallEvent, "firewallEvent"),
    d(IE.forwardingStatus, "forwardingStatus"),
    d(IE.flowStartMilliseconds, "startMs"),
    d(IE.flowEndMilliseconds, "endMs"),
    d(IE.flowId, "flowId"),
    d(IE.octetDeltaCount, "bytes"),
    d(IE.packetDeltaCount, "packets"),
    d(IE.ruleId, "ruleId"),
  ];
  return {
    id: dropTemplateId(family, icmp),
    name: `ipv${family}-${icmp ? "icmp" : "ports"}-drop`,
    family,
    icmp,
    fields,
    ...templateLengths(fields.map((x) => x.ie), 4),
  };
}

const DROP_TEMPLATES: readonly DropTemplate[] = Object.freeze([
  buildDropTemplate(4, false),
  buildDropTemplate(4, true),
  buildDropTemplate(6, false),
  buildDropTemplate(6, true),
]);

/**
 * The four drop templates, in template-ID order: IPv4/IPv6 × ports/ICMP. Fields: addresses,
 * ports or ICMP type/code, protocolIdentifier, flowDirection, firewallEvent (3, flow denied),
 * forwardingStatus (0x81, dropped by an ACL deny), flowStartMilliseconds = flowEndMilliseconds
 * (the drop's time), flowId, octetDeltaCount/packetDeltaCount (the dropped packets, from the
 * source), and the rule ID ({@linkcode IE}`.ruleId`). No NAT variants: a dropped packet has no
 * reply tuple.
 *
 * @returns The templates.
 *
 * @example Usage
 * ```ts
 * import { dropTemplates } from "./ipfix_elements.ts";
 * const [first] = dropTemplates();
 * if (first?.id !== 273 || first.name !== "ipv4-ports-drop") throw new Error("layout changed");
 * ```
 */
export function dropTemplates(): readonly DropTemplate[] {
  return DROP_TEMPLATES;
}
