/**
 * Finding and opening the native libraries. Nothing is loaded at import time: call
 * {@linkcode openLibrary}.
 *
 * @module
 */

import type { SysctlAccess } from "../lib/accounting.ts";
import { flowNamespace } from "../lib/uuid.ts";
import { ConntrackError, Libc } from "./libc.ts";
import {
  LIBC_SYMBOLS,
  type LibcSymbols,
  NFCT_SYMBOLS,
  type NfctSymbols,
  NFNL_SYMBOLS,
  type NfnlSymbols,
} from "./symbols.ts";

/** Environment variable that overrides the path of libnetfilter_conntrack. */
export const LIBNFCT_ENV = "NETBIRD_CT_LIBNFCT";

/** Candidate sonames, tried in order after the explicit path and the environment variable. */
export const LIBNFCT_CANDIDATES: readonly string[] = [
  "libnetfilter_conntrack.so.3",
  "libnetfilter_conntrack.so",
];

/** Options of {@linkcode openLibrary}. */
export interface OpenLibraryOptions {
  /** Explicit path of libnetfilter_conntrack; wins over the environment and the sonames. */
  path?: string;
}

function tryGetEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
      return undefined;
    }
    throw err;
  }
}

function isPermissionError(err: unknown): boolean {
  return err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable;
}

/** The opened native libraries. Close it last, after every source opened from it. */
export class NfctLibrary implements Disposable {
  /** libnetfilter_conntrack symbols. */
  readonly nfct: NfctSymbols;
  /** libnfnetlink symbols. */
  readonly nfnl: NfnlSymbols;
  /** libc helpers. */
  readonly libc: Libc;
  /** The path libnetfilter_conntrack was opened from. */
  readonly path: string;
  #libs: { close(): void }[];
  #closed = false;

  /**
   * Wraps opened libraries; use {@linkcode openLibrary}.
   *
   * @param nfct libnetfilter_conntrack.
   * @param nfnl libnfnetlink.
   * @param libc libc.
   * @param path Where libnetfilter_conntrack was found.
   */
  constructor(
    nfct: Deno.DynamicLibrary<typeof NFCT_SYMBOLS>,
    nfnl: Deno.DynamicLibrary<typeof NFNL_SYMBOLS>,
    libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>,
    path: string,
  ) {
    this.nfct = nfct.symbols;
    this.nfnl = nfnl.symbols;
    this.libc = new Libc(libc.symbols as LibcSymbols);
    this.path = path;
    this.#libs = [nfct, nfnl, libc];
  }

  /** Whether {@linkcode NfctLibrary.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Access to a sysctl under `/proc/sys`, optionally inside a named network namespace.
   *
   * @param name Dotted name, e.g. `net.netfilter.nf_conntrack_acct`.
   * @param netns `ip netns` name, or `undefined` for the current namespace.
   * @returns Read/write access.
   */
  sysctl(name: string, netns?: string): SysctlAccess {
    const path = `/proc/sys/${name.replaceAll(".", "/")}`;
    const libc = this.libc;
    return {
      name,
      read: () => libc.inNetns(netns, () => libc.readFile(path)),
      write: (value) => libc.inNetns(netns, () => libc.writeFile(path, value)),
    };
  }

  /**
   * The flow-ID namespace of this boot and network namespace (see `flowNamespace` in
   * `lib/uuid.ts`).
   *
   * @param netns `ip netns` name, or `undefined` for the current namespace.
   * @returns Namespace UUID text.
   */
  flowNamespace(netns?: string): string {
    const libc = this.libc;
    const bootId = libc.readFile("/proc/sys/kernel/random/boot_id");
    const inode = libc.inNetns(netns, () => libc.inode("/proc/thread-self/ns/net"));
    return flowNamespace(bootId, inode);
  }

  /** Closes the libraries. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const lib of this.#libs.reverse()) lib.close();
  }

  /** Same as {@linkcode NfctLibrary.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens libnetfilter_conntrack, libnfnetlink and libc. Search order for libnetfilter_conntrack:
 * `options.path`, then `$NETBIRD_CT_LIBNFCT`, then {@linkcode LIBNFCT_CANDIDATES}.
 *
 * @param options Explicit library path.
 * @returns The opened libraries.
 * @throws {ConntrackError} On a non-Linux OS, or when no candidate opens (the message lists every
 *   path tried and names the Debian package). Permission errors pass through unchanged.
 */
export function openLibrary(options: OpenLibraryOptions = {}): NfctLibrary {
  if (Deno.build.os !== "linux") {
    throw new ConntrackError(
      `Cannot track conntrack on ${Deno.build.os}: netbird-ct needs Linux with nf_conntrack`,
    );
  }
  const env = tryGetEnv(LIBNFCT_ENV);
  const candidates = [
    ...(options.path !== undefined ? [options.path] : []),
    ...(env !== undefined && env !== "" ? [env] : []),
    ...LIBNFCT_CANDIDATES,
  ];
  const failures: string[] = [];
  let nfct: Deno.DynamicLibrary<typeof NFCT_SYMBOLS> | undefined;
  let path = "";
  for (const candidate of candidates) {
    try {
      nfct = Deno.dlopen(candidate, NFCT_SYMBOLS);
      path = candidate;
      break;
    } catch (err) {
      if (isPermissionError(err)) throw err;
      failures.push(candidate);
      if (options.path !== undefined && candidate === options.path) {
        throw new ConntrackError(`Cannot open library "${candidate}": ${firstLine(err)}`, {
          cause: err,
        });
      }
    }
  }
  if (nfct === undefined) {
    throw new ConntrackError(
      `Cannot find libnetfilter_conntrack (tried ${failures.join(", ")}): install the Debian ` +
        `package libnetfilter-conntrack3 (apt-get install libnetfilter-conntrack3) or set ` +
        `${LIBNFCT_ENV} to the library's path`,
    );
  }
  let nfnl: Deno.DynamicLibrary<typeof NFNL_SYMBOLS> | undefined;
  try {
    nfnl = Deno.dlopen("libnfnetlink.so.0", NFNL_SYMBOLS);
    const libc = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
    return new NfctLibrary(nfct, nfnl, libc, path);
  } catch (err) {
    nfnl?.close();
    nfct.close();
    if (isPermissionError(err)) throw err;
    throw new ConntrackError(
      `Cannot open libnfnetlink.so.0 or libc.so.6: ${firstLine(err)} ` +
        `(install the Debian package libnfnetlink0)`,
      { cause: err },
    );
  }
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // Deno repeats "Could not open library: " twice; keep the dynamic loader's own words.
  return text.replace(/^(Could not open library: )+/, "").split("\n")[0] ?? text;
}

/** Typed access to the libnfct symbols for callers that only need them (tests, tooling). */
export type { NfctSymbols, NfnlSymbols };
