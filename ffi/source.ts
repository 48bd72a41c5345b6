/**
 * The kernel event source over libnetfilter_conntrack.
 *
 * Threading model (measured in the project's research, "design b"): the netlink socket is
 * non-blocking; `poll()` runs as a `nonblocking` FFI call (off the JS thread) and wakes when events
 * are queued; then `nfct_catch` runs synchronously on the JS thread with an ordinary same-thread
 * `UnsafeCallback`, which decodes each entry into a plain object while it is valid. The callback
 * returns `NFCT_CB_STOP` once a batch is full, so the event loop gets a turn at least every
 * `maxBatch` events. errno is read right after the synchronous call, so EAGAIN (drained) and
 * ENOBUFS (overrun, counted, never fatal) are told apart. Thread-safe callbacks were measured ~15×
 * slower and cannot see ENOBUFS; they are not used.
 *
 * Shutdown is immediate: an eventfd sits in the same poll set, and `close()` writes to it.
 *
 * @module
 */

import type { Flow, FlowEvent } from "../lib/flow.ts";
import type { ConntrackSource, SourceStats } from "../lib/source.ts";
import {
  type Attr,
  CONNTRACK,
  ERRNO,
  LIBC,
  NF_NETLINK_CONNTRACK,
  NFCT_CB,
  NFCT_Q,
  NFCT_T,
} from "./constants.ts";
import { type AttrReader, decodeEvent, decodeFlow, HOST_IS_LITTLE_ENDIAN } from "./decode.ts";
import { ConntrackError } from "./libc.ts";
import type { NfctLibrary } from "./library.ts";
import { NFCT_CALLBACK, type NfctSymbols } from "./symbols.ts";

/** Options of {@linkcode openEventSource}. */
export interface EventSourceOptions {
  /**
   * Events per batch; the tracker handles one batch at a time. Default
   * {@linkcode DEFAULT_MAX_BATCH}.
   */
  maxBatch?: number;
  /** Open the socket inside this `ip netns` namespace. Default: the current one. */
  netns?: string;
  /** Poll timeout in ms (only bounds how long a wakeup can be missed). Default 1000. */
  pollTimeoutMs?: number;
  /**
   * Requested socket receive buffer in bytes (the kernel doubles it). Each queued event costs
   * ~1.3 KB, so the kernel default (~208 KiB, ~166 events) overruns on any burst such as
   * `conntrack -F`. Default 64 MiB; 0 keeps the kernel default.
   */
  rcvbufBytes?: number;
  /**
   * Set `NETLINK_BROADCAST_ERROR` so the kernel keeps a dying entry and re-delivers its DESTROY
   * when the socket buffer is full, instead of dropping it (measured: 100 % DESTROY delivery even
   * with the default buffer). Trade-off: while the listener stalls, dying entries pile up in the
   * kernel. Default `true`.
   */
  reliableDestroy?: boolean;
}

/**
 * Default {@linkcode EventSourceOptions.maxBatch}. A batch's events and records stay alive until
 * it is written; at 256 they fit V8's young generation even when it is capped at 4 MB
 * (`--max-semi-space-size=4`, as the shipped binary runs), so they die young instead of being
 * promoted: measured with a million open flows, peak RSS 125–131 MiB against 184 MiB at 1024,
 * for the same CPU per event.
 */
export const DEFAULT_MAX_BATCH = 256;

/** Default {@linkcode EventSourceOptions.rcvbufBytes}: room for ~100k queued events. */
export const DEFAULT_RCVBUF_BYTES = 64 * 1024 * 1024;

/** Reads attributes of the `nf_conntrack` currently passed to the callback. */
class PointerAttrReader implements AttrReader {
  ct: Deno.PointerValue = null;
  #s: NfctSymbols;
  /** One buffer per attribute: the four addresses of an entry are compared after reading. */
  #v6: Uint8Array[] = [];

  constructor(symbols: NfctSymbols) {
    this.#s = symbols;
  }

  isSet(a: Attr): boolean {
    return this.#s.nfct_attr_is_set(this.ct, a) > 0;
  }
  u8(a: Attr): number {
    return this.#s.nfct_get_attr_u8(this.ct, a);
  }
  u16(a: Attr): number {
    return this.#s.nfct_get_attr_u16(this.ct, a);
  }
  u32(a: Attr): number {
    return this.#s.nfct_get_attr_u32(this.ct, a);
  }
  u64(a: Attr): bigint {
    return this.#s.nfct_get_attr_u64(this.ct, a);
  }
  bytes16(a: Attr): Uint8Array {
    const p = this.#s.nfct_get_attr(this.ct, a);
    if (p === null) return new Uint8Array(16);
    const buffer = this.#v6[a] ??= new Uint8Array(16);
    Deno.UnsafePointerView.copyInto(p, buffer);
    return buffer;
  }
}

