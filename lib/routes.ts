/**
 * Resource IDs for non-overlay addresses, as NetBird's route lookup assigns them: an exact
 * address from DNS-resolved routes wins, then the most specific route prefix; a match only by a
 * /0 route marks exit-node traffic.
 *
 * @module
 */

import { AddressError, formatIp, parseIp, Prefix } from "./net.ts";

/** One route of a routes file. */
export interface RouteEntry {
  /** The routed prefix, e.g. `192.0.2.0/24` or `0.0.0.0/0`. */
  network: string;
  /** The network resource it belongs to. */
  "resource_id": string;
}

/** The routes file: `{"routes": [...], "resolved": {"198.51.100.7": "api"}}`. */
export interface RoutesFile {
  /** Routed prefixes. */
  routes?: RouteEntry[];
  /** DNS-resolved addresses and their resource IDs. */
  resolved?: Record<string, string>;
}

/** Result of a lookup. */
export interface RouteMatch {
  /** The resource ID, or `undefined` when nothing matched. */
  resourceId: string | undefined;
  /** Whether only a /0 route matched (exit-node traffic). */
  exitNode: boolean;
}

/** Error for a routes file that cannot be used; the message names the file and the entry. */
export class RoutesError extends Error {
  /** The error name, `"RoutesError"`. */
  override name = "RoutesError";
}

const NO_MATCH: RouteMatch = Object.freeze({ resourceId: undefined, exitNode: false });

/**
 * NetBird's resource lookup over a fixed set of routes.
 *
 * @example Usage
 * ```ts
 * import { RouteTable } from "./routes.ts";
 * const t = RouteTable.fromJson({
 *   routes: [{ network: "192.0.2.0/24", resource_id: "web" }, { network: "0.0.0.0/0", resource_id: "exit" }],
 *   resolved: { "198.51.100.7": "api" },
 * });
 * if (t.lookup("192.0.2.9").resourceId !== "web") throw new Error("most specific route");
 * if (!t.lookup("8.8.8.8").exitNode) throw new Error("exit node");
 * ```
 */
export class RouteTable {
  #resolved: Map<string, string>;
  #routes: { prefix: Prefix; resourceId: string }[];

  /**
   * Creates the instance.
   *
   * @param routes Routed prefixes with their resource IDs.
   * @param resolved Exact addresses (canonical text) with their resource IDs.
   */
  constructor(
    routes: readonly { prefix: Prefix; resourceId: string }[] = [],
    resolved: ReadonlyMap<string, string> = new Map(),
  ) {
    this.#resolved = new Map(resolved);
    // Most specific first; equal lengths keep file order (a stable sort, unlike NetBird's).
    this.#routes = [...routes].sort((a, b) => b.prefix.bits - a.prefix.bits);
  }

  /** An empty table: no resource IDs, no exit nodes. */
  static readonly EMPTY: RouteTable = new RouteTable();

  /** Number of routes plus resolved addresses. */
  get size(): number {
    return this.#routes.length + this.#resolved.size;
  }

  /**
   * Builds a table from parsed routes-file JSON, validating every entry.
   *
   * @param json The parsed file.
   * @param source Name for error messages (the path).
   * @returns The table.
   * @throws {RoutesError} On the first invalid entry.
   */
  static fromJson(json: unknown, source = "routes file"): RouteTable {
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new RoutesError(
        `Cannot use ${source}: expected a JSON object with "routes" and "resolved"`,
      );
    }
    const { routes = [], resolved = {} } = json as RoutesFile;
    for (const key of Object.keys(json)) {
      if (key !== "routes" && key !== "resolved") {
        throw new RoutesError(`Cannot use ${source}: unknown key "${key}"`);
      }
    }
    if (!Array.isArray(routes)) {
      throw new RoutesError(`Cannot use ${source}: "routes" must be an array`);
    }
    if (typeof resolved !== "object" || resolved === null || Array.isArray(resolved)) {
      throw new RoutesError(`Cannot use ${source}: "resolved" must be an object`);
    }
    const parsed = routes.map((r, i) => {
      const where = `${source}: routes[${i}]`;
      if (typeof r !== "object" || r === null) {
        throw new RoutesError(`Cannot use ${where}: not an object`);
      }
      if (typeof r.network !== "string") {
        throw new RoutesError(`Cannot use ${where}: "network" must be a string`);
      }
      if (typeof r.resource_id !== "string" || r.resource_id === "") {
        throw new RoutesError(`Cannot use ${where}: "resource_id" must be a non-empty string`);
      }
      try {
        return { prefix: Prefix.parse(r.network), resourceId: r.resource_id };
      } catch (err) {
        if (err instanceof AddressError) {
          throw new RoutesError(`Cannot use ${where}: invalid network "${r.network}"`);
        }
        throw err;
      }
    });
    const addresses = new Map<string, string>();
    for (const [addr, id] of Object.entries(resolved)) {
      const bytes = parseIp(addr);
      if (bytes === undefined) {
        throw new RoutesError(
          `Cannot use ${source}: resolved address "${addr}" is not an IP address`,
        );
      }
      if (typeof id !== "string" || id === "") {
        throw new RoutesError(
          `Cannot use ${source}: resolved["${addr}"] must be a non-empty string`,
        );
      }
      addresses.set(formatIp(bytes), id);
    }
    return new RouteTable(parsed, addresses);
  }

  /**
   * Finds the resource an address belongs to: resolved addresses first, then the most specific
   * containing route. A match by a /0 route only is exit-node traffic.
   *
   * @param address Canonical address text.
   * @returns The match.
   */
  lookup(address: string): RouteMatch {
    const resolved = this.#resolved.get(address);
    if (resolved !== undefined) return { resourceId: resolved, exitNode: false };
    if (this.#routes.length === 0) return NO_MATCH;
    const bytes = parseIp(address);
    if (bytes === undefined) return NO_MATCH;
    for (const r of this.#routes) {
      if (r.prefix.contains(bytes)) {
        return { resourceId: r.resourceId, exitNode: r.prefix.bits === 0 };
      }
    }
    return NO_MATCH;
  }
}

/**
 * Reads and validates a routes file.
 *
 * @param path The file.
 * @returns The table.
 * @throws {RoutesError} When the file is missing, not JSON, or has an invalid entry.
 */
export async function loadRoutes(path: string): Promise<RouteTable> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new RoutesError(
      `Cannot read routes file "${path}": ${err instanceof Error ? err.message : err}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new RoutesError(
      `Cannot parse routes file "${path}": ${err instanceof Error ? err.message : err}`,
    );
  }
  return RouteTable.fromJson(json, `routes file "${path}"`);
}
