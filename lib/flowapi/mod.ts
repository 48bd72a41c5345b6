/**
 * NetBird's Flow API for netbird-ct: the `flow.proto` codec, the gRPC `FlowService` client that a
 * tracker uses to ship aggregated records (`FlowClient`, with a memory or Redis un-acked store, on
 * netbird-ct's own HTTP/2 transport `h2Dialer` or on `grpcDialer`), and the receiver
 * (`FlowReceiver`: token auth, dedupe, memory or Redis event store, HTTP query API). A separate
 * entry point from the main module because it loads `@grpc/grpc-js` and `redis`. The record types
 * the client takes are re-exported here.
 *
 * @module
 */

export * from "./proto.ts";
export * from "./token.ts";
export * from "./store.ts";
export * from "./query.ts";
export * from "./server.ts";
export * from "./client.ts";
export {
  H2_USER_AGENT,
  h2Dialer,
  type H2DialerOptions,
  type H2FlowConnection,
  type H2FlowDialer,
  KEEPALIVE_MS,
  KEEPALIVE_TIMEOUT_MS,
} from "./h2/client.ts";
export * from "./unacked.ts";
export type { FlowRecord, PostNat, RecordReason, RecordType, WindowFields } from "../record.ts";
export type { RecordSink } from "../tracker.ts";
export type { Direction } from "../overlay.ts";
