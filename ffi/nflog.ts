/**
 * Packets logged by firewall rules (`nft ... log group N prefix "<rule-id>"`), over
 * libnetfilter_log.
 *
 * Same threading model as the conntrack source (`source.ts`, "design b"): the NFLOG netlink socket
 * is non-blocking; `poll()` runs as a `nonblocking` FFI call (off the JS thread) together with an
 * eventfd for shutdown; then `read()` and `nflog_handle_packet()` run synchronously on the JS
 * thread, and libnetfilter_log calls an ordinary same-thread `UnsafeCallback` for each logged
 * packet, which copies the prefix and the packet while they are valid. errno is read right after
 * the synchronous `read()`, so EAGAIN (drained) and ENOBUFS (overrun: counted, never fatal) are
 * told apart.
 *
 * @module
 */

import type { DropSource, DropSourceStats, LoggedPacket } from "../lib/drops.ts";
import { ERRNO, LIBC } from "./constants.ts";
import { HOST_IS_LITTLE_ENDIAN } from "./decode.ts";
import { ConntrackError } from "./libc.ts";
import type { NfctLibrary } from "./library.ts";
import {
  NFLOG_CALLBACK,
  NFLOG_PF,
  NFLOG_SYMBOLS,
  type NflogSymbols,
  NFULNL_COPY,
} from "./nflog_symbols.ts";

/** The soname of libnetfilter_log (Debian package libnetfilter-log1). */
export const LIBNFLOG = "libnetfilter_log.so.1";

const EBUSY = 16;
/** Largest netlink message read at once (a batch of logged packets of up to 64 KiB each). */
const RECV_BUFFER_BYTES = 256 * 1024;

/** Options of {@linkcode openNflogSource}. */
export interface NflogSourceOptions {
  /** The NFLOG group (`log group N`), 0-65535. */
  group: number;
  /** Open the socket inside this `ip netns` namespace. Default: the current one. */
  netns?: string;
  /** Poll timeout in ms (only bounds how long a wakeup can be missed). Default 1000. */
  pollTimeoutMs?: number;
  /** Bytes of each packet the kernel copies. Default 0xffff (whole packets). */
  copyRange?: number;
  /** Requested socket receive buffer in bytes (the kernel doubles it). Default 4 MiB. */
  rcvbufBytes?: number;
  /** Path or soname of libnetfilter_log. Default {@linkcode LIBNFLOG}. */
  libraryPath?: string;
}

/**
 * Subscribes to one NFLOG group. Implements {@linkcode DropSource}. Owns its dlopen of
 * libnetfilter_log; the libc and libnfnetlink of the given {@linkcode NfctLibrary} must stay open
 * until this source is closed.
 */
export class NflogSource implements DropSource {
  #lib: NfctLibrary;
  #dl: Deno.DynamicLibrary<typeof NFLOG_SYMBOLS>;
  #s: NflogSymbols;
  #handle: Deno.PointerValue;
  #group: Deno.PointerValue;
  #fd: number;
  #eventFd: number;
  #callback: Deno.UnsafeCallback<typeof NFLOG_CALLBACK>;
  #pending: LoggedPacket[] = [];
  #callbackError: unknown;
  #pollTimeoutMs: number;
  #pollFds = new Uint8Array(16); // struct pollfd[2]
  #buffer = new Uint8Array(RECV_BUFFER_BYTES);
  #payloadPointer = new BigUint64Array(1); // char **data of nflog_get_payload
  #closing = false;
  #released = false;
  #iterating = false;
  #stats: DropSourceStats = { received: 0, overruns: 0 };

