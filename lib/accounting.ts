/**
 * Turning conntrack accounting (`net.netfilter.nf_conntrack_acct`) on while the tracker runs, and
 * putting back the value it had before.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";

const log = getLogger(["netbird-ct", "accounting"]);

/** Synchronous access to one sysctl value (the real one goes through `ffi/`'s procfs helpers). */
export interface SysctlAccess {
  /** Human-readable name for messages, e.g. `net.netfilter.nf_conntrack_acct`. */
  readonly name: string;
  /** Reads the current value. */
  read(): string;
  /** Writes a new value. */
  write(value: string): void;
}

/**
 * Enables `nf_conntrack_acct` and restores the previous value. Unlike NetBird, which always writes
 * 0 back, this restores exactly what was there before (and only if it changed it).
 *
 * @example Usage
 * ```ts
 * import { Accounting } from "./accounting.ts";
 * let value = "0";
 * const acct = new Accounting({ name: "acct", read: () => value, write: (v) => { value = v; } });
 * acct.enable();
 * acct.restore();
 * if (value !== "0") throw new Error("not restored");
 * ```
 */
export class Accounting implements Disposable {
  #io: SysctlAccess;
  #previous: string | undefined;

  /**
   * Creates the instance.
   *
   * @param io Access to the sysctl.
   */
  constructor(io: SysctlAccess) {
    this.#io = io;
  }

  /** Whether this instance changed the value and has not restored it yet. */
  get modified(): boolean {
    return this.#previous !== undefined;
  }

  /**
   * Sets the sysctl to 1 if it is not already. Idempotent. Failures are logged, not thrown: the
   * tracker still runs, without counters.
   *
   * @returns `true` if accounting is on afterwards.
   */
  enable(): boolean {
    if (this.#previous !== undefined) return true;
    let current: string;
    try {
      current = this.#io.read().trim();
    } catch (err) {
      log.warn("Cannot read {name}, counters stay as they are: {error}", {
        name: this.#io.name,
        error: String(err),
      });
      return false;
    }
    if (current === "1") return true;
    if (current !== "" && !/^-?[0-9]+$/.test(current)) {
      log.warn("Cannot parse {name} value {value}, leaving it alone", {
        name: this.#io.name,
        value: current,
      });
      return false;
    }
    try {
      this.#io.write("1");
    } catch (err) {
      log.warn("Cannot enable {name}: {error}", { name: this.#io.name, error: String(err) });
      return false;
    }
    this.#previous = current === "" ? "0" : current;
    log.info("Enabled {name} (was {previous}); it is restored on exit", {
      name: this.#io.name,
      previous: this.#previous,
    });
    return true;
  }

  /** Writes back the value seen before {@linkcode Accounting.enable} changed it. Idempotent. */
  restore(): void {
    const previous = this.#previous;
    if (previous === undefined) return;
    try {
      this.#io.write(previous);
      this.#previous = undefined;
      log.info("Restored {name} to {previous}", { name: this.#io.name, previous });
    } catch (err) {
      log.error("Cannot restore {name} to {previous}: {error}", {
        name: this.#io.name,
        previous,
        error: String(err),
      });
    }
  }

  /** Same as {@linkcode Accounting.restore}. */
  [Symbol.dispose](): void {
    this.restore();
  }
}