/**
 * Subscribes to conntrack NEW and DESTROY events. Implements {@linkcode ConntrackSource}.
 *
 * Resources (handle, callback, eventfd) are freed by `close()` when no iteration runs, else when
 * the running iteration ends (right after `close()`, once it has delivered what was received).
 */
export class NfctEventSource implements ConntrackSource {
  #lib: NfctLibrary;
  #handle: Deno.PointerValue;
  #fd: number;
  #eventFd: number;
  #callback: Deno.UnsafeCallback<typeof NFCT_CALLBACK>;
  #reader: PointerAttrReader;
  #pending: FlowEvent[] = [];
  #callbackError: unknown;
  #maxBatch: number;
  #pollTimeoutMs: number;
  #pollFds = new Uint8Array(16); // struct pollfd[2]
  #closing = false;
  #released = false;
  #iterating = false;
  #stats: SourceStats = { received: 0, overruns: 0, kernelDrops: 0 };
  #netns: string | undefined;
  #inode: bigint;
  #drained = true;
  #dropsReadAt = -1;
  /**
   * Drops may have happened since the counter was last read. The kernel reports ENOBUFS once per
   * congestion episode and keeps dropping (and counting) silently until the socket's queue drains,
   * so the counter is read again when a read finds the socket empty, and when the socket closes.
   */
  #dropsStale = false;
  #receiveBufferBytes = 0;

