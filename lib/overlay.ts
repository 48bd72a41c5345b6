/**
 * NetBird's rules for deciding which conntrack entries concern the overlay network, which way they
 * were initiated, and how the kernel's original/reply counters map to this host's rx/tx.
 *
 * These are the rules of NetBird's kernel tracker (`client/internal/netflow/conntrack`), kept
 * exactly: see the README's "Direction and relevance" section.
 *
 * @module
 */

import type { Counter, Flow } from "./flow.ts";
import { AddressError, formatIp, ipv4ToNumber, parseIp, Prefix } from "./net.ts";

/** Connection mark NetBird's firewall sets on connections that arrive over the overlay. */
export const DATA_PLANE_MARK_IN = 0x1bd10;
/** Connection mark NetBird's firewall sets on connections that leave over the overlay. */
export const DATA_PLANE_MARK_OUT = 0x1bd11;
/** Lowest mark of NetBird's data-plane range. */
export const DATA_PLANE_MARK_MIN = 0x1bd10;
/** Highest mark of NetBird's data-plane range (inclusive). */
export const DATA_PLANE_MARK_MAX = 0x1bdff;

/** Who initiated a connection, seen from this host. */
export type Direction = "ingress" | "egress" | "unknown";

/** The overlay network this host belongs to. */
export interface OverlayOptions {
  /** Overlay prefixes (IPv4 and/or IPv6). */
  networks: readonly (Prefix | string)[];
  /** This host's own overlay addresses. */
  addresses?: readonly string[];
}

/** This host's rx/tx counters of one flow. */
export interface RxTx {
  /** Packets received by this host. */
  rxPackets: bigint;
  /** Packets sent by this host. */
  txPackets: bigint;
  /** Bytes received by this host. */
  rxBytes: bigint;
  /** Bytes sent by this host. */
  txBytes: bigint;
}

/** IPv6 addresses whose overlay membership {@linkcode Overlay} remembers (then it starts over). */
const V6_CACHE_SIZE = 4096;

/**
 * Classifies flows against an overlay network: relevance, direction and counter mapping.
 *
 * @example Usage
 * ```ts
 * import { Overlay } from "./overlay.ts";
 * const overlay = new Overlay({ networks: ["100.64.0.0/16"], addresses: ["100.64.0.1"] });
 * if (overlay.direction("100.64.0.1", "100.64.0.2", 0) !== "egress") throw new Error("egress");
 * ```
 */
export class Overlay {
  /** Overlay prefixes. */
  readonly networks: readonly Prefix[];
  /** Own addresses, canonical text. */
  readonly addresses: readonly string[];
  #own: Set<string>;
  /** IPv6 text → in an overlay prefix, for the addresses seen lately (parsing is the cost). */
  #v6Cache = new Map<string, boolean>();

  /**
   * Creates the instance.
   *
   * @param options Prefixes and own addresses.
   * @throws {AddressError} When a prefix or address does not parse.
   */
  constructor(options: OverlayOptions) {
    this.networks = options.networks.map((n) => typeof n === "string" ? Prefix.parse(n) : n);
    this.addresses = (options.addresses ?? []).map((a) => {
      const bytes = parseIp(a);
      if (bytes === undefined) throw new AddressError(`Cannot parse address "${a}"`);
      return formatIp(bytes);
    });
    this.#own = new Set(this.addresses);
  }

