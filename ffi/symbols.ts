/**
 * The dlopen tables: C signatures for libnetfilter_conntrack, libnfnetlink and libc. Pure data,
 * no side effects. Each parameter carries its C declaration as a comment.
 *
 * @module
 */

/** `libnetfilter_conntrack.so.3`. */
export const NFCT_SYMBOLS = {
  nfct_open: {
    parameters: [
      "u8", // uint8_t subsys_id
      "u32", // unsigned subscriptions
    ],
    result: "pointer", // struct nfct_handle *
  },
  nfct_close: { parameters: ["pointer"], result: "i32" }, // (struct nfct_handle *h)
  nfct_fd: { parameters: ["pointer"], result: "i32" }, // (struct nfct_handle *h)
  nfct_nfnlh: { parameters: ["pointer"], result: "pointer" }, // struct nfnl_handle *(h)
  nfct_callback_register: {
    parameters: [
      "pointer", // struct nfct_handle *h
      "u32", // enum nf_conntrack_msg_type type
      "function", // int (*cb)(enum nf_conntrack_msg_type, struct nf_conntrack *, void *)
      "pointer", // void *data
    ],
    result: "i32",
  },
  nfct_callback_unregister: { parameters: ["pointer"], result: "void" }, // (h)
  nfct_catch: { parameters: ["pointer"], result: "i32" }, // (struct nfct_handle *h)
  nfct_query: {
    parameters: [
      "pointer", // struct nfct_handle *h
      "u32", // const enum nf_conntrack_query query
      "buffer", // const void *data
    ],
    result: "i32",
  },
  nfct_get_attr: { parameters: ["pointer", "u32"], result: "pointer" }, // (ct, attr)
  nfct_get_attr_u8: { parameters: ["pointer", "u32"], result: "u8" },
  nfct_get_attr_u16: { parameters: ["pointer", "u32"], result: "u16" },
  nfct_get_attr_u32: { parameters: ["pointer", "u32"], result: "u32" },
  nfct_get_attr_u64: { parameters: ["pointer", "u32"], result: "u64" },
  nfct_attr_is_set: { parameters: ["pointer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `libnfnetlink.so.0`. */
export const NFNL_SYMBOLS = {
  nfnl_rcvbufsiz: {
    parameters: [
      "pointer", // const struct nfnl_handle *h
      "u32", // unsigned int size
    ],
    result: "u32", // new size (SO_RCVBUFFORCE, falling back to SO_RCVBUF)
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** `libc.so.6`. */
export const LIBC_SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" }, // int *(void)
  strerror: { parameters: ["i32"], result: "pointer" }, // char *(int errnum)
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" }, // (int fd, int cmd, int arg)
  poll: {
    parameters: [
      "buffer", // struct pollfd *fds
      "u64", // nfds_t nfds
      "i32", // int timeout
    ],
    result: "i32",
    nonblocking: true,
  },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" }, // (const char *, int, mode_t)
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" }, // (int, void *, size_t)
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" }, // (int, const void *, size_t)
  close: { parameters: ["i32"], result: "i32" }, // (int fd)
  fstat: { parameters: ["i32", "buffer"], result: "i32" }, // (int fd, struct stat *)
  setns: { parameters: ["i32", "i32"], result: "i32" }, // (int fd, int nstype)
  eventfd: { parameters: ["u32", "i32"], result: "i32" }, // (unsigned int initval, int flags)
  setsockopt: {
    parameters: [
      "i32", // int sockfd
      "i32", // int level
      "i32", // int optname
      "buffer", // const void *optval
      "u32", // socklen_t optlen
    ],
    result: "i32",
  },
  getsockopt: {
    parameters: [
      "i32", // int sockfd
      "i32", // int level
      "i32", // int optname
      "buffer", // void *optval
      "buffer", // socklen_t *optlen
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** `libc.so.6`: the AF_PACKET socket calls of `packet_socket.ts` (opened with {@linkcode LIBC_SYMBOLS}). */
export const PACKET_SOCKET_SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" }, // (int domain, int type, int protocol)
  bind: {
    parameters: [
      "i32", // int sockfd
      "buffer", // const struct sockaddr *addr
      "u32", // socklen_t addrlen
    ],
    result: "i32",
  },
  recvfrom: {
    parameters: [
      "i32", // int sockfd
      "buffer", // void *buf
      "usize", // size_t len
      "i32", // int flags
      "buffer", // struct sockaddr *src_addr
      "buffer", // socklen_t *addrlen
    ],
    result: "isize",
  },
  if_nametoindex: { parameters: ["buffer"], result: "u32" }, // unsigned (const char *ifname)
} as const satisfies Deno.ForeignLibraryInterface;

/** Bound libnetfilter_conntrack symbols. */
export type NfctSymbols = Deno.DynamicLibrary<typeof NFCT_SYMBOLS>["symbols"];
/** Bound libnfnetlink symbols. */
export type NfnlSymbols = Deno.DynamicLibrary<typeof NFNL_SYMBOLS>["symbols"];
/** Bound libc symbols. */
export type LibcSymbols = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

/** Bound libc symbols for packet sockets ({@linkcode LIBC_SYMBOLS} and {@linkcode PACKET_SOCKET_SYMBOLS}). */
export type PacketSocketSymbols = Deno.DynamicLibrary<
  typeof LIBC_SYMBOLS & typeof PACKET_SOCKET_SYMBOLS
>["symbols"];

/** The callback signature of `nfct_callback_register`. */
export const NFCT_CALLBACK = {
  parameters: [
    "u32", // enum nf_conntrack_msg_type type
    "pointer", // struct nf_conntrack *ct
    "pointer", // void *data
  ],
  result: "i32",
} as const satisfies Deno.UnsafeCallbackDefinition;
