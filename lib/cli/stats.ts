/**
 * The stats line: one log line with the counters an operator needs to trust the output.
 *
 * @module
 */

import type { FlowClientStats } from "../flowapi/client.ts";
import type { IpfixExporterStats } from "../ipfix_export.ts";
import type { LoggerStats } from "../logger.ts";
import type { TrackerStats } from "../tracker.ts";

/** Counters behind one stats line. */
export interface StatsSnapshot {
  /** Tracker counters. */
  tracker: TrackerStats;
  /** Records the output has written. */
  written: number;
  /** Flow logger counters. */
  logger?: LoggerStats;
  /** IPFIX exporter counters, with `--ipfix`. */
  ipfix?: IpfixExporterStats;
  /** Aggregation counters, with `--window`. */
  windows?: { windows: number; aggregates: number; earlyWindows: number; pending: number };
  /** Flow API client counters, with `--flow-url`. */
  flow?: FlowClientStats;
  /** Monotonic time of the snapshot, ms. */
  at: number;
  /** Resident set size in bytes, when known. */
  rss?: number;
  /** V8 heap in use, bytes, when known. */
  heapUsed?: number;
}

/**
 * Formats the counters as `key=value` pairs; with a previous snapshot, also the event rate.
 *
 * @param now The current snapshot.
 * @param previous The previous one, for `events_per_s`.
 * @returns The line (without the log prefix).
 *
 * @example Usage
 * ```ts
 * import { formatStats } from "./stats.ts";
 * const tracker = {
 *   events: 10, records: 4, ignored: 0, filtered: 6, reopens: 0, duplicates: 0, live: 2,
 *   existing: 0, resyncs: 0, resyncFailures: 0, synthesizedStarts: 0, synthesizedEnds: 0,
 *   updates: 0, source: { received: 10, overruns: 0, kernelDrops: 0 },
 * };
 * const line = formatStats({ tracker, written: 4, at: 1000 }, { tracker: { ...tracker, events: 0 }, written: 0, at: 0 });
 * if (!line.startsWith("events_per_s=10 ")) throw new Error(line);
 * ```
 */
export function formatStats(now: StatsSnapshot, previous?: StatsSnapshot): string {
  const t = now.tracker;
  const parts: string[] = [];
  if (previous !== undefined) {
    const seconds = Math.max(0.001, (now.at - previous.at) / 1000);
    parts.push(`events_per_s=${Math.round((t.events - previous.tracker.events) / seconds)}`);
  }
  parts.push(
    `events=${t.events}`,
    `written=${now.written}`,
    `filtered=${t.filtered}`,
    `ignored=${t.ignored}`,
    `live=${t.live}`,
    `overruns=${t.source.overruns}`,
    `kernel_drops=${t.source.kernelDrops}`,
    `resyncs=${t.resyncs}`,
    `resync_failures=${t.resyncFailures}`,
    `synthesized_starts=${t.synthesizedStarts}`,
    `synthesized_ends=${t.synthesizedEnds}`,
    `duplicates=${t.duplicates}`,
    `updates=${t.updates}`,
    `reopens=${t.reopens}`,
  );
  const l = now.logger;
  if (l !== undefined) {
    parts.push(
      `dns_filtered=${l.dnsFiltered}`,
      `exit_node_filtered=${l.exitNodeFiltered}`,
      `disabled_drops=${l.disabledDrops}`,
    );
  }
  const w = now.windows;
  if (w !== undefined) {
    parts.push(
      `windows=${w.windows}`,
      `aggregates=${w.aggregates}`,
      `early_windows=${w.earlyWindows}`,
      `window_pending=${w.pending}`,
    );
  }
  const f = now.flow;
  if (f !== undefined) {
    parts.push(
      `flow_sent=${f.sent}`,
      `flow_acked=${f.acked}`,
      `flow_resent=${f.resent}`,
      `flow_unacked=${f.unacked}`,
      `flow_overflow_drops=${f.overflowDrops}`,
      `flow_reconnects=${f.reconnects}`,
      `flow_restored=${f.restored}`,
      `flow_store_errors=${f.storeErrors}`,
      `flow_connected=${f.connected ? 1 : 0}`,
    );
  }
  const x = now.ipfix;
  if (x !== undefined) {
    parts.push(`ipfix_records=${x.records}`);
    x.collectors.forEach((c, i) => {
      parts.push(
        `ipfix${i}_sent=${c.sentRecords}`,
        `ipfix${i}_queued=${c.queued}`,
        `ipfix${i}_dropped=${c.dropped}`,
        `ipfix${i}_connected=${c.connected ? 1 : 0}`,
      );
    });
  }
  if (now.rss !== undefined) parts.push(`rss_mb=${(now.rss / 2 ** 20).toFixed(1)}`);
  if (now.heapUsed !== undefined) parts.push(`heap_mb=${(now.heapUsed / 2 ** 20).toFixed(1)}`);
  return parts.join(" ");
}
