/**
 * The kernel conntrack tracker: turns NEW/DESTROY events of a {@linkcode ConntrackSource} into
 * start/end {@linkcode FlowRecord}s for the flows that concern the overlay, with NetBird's
 * lifecycle (idempotent start/stop/close, reopen with capped exponential backoff after a source
 * failure) and none of its leaks.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Accounting } from "./accounting.ts";
import type { Flow, FlowEvent } from "./flow.ts";
import { Protocol } from "./flow.ts";
import { LiveFlowTable } from "./live.ts";
import type { Direction, Overlay } from "./overlay.ts";
import { buildRecord, type FlowRecord, type RecordReason, type RecordType } from "./record.ts";
import { type ConntrackSource, type Dialer, IdleSource, type SourceStats } from "./source.ts";
import { type FlowIdGenerator, uuidV4 } from "./uuid.ts";
import { errorText, sleep } from "./_async.ts";

const log = getLogger(["netbird-ct", "tracker"]);

/** Receives the records of each batch. Called synchronously, once per non-empty batch. */
export interface RecordSink {
  /** Takes a batch of records. Throwing stops the tracker (see `onFatal`). */
  write(records: readonly FlowRecord[]): void;
}

/**
 * A sink that hands each batch to several sinks, in order.
 *
 * @param sinks The sinks.
 * @returns One sink.
 */
export function fanOut(...sinks: RecordSink[]): RecordSink {
  return {
    write(records: readonly FlowRecord[]): void {
      for (const sink of sinks) sink.write(records);
    },
  };
}

/** Reopen backoff: NetBird's defaults are 5 s initial, ×1.5, ±50 %, 5 min cap, forever. */
export interface BackoffOptions {
  /** First delay in milliseconds. */
  initialMs: number;
  /** Factor applied after each failed attempt. */
  multiplier: number;
  /** Jitter: the delay is drawn from `[d·(1−r), d·(1+r)]`. */
  randomization: number;
  /** Cap in milliseconds. */
  maxMs: number;
}

/** NetBird's reconnect backoff. */
export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialMs: 5_000,
  multiplier: 1.5,
  randomization: 0.5,
  maxMs: 300_000,
});

/** When and how the tracker reconciles its live-flow table with a kernel table dump. */
export interface ResyncOptions {
  /** Minimum time between two resyncs; overruns inside it are served by one later resync. */
  minIntervalMs: number;
  /**
   * How long a flow that is missing from a dump waits for its real DESTROY (which may still be
   * queued, or re-delivered by the kernel in reliable mode) before an end is synthesized.
   */
  endGraceMs: number;
  /**
   * How often to dump the table while flows from the startup dump are open. With
   * `nf_conntrack_events=2` (the default since Linux 5.19) the kernel only attaches event delivery
   * to entries created while some listener existed, so entries older than netbird-ct never send a
   * DESTROY: their end is found by polling. Stretched to 10× the last dump's duration on big tables.
   */
  preexistingPollMs: number;
}

/** Default {@linkcode ResyncOptions}. */
export const DEFAULT_RESYNC: Readonly<ResyncOptions> = Object.freeze({
  minIntervalMs: 5_000,
  endGraceMs: 5_000,
  preexistingPollMs: 10_000,
});

/** Options of {@linkcode ConntrackTracker}. */
export interface TrackerOptions {
  /** Overlay network: relevance and direction. */
  overlay: Overlay;
  /** Flow-ID generator. */
  flowIds: FlowIdGenerator;
  /** When given, accounting is enabled on start and restored on stop/close/start failure. */
  accounting?: Accounting;
  /** Reopen backoff; defaults to {@linkcode DEFAULT_BACKOFF}. */
  backoff?: Partial<BackoffOptions>;
  /** Clock for record timestamps. */
  now?: () => Date;
  /** Random source for backoff jitter, `[0, 1)`. */
  random?: () => number;
  /** Called once if the sink throws; the tracker stops reading. Call `stop()` to clean up. */
  onFatal?: (error: unknown) => void;
  /** Resync timing; defaults to {@linkcode DEFAULT_RESYNC}. */
  resync?: Partial<ResyncOptions>;
  /** Also emit `start` records (reason `startup`) for flows already open at start. */
  emitExisting?: boolean;
  /**
   * The source delivers every DESTROY (kernel `NETLINK_BROADCAST_ERROR`): a flow missing from a
   * dump after an overrun then still gets its real end, so none is synthesized.
   */
  reliableDestroy?: boolean;
  /**
   * Emit an `update` record for every flow open longer than this (ms) since its last record, with
   * the counters' deltas, as IPFIX exporters do for long-lived flows. Counters come from periodic
   * table dumps (every half timeout), since the kernel sends no event when they change. The end
   * record then carries only the rest. Off by default.
   */
  activeTimeoutMs?: number;
  /** Monotonic clock in ms, for resync timing. */
  monotonic?: () => number;
}