  /**
   * Opens the socket; use {@linkcode openEventSource}.
   *
   * @param lib The opened libraries.
   * @param options Batch size, namespace, buffer and delivery mode.
   */
  constructor(lib: NfctLibrary, options: EventSourceOptions = {}) {
    this.#lib = lib;
    this.#maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH;
    this.#pollTimeoutMs = options.pollTimeoutMs ?? 1000;
    const { nfct } = lib;
    const libc = lib.libc;
    const c = libc.symbols;

    const handle = libc.inNetns(options.netns, () => {
      const h = nfct.nfct_open(
        CONNTRACK,
        NF_NETLINK_CONNTRACK.NEW | NF_NETLINK_CONNTRACK.DESTROY,
      );
      return h === null ? { errno: libc.errno() } : { h };
    });
    if ("errno" in handle) throw openError(lib, handle.errno);
    this.#handle = handle.h;
    this.#fd = nfct.nfct_fd(this.#handle);
    const rcvbuf = options.rcvbufBytes ?? DEFAULT_RCVBUF_BYTES;
    // SO_RCVBUFFORCE (CAP_NET_ADMIN, which opening needed anyway), else SO_RCVBUF up to rmem_max.
    if (rcvbuf > 0) lib.nfnl.nfnl_rcvbufsiz(nfct.nfct_nfnlh(this.#handle), rcvbuf);
    this.#receiveBufferBytes = readIntOption(lib, this.#fd, LIBC.SOL_SOCKET, LIBC.SO_RCVBUF);
    if (options.reliableDestroy ?? true) {
      const one = new Int32Array([1]);
      if (
        c.setsockopt(
          this.#fd,
          LIBC.SOL_NETLINK,
          LIBC.NETLINK_BROADCAST_ERROR,
          new Uint8Array(one.buffer),
          4,
        ) !== 0
      ) {
        const e = libc.errno();
        nfct.nfct_close(this.#handle);
        throw new ConntrackError(`Cannot enable reliable DESTROY delivery: ${libc.describe(e)}`, {
          errno: e,
        });
      }
    }
    this.#netns = options.netns;
    this.#inode = libc.fdInode(this.#fd);

    const flags = c.fcntl(this.#fd, LIBC.F_GETFL, 0);
    const eventFd = c.eventfd(0, LIBC.EFD_NONBLOCK | LIBC.EFD_CLOEXEC);
    if (flags < 0 || c.fcntl(this.#fd, LIBC.F_SETFL, flags | LIBC.O_NONBLOCK) < 0 || eventFd < 0) {
      const e = libc.errno();
      if (eventFd >= 0) c.close(eventFd);
      nfct.nfct_close(this.#handle);
      throw new ConntrackError(`Cannot set up the conntrack socket: ${libc.describe(e)}`, {
        errno: e,
      });
    }
    this.#eventFd = eventFd;
    // struct pollfd { int fd; short events; short revents; }, host byte order.
    const view = new DataView(this.#pollFds.buffer);
    view.setInt32(0, this.#fd, HOST_IS_LITTLE_ENDIAN);
    view.setInt16(4, LIBC.POLLIN, HOST_IS_LITTLE_ENDIAN);
    view.setInt32(8, eventFd, HOST_IS_LITTLE_ENDIAN);
    view.setInt16(12, LIBC.POLLIN, HOST_IS_LITTLE_ENDIAN);

    this.#reader = new PointerAttrReader(nfct);
    this.#callback = new Deno.UnsafeCallback(NFCT_CALLBACK, (type, ct) => this.#onEvent(type, ct));
    nfct.nfct_callback_register(this.#handle, NFCT_T.ALL, this.#callback.pointer, null);
  }

  /** The netlink socket descriptor. */
  get fd(): number {
    return this.#fd;
  }

  /** The socket receive buffer as the kernel holds it (twice the requested size). */
  get receiveBufferBytes(): number {
    return this.#receiveBufferBytes;
  }

  /** Whether the last read found the socket empty. */
  drained(): boolean {
    return this.#drained;
  }

  /**
   * Current counters. `kernelDrops` is the socket's `Drops` column in `/proc/net/netlink` (the
   * kernel's exact count of messages it could not queue), re-read whenever an overrun happened.
   */
  stats(): SourceStats {
    if (this.#dropsReadAt !== this.#stats.overruns && !this.#released) this.#refreshKernelDrops();
    return { ...this.#stats };
  }

  #refreshKernelDrops(): void {
    this.#dropsReadAt = this.#stats.overruns;
    this.#stats.kernelDrops = this.#readKernelDrops() ?? this.#stats.kernelDrops;
  }

  #readKernelDrops(): number | undefined {
    const libc = this.#lib.libc;
    let text: string;
    try {
      text = libc.inNetns(this.#netns, () => libc.readFile("/proc/net/netlink"));
    } catch {
      return undefined;
    }
    return parseNetlinkDrops(text, this.#inode);
  }

  /**
   * Dumps the conntrack table (IPv4 and IPv6) over a second, short-lived netlink socket.
   *
   * @param visit Called with each entry, inside the C callback (it must not throw; if it does,
   *   the rest of the dump is still read and the error is rethrown afterwards).
   * @returns The number of entries.
   */
  dump(visit: (flow: Flow) => void): number {
    const { nfct } = this.#lib;
    const libc = this.#lib.libc;
    const h = libc.inNetns(this.#netns, () => nfct.nfct_open(CONNTRACK, 0));
    if (h === null) {
      const e = libc.errno();
      throw new ConntrackError(`Cannot open a conntrack query socket: ${libc.describe(e)}`, {
        errno: e,
      });
    }
    let count = 0;
    const reader = new PointerAttrReader(nfct);
    let failure: unknown;
    const cb = new Deno.UnsafeCallback(NFCT_CALLBACK, (_type, ct) => {
      try {
        if (failure !== undefined) return NFCT_CB.CONTINUE;
        reader.ct = ct;
        const flow = decodeFlow(reader);
        reader.ct = null;
        count++;
        visit(flow);
        return NFCT_CB.CONTINUE;
      } catch (err) {
        failure = err;
        return NFCT_CB.CONTINUE; // STOP would leave the rest of the dump unread in the socket
      }
    });
    try {
      nfct.nfct_callback_register(h, NFCT_T.ALL, cb.pointer, null);
      const family = new Uint8Array(new Uint32Array([0]).buffer); // AF_UNSPEC: both families
      if (nfct.nfct_query(h, NFCT_Q.DUMP, family) < 0) {
        const e = libc.errno();
        throw new ConntrackError(`Cannot dump the conntrack table: ${libc.describe(e)}`, {
          errno: e,
        });
      }
    } finally {
      nfct.nfct_callback_unregister(h);
      nfct.nfct_close(h);
      cb.close();
    }
    if (failure !== undefined) {
      throw new ConntrackError("Cannot process a dumped conntrack entry", { cause: failure });
    }
    return count;
  }

  /** Never throws into C: errors are kept and rethrown after `nfct_catch` returns. */
  #onEvent(type: number, ct: Deno.PointerValue): number {
    try {
      this.#reader.ct = ct;
      const event = decodeEvent(type, this.#reader);
      this.#reader.ct = null;
      if (event !== undefined) this.#pending.push(event);
      return this.#pending.length >= this.#maxBatch ? NFCT_CB.STOP : NFCT_CB.CONTINUE;
    } catch (err) {
      this.#callbackError = err;
      return NFCT_CB.STOP;
    }
  }

  /**
   * Yields batches of events until closed. Only one iteration may run at a time.
   *
   * @returns The batches.
   */
  async *batches(): AsyncGenerator<readonly FlowEvent[]> {
    if (this.#iterating) {
      throw new ConntrackError("Cannot iterate a conntrack source twice at once");
    }
    if (this.#released) return;
    this.#iterating = true;
    const { nfct } = this.#lib;
    const libc = this.#lib.libc;
    let drainRounds = 0;
    let lastTurn = performance.now();
    try {
      while (true) {
        const r = nfct.nfct_catch(this.#handle);
        const errno = r < 0 ? libc.errno() : 0;
        if (this.#callbackError !== undefined) {
          const err = this.#callbackError;
          this.#callbackError = undefined;
          throw new ConntrackError("Cannot decode a conntrack event", { cause: err });
        }
        this.#drained = r < 0 && errno === ERRNO.EAGAIN;
        if (this.#pending.length > 0) {
          const batch = this.#pending;
          this.#pending = [];
          this.#stats.received += batch.length;
          yield batch;
        }
        if (r >= 0) {
          // The callback stopped a full batch. Timers and signal handlers need a macrotask turn,
          // which costs about a millisecond: take one every 10 ms, not after every batch.
          if (this.#closing && ++drainRounds > 256) return;
          if (performance.now() - lastTurn > 10) {
            await macrotask();
            lastTurn = performance.now();
          }
          continue;
        }
        if (errno === ERRNO.EINTR) continue;
        if (errno === ERRNO.ENOBUFS) {
          this.#stats.overruns++;
          this.#dropsStale = true;
          continue;
        }
        if (errno !== ERRNO.EAGAIN) {
          throw new ConntrackError(`Cannot receive conntrack events: ${libc.describe(errno)}`, {
            errno,
          });
        }
        if (this.#dropsStale) {
          // Drained: the congestion episode is over, so the counter is complete until the next
          // ENOBUFS.
          this.#dropsStale = false;
          this.#refreshKernelDrops();
        }
        if (this.#closing) return;
        const ready = await libc.symbols.poll(this.#pollFds, 2n, this.#pollTimeoutMs);
        lastTurn = performance.now();
        if (ready < 0) await macrotask();
      }
    } finally {
      this.#iterating = false;
      if (this.#closing) this.#release();
    }
  }

  /**
   * Stops the source: a running iteration wakes up, delivers what is queued, and ends. Idempotent.
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

  /** Same as {@linkcode NfctEventSource.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #release(): void {
    if (this.#released) return;
    if (this.#stats.overruns > 0) this.#refreshKernelDrops(); // the final count, while the socket exists
    this.#released = true;
    const { nfct } = this.#lib;
    nfct.nfct_callback_unregister(this.#handle);
    nfct.nfct_close(this.#handle);
    this.#lib.libc.symbols.close(this.#eventFd);
    this.#callback.close();
  }
}

/**
 * Opens a conntrack event source (NEW + DESTROY).
 *
 * @param lib The opened libraries.
 * @param options Batch size and namespace.
 * @returns The source.
 * @throws {ConntrackError} With an actionable message when the socket cannot be opened (no
 *   CAP_NET_ADMIN, no `nf_conntrack_netlink`).
 */
export function openEventSource(
  lib: NfctLibrary,
  options: EventSourceOptions = {},
): NfctEventSource {
  return new NfctEventSource(lib, options);
}

function openError(lib: NfctLibrary, errno: number): ConntrackError {
  const why = lib.libc.describe(errno);
  if (errno === ERRNO.EPERM || errno === ERRNO.EACCES) {
    return new ConntrackError(
      `Cannot subscribe to conntrack events: ${why}: run as root or grant CAP_NET_ADMIN ` +
        `(systemd: AmbientCapabilities=CAP_NET_ADMIN)`,
      { errno },
    );
  }
  if (errno === ERRNO.EPROTONOSUPPORT || errno === ERRNO.ENOENT) {
    return new ConntrackError(
      `Cannot subscribe to conntrack events: ${why}: load the kernel module ` +
        `(modprobe nf_conntrack_netlink)`,
      { errno },
    );
  }
  return new ConntrackError(`Cannot subscribe to conntrack events: ${why}`, { errno });
}

function readIntOption(lib: NfctLibrary, fd: number, level: number, name: number): number {
  const value = new Int32Array(1);
  const len = new Uint32Array([4]);
  const r = lib.libc.symbols.getsockopt(
    fd,
    level,
    name,
    new Uint8Array(value.buffer),
    new Uint8Array(len.buffer),
  );
  return r === 0 ? value[0]! : 0;
}

/**
 * Finds the `Drops` column of the socket with inode `inode` in `/proc/net/netlink` text.
 *
 * @param text The file's contents.
 * @param inode The socket's inode.
 * @returns The drop count, or `undefined` if the socket is not listed.
 */
export function parseNetlinkDrops(text: string, inode: bigint): number | undefined {
  const lines = text.split("\n");
  const header = lines[0]?.trim().split(/\s+/) ?? [];
  const drops = header.indexOf("Drops");
  const ino = header.indexOf("Inode");
  if (drops < 0 || ino < 0) return undefined;
  const want = String(inode);
  for (const line of lines.slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[ino] === want) return Number(cols[drops]);
  }
  return undefined;
}

function macrotask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
