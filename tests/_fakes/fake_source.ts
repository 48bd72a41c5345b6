/**
 * A scripted {@linkcode ConntrackSource} and a dialer that hands out fakes in order. The test
 * pushes batches or a failure; `closed` resolves when the tracker closes the source.
 */

import type { ConntrackSource, SourceStats } from "../../lib/source.ts";
import type { Flow, FlowEvent } from "../../lib/flow.ts";

export class FakeSource implements ConntrackSource {
  readonly name: string;
  #queue: (readonly FlowEvent[] | Error)[] = [];
  #wake: (() => void) | undefined;
  #closed = Promise.withResolvers<void>();
  #isClosed = false;
  closeCalls = 0;
  stat: SourceStats = { received: 0, overruns: 0, kernelDrops: 0 };
  /** What dump() returns: the fake kernel table. */
  table: Flow[] = [];
  dumps = 0;
  /** Set to make dump() throw. */
  dumpError: Error | undefined;
  /** Optional drained() hook; undefined means the source has no backlog notion. */
  drained?: () => boolean;

  constructor(name = "fake") {
    this.name = name;
  }

  /** Resolves once close() has been called. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Queues a batch for delivery. */
  push(...events: FlowEvent[]): void {
    this.#queue.push(events);
    this.#wake?.();
  }

  /** Makes the running iteration throw, like a socket error. */
  fail(error: Error = new Error("fake listener error")): void {
    this.#queue.push(error);
    this.#wake?.();
  }

  async *batches(): AsyncGenerator<readonly FlowEvent[]> {
    while (true) {
      const next = this.#queue.shift();
      if (next instanceof Error) throw next;
      if (next !== undefined) {
        this.stat.received += next.length;
        yield next;
        continue;
      }
      if (this.#isClosed) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }

  dump(visit: (flow: Flow) => void): number {
    this.dumps++;
    if (this.dumpError !== undefined) throw this.dumpError;
    for (const f of [...this.table]) visit(f);
    return this.table.length;
  }

  /** Simulates an overrun: the kernel dropped events and the source counted ENOBUFS. */
  overrun(drops = 1): void {
    this.stat.overruns++;
    this.stat.kernelDrops += drops;
  }

  stats(): SourceStats {
    return { ...this.stat };
  }

  close(): void {
    this.closeCalls++;
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closed.resolve();
    this.#wake?.();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * A dialer over a list of sources (or errors to throw, or gates to wait on). Counts calls and
 * exposes a promise per call number.
 */
export class FakeDialer {
  calls = 0;
  #script: (() => ConntrackSource | Promise<ConntrackSource>)[];
  #callWaiters = new Map<number, () => void>();

  constructor(script: (() => ConntrackSource | Promise<ConntrackSource>)[]) {
    this.#script = script;
  }

  /** The function to hand to the tracker. */
  readonly dial = (): ConntrackSource | Promise<ConntrackSource> => {
    this.calls++;
    this.#callWaiters.get(this.calls)?.();
    const step = this.#script[Math.min(this.calls, this.#script.length) - 1];
    if (step === undefined) throw new Error("FakeDialer: no script");
    return step();
  };

  /** Resolves when the dialer has been called `n` times. */
  called(n: number): Promise<void> {
    if (this.calls >= n) return Promise.resolve();
    return new Promise((resolve) => this.#callWaiters.set(n, resolve));
  }
}