  /**
   * Reports whether an address lies in one of the overlay prefixes.
   *
   * @param address Canonical address text.
   * @returns `true` if inside the overlay.
   */
  inOverlay(address: string): boolean {
    const networks = this.networks;
    if (networks.length === 0) return false;
    if (!address.includes(":")) {
      const v4 = ipv4ToNumber(address);
      for (let i = 0; i < networks.length; i++) {
        if (networks[i]!.containsIpv4(v4)) return true;
      }
      return false;
    }
    const cached = this.#v6Cache.get(address);
    if (cached !== undefined) return cached;
    const bytes = parseIp(address);
    let inside = false;
    if (bytes !== undefined) {
      for (let i = 0; i < networks.length && !inside; i++) inside = networks[i]!.contains(bytes);
    }
    if (this.#v6Cache.size >= V6_CACHE_SIZE) this.#v6Cache.clear();
    this.#v6Cache.set(address, inside);
    return inside;
  }

  /**
   * NetBird's relevance rule: a data-plane mark, else source or destination in the overlay.
   *
   * @param source Original-direction source address.
   * @param destination Original-direction destination address.
   * @param mark Connection mark.
   * @returns `true` if the flow concerns the overlay.
   */
  isRelevant(source: string, destination: string, mark: number): boolean {
    if (mark >= DATA_PLANE_MARK_MIN && mark <= DATA_PLANE_MARK_MAX) return true;
    return this.inOverlay(source) || this.inOverlay(destination);
  }

  /**
   * NetBird's direction rule. Marks 0x1BD10/0x1BD11 decide first; then own address as source
   * (egress), own address as destination (ingress), overlay source (ingress: routed from a peer
   * into a resource network), overlay destination (egress), else unknown.
   *
   * @param source Original-direction source address.
   * @param destination Original-direction destination address.
   * @param mark Connection mark.
   * @returns The direction.
   */
  direction(source: string, destination: string, mark: number): Direction {
    if (mark === DATA_PLANE_MARK_IN) return "ingress";
    if (mark === DATA_PLANE_MARK_OUT) return "egress";
    if (this.#own.has(source)) return "egress";
    if (this.#own.has(destination)) return "ingress";
    if (this.inOverlay(source)) return "ingress";
    if (this.inOverlay(destination)) return "egress";
    return "unknown";
  }

  /**
   * Relevance and direction of a decoded flow, or `undefined` when it is not relevant.
   *
   * @param flow A decoded conntrack entry.
   * @returns The direction, or `undefined` to drop the flow.
   */
  classify(flow: Flow): Direction | undefined {
    // The same rules as isRelevant() + direction(), with each address looked up at most once.
    const { source, destination } = flow.original;
    const mark = flow.mark;
    const marked = mark >= DATA_PLANE_MARK_MIN && mark <= DATA_PLANE_MARK_MAX;
    const sourceIn = this.inOverlay(source);
    const destinationIn = sourceIn ? false : this.inOverlay(destination);
    if (!marked && !sourceIn && !destinationIn) return undefined;
    if (mark === DATA_PLANE_MARK_IN) return "ingress";
    if (mark === DATA_PLANE_MARK_OUT) return "egress";
    if (this.#own.has(source)) return "egress";
    if (this.#own.has(destination)) return "ingress";
    if (sourceIn) return "ingress";
    if (destinationIn) return "egress";
    return "unknown";
  }
}

/**
 * Maps conntrack's per-direction counters to this host's rx/tx. Ingress: rx = original,
 * tx = reply. Egress and unknown: rx = reply, tx = original (as NetBird does).
 *
 * @param direction The flow's direction.
 * @param original Counters of the original direction.
 * @param reply Counters of the reply direction.
 * @returns rx/tx packets and bytes.
 *
 * @example Usage
 * ```ts
 * import { mapCounters } from "./overlay.ts";
 * const c = mapCounters("ingress", { packets: 3n, bytes: 180n }, { packets: 2n, bytes: 120n });
 * if (c.rxBytes !== 180n || c.txBytes !== 120n) throw new Error("wrong mapping");
 * ```
 */
export function mapCounters(direction: Direction, original: Counter, reply: Counter): RxTx {
  const [rx, tx] = direction === "ingress" ? [original, reply] : [reply, original];
  return { rxPackets: rx.packets, txPackets: tx.packets, rxBytes: rx.bytes, txBytes: tx.bytes };
}