/** Counters the tracker keeps. */
export interface TrackerStats {
  /** Events taken from sources. */
  events: number;
  /** Records handed to the sink. */
  records: number;
  /** UPDATE events and protocol-0 entries, ignored as NetBird does. */
  ignored: number;
  /** Events not concerning the overlay. */
  filtered: number;
  /** Times the source failed and was reopened. */
  reopens: number;
  /** NEW events for flows already known (seen in a dump first), not emitted twice. */
  duplicates: number;
  /** Relevant flows currently open. */
  live: number;
  /** Flows found open by the startup dump. */
  existing: number;
  /** Table dumps reconciled after lost events (overruns, reopens). */
  resyncs: number;
  /** Dumps that failed. */
  resyncFailures: number;
  /** Start records synthesized because the NEW event was lost. */
  synthesizedStarts: number;
  /** End records synthesized because the DESTROY event was lost. */
  synthesizedEnds: number;
  /** Interim (`update`) records for long-lived flows. */
  updates: number;
  /** Counters of the sources, summed over reopens. */
  source: SourceStats;
}

/**
 * Tracks kernel conntrack events and emits flow records.
 *
 * @example Usage with a fake source
 * ```ts
 * import { ConntrackTracker, FlowIdGenerator, Overlay, type FlowRecord } from "../lib/mod.ts";
 * const out: FlowRecord[] = [];
 * const tracker = new ConntrackTracker(
 *   () => ({
 *     async *batches() {},
 *     dump: () => 0,
 *     stats: () => ({ received: 0, overruns: 0, kernelDrops: 0 }),
 *     close() {},
 *     [Symbol.dispose]() {},
 *   }),
 *   { write: (r) => out.push(...r) },
 *   {
 *     overlay: new Overlay({ networks: ["100.64.0.0/16"] }),
 *     flowIds: new FlowIdGenerator("1cc4bb85-0ca9-5a5d-a913-81b334076105"),
 *   },
 * );
 * await tracker.start();
 * await tracker.stop();
 * ```
 */
export class ConntrackTracker implements AsyncDisposable {
  #dial: Dialer;
  #sink: RecordSink;
  #overlay: Overlay;
  #flowIds: FlowIdGenerator;
  #accounting: Accounting | undefined;
  #backoff: BackoffOptions;
  #now: () => Date;
  #random: () => number;
  #onFatal: ((error: unknown) => void) | undefined;
  #resyncOptions: ResyncOptions;
  #emitExisting: boolean;
  #monotonic: () => number;
  #live: LiveFlowTable;
  #activeTimeoutMs: number | undefined;
  #lastActiveDump = 0;
  /** Live-table slot → monotonic deadline for its synthesized end. */
  #pendingEnds = new Map<number, number>();
  #seenOverruns = 0;
  #resyncWanted = false;
  #lastResync = -Infinity;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #epoch = 0;
  /** Slots of live flows found by the startup dump: they may never send a DESTROY. */
  #preexisting = new Set<number>();
  #lastPoll = 0;
  #pollCostMs = 0;
  #reliableDestroy: boolean;

