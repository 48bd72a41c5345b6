/** Builders for plain {@linkcode Flow}s and events in unit tests. */

import type { Flow, FlowEvent, FlowEventType } from "../../lib/flow.ts";

export interface FlowSpec {
  id?: number;
  src: string;
  dst: string;
  proto?: number;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpCode?: number;
  mark?: number;
  orig?: [bigint, bigint];
  reply?: [bigint, bigint];
}

export function flow(s: FlowSpec): Flow {
  const protocol = s.proto ?? 6;
  const l4 = (sp: number, dp: number) => ({
    protocol,
    sourcePort: sp,
    destinationPort: dp,
    icmpType: s.icmpType ?? 0,
    icmpCode: s.icmpCode ?? 0,
    icmpId: 0,
  });
  return {
    id: s.id ?? 1,
    family: s.src.includes(":") ? 6 : 4,
    original: { source: s.src, destination: s.dst, proto: l4(s.sport ?? 0, s.dport ?? 0) },
    reply: { source: s.dst, destination: s.src, proto: l4(s.dport ?? 0, s.sport ?? 0) },
    mark: s.mark ?? 0,
    zone: 0,
    status: 0,
    countersOriginal: { packets: s.orig?.[0] ?? 0n, bytes: s.orig?.[1] ?? 0n },
    countersReply: { packets: s.reply?.[0] ?? 0n, bytes: s.reply?.[1] ?? 0n },
    hasCounters: s.orig !== undefined || s.reply !== undefined,
  };
}

export function event(type: FlowEventType, s: FlowSpec): FlowEvent {
  return { type, flow: flow(s) };
}
