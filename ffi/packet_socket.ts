/**
 * Live packet capture through a Linux `AF_PACKET` socket, over libc.
 *
 * Same threading model as the conntrack source (`source.ts`, "design b"): the socket is
 * non-blocking; `poll()` runs as a `nonblocking` FFI call (off the JS thread) together with an
 * eventfd for shutdown; then `recvfrom()` runs synchronously on the JS thread into one reusable
 * buffer, and errno is read right after it, so EAGAIN (drained) is told apart from real errors.
 * Each frame is copied out with the time it was received (realtime clock, taken at receipt) and
 * delivered in batches as {@linkcode CaptureRecord}s, ready for `decodePacket`.
 *
 * The socket is `socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL))` bound to one interface with a
 * `struct sockaddr_ll`: it sees every frame the interface receives and sends, once. Frames queued
 * from other interfaces between `socket()` and `bind()` are dropped by interface index. The link
 * type comes from the frame's `sll_hatype`: Ethernet (and loopback) frames keep their header,
 * tunnel devices (`ARPHRD_NONE`, such as WireGuard's `wt0`) give raw IP. On loopback, where
 * each frame is seen leaving and arriving, only the arriving copy is kept (as libpcap does).
 *
 * Needs root or CAP_NET_RAW.
 *
 * @module
 */

import type { CaptureRecord, LivePacketSource } from "../lib/capture/pcap.ts";
import { ERRNO, LIBC } from "./constants.ts";
import { HOST_IS_LITTLE_ENDIAN } from "./decode.ts";
import { ConntrackError, Libc } from "./libc.ts";
import { LIBC_SYMBOLS, PACKET_SOCKET_SYMBOLS, type PacketSocketSymbols } from "./symbols.ts";

/** Constants of `AF_PACKET` sockets (`linux/if_packet.h`, `linux/if_ether.h`, `net/if_arp.h`). */
export const PACKET = {
  AF_PACKET: 17,
  SOCK_RAW: 3,
  SOCK_CLOEXEC: 0o2000000,
  ETH_P_ALL: 0x0003,
  SOL_PACKET: 263,
  PACKET_STATISTICS: 6,
  /** `sll_pkttype` of frames the host sent. */
  PACKET_OUTGOING: 4,
  /** `sizeof(struct sockaddr_ll)`. */
  SOCKADDR_LL_SIZE: 20,
  MSG_TRUNC: 0x20,
  ENODEV: 19,
  ENETDOWN: 100,
  ARPHRD_ETHER: 1,
  ARPHRD_LOOPBACK: 772,
  ARPHRD_RAWIP: 519,
  ARPHRD_TUNNEL: 768,
  ARPHRD_TUNNEL6: 769,
  ARPHRD_SIT: 776,
  ARPHRD_NONE: 0xfffe,
} as const;

/** LINKTYPE_ETHERNET and LINKTYPE_RAW (as `LinkType` in `lib/capture`). */
const LINKTYPE_ETHERNET = 1;
const LINKTYPE_RAW = 101;
/** A link type no decoder knows: frames of unsupported devices are skipped as such. */
const LINKTYPE_UNKNOWN = -1;

/**
 * The capture link type of a device type (`sll_hatype`).
 *
 * @param hatype `ARPHRD_*`.
 * @returns A `LinkType` value, or -1 when frames of this device type cannot be decoded.
 */
export function linkTypeOfHatype(hatype: number): number {
  switch (hatype) {
    case PACKET.ARPHRD_ETHER:
    case PACKET.ARPHRD_LOOPBACK:
      return LINKTYPE_ETHERNET;
    case PACKET.ARPHRD_NONE:
    case PACKET.ARPHRD_RAWIP:
    case PACKET.ARPHRD_TUNNEL:
    case PACKET.ARPHRD_TUNNEL6:
    case PACKET.ARPHRD_SIT:
      return LINKTYPE_RAW;
    default:
      return LINKTYPE_UNKNOWN;
  }
}

/** An error opening or reading a packet socket. */
export class PacketSocketError extends ConntrackError {
  /** The error name, `"PacketSocketError"`. */
  override name = "PacketSocketError";
}

