/**
 * Numeric constants mirrored from the C headers, each with its C name. Values are written out
 * (C numbers most `enum nf_conntrack_attr` members implicitly) and pinned by
 * `tests/ffi/constants_test.ts`.
 *
 * Sources: `libnetfilter_conntrack/libnetfilter_conntrack.h` (1.0.9), `linux/netfilter/nfnetlink.h`,
 * `linux/netlink.h`, `asm-generic/errno*.h`, `asm-generic/fcntl.h`, `poll.h`, `sys/eventfd.h`,
 * `sched.h` (x86_64 / aarch64 Linux values).
 *
 * @module
 */

/** `enum nf_conntrack_attr` members used here (`ATTR_*`). */
export const ATTR = {
  ORIG_IPV4_SRC: 0, // u32, network order
  ORIG_IPV4_DST: 1, // u32, network order
  REPL_IPV4_SRC: 2, // u32, network order
  REPL_IPV4_DST: 3, // u32, network order
  ORIG_IPV6_SRC: 4, // u128 (pointer to 16 bytes), network order
  ORIG_IPV6_DST: 5,
  REPL_IPV6_SRC: 6,
  REPL_IPV6_DST: 7,
  ORIG_PORT_SRC: 8, // u16, network order
  ORIG_PORT_DST: 9, // u16, network order
  REPL_PORT_SRC: 10, // u16, network order
  REPL_PORT_DST: 11, // u16, network order
  ICMP_TYPE: 12, // u8
  ICMP_CODE: 13, // u8
  ICMP_ID: 14, // u16, network order
  ORIG_L3PROTO: 15, // u8 (AF_INET / AF_INET6)
  REPL_L3PROTO: 16, // u8
  ORIG_L4PROTO: 17, // u8 (IPPROTO_*)
  REPL_L4PROTO: 18, // u8
  TCP_STATE: 19, // u8
  TIMEOUT: 24, // u32, host order
  MARK: 25, // u32, host order
  ORIG_COUNTER_PACKETS: 26, // u64, host order
  REPL_COUNTER_PACKETS: 27, // u64, host order
  ORIG_COUNTER_BYTES: 28, // u64, host order
  REPL_COUNTER_BYTES: 29, // u64, host order
  USE: 30, // u32, host order
  ID: 31, // u32, host order
  STATUS: 32, // u32, host order
  ZONE: 61, // u16, host order
  TIMESTAMP_START: 63, // u64 ns, host order
  TIMESTAMP_STOP: 64, // u64 ns, host order
  MAX: 75, // ATTR_MAX
} as const;

/** An `ATTR_*` value. */
export type Attr = typeof ATTR[keyof typeof ATTR];

/** `enum nf_conntrack_msg_type` (`NFCT_T_*`): message types passed to callbacks. */
export const NFCT_T = {
  UNKNOWN: 0, // NFCT_T_UNKNOWN
  NEW: 1, // NFCT_T_NEW
  UPDATE: 2, // NFCT_T_UPDATE
  DESTROY: 4, // NFCT_T_DESTROY
  ALL: 7, // NFCT_T_ALL
  ERROR: 0x80000000, // NFCT_T_ERROR
} as const;

/** Callback return values (`NFCT_CB_*`). */
export const NFCT_CB = {
  FAILURE: -1, // NFCT_CB_FAILURE
  STOP: 0, // NFCT_CB_STOP
  CONTINUE: 1, // NFCT_CB_CONTINUE
  STOLEN: 2, // NFCT_CB_STOLEN
} as const;

/** `nfct_open` subsystem id: CONNTRACK (NFNL_SUBSYS_CTNETLINK). */
export const CONNTRACK = 1;

/** ctnetlink multicast groups (`NF_NETLINK_CONNTRACK_*`, bit masks for `nfct_open`). */
export const NF_NETLINK_CONNTRACK = {
  NEW: 0x00000001, // NF_NETLINK_CONNTRACK_NEW
  UPDATE: 0x00000002, // NF_NETLINK_CONNTRACK_UPDATE
  DESTROY: 0x00000004, // NF_NETLINK_CONNTRACK_DESTROY
} as const;

/** `enum nf_conntrack_query` (`NFCT_Q_*`). */
export const NFCT_Q = {
  CREATE: 0, // NFCT_Q_CREATE
  UPDATE: 1, // NFCT_Q_UPDATE
  DESTROY: 2, // NFCT_Q_DESTROY
  GET: 3, // NFCT_Q_GET
  FLUSH: 4, // NFCT_Q_FLUSH
  DUMP: 5, // NFCT_Q_DUMP
} as const;

/** Address families (`AF_*`). */
export const AF = {
  INET: 2, // AF_INET
  INET6: 10, // AF_INET6
} as const;

/** errno values (`E*`). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11, // == EWOULDBLOCK
  EACCES: 13,
  EINVAL: 22,
  EPROTONOSUPPORT: 93,
  ENOBUFS: 105,
} as const;

/** libc constants for sockets, files and polling. */
export const LIBC = {
  F_GETFL: 3,
  F_SETFL: 4,
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_TRUNC: 0o1000,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  POLLIN: 0x0001,
  SOL_SOCKET: 1,
  SO_RCVBUF: 8,
  SO_RCVBUFFORCE: 33,
  SOL_NETLINK: 270,
  NETLINK_BROADCAST_ERROR: 4,
  NETLINK_NO_ENOBUFS: 5,
  EFD_CLOEXEC: 0o2000000,
  EFD_NONBLOCK: 0o4000,
  CLONE_NEWNET: 0x40000000,
  /** `sizeof(struct stat)` on x86_64 and aarch64 (glibc). */
  STAT_SIZE: 144,
  /** `offsetof(struct stat, st_ino)` on x86_64 and aarch64. */
  STAT_INO_OFFSET: 8,
} as const;
