/**
 * The native layer of netbird-ct: libnetfilter_conntrack over Deno FFI.
 *
 * Nothing is loaded at import time. {@linkcode openLibrary} opens the libraries (Linux only;
 * needs `--allow-ffi`), {@linkcode openEventSource} subscribes to conntrack NEW/DESTROY events and
 * returns a {@linkcode ConntrackSource} for `ConntrackTracker` from the main module.
 *
 * ```ts ignore
 * import { openEventSource, openLibrary } from "./mod.ts";
 * using lib = openLibrary();
 * using source = openEventSource(lib);
 * for await (const batch of source.batches()) console.log(batch.length);
 * ```
 *
 * @module
 */

export type { ConntrackSource, Dialer, SourceStats } from "../lib/source.ts";
export type {
  Counter,
  Flow,
  FlowEvent,
  FlowEventType,
  FlowTimestamps,
  ProtoTuple,
  Tuple,
} from "../lib/flow.ts";
export type { SysctlAccess } from "../lib/accounting.ts";
export * from "./constants.ts";
export * from "./decode.ts";
export { ConntrackError, Libc } from "./libc.ts";
export * from "./library.ts";
export * from "./source.ts";
export * from "./symbols.ts";
export type { DropSource, DropSourceStats, LoggedPacket } from "../lib/drops.ts";
export * from "./nflog.ts";
export * from "./nflog_symbols.ts";
export type { CaptureDirection, CaptureRecord } from "../lib/capture/pcap.ts";
export * from "./packet_socket.ts";
