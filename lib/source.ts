/**
 * The seam between the kernel and the tracker: a source of conntrack events, delivered in batches.
 * The real implementation lives in `ffi/` (libnetfilter_conntrack); tests use a fake.
 *
 * @module
 */

import type { Flow, FlowEvent } from "./flow.ts";

/**
 * A source (kernel events, a capture socket) failed in a way the operator can act on: no
 * permission, a missing library or interface, a socket error. The message is one line, ready for
 * the command line; the native layer's errors (`ConntrackError` in `ffi/`) extend it.
 */
export class SourceError extends Error {
  /** The error name, `"SourceError"`. */
  override name = "SourceError";
}

/** Counters a source keeps about itself. */
export interface SourceStats {
  /** Events decoded and delivered. */
  received: number;
  /** Times the kernel reported a receive-buffer overrun (ENOBUFS). */
  overruns: number;
  /** The kernel's drop counter for the source's socket, where known. */
  kernelDrops: number;
}

/**
 * A stream of conntrack events. One batch per drain of the kernel socket, never a promise per
 * event.
 */
export interface ConntrackSource extends Disposable {
  /**
   * Yields event batches until {@linkcode ConntrackSource.close} is called, then ends after
   * delivering what was already received. Throws when the source fails (not on overruns, which are
   * counted in {@linkcode ConntrackSource.stats}).
   */
  batches(): AsyncIterable<readonly FlowEvent[]>;
  /**
   * Dumps the kernel's conntrack table (both address families), calling `visit` for each entry
   * as it is decoded, so that a table of a million entries never sits in memory at once.
   * Synchronous: no event is handled while it runs, which is what makes reconciling the dump with
   * the live-flow table exact.
   *
   * @param visit Called once per entry.
   * @returns The number of entries.
   */
  dump(visit: (flow: Flow) => void): number;
  /**
   * Whether the last read found the kernel socket empty. A resync waits for this: dumping while
   * the socket still holds a backlog would keep the kernel dropping events for longer. Sources
   * without a backlog may leave it out.
   */
  drained?(): boolean;
  /** Current counters. */
  stats(): SourceStats;
  /** Stops the source. Idempotent. */
  close(): void;
}

/**
 * A source with no events and an empty table: what the tracker runs on when conntrack is not
 * the event source (`--source nflog`, drops only). Its batches end when it is closed.
 */
export class IdleSource implements ConntrackSource {
  #closed = Promise.withResolvers<void>();
  #isClosed = false;

  /**
   * Yields nothing; ends once closed.
   *
   * @returns The (empty) batches.
   */
  batches(): AsyncIterable<readonly FlowEvent[]> {
    const closed = this.#closed.promise;
    return {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<readonly FlowEvent[]>> => {
          await closed;
          return { done: true, value: undefined };
        },
      }),
    };
  }

  /** Visits nothing. @returns 0. */
  dump(_visit: (flow: Flow) => void): number {
    return 0;
  }

  /** Always empty. @returns `true`. */
  drained(): boolean {
    return true;
  }

  /** All zero. @returns The counters. */
  stats(): SourceStats {
    return { received: 0, overruns: 0, kernelDrops: 0 };
  }

  /** Ends the batches. Idempotent. */
  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closed.resolve();
  }

  /** Same as {@linkcode IdleSource.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens a source. The tracker calls it at start and again after a failure. */
export type Dialer = () => ConntrackSource | Promise<ConntrackSource>;
