/**
 * Small libc helpers over FFI: errno, whole-file reads and writes (for /proc, which Deno only lets
 * scripts read with `--allow-all`), inode numbers, network namespaces and eventfds.
 *
 * @module
 */

import { SourceError } from "../lib/source.ts";
import { ERRNO, LIBC } from "./constants.ts";
import type { LibcSymbols } from "./symbols.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ERRNO_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(ERRNO).map(([name, value]) => [value, name]),
);

/** An error from a C call, carrying its errno. */
export class ConntrackError extends SourceError {
  /** The error name, `"ConntrackError"`. */
  override name = "ConntrackError";
  /** The errno, when the failure came from a C call. */
  readonly errno: number | undefined;

  /**
   * Creates the instance.
   *
   * @param message What failed, in Deno's style (`Cannot open ...`).
   * @param options `cause` and `errno`.
   */
  constructor(message: string, options?: ErrorOptions & { errno?: number }) {
    super(message, options);
    this.errno = options?.errno;
  }
}

/** libc access bound to one opened libc. */
export class Libc {
  #c: LibcSymbols;
  #errnoView: Deno.UnsafePointerView | undefined;

  /**
   * Creates the instance.
   *
   * @param symbols Bound libc symbols.
   */
  constructor(symbols: LibcSymbols) {
    this.#c = symbols;
  }

  /** The raw symbols. */
  get symbols(): LibcSymbols {
    return this.#c;
  }

  /**
   * The calling thread's errno. Read it right after a synchronous call that failed: errno is
   * thread-local, so it means nothing after a `nonblocking` call.
   *
   * @returns errno.
   */
  errno(): number {
    if (this.#errnoView === undefined) {
      const p = this.#c.__errno_location();
      if (p === null) return 0;
      this.#errnoView = new Deno.UnsafePointerView(p);
    }
    return this.#errnoView.getInt32();
  }

  /**
   * Describes an errno as `strerror` text plus its symbolic name.
   *
   * @param errno The errno.
   * @returns E.g. `Operation not permitted (EPERM)`.
   */
  describe(errno: number): string {
    const p = this.#c.strerror(errno);
    const text = p === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(p);
    const name = ERRNO_NAMES[errno];
    return name === undefined ? `${text} (errno ${errno})` : `${text} (${name})`;
  }

  /**
   * Opens a file and returns its descriptor.
   *
   * @param path The path.
   * @param flags `O_*` flags.
   * @returns The descriptor.
   * @throws {ConntrackError} With the errno when `open` fails.
   */
  open(path: string, flags: number): number {
    const fd = this.#c.open(encoder.encode(path + "\0"), flags | LIBC.O_CLOEXEC, 0o644);
    if (fd < 0) {
      const e = this.errno();
      throw new ConntrackError(`Cannot open "${path}": ${this.describe(e)}`, { errno: e });
    }
    return fd;
  }

  /**
   * Reads a whole small file (procfs and sysfs entries).
   *
   * @param path The path.
   * @returns Its text.
   */
  readFile(path: string): string {
    const fd = this.open(path, LIBC.O_RDONLY);
    try {
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(65536);
      while (true) {
        const n = Number(this.#c.read(fd, buf, BigInt(buf.length)));
        if (n < 0) {
          const e = this.errno();
          if (e === ERRNO.EINTR) continue;
          throw new ConntrackError(`Cannot read "${path}": ${this.describe(e)}`, { errno: e });
        }
        if (n === 0) break;
        chunks.push(buf.slice(0, n));
      }
      const total = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
      let off = 0;
      for (const c of chunks) {
        total.set(c, off);
        off += c.length;
      }
      return decoder.decode(total);
    } finally {
      this.#c.close(fd);
    }
  }

  /**
   * Writes text to a file in one `write` (how sysctls under /proc/sys must be written).
   *
   * @param path The path.
   * @param text The text.
   */
  writeFile(path: string, text: string): void {
    const fd = this.open(path, LIBC.O_WRONLY | LIBC.O_TRUNC);
    try {
      const bytes = encoder.encode(text);
      const n = Number(this.#c.write(fd, bytes, BigInt(bytes.length)));
      if (n < 0) {
        const e = this.errno();
        throw new ConntrackError(`Cannot write "${path}": ${this.describe(e)}`, { errno: e });
      }
    } finally {
      this.#c.close(fd);
    }
  }

  /**
   * Returns the inode number of a path (e.g. `/proc/self/ns/net`, which names the network
   * namespace).
   *
   * @param path The path.
   * @returns The inode number.
   */
  inode(path: string): bigint {
    const fd = this.open(path, LIBC.O_RDONLY);
    try {
      return this.fdInode(fd);
    } finally {
      this.#c.close(fd);
    }
  }

  /**
   * Returns the inode number of an open descriptor (sockets are matched this way in
   * `/proc/net/netlink`).
   *
   * @param fd The descriptor.
   * @returns The inode number.
   */
  fdInode(fd: number): bigint {
    const st = new Uint8Array(LIBC.STAT_SIZE);
    if (this.#c.fstat(fd, st) !== 0) {
      const e = this.errno();
      throw new ConntrackError(`Cannot stat descriptor ${fd}: ${this.describe(e)}`, { errno: e });
    }
    return new DataView(st.buffer).getBigUint64(LIBC.STAT_INO_OFFSET, HOST_LE);
  }

  /**
   * Runs `fn` with the calling thread inside the network namespace `name` (`ip netns` name, i.e.
   * `/run/netns/NAME`), then switches back. Sockets and /proc/sys/net files opened inside `fn`
   * belong to that namespace. `fn` must be synchronous.
   *
   * @param name Namespace name, or `undefined` to just call `fn`.
   * @param fn What to run there.
   * @returns What `fn` returns.
   */
  inNetns<T>(name: string | undefined, fn: () => T): T {
    if (name === undefined) return fn();
    const target = this.open(`/run/netns/${name}`, LIBC.O_RDONLY);
    let home: number;
    try {
      home = this.open("/proc/thread-self/ns/net", LIBC.O_RDONLY);
    } catch (err) {
      this.#c.close(target);
      throw err;
    }
    try {
      if (this.#c.setns(target, LIBC.CLONE_NEWNET) !== 0) {
        const e = this.errno();
        throw new ConntrackError(
          `Cannot enter network namespace "${name}": ${this.describe(e)}`,
          { errno: e },
        );
      }
      let result: T;
      try {
        result = fn();
      } finally {
        if (this.#c.setns(home, LIBC.CLONE_NEWNET) !== 0) {
          // Staying in the wrong namespace would silently corrupt everything after this.
          const e = this.errno();
          // deno-lint-ignore no-unsafe-finally
          throw new ConntrackError(
            `Cannot return to the original network namespace: ${this.describe(e)}`,
            { errno: e },
          );
        }
      }
      return result;
    } finally {
      this.#c.close(target);
      this.#c.close(home);
    }
  }
}

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
