/**
 * NetBird's flow logger: takes the tracker's records, adds resource IDs, applies the collection
 * policy (DNS, exit-node traffic), and hands them on, either one by one or aggregated per window.
 * Where NetBird drops silently (full channel, disabled logger) netbird-ct counts.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { aggregate, AggregatingStore } from "./aggregate.ts";
import { Protocol } from "./flow.ts";
import type { Overlay } from "./overlay.ts";
import type { FlowRecord } from "./record.ts";
import { RouteTable } from "./routes.ts";
import type { RecordSink } from "./tracker.ts";

const log = getLogger(["netbird-ct", "logger"]);

/** NetBird's DNS ports: 53, 5353 (DNS forwarder client port, and mDNS), 22054 (forwarder). */
export const DEFAULT_DNS_PORTS: readonly number[] = [53, 5353, 22054];

/** Options of {@linkcode FlowLogger}. */
export interface FlowLoggerOptions {
  /** Overlay prefixes: addresses inside them get no resource ID. */
  overlay: Overlay;
  /** Routes and resolved addresses for resource IDs. */
  routes?: RouteTable;
  /** Log UDP flows to the DNS ports (default `false`, as NetBird). */
  dnsCollection?: boolean;
  /** UDP destination ports treated as DNS. */
  dnsPorts?: readonly number[];
  /** Log flows whose non-overlay end is matched only by a /0 route (default `false`). */
  exitNodeCollection?: boolean;
  /** Start enabled (default `true`). */
  enabled?: boolean;
}

/** Counters of a {@linkcode FlowLogger}. */
export interface LoggerStats {
  /** Records received. */
  received: number;
  /** Records passed on. */
  logged: number;
  /** UDP DNS records not logged (policy). */
  dnsFiltered: number;
  /** Exit-node records not logged (policy). */
  exitNodeFiltered: number;
  /** Records received while disabled (NetBird drops these silently). */
  disabledDrops: number;
}

/**
 * The flow logger, a {@linkcode RecordSink} in front of another sink.
 *
 * @example Usage
 * ```ts
 * import { FlowLogger, Overlay, type FlowRecord } from "./mod.ts";
 * const out: FlowRecord[] = [];
 * const logger = new FlowLogger({ write: (r) => out.push(...r) }, {
 *   overlay: new Overlay({ networks: ["100.64.0.0/10"] }),
 * });
 * logger.write([]);
 * if (logger.stats().received !== 0) throw new Error("nothing received");
 * ```
 */
export class FlowLogger implements RecordSink {
  #out: RecordSink;
  #overlay: Overlay;
  #routes: RouteTable;
  #dns: boolean;
  #dnsPorts: Set<number>;
  #exit: boolean;
  #enabled: boolean;
  #stats: LoggerStats = {
    received: 0,
    logged: 0,
    dnsFiltered: 0,
    exitNodeFiltered: 0,
    disabledDrops: 0,
  };

  /**
   * Creates the instance.
   *
   * @param out Where logged records go (the JSON-lines sink, or a {@linkcode WindowAggregator}).
   * @param options Policy and routes.
   */
  constructor(out: RecordSink, options: FlowLoggerOptions) {
    this.#out = out;
    this.#overlay = options.overlay;
    this.#routes = options.routes ?? RouteTable.EMPTY;
    this.#dns = options.dnsCollection ?? false;
    this.#dnsPorts = new Set(options.dnsPorts ?? DEFAULT_DNS_PORTS);
    this.#exit = options.exitNodeCollection ?? false;
    this.#enabled = options.enabled ?? true;
  }

  /** Whether records are being logged. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Starts logging. Synchronous: unlike NetBird's, no event right after it is lost. */
  enable(): void {
    this.#enabled = true;
  }

  /** Stops logging; records received while disabled are counted as `disabledDrops`. */
  disable(): void {
    this.#enabled = false;
  }

  /**
   * Changes the collection policy (NetBird's `UpdateConfig`).
   *
   * @param dnsCollection Log DNS flows.
   * @param exitNodeCollection Log exit-node flows.
   */
  updateConfig(dnsCollection: boolean, exitNodeCollection: boolean): void {
    this.#dns = dnsCollection;
    this.#exit = exitNodeCollection;
  }

  /**
   * Replaces the route table (SIGHUP reload); live flows are unaffected.
   *
   * @param routes The new table.
   */
  setRoutes(routes: RouteTable): void {
    this.#routes = routes;
  }

  /** Counters. */
  stats(): LoggerStats {
    return { ...this.#stats };
  }

  /**
   * Enriches, filters and passes on a batch. Never blocks and never throws for policy reasons.
   *
   * @param records The batch.
   */
  write(records: readonly FlowRecord[]): void {
    const stats = this.#stats;
    stats.received += records.length;
    if (!this.#enabled) {
      stats.disabledDrops += records.length;
      return;
    }
    const kept: FlowRecord[] = [];
    for (const r of records) {
      if (!this.#dns && r.protocol === Protocol.UDP && this.#dnsPorts.has(r.destPort)) {
        stats.dnsFiltered++;
        continue;
      }
      const src = this.#resource(r.sourceIp);
      const dst = this.#resource(r.destIp);
      if (!this.#exit && (src.exitNode || dst.exitNode)) {
        stats.exitNodeFiltered++;
        continue;
      }
      r.sourceResourceId = src.resourceId ?? null;
      r.destResourceId = dst.resourceId ?? null;
      kept.push(r);
    }
    if (kept.length === 0) return;
    this.#out.write(kept);
    stats.logged += kept.length;
  }

  #resource(address: string): { resourceId: string | undefined; exitNode: boolean } {
    if (this.#overlay.inOverlay(address)) return NONE;
    return this.#routes.lookup(address);
  }
}