/** Options of {@linkcode openPacketSocket}. */
export interface PacketSocketOptions {
  /** The interface to capture on, e.g. `wt0`. */
  interface: string;
  /** Open the socket inside this `ip netns` namespace. Default: the current one. */
  netns?: string;
  /** Frames per batch. Default 256. */
  maxBatch?: number;
  /** Poll timeout in ms: an idle socket yields an empty batch this often. Default 1000. */
  pollTimeoutMs?: number;
  /**
   * Requested socket receive buffer in bytes (the kernel doubles it): SO_RCVBUFFORCE with
   * CAP_NET_ADMIN, else SO_RCVBUF up to `net.core.rmem_max`. Default 32 MiB; 0 keeps the kernel
   * default.
   */
  rcvbufBytes?: number;
  /** Largest frame kept whole, in bytes (longer ones are cut). Default 256 KiB (GSO/GRO). */
  snapLength?: number;
  /** Path or soname of libc. Default `libc.so.6`. */
  libcPath?: string;
}

/** Counters of a {@linkcode PacketSocket}. */
export interface PacketSocketStats {
  /** Frames delivered. */
  received: number;
  /** Frames longer than the snap length (delivered cut). */
  truncated: number;
  /** Frames the kernel dropped because the socket buffer was full (`PACKET_STATISTICS`). */
  kernelDrops: number;
}

/**
 * A live capture on one interface. Resources are freed by `close()` when no iteration runs,
 * else when the running iteration ends (right after `close()`, once it has delivered what was
 * already queued in the socket).
 */
export class PacketSocket implements LivePacketSource, Disposable {
  #dl: Deno.DynamicLibrary<typeof LIBC_SYMBOLS & typeof PACKET_SOCKET_SYMBOLS>;
  #c: PacketSocketSymbols;
  #libc: Libc;
  #fd = -1;
  #eventFd = -1;
  #ifindex: number;
  #interface: string;
  #maxBatch: number;
  #pollTimeoutMs: number;
  #buffer: Uint8Array;
  #addr = new Uint8Array(PACKET.SOCKADDR_LL_SIZE);
  #addrView: DataView;
  #addrLen = new Uint32Array(1);
  #pollFds = new Uint8Array(16); // struct pollfd[2]
  #closing = false;
  #released = false;
  #iterating = false;
  #stats: PacketSocketStats = { received: 0, truncated: 0, kernelDrops: 0 };
  #receiveBufferBytes = 0;