  #started = false;
  #source: ConntrackSource | undefined;
  #abort: AbortController | undefined;
  #reading: Promise<void> | undefined;
  #stats: TrackerStats = {
    events: 0,
    records: 0,
    ignored: 0,
    filtered: 0,
    reopens: 0,
    duplicates: 0,
    live: 0,
    existing: 0,
    resyncs: 0,
    resyncFailures: 0,
    synthesizedStarts: 0,
    synthesizedEnds: 0,
    updates: 0,
    source: { received: 0, overruns: 0, kernelDrops: 0 },
  };
  #closedSourceStats: SourceStats = { received: 0, overruns: 0, kernelDrops: 0 };

  /**
   * Creates the instance.
   *
   * @param dial Opens a source (at start and after failures).
   * @param sink Receives the records.
   * @param options Overlay, flow IDs, accounting and timing.
   */
  constructor(dial: Dialer, sink: RecordSink, options: TrackerOptions) {
    this.#dial = dial;
    this.#sink = sink;
    this.#overlay = options.overlay;
    this.#flowIds = options.flowIds;
    this.#accounting = options.accounting;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#now = options.now ?? (() => new Date());
    this.#random = options.random ?? Math.random;
    this.#onFatal = options.onFatal;
    this.#resyncOptions = { ...DEFAULT_RESYNC, ...options.resync };
    this.#emitExisting = options.emitExisting ?? false;
    this.#reliableDestroy = options.reliableDestroy ?? false;
    this.#activeTimeoutMs = options.activeTimeoutMs;
    this.#live = new LiveFlowTable({ reports: options.activeTimeoutMs !== undefined });
    this.#monotonic = options.monotonic ?? (() => performance.now());
  }

  /** Whether the tracker is started (also while it waits to reopen a failed source). */
  get started(): boolean {
    return this.#started;
  }

  /** Whether a source is currently open. */
  get hasSource(): boolean {
    return this.#source !== undefined;
  }

  /** A snapshot of the counters. */
  stats(): TrackerStats {
    const live = this.#source?.stats() ?? { received: 0, overruns: 0, kernelDrops: 0 };
    const closed = this.#closedSourceStats;
    return {
      ...this.#stats,
      live: this.#live.size,
      source: {
        received: closed.received + live.received,
        overruns: closed.overruns + live.overruns,
        kernelDrops: closed.kernelDrops + live.kernelDrops,
      },
    };
  }

  /**
   * Enables accounting (if configured), opens the source and starts reading. Idempotent: a second
   * call while started does nothing.
   *
   * @throws When the first source cannot be opened (accounting is restored first).
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#accounting?.enable();
    let source: ConntrackSource;
    try {
      source = await this.#dial();
    } catch (err) {
      this.#started = false;
      this.#accounting?.restore();
      throw err;
    }
    if (!this.#started) {
      // stop() ran while we were dialing.
      source.close();
      return;
    }
    this.#abort = new AbortController();
    this.#source = source;
    this.#seenOverruns = source.stats().overruns;
    const idle = source instanceof IdleSource;
    if (!idle) this.#startupDump(source);
    this.#ticker = setInterval(() => this.#tick(), 250);
    log.info(
      idle ? "No conntrack events (--source nflog)" : "Listening for conntrack NEW/DESTROY events",
    );
    void this.#run(source, this.#abort.signal);
  }

  /**
   * Stops reading: closes the source, waits until every event it had already received is handed
   * to the sink, and restores accounting. Idempotent. Never waits for a reopen attempt in flight;
   * a source opened after stop is closed at once.
   */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    this.#abort?.abort();
    this.#abort = undefined;
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    const source = this.#source;
    this.#retire(source);
    this.#source = undefined;
    await this.#reading;
    // Events lost since the last resync would otherwise stay lost: reconcile once more (the dump
    // uses its own socket, so it works on the closed source), then end every flow the kernel no
    // longer has instead of waiting for a DESTROY that can no longer reach us.
    if (
      source !== undefined && (this.#resyncWanted || source.stats().overruns !== this.#seenOverruns)
    ) {
      this.#resync(source, "shutdown");
    }
    // Flows older than netbird-ct that ended since the last poll.
    this.#periodicDump(source, true);
    this.#expirePendingEnds(Infinity, Infinity);
    this.#accounting?.restore();
  }

  /** Same as {@linkcode ConntrackTracker.stop}; for `await using`. */
  async close(): Promise<void> {
    await this.stop();
  }

  /** Same as {@linkcode ConntrackTracker.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #retire(source: ConntrackSource | undefined): void {
    if (source === undefined) return;
    source.close();
    const s = source.stats();
    this.#closedSourceStats = {
      received: this.#closedSourceStats.received + s.received,
      overruns: this.#closedSourceStats.overruns + s.overruns,
      kernelDrops: this.#closedSourceStats.kernelDrops + s.kernelDrops,
    };
  }

  async #run(first: ConntrackSource, signal: AbortSignal): Promise<void> {
    let source: ConntrackSource | undefined = first;
    while (source !== undefined) {
      const failure = await this.#readAll(source);
      if (failure === undefined || signal.aborted) return;
      log.warn("Conntrack event source failed, reopening: {error}", { error: errorText(failure) });
      if (this.#source === source) {
        this.#retire(source);
        this.#source = undefined;
      }
      source = await this.#reopen(signal);
    }
  }

  /** Reads one source until it ends (`undefined`) or fails (the error). */
  #readAll(source: ConntrackSource): Promise<unknown> {
    const reading = (async (): Promise<unknown> => {
      try {
        for await (const batch of source.batches()) {
          if (!this.#handle(batch)) {
            source.close();
            return undefined;
          }
        }
        return undefined;
      } catch (err) {
        return err;
      }
    })();
    this.#reading = reading.then(() => {});
    return reading;
  }

  async #reopen(signal: AbortSignal): Promise<ConntrackSource | undefined> {
    let interval = this.#backoff.initialMs;
    while (!signal.aborted) {
      const r = this.#backoff.randomization;
      const delay = Math.min(interval * (1 - r + 2 * r * this.#random()), this.#backoff.maxMs);
      interval = Math.min(interval * this.#backoff.multiplier, this.#backoff.maxMs);
      if (!(await sleep(delay, signal))) return undefined;
      let next: ConntrackSource;
      try {
        next = await this.#dial();
      } catch (err) {
        log.warn("Cannot reopen conntrack event source: {error}", { error: errorText(err) });
        continue;
      }
      if (signal.aborted || !this.#started) {
        next.close();
        return undefined;
      }
      this.#stats.reopens++;
      this.#source = next;
      this.#seenOverruns = next.stats().overruns;
      log.info("Conntrack event source reopened");
      // Everything between the failure and now is lost: reconcile with the kernel's table.
      this.#resync(next, "reopen");
      return next;
    }
    return undefined;
  }

  /** Turns one batch into records. Returns `false` after a fatal sink error. */
  #handle(batch: readonly FlowEvent[]): boolean {
    const stats = this.#stats;
    stats.events += batch.length;
    const records: FlowRecord[] = [];
    const live = this.#live;
    let timestamp: Date | undefined;
    for (let i = 0; i < batch.length; i++) {
      const event = batch[i]!;
      const flow = event.flow;
      if (event.type === "update" || flow.original.proto.protocol === Protocol.UNKNOWN) {
        stats.ignored++;
        continue;
      }
      const direction = this.#overlay.classify(flow);
      if (direction === undefined) {
        stats.filtered++;
        continue;
      }
      timestamp ??= this.#now();
      if (event.type === "new") {
        const known = live.find(flow);
        if (known >= 0) {
          if (this.#preexisting.has(known) && !this.#emitExisting) {
            // Created between subscribing and the startup dump: the dump saw it first, but it is
            // a new connection, and no start was written for it yet.
            this.#preexisting.delete(known);
            records.push(this.#record("start", flow, direction, timestamp));
          } else {
            stats.duplicates++;
          }
          continue;
        }
        live.add(flow, direction, this.#monotonic());
        records.push(this.#record("start", flow, direction, timestamp));
      } else {
        const slot = live.find(flow);
        let rest = flow;
        if (slot < 0) {
          // Every flow open at startup came from the dump, so an unknown DESTROY means its NEW was
          // lost: synthesize the start so that every end has one.
          stats.synthesizedStarts++;
          records.push(this.#record("start", startOf(flow), direction, timestamp, "resync"));
        } else {
          if (this.#activeTimeoutMs !== undefined) rest = remainder(live, slot, flow);
          this.#remove(slot);
        }
        records.push(this.#record("end", rest, direction, timestamp));
      }
    }
    if (!this.#emit(records)) return false;
    const source = this.#source;
    if (source !== undefined) {
      const overruns = source.stats().overruns;
      if (overruns !== this.#seenOverruns) {
        this.#seenOverruns = overruns;
        this.#resyncWanted = true;
      }
      if (this.#resyncWanted) this.#maybeResync();
    }
    return true;
  }

  #record(
    type: RecordType,
    flow: Flow,
    direction: Direction,
    timestamp: Date,
    reason?: RecordReason,
  ): FlowRecord {
    return buildRecord(type, flow, direction, {
      eventId: uuidV4(),
      flowId: this.#flowIds.flowId(flow.id),
      timestamp,
      ...(reason === undefined ? {} : { reason }),
    });
  }

  #emit(records: FlowRecord[]): boolean {
    if (records.length === 0) return true;
    try {
      this.#sink.write(records);
    } catch (err) {
      log.error("Cannot write records, stopping: {error}", { error: errorText(err) });
      this.#source?.close();
      this.#onFatal?.(err);
      return false;
    }
    this.#stats.records += records.length;
    return true;
  }

  #startupDump(source: ConntrackSource): void {
    const chunk = new RecordChunker((records) => this.#emit(records));
    const timestamp = this.#now();
    let total: number;
    try {
      total = source.dump((flow) => {
        if (flow.original.proto.protocol === Protocol.UNKNOWN) return;
        const direction = this.#overlay.classify(flow);
        if (direction === undefined) return;
        this.#preexisting.add(this.#live.add(flow, direction, this.#monotonic()));
        this.#stats.existing++;
        if (this.#emitExisting) {
          chunk.push(this.#record("start", startOf(flow), direction, timestamp, "startup"));
        }
      });
    } catch (err) {
      log.warn("Cannot dump the conntrack table at startup: {error}", { error: errorText(err) });
      return;
    } finally {
      chunk.flush();
    }
    log.info("Startup dump: {existing} open overlay flows of {total} in the table", {
      existing: this.#stats.existing,
      total,
    });
  }

  #maybeResync(): void {
    const source = this.#source;
    if (source === undefined || !this.#started) return;
    const wait = this.#lastResync + this.#resyncOptions.minIntervalMs - this.#monotonic();
    if (wait > 0) return; // the ticker retries once the interval has passed
    if (source.drained?.() === false) return; // drain the backlog first; the next batch retries
    this.#resync(source, "overrun");
  }

  /**
   * Reconciles the live-flow table with a dump: flows the kernel has that the table lacks get a
   * synthesized start at once. Flows the table has that the kernel lacks get a synthesized end
   * after the grace period, unless their DESTROY arrives first; with reliable DESTROY delivery
   * that only happens after a reopen (while no socket listened, the kernel sent nothing), because
   * otherwise the kernel holds a dying entry until its DESTROY is delivered.
   */
  #resync(source: ConntrackSource, why: "overrun" | "reopen" | "shutdown"): void {
    this.#resyncWanted = false;
    this.#lastResync = this.#monotonic();
    const epoch = ++this.#epoch;
    const live = this.#live;
    const chunk = new RecordChunker((records) => this.#emit(records));
    const timestamp = this.#now();
    let started = 0;
    let total: number;
    try {
      total = source.dump((flow) => {
        if (flow.original.proto.protocol === Protocol.UNKNOWN) return;
        const direction = this.#overlay.classify(flow);
        if (direction === undefined) return;
        const known = live.find(flow);
        if (known >= 0) {
          live.updateCounters(known, flow.countersOriginal, flow.countersReply);
          live.markSeen(known, epoch);
          return;
        }
        live.markSeen(live.add(flow, direction, this.#monotonic()), epoch);
        started++;
        chunk.push(this.#record("start", startOf(flow), direction, timestamp, "resync"));
      });
    } catch (err) {
      this.#stats.resyncFailures++;
      this.#resyncWanted = true;
      log.warn("Cannot dump the conntrack table for a resync: {error}", { error: errorText(err) });
      return;
    } finally {
      chunk.flush();
    }
    this.#stats.resyncs++;
    this.#stats.synthesizedStarts += started;
    let missing = 0;
    if (why !== "overrun" || !this.#reliableDestroy) {
      const deadline = this.#monotonic() +
        (why === "shutdown" ? 0 : this.#resyncOptions.endGraceMs);
      for (const slot of live.unseen(epoch)) {
        if (!this.#pendingEnds.has(slot)) {
          this.#pendingEnds.set(slot, deadline);
          missing++;
        }
      }
    }
    log.info(
      "Resync after {why}: {total} entries in the kernel table, {started} starts synthesized, " +
        "{missing} flows gone without a DESTROY so far",
      { why, total, started, missing },
    );
  }

  /**
   * The periodic table dump, when one is due:
   * - while flows from before startup are open: those that are gone get a synthesized end after
   *   the grace period (a DESTROY, if the kernel does send one, still wins);
   * - with an active timeout: flows whose last record is older than it get an `update` with the
   *   counters' deltas.
   *
   * @param force Dump now (at stop), and end gone pre-startup flows without a grace period.
   */
  #periodicDump(source = this.#source, force = false): void {
    if (source === undefined) return;
    const now = this.#monotonic();
    const active = this.#activeTimeoutMs;
    const pollPreexisting = this.#preexisting.size > 0 &&
      (force || now - this.#lastPoll >=
          Math.max(this.#resyncOptions.preexistingPollMs, 10 * this.#pollCostMs));
    const pollActive = active !== undefined && !force && this.#live.size > 0 &&
      now - this.#lastActiveDump >= Math.max(active / 2, 10 * this.#pollCostMs);
    if (!pollPreexisting && !pollActive) return;
    if (pollPreexisting) this.#lastPoll = now;
    if (pollActive) this.#lastActiveDump = now;
    const epoch = ++this.#epoch;
    const live = this.#live;
    const chunk = new RecordChunker((records) => this.#emit(records));
    const timestamp = this.#now();
    let updates = 0;
    try {
      source.dump((flow) => {
        const slot = live.find(flow);
        if (slot < 0) return;
        live.markSeen(slot, epoch);
        live.updateCounters(slot, flow.countersOriginal, flow.countersReply);
        if (!pollActive || now - (live.reportedAt(slot) ?? now) < active!) return;
        const d = live.delta(slot, flow.countersOriginal, flow.countersReply, now);
        const entry = live.get(slot)!;
        updates++;
        chunk.push(
          this.#record(
            "update",
            { ...entry.flow, countersOriginal: d.original, countersReply: d.reply },
            entry.direction,
            timestamp,
          ),
        );
      });
    } catch (err) {
      log.warn("Cannot dump the conntrack table for the periodic check: {error}", {
        error: errorText(err),
      });
      return;
    } finally {
      chunk.flush();
    }
    this.#stats.updates += updates;
    this.#pollCostMs = this.#monotonic() - now;
    if (!pollPreexisting) return;
    const deadline = this.#monotonic() + (force ? 0 : this.#resyncOptions.endGraceMs);
    for (const slot of this.#preexisting) {
      if (!live.seenIn(slot, epoch) && !this.#pendingEnds.has(slot)) {
        this.#pendingEnds.set(slot, deadline);
      }
    }
  }

  /** Removes a live flow and every note kept about its slot (slots are reused). */
  #remove(slot: number): void {
    this.#live.remove(slot);
    this.#pendingEnds.delete(slot);
    this.#preexisting.delete(slot);
  }

  #synthesizeEnd(slot: number, chunk: RecordChunker, timestamp: Date): void {
    const entry = this.#live.get(slot);
    if (entry === undefined) {
      this.#pendingEnds.delete(slot);
      return;
    }
    if (this.#activeTimeoutMs !== undefined) entry.flow = remainder(this.#live, slot, entry.flow);
    this.#remove(slot);
    this.#stats.synthesizedEnds++;
    chunk.push(this.#record("end", entry.flow, entry.direction, timestamp, "resync"));
  }

  /** Synthesizes due ends, at most `limit` per call so that a huge backlog is spread out. */
  #expirePendingEnds(now: number, limit = 32_768): void {
    if (this.#pendingEnds.size === 0) return;
    const chunk = new RecordChunker((records) => this.#emit(records));
    const timestamp = this.#now();
    let done = 0;
    for (const [slot, deadline] of this.#pendingEnds) {
      if (deadline > now) continue;
      if (done++ >= limit) break;
      this.#synthesizeEnd(slot, chunk, timestamp);
    }
    chunk.flush();
  }

  #tick(): void {
    this.#periodicDump();
    this.#expirePendingEnds(this.#monotonic());
    if (this.#resyncWanted) this.#maybeResync();
  }
}

/** Hands records to the sink in chunks, so that a big dump never builds one huge array. */
class RecordChunker {
  #records: FlowRecord[] = [];
  #emit: (records: FlowRecord[]) => unknown;

  constructor(emit: (records: FlowRecord[]) => unknown) {
    this.#emit = emit;
  }

  push(record: FlowRecord): void {
    this.#records.push(record);
    if (this.#records.length >= 4096) this.flush();
  }

  flush(): void {
    if (this.#records.length === 0) return;
    const records = this.#records;
    this.#records = [];
    this.#emit(records);
  }
}

/** A flow whose counters are reduced by what its interim records already reported. */
function remainder(live: LiveFlowTable, slot: number, flow: Flow): Flow {
  const d = live.delta(slot, flow.countersOriginal, flow.countersReply);
  return { ...flow, countersOriginal: d.original, countersReply: d.reply };
}

/** A flow as its start record should show it: counters belong to the end. */
function startOf(flow: Flow): Flow {
  return flow.hasCounters
    ? {
      ...flow,
      countersOriginal: { packets: 0n, bytes: 0n },
      countersReply: { packets: 0n, bytes: 0n },
      hasCounters: false,
    }
    : flow;
}
