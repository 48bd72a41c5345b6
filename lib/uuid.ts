/**
 * UUIDs for flows and events: name-based UUIDv5 (RFC 9562 §5.5) for flow IDs, random UUIDv4 for
 * event IDs, and the derivation of the flow-ID namespace from the host's boot and network
 * namespace.
 *
 * @module
 */

import { createHash } from "node:crypto";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const encoder = new TextEncoder();

/**
 * A fixed namespace for netbird-ct's own derived namespaces (UUIDv5 of the DNS name
 * `netbird-ct.flow` under the RFC 9562 DNS namespace, computed once and written out here).
 */
export const NETBIRD_CT_NAMESPACE = "1cc4bb85-0ca9-5a5d-a913-81b334076105";

/**
 * Parses UUID text into its 16 bytes.
 *
 * @param uuid UUID in the usual 8-4-4-4-12 hex form.
 * @returns The 16 bytes.
 * @throws {TypeError} When the text is not a UUID.
 */
export function uuidToBytes(uuid: string): Uint8Array {
  if (!UUID_RE.test(uuid)) throw new TypeError(`Cannot parse UUID "${uuid}"`);
  const hex = uuid.replaceAll("-", "");
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Formats 16 bytes as UUID text (lower case).
 *
 * @param b The 16 bytes.
 * @returns UUID text.
 */
export function bytesToUuid(b: Uint8Array): string {
  const h = (i: number): string => HEX[b[i]!]!;
  return h(0) + h(1) + h(2) + h(3) + "-" + h(4) + h(5) + "-" + h(6) + h(7) + "-" + h(8) + h(9) +
    "-" + h(10) + h(11) + h(12) + h(13) + h(14) + h(15);
}

const W = new Int32Array(80);
const BLOCK = new Uint8Array(64);
const BLOCK_VIEW = new DataView(BLOCK.buffer);

/**
 * SHA-1 of a message of at most 55 bytes (one block), written out so that a flow ID costs a few
 * hundred nanoseconds instead of a crypto round trip per event. Writes the first 16 bytes of the
 * digest (all a UUID needs) into `out`.
 */
function sha1OneBlock(ns: Uint8Array, name: Uint8Array, out: Uint8Array): void {
  const len = ns.length + name.length;
  BLOCK.fill(0);
  BLOCK.set(ns, 0);
  BLOCK.set(name, ns.length);
  BLOCK[len] = 0x80;
  BLOCK_VIEW.setUint32(60, len * 8, false);
  for (let i = 0; i < 16; i++) W[i] = BLOCK_VIEW.getInt32(i * 4, false);
  for (let i = 16; i < 80; i++) {
    const x = W[i - 3]! ^ W[i - 8]! ^ W[i - 14]! ^ W[i - 16]!;
    W[i] = (x << 1) | (x >>> 31);
  }
  let a = 0x67452301, b = 0xefcdab89 | 0, c = 0x98badcfe | 0, d = 0x10325476, e = 0xc3d2e1f0 | 0;
  for (let i = 0; i < 80; i++) {
    let f: number, k: number;
    if (i < 20) {
      f = (b & c) | (~b & d);
      k = 0x5a827999;
    } else if (i < 40) {
      f = b ^ c ^ d;
      k = 0x6ed9eba1;
    } else if (i < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8f1bbcdc | 0;
    } else {
      f = b ^ c ^ d;
      k = 0xca62c1d6 | 0;
    }
    const t = (((a << 5) | (a >>> 27)) + f + e + k + W[i]!) | 0;
    e = d;
    d = c;
    c = (b << 30) | (b >>> 2);
    b = a;
    a = t;
  }
  const h = [
    (a + 0x67452301) | 0,
    (b + 0xefcdab89) | 0,
    (c + 0x98badcfe) | 0,
    (d + 0x10325476) | 0,
  ];
  const view = new DataView(out.buffer, out.byteOffset, 16);
  for (let i = 0; i < 4; i++) view.setInt32(i * 4, h[i]!, false);
}

/**
 * Computes a name-based UUIDv5 (SHA-1), as Go's `uuid.NewSHA1(namespace, name)` does.
 *
 * @param namespace Namespace UUID, as text or 16 bytes.
 * @param name The name bytes (or a string, UTF-8 encoded).
 * @returns UUID text.
 *
 * @example Usage
 * ```ts
 * import { uuidV5 } from "./uuid.ts";
 * // RFC 9562's DNS namespace and "www.example.com".
 * const id = uuidV5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com");
 * if (id !== "2ed6657d-e927-568b-95e1-2665a8aea6a2") throw new Error(id);
 * ```
 */
export function uuidV5(namespace: string | Uint8Array, name: Uint8Array | string): string {
  const ns = typeof namespace === "string" ? uuidToBytes(namespace) : namespace;
  const nameBytes = typeof name === "string" ? encoder.encode(name) : name;
  let out: Uint8Array;
  if (ns.length + nameBytes.length <= 55) {
    out = new Uint8Array(16);
    sha1OneBlock(ns, nameBytes, out);
  } else {
    const hash = createHash("sha1").update(ns).update(nameBytes).digest();
    out = new Uint8Array(hash.buffer, hash.byteOffset, 16).slice();
  }
  out[6] = (out[6]! & 0x0f) | 0x50;
  out[8] = (out[8]! & 0x3f) | 0x80;
  return bytesToUuid(out);
}

/**
 * Derives flow IDs from conntrack ids: UUIDv5(namespace, 4-byte big-endian id), as NetBird does.
 *
 * NetBird uses a random namespace per process, so IDs change when it restarts. netbird-ct derives
 * the namespace from the kernel's boot id and the network namespace instead (see
 * {@linkcode flowNamespace}), so the start and end of a flow share an ID even across a restart
 * of netbird-ct within one boot.
 */
export class FlowIdGenerator {
  /** The namespace UUID. */
  readonly namespace: string;
  #ns: Uint8Array;
  #name = new Uint8Array(4);
  #view = new DataView(this.#name.buffer);

  /**
   * Creates the instance.
   *
   * @param namespace Namespace UUID text.
   */
  constructor(namespace: string) {
    this.#ns = uuidToBytes(namespace);
    this.namespace = bytesToUuid(this.#ns);
  }

  /**
   * Returns the flow ID of a conntrack id.
   *
   * @param conntrackId Kernel conntrack id (u32).
   * @returns UUID text.
   */
  flowId(conntrackId: number): string {
    this.#view.setUint32(0, conntrackId >>> 0, false);
    return uuidV5(this.#ns, this.#name);
  }
}

/**
 * Derives the flow-ID namespace for one kernel boot and network namespace:
 * UUIDv5({@linkcode NETBIRD_CT_NAMESPACE}, "boot:<boot_id>/netns:<inode>").
 *
 * Conntrack ids are only unique within one network namespace of one boot, which is exactly the
 * scope of this namespace: IDs are stable across restarts of netbird-ct, and two hosts (or two
 * namespaces) never share IDs.
 *
 * @param bootId Contents of `/proc/sys/kernel/random/boot_id`.
 * @param netnsInode Inode number of `/proc/self/ns/net`.
 * @returns Namespace UUID text.
 */
export function flowNamespace(bootId: string, netnsInode: number | bigint): string {
  return uuidV5(NETBIRD_CT_NAMESPACE, `boot:${bootId.trim().toLowerCase()}/netns:${netnsInode}`);
}

/**
 * A fresh random UUIDv4 (event IDs).
 *
 * @returns UUID text.
 */
export function uuidV4(): string {
  return crypto.randomUUID();
}