const NONE = Object.freeze({ resourceId: undefined, exitNode: false });

/** Options of {@linkcode WindowAggregator}. */
export interface WindowAggregatorOptions {
  /** Window length in ms. */
  windowMs: number;
  /** Store capacity in records; a full store closes the window early. */
  maxEvents?: number;
  /** Clock. */
  now?: () => Date;
}

/**
 * Collects records per window and writes one aggregated record per key when the window ends
 * (on its timer, early when the store is full, and on {@linkcode WindowAggregator.close}).
 */
export class WindowAggregator implements RecordSink, Disposable {
  #out: RecordSink;
  #store: AggregatingStore;
  #timer: ReturnType<typeof setInterval> | undefined;
  #windows = 0;
  #aggregates = 0;
  #closed = false;

  /**
   * Creates the instance.
   *
   * @param out Where aggregated records go.
   * @param options Window length and capacity.
   */
  constructor(out: RecordSink, options: WindowAggregatorOptions) {
    this.#out = out;
    this.#store = new AggregatingStore({
      ...(options.maxEvents === undefined ? {} : { maxEvents: options.maxEvents }),
      ...(options.now === undefined ? {} : { now: options.now }),
    });
    this.#timer = setInterval(() => this.flush(), options.windowMs);
  }

  /** The current window's store. */
  get store(): AggregatingStore {
    return this.#store;
  }

  /** Windows written and aggregated records written so far, plus the store's counters. */
  stats(): { windows: number; aggregates: number; earlyWindows: number; pending: number } {
    return {
      windows: this.#windows,
      aggregates: this.#aggregates,
      earlyWindows: this.#store.stats().earlyWindows,
      pending: this.#store.size,
    };
  }

  /**
   * Adds records to the current window; a full store closes the window early (nothing dropped).
   *
   * @param records The batch.
   */
  write(records: readonly FlowRecord[]): void {
    for (const r of records) {
      if (!this.#store.store(r)) {
        log.warn("Aggregation store full ({max} records): closing the window early", {
          max: this.#store.maxEvents,
        });
        this.flush(true);
        this.#store.store(r);
      }
    }
    // After close() no timer runs: write at once rather than hold records nobody will flush.
    if (this.#closed) this.flush();
  }

  /**
   * Closes the current window and writes its aggregates (nothing when it is empty).
   *
   * @param early The store was full.
   */
  flush(early = false): void {
    const w = this.#store.resetWindow(early);
    if (w.records.length === 0) return;
    const out = aggregate(w.records, w.windowStart, w.windowEnd);
    this.#windows++;
    this.#aggregates += out.length;
    this.#out.write(out);
  }

  /** Stops the timer and writes the last (partial) window. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.flush();
  }

  /** Same as {@linkcode WindowAggregator.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
