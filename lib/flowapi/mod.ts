/**
 * NetBird's Flow API for netbird-ct: the `flow.proto` codec, the gRPC `FlowService` client that a
 * tracker uses to ship aggregated records (`FlowClient`, with a memory or Redis un-acked store),
 * and the receiver (`FlowReceiver`: token auth, dedupe, memory or Redis event store, HTTP query
 * API). A separate entry point from the main module because it loads `@grpc/grpc-js` and `redis`.
 *
 * @module
 */

export * from "./proto.ts";
export * from "./token.ts";
export * from "./store.ts";
export * from "./query.ts";
export * from "./server.ts";
export * from "./client.ts";
export * from "./unacked.ts";