  /**
   * Opens and binds the socket; use {@linkcode openNflogSource}.
   *
   * @param lib The opened conntrack libraries (for libc and libnfnetlink).
   * @param options Group, namespace, copy range, buffer.
   */
  constructor(lib: NfctLibrary, options: NflogSourceOptions) {
    if (!Number.isInteger(options.group) || options.group < 0 || options.group > 65535) {
      throw new ConntrackError(`Cannot bind NFLOG group ${options.group}: expected 0-65535`);
    }
    this.#lib = lib;
    this.#pollTimeoutMs = options.pollTimeoutMs ?? 1000;
    const libc = lib.libc;
    const c = libc.symbols;
    const path = options.libraryPath ?? LIBNFLOG;
    try {
      this.#dl = Deno.dlopen(path, NFLOG_SYMBOLS);
    } catch (err) {
      if (err instanceof Deno.errors.PermissionDenied || err instanceof Deno.errors.NotCapable) {
        throw err;
      }
      const why = (err instanceof Error ? err.message : String(err))
        .replace(/^(Could not open library: )+/, "").split("\n")[0];
      throw new ConntrackError(
        `Cannot open ${path}: ${why} (install the Debian package libnetfilter-log1)`,
        { cause: err },
      );
    }
    const s = this.#dl.symbols;
    this.#s = s;
    const opened = libc.inNetns(options.netns, () => {
      const h = s.nflog_open();
      return h === null ? { errno: libc.errno() } : { h };
    });
    if ("errno" in opened) {
      this.#dl.close();
      throw openError(lib, opened.errno, options.group);
    }
    const h = opened.h;
    this.#handle = h;
    const fail = (what: string, errno: number, gh: Deno.PointerValue = null): never => {
      if (gh !== null) s.nflog_unbind_group(gh);
      s.nflog_close(h);
      this.#dl.close();
      // The kernel answers EPERM both without CAP_NET_ADMIN and when another socket (ulogd,
      // another netbird-ct) already has the group.
      throw errno === EBUSY || errno === ERRNO.EPERM || errno === ERRNO.EACCES
        ? new ConntrackError(
          `Cannot ${what}: ${libc.describe(errno)}: another program (ulogd, another ` +
            `netbird-ct) already listens to NFLOG group ${options.group}, or CAP_NET_ADMIN is ` +
            `missing (run as root)`,
          { errno },
        )
        : new ConntrackError(`Cannot ${what}: ${libc.describe(errno)}`, { errno });
    };
    // Only old kernels (< 3.17) need a per-family binding; newer ones accept and ignore it.
    s.nflog_bind_pf(h, NFLOG_PF.INET);
    s.nflog_bind_pf(h, NFLOG_PF.INET6);
    const gh = s.nflog_bind_group(h, options.group);
    if (gh === null) fail(`bind NFLOG group ${options.group}`, libc.errno());
    this.#group = gh;
    if (s.nflog_set_mode(gh, NFULNL_COPY.PACKET, options.copyRange ?? 0xffff) < 0) {
      fail("set the NFLOG copy mode", libc.errno(), gh);
    }
    // Deliver every packet at once instead of batching up to 100 packets or 1 s.
    if (s.nflog_set_qthresh(gh, 1) < 0) fail("set the NFLOG queue threshold", libc.errno(), gh);
    if (s.nflog_set_timeout(gh, 0) < 0) fail("set the NFLOG flush timeout", libc.errno(), gh);
    this.#fd = s.nflog_fd(h);
    const rcvbuf = options.rcvbufBytes ?? 4 * 1024 * 1024;
    if (rcvbuf > 0) lib.nfnl.nfnl_rcvbufsiz(s.nflog_nfnlh(h), rcvbuf);

    const flags = c.fcntl(this.#fd, LIBC.F_GETFL, 0);
    const eventFd = c.eventfd(0, LIBC.EFD_NONBLOCK | LIBC.EFD_CLOEXEC);
    if (flags < 0 || c.fcntl(this.#fd, LIBC.F_SETFL, flags | LIBC.O_NONBLOCK) < 0 || eventFd < 0) {
      const e = libc.errno();
      if (eventFd >= 0) c.close(eventFd);
      fail("set up the NFLOG socket", e, gh);
    }
    this.#eventFd = eventFd;
    const view = new DataView(this.#pollFds.buffer);
    view.setInt32(0, this.#fd, HOST_IS_LITTLE_ENDIAN);
    view.setInt16(4, LIBC.POLLIN, HOST_IS_LITTLE_ENDIAN);
    view.setInt32(8, eventFd, HOST_IS_LITTLE_ENDIAN);
    view.setInt16(12, LIBC.POLLIN, HOST_IS_LITTLE_ENDIAN);

    this.#callback = new Deno.UnsafeCallback(
      NFLOG_CALLBACK,
      (_gh, _nfmsg, nfd) => this.#onPacket(nfd),
    );
    s.nflog_callback_register(gh, this.#callback.pointer, null);
  }

  /** The netlink socket descriptor. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Current counters (also after close).
   *
   * @returns A copy.
   */
  stats(): DropSourceStats {
    return { ...this.#stats };
  }

  /** Never throws into C: errors are kept and rethrown after `nflog_handle_packet` returns. */
  #onPacket(nfd: Deno.PointerValue): number {
    try {
      const s = this.#s;
      const p = s.nflog_get_prefix(nfd);
      const prefix = p === null ? "" : Deno.UnsafePointerView.getCString(p);
      const length = s.nflog_get_payload(nfd, new Uint8Array(this.#payloadPointer.buffer));
      const data = Deno.UnsafePointer.create(this.#payloadPointer[0]!);
      const payload = length > 0 && data !== null
        ? new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(data, length).slice(0))
        : new Uint8Array(0);
      this.#pending.push({ prefix, payload });
      return 0;
    } catch (err) {
      this.#callbackError = err;
      return 0;
    }
  }

  /**
   * Yields batches of logged packets until closed. Only one iteration may run at a time.
   *
   * @returns The batches.
   */
  async *batches(): AsyncGenerator<readonly LoggedPacket[]> {
    if (this.#iterating) throw new ConntrackError("Cannot iterate an NFLOG source twice at once");
    if (this.#released) return;
    this.#iterating = true;
    const libc = this.#lib.libc;
    const c = libc.symbols;
    const buf = this.#buffer;
    let lastTurn = performance.now();
    let rounds = 0;
    try {
      while (true) {
        const n = Number(c.read(this.#fd, buf, BigInt(buf.length)));
        const errno = n < 0 ? libc.errno() : 0;
        if (n > 0) {
          this.#s.nflog_handle_packet(this.#handle, buf, n);
          if (this.#callbackError !== undefined) {
            const err = this.#callbackError;
            this.#callbackError = undefined;
            throw new ConntrackError("Cannot read a logged packet", { cause: err });
          }
          if (this.#pending.length > 0) {
            const batch = this.#pending;
            this.#pending = [];
            this.#stats.received += batch.length;
            yield batch;
          }
          if (this.#closing && ++rounds > 256) return;
          if (performance.now() - lastTurn > 10) {
            await macrotask();
            lastTurn = performance.now();
          }
          continue;
        }
        if (n === 0) {
          throw new ConntrackError("Cannot receive logged packets: the NFLOG socket closed");
        }
        if (errno === ERRNO.EINTR) continue;
        if (errno === ERRNO.ENOBUFS) {
          this.#stats.overruns++;
          continue;
        }
        if (errno !== ERRNO.EAGAIN) {
          throw new ConntrackError(`Cannot receive logged packets: ${libc.describe(errno)}`, {
            errno,
          });
        }
        if (this.#closing) return;
        const ready = await c.poll(this.#pollFds, 2n, this.#pollTimeoutMs);
        lastTurn = performance.now();
        if (ready < 0) await macrotask();
      }
    } finally {
      this.#iterating = false;
      if (this.#closing) this.#release();
    }
  }

  /**
   * Stops the source: a running iteration wakes up, delivers what is queued, and ends; the
   * socket, callback and library are freed. Idempotent.
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#iterating) {
      const one = new BigUint64Array([1n]);
      this.#lib.libc.symbols.write(this.#eventFd, new Uint8Array(one.buffer), 8n);
    } else {
      this.#release();
    }
  }

  /** Same as {@linkcode NflogSource.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#s.nflog_unbind_group(this.#group);
    this.#s.nflog_close(this.#handle);
    this.#lib.libc.symbols.close(this.#eventFd);
    this.#callback.close();
    this.#dl.close();
  }
}

/**
 * Opens an NFLOG source for one group: each packet a rule logs with `log group N` arrives with
 * its prefix and (up to `copyRange` bytes of) the IP packet.
 *
 * @param lib The opened conntrack libraries (libc, libnfnetlink); close them after the source.
 * @param options Group and namespace.
 * @returns The source.
 * @throws {ConntrackError} When libnetfilter_log is missing, without CAP_NET_ADMIN, or when the
 *   group is taken by another listener.
 */
export function openNflogSource(lib: NfctLibrary, options: NflogSourceOptions): NflogSource {
  return new NflogSource(lib, options);
}

function openError(lib: NfctLibrary, errno: number, group: number): ConntrackError {
  const why = lib.libc.describe(errno);
  if (errno === ERRNO.EPERM || errno === ERRNO.EACCES) {
    return new ConntrackError(
      `Cannot listen to NFLOG group ${group}: ${why}: run as root or grant CAP_NET_ADMIN`,
      { errno },
    );
  }
  return new ConntrackError(
    `Cannot listen to NFLOG group ${group}: ${why} (modprobe nfnetlink_log)`,
    { errno },
  );
}

function macrotask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