  /**
   * Opens and binds the socket; use {@linkcode openPacketSocket}.
   *
   * @param options Interface, namespace, batch size, buffer.
   * @throws {PacketSocketError} With an actionable one-line message.
   */
  constructor(options: PacketSocketOptions) {
    this.#interface = options.interface;
    this.#maxBatch = options.maxBatch ?? 256;
    this.#pollTimeoutMs = options.pollTimeoutMs ?? 1000;
    this.#buffer = new Uint8Array(options.snapLength ?? 256 * 1024);
    this.#addrView = new DataView(this.#addr.buffer);
    try {
      this.#dl = Deno.dlopen(options.libcPath ?? "libc.so.6", {
        ...LIBC_SYMBOLS,
        ...PACKET_SOCKET_SYMBOLS,
      });
    } catch (err) {
      throw new PacketSocketError(
        `Cannot open libc: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    this.#c = this.#dl.symbols;
    this.#libc = new Libc(this.#c);
    try {
      this.#ifindex = this.#open(options);
    } catch (err) {
      this.#release();
      throw err;
    }
  }

  #fail(what: string, errno: number): PacketSocketError {
    return new PacketSocketError(`${what}: ${this.#libc.describe(errno)}`, { errno });
  }

  #open(options: PacketSocketOptions): number {
    const c = this.#c;
    const libc = this.#libc;
    const name = options.interface;
    const where = options.netns === undefined ? "" : ` in network namespace "${options.netns}"`;
    const protocol = htons(PACKET.ETH_P_ALL);
    const opened = libc.inNetns(options.netns, () => {
      const fd = c.socket(PACKET.AF_PACKET, PACKET.SOCK_RAW | PACKET.SOCK_CLOEXEC, protocol);
      if (fd < 0) return { errno: libc.errno(), step: "socket" } as const;
      this.#fd = fd;
      const index = c.if_nametoindex(new TextEncoder().encode(name + "\0"));
      if (index === 0) return { errno: libc.errno(), step: "index" } as const;
      // struct sockaddr_ll { u16 family; be16 protocol; i32 ifindex; u16 hatype; u8 pkttype;
      // u8 halen; u8 addr[8]; }
      const sll = new Uint8Array(PACKET.SOCKADDR_LL_SIZE);
      const view = new DataView(sll.buffer);
      view.setUint16(0, PACKET.AF_PACKET, HOST_IS_LITTLE_ENDIAN);
      view.setUint16(2, PACKET.ETH_P_ALL, false);
      view.setInt32(4, index, HOST_IS_LITTLE_ENDIAN);
      if (c.bind(fd, sll, sll.length) !== 0) return { errno: libc.errno(), step: "bind" } as const;
      return { index };
    });
    if ("errno" in opened) {
      const e = opened.errno;
      if (e === ERRNO.EPERM || e === ERRNO.EACCES) {
        throw new PacketSocketError(
          `Cannot capture on "${name}": ${libc.describe(e)}: run as root or grant CAP_NET_RAW ` +
            "(systemd: AmbientCapabilities=CAP_NET_RAW)",
          { errno: e },
        );
      }
      if (opened.step === "index" || e === PACKET.ENODEV) {
        throw new PacketSocketError(`Cannot capture on "${name}": no such interface${where}`, {
          errno: e,
        });
      }
      throw this.#fail(
        opened.step === "socket"
          ? "Cannot open a packet socket"
          : `Cannot bind the packet socket to "${name}"`,
        e,
      );
    }
    const fd = this.#fd;
    const rcvbuf = options.rcvbufBytes ?? 32 * 1024 * 1024;
    if (rcvbuf > 0) {
      const value = new Uint8Array(new Int32Array([rcvbuf]).buffer);
      if (c.setsockopt(fd, LIBC.SOL_SOCKET, LIBC.SO_RCVBUFFORCE, value, 4) !== 0) {
        c.setsockopt(fd, LIBC.SOL_SOCKET, LIBC.SO_RCVBUF, value, 4);
      }
    }
    this.#receiveBufferBytes = this.#intOption(LIBC.SOL_SOCKET, LIBC.SO_RCVBUF);
    const flags = c.fcntl(fd, LIBC.F_GETFL, 0);
    if (flags < 0 || c.fcntl(fd, LIBC.F_SETFL, flags | LIBC.O_NONBLOCK) < 0) {
      throw this.#fail("Cannot make the packet socket non-blocking", libc.errno());
    }
    const eventFd = c.eventfd(0, LIBC.EFD_NONBLOCK | LIBC.EFD_CLOEXEC);
    if (eventFd < 0) throw this.#fail("Cannot create an eventfd", libc.errno());
    this.#eventFd = eventFd;
    // struct pollfd { int fd; short events; short revents; }, host byte order.
    const view = new DataView(this.#pollFds.buffer);
    view.setInt32(0, fd, HOST_IS_LITTLE_ENDIAN);
    view.setInt16(4, LIBC.POLLIN, HOST_IS_LITTLE_ENDIAN);
    view.setInt32(8, eventFd, HOST_IS_LITTLE_ENDIAN);
    view.setInt16(12, LIBC.POLLIN, HOST_IS_LITTLE_ENDIAN);
    this.#readDrops(); // resets the kernel's counters
    this.#stats.kernelDrops = 0;
    return opened.index;
  }

  #intOption(level: number, name: number): number {
    const value = new Int32Array(1);
    const len = new Uint32Array([4]);
    const r = this.#c.getsockopt(
      this.#fd,
      level,
      name,
      new Uint8Array(value.buffer),
      new Uint8Array(len.buffer),
    );
    return r === 0 ? value[0]! : 0;
  }

  /** Adds the kernel's drop count since the last read (reading resets it). */
  #readDrops(): void {
    if (this.#fd < 0) return;
    // struct tpacket_stats { unsigned tp_packets; unsigned tp_drops; }
    const value = new Uint32Array(2);
    const len = new Uint32Array([8]);
    const r = this.#c.getsockopt(
      this.#fd,
      PACKET.SOL_PACKET,
      PACKET.PACKET_STATISTICS,
      new Uint8Array(value.buffer),
      new Uint8Array(len.buffer),
    );
    if (r === 0) this.#stats.kernelDrops += value[1]!;
  }

  /** The interface index the socket is bound to. */
  get interfaceIndex(): number {
    return this.#ifindex;
  }

  /** The interface name. */
  get interfaceName(): string {
    return this.#interface;
  }

  /** The socket receive buffer as the kernel holds it (twice the requested size). */
  get receiveBufferBytes(): number {
    return this.#receiveBufferBytes;
  }

  /**
   * Current counters (the kernel's drop count is re-read).
   *
   * @returns A copy.
   */
  stats(): PacketSocketStats {
    if (!this.#released) this.#readDrops();
    return { ...this.#stats };
  }

  /**
   * Yields batches of received frames until closed; an empty batch after each poll timeout
   * without frames (so the caller can expire idle state). Only one iteration may run at a time.
   *
   * @returns The batches.
   */
  async *batches(): AsyncGenerator<readonly CaptureRecord[]> {
    if (this.#iterating) {
      throw new PacketSocketError("Cannot iterate a packet socket twice at once");
    }
    if (this.#released) return;
    this.#iterating = true;
    const c = this.#c;
    const libc = this.#libc;
    const buffer = this.#buffer;
    const size = BigInt(buffer.length);
    const addr = this.#addr;
    const addrView = this.#addrView;
    const addrLenBytes = new Uint8Array(this.#addrLen.buffer);
    let drainRounds = 0;
    let lastTurn = performance.now();
    try {
      while (true) {
        const batch: CaptureRecord[] = [];
        let errno = 0;
        while (batch.length < this.#maxBatch) {
          this.#addrLen[0] = PACKET.SOCKADDR_LL_SIZE;
          const n = Number(
            c.recvfrom(this.#fd, buffer, size, PACKET.MSG_TRUNC, addr, addrLenBytes),
          );
          if (n < 0) {
            errno = libc.errno();
            if (errno === ERRNO.EINTR) continue;
            break;
          }
          const timestampNs = realtimeNs();
          const ifindex = addrView.getInt32(4, HOST_IS_LITTLE_ENDIAN);
          if (ifindex !== this.#ifindex) continue; // queued before bind()
          const hatype = addrView.getUint16(8, HOST_IS_LITTLE_ENDIAN);
          const outgoing = addr[10] === PACKET.PACKET_OUTGOING;
          // Loopback hands every frame back as incoming too: keep one copy (as libpcap does).
          if (outgoing && hatype === PACKET.ARPHRD_LOOPBACK) continue;
          const captured = Math.min(n, buffer.length);
          if (n > buffer.length) this.#stats.truncated++;
          batch.push({
            linkType: linkTypeOfHatype(hatype),
            timestampNs,
            hasTimestamp: true,
            data: buffer.slice(0, captured),
            originalLength: n,
            interfaceIndex: 0,
            direction: outgoing ? "outbound" : "inbound",
            offset: 0,
          });
        }
        if (batch.length > 0) {
          this.#stats.received += batch.length;
          yield batch;
        }
        if (errno === 0) {
          // A full batch. Timers and signal handlers need a macrotask turn: one every 10 ms.
          if (this.#closing && ++drainRounds > 256) return;
          if (performance.now() - lastTurn > 10) {
            await macrotask();
            lastTurn = performance.now();
          }
          continue;
        }
        if (errno !== ERRNO.EAGAIN) {
          if (errno === PACKET.ENETDOWN) {
            throw new PacketSocketError(`Cannot capture on "${this.#interface}": it went down`, {
              errno,
            });
          }
          throw this.#fail(`Cannot receive packets on "${this.#interface}"`, errno);
        }
        if (this.#closing) return;
        const ready = await c.poll(this.#pollFds, 2n, this.#pollTimeoutMs);
        lastTurn = performance.now();
        if (ready === 0) yield [];
        else if (ready < 0) await macrotask();
      }
    } finally {
      this.#iterating = false;
      if (this.#closing) this.#release();
    }
  }

  /**
   * Stops the capture: a running iteration wakes up, delivers what is queued, and ends.
   * Idempotent.
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#iterating) {
      const one = new BigUint64Array([1n]);
      this.#c.write(this.#eventFd, new Uint8Array(one.buffer), 8n);
    } else {
      this.#release();
    }
  }

  /** Same as {@linkcode PacketSocket.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#closing = true;
    if (this.#fd >= 0) {
      this.#readDrops();
      this.#c.close(this.#fd);
      this.#fd = -1;
    }
    if (this.#eventFd >= 0) {
      this.#c.close(this.#eventFd);
      this.#eventFd = -1;
    }
    this.#dl.close();
  }
}

/**
 * Opens a live capture on one interface.
 *
 * @param options Interface, namespace, batch size, buffer.
 * @returns The socket; iterate {@linkcode PacketSocket.batches}, then close it.
 * @throws {PacketSocketError} With a one-line message: no permission (root or CAP_NET_RAW
 *   needed), unknown interface, or another failure with its errno.
 */
export function openPacketSocket(options: PacketSocketOptions): PacketSocket {
  return new PacketSocket(options);
}

function htons(value: number): number {
  return HOST_IS_LITTLE_ENDIAN ? ((value & 0xff) << 8) | ((value >> 8) & 0xff) : value;
}

const NS_PER_US = 1000n;

/** Realtime clock in nanoseconds (microsecond resolution). */
function realtimeNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * NS_PER_US;
}

function macrotask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
