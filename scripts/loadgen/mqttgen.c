/*
 * mqttgen.c — MQTT 3.1.1 load generator for scripts/bench.ts (mq9-edge vs mosquitto).
 *
 * Built at bench time:  gcc -O2 -Wall -o .bench/mqttgen scripts/loadgen/mqttgen.c
 *
 * A hand-written MQTT 3.1.1 client, no library: blocking sockets, one big read buffer per
 * connection, packets parsed in place. Every connection is a clean session (CONNECT flags 0x02)
 * with keep-alive --keepalive seconds (default 0: none, so a held connection is never timed out).
 *
 * Modes (all talk to a broker at --host/--port, default 127.0.0.1:1883):
 *   pub   --topic T --count N --size B --qos 0|1 [--window K] [--timeout-ms MS] [--max-seconds S]
 *         QoS 0: PUBLISH frames written back to back in 64 KiB writes, then PINGREQ; t_flushed is
 *         the PINGRESP (the server has read everything before it). QoS 1: up to K PUBLISH
 *         unacknowledged (packet ids 1..65535, reused once acknowledged), every PUBACK matched to
 *         its packet id; reports acknowledged msgs/s and the PUBACK latency percentiles.
 *         A payload of >= 12 bytes starts with "MQG1" and the message's sequence number (uint64,
 *         little endian), so a subscriber can count duplicates and reordering.
 *   sub   --topic T --count N --qos 0|1 [--idle-ms MS] [--max-seconds S]
 *         SUBSCRIBE at that QoS; prints READY once the SUBACK granted it. Answers every QoS 1
 *         PUBLISH with a PUBACK (one write per read). Stops at the N-th message, after --idle-ms
 *         without any data (end "idle"), or when the server closes (end "closed"). Reports the rate
 *         from the first to the N-th message, and duplicates / out-of-order / foreign payloads.
 *   conns --count C --topic-prefix P [--parallel W] [--qos 0|1]
 *         opens C clients, W at a time in lock step (W connects, W CONNECTs, W CONNACKs, W
 *         SUBSCRIBEs to P/<i>, W SUBACKs), prints "READY conns=C elapsed_ms=X" after the last
 *         SUBACK, then holds them until a line or EOF on stdin, checks how many the server has
 *         closed meanwhile, sends DISCONNECT on each, and reports.
 *
 * Protocol towards bench.ts (stdout, line based), as loadgen.c (see common.h): READY ... once it
 * is connected/subscribed, RESULT {json} once at the end; errors on stderr, exit code != 0.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>

#define GEN_NAME "mqttgen"
#include "common.h"

/* MQTT control packet types (upper nibble of the first byte) */
enum {
  P_CONNECT = 1,
  P_CONNACK = 2,
  P_PUBLISH = 3,
  P_PUBACK = 4,
  P_PUBREC = 5,
  P_PUBREL = 6,
  P_PUBCOMP = 7,
  P_SUBSCRIBE = 8,
  P_SUBACK = 9,
  P_PINGREQ = 12,
  P_PINGRESP = 13,
  P_DISCONNECT = 14,
};

static const char MAGIC[4] = {'M', 'Q', 'G', '1'};
#define SEQ_HDR 12 /* magic + uint64 sequence number */

/* ------------------------------------------------------------------ args */

static struct {
  COMMON_ARGS_FIELDS;
  const char *topic;
  const char *topic_prefix;
  int qos;
  int parallel;
  int keepalive;
} A = {
    .host = "127.0.0.1",
    .port = 1883,
    .topic = "bench/t",
    .topic_prefix = "bench/c",
    .count = 100000,
    .size = 128,
    .qos = 0,
    .window = 256,
    .idle_ms = 5000,
    .timeout_ms = 15000,
    .max_seconds = 300,
    .parallel = 10,
    .keepalive = 0,
};

static void parse_args(int argc, char **argv) {
  const opt_t opts[] = {
      COMMON_OPTS(A),
      OPT("--topic", A.topic),
      OPT("--topic-prefix", A.topic_prefix),
      OPT("--qos", A.qos),
      OPT("--parallel", A.parallel),
      OPT("--keepalive", A.keepalive),
      OPT_END,
  };
  A.mode = parse_opts(argc, argv, "usage: mqttgen pub|sub|conns [options]  (see the source header)", opts);
  if (A.qos != 0 && A.qos != 1) die("--qos must be 0 or 1");
  if (A.count < 0) die("--count must be >= 0");
  if (A.size < 0 || A.size > 64 * 1024 * 1024) die("--size out of range");
  if (A.window < 1) A.window = 1;
  if (A.window > 65535) A.window = 65535;
  if (A.parallel < 1) A.parallel = 1;
  if (strlen(A.topic) > 65535 || strlen(A.topic_prefix) > 65000) die("topic too long");
}

/* p-th percentile (0..1) of sorted v[0..n), nanoseconds → the caller's unit */
static double pct(const int64_t *v, long long n, double p) {
  if (n <= 0) return 0;
  long long i = (long long)(p * (double)(n - 1) + 0.5);
  if (i >= n) i = n - 1;
  return (double)v[i];
}

/* ----------------------------------------------------------- connection */

typedef struct {
  int fd;
  uint8_t *rb;
  size_t rcap, rs, re; /* unparsed bytes are rb[rs, re) */
  uint8_t *wb;
  size_t wcap, wl;
  int64_t t_read;  /* CLOCK_MONOTONIC of the last read() that returned data */
  int rcvtimeo_ms; /* the socket's SO_RCVTIMEO as last set (-1: none) */
} conn_t;

typedef struct {
  int type;
  int flags;
  const uint8_t *body; /* variable header + payload, in the read buffer */
  size_t len;          /* remaining length */
} pkt_t;

static void conn_init(conn_t *c, int fd, size_t rcap, size_t wcap) {
  memset(c, 0, sizeof(*c));
  c->fd = fd;
  c->rcvtimeo_ms = -1;
  c->rcap = rcap;
  c->rb = malloc(rcap);
  c->wcap = wcap;
  c->wb = malloc(wcap);
  if (!c->rb || !c->wb) die("out of memory");
}

static void conn_free(conn_t *c) {
  free(c->rb);
  free(c->wb);
  c->rb = c->wb = NULL;
}

static void conn_flush(conn_t *c) {
  if (c->wl) write_all(c->fd, c->wb, c->wl);
  c->wl = 0;
}

/* Room for n more bytes in the write buffer (flushing first if needed); returns where to write. */
static uint8_t *conn_reserve(conn_t *c, size_t n) {
  if (c->wl + n > c->wcap) conn_flush(c);
  if (n > c->wcap) {
    c->wb = realloc(c->wb, n);
    if (!c->wb) die("out of memory");
    c->wcap = n;
  }
  return c->wb + c->wl;
}

/* Read what is there, waiting up to timeout_ms (-1: forever). >0 bytes, 0 EOF, -1 timeout.
 * (The timeout is per read() and rounded to the kernel's timer; 0 waits about 1 ms.) */
static ssize_t conn_fill(conn_t *c, int timeout_ms) {
  if (c->rs == c->re) c->rs = c->re = 0;
  if (c->re == c->rcap) {
    if (c->rs > 0) {
      memmove(c->rb, c->rb + c->rs, c->re - c->rs);
      c->re -= c->rs;
      c->rs = 0;
    } else {
      c->rcap *= 2; /* one packet larger than the buffer */
      c->rb = realloc(c->rb, c->rcap);
      if (!c->rb) die("out of memory");
    }
  }
  if (timeout_ms != c->rcvtimeo_ms) { /* SO_RCVTIMEO rather than poll(): one syscall per read */
    set_rcvtimeo(c->fd, timeout_ms > 0 ? timeout_ms : timeout_ms == 0 ? 1 : 0);
    c->rcvtimeo_ms = timeout_ms;
  }
  ssize_t r = read_some(c->fd, c->rb + c->re, c->rcap - c->re);
  if (r > 0) {
    c->re += (size_t)r;
    c->t_read = now_ns();
  } else if (r == -2) {
    if (errno == ECONNRESET) return 0;
    die("read: %s", strerror(errno));
  }
  return r;
}

/* One whole packet from the buffer, in place: 1, or 0 when more bytes are needed. */
static int conn_parse(conn_t *c, pkt_t *p) {
  const uint8_t *b = c->rb + c->rs;
  size_t avail = c->re - c->rs;
  if (avail < 2) return 0;
  size_t len = 0;
  int shift = 0;
  size_t i = 1;
  for (;;) {
    if (i >= avail) return 0;
    if (i > 4) die("malformed remaining length from the server");
    uint8_t d = b[i++];
    len |= (size_t)(d & 0x7f) << shift;
    shift += 7;
    if (!(d & 0x80)) break;
  }
  if (avail - i < len) {
    /* make room for the rest of a large packet at the start of the buffer */
    if (c->rs > 0 && c->rcap - c->rs < i + len) {
      memmove(c->rb, c->rb + c->rs, avail);
      c->re = avail;
      c->rs = 0;
    }
    return 0;
  }
  p->type = b[0] >> 4;
  p->flags = b[0] & 0x0f;
  p->body = b + i;
  p->len = len;
  c->rs += i + len;
  return 1;
}

/* Next packet, reading as needed; -1 on timeout, 0 on EOF, 1 with a packet. */
static int conn_next(conn_t *c, pkt_t *p, int timeout_ms) {
  for (;;) {
    if (conn_parse(c, p)) return 1;
    ssize_t r = conn_fill(c, timeout_ms);
    if (r <= 0) return (int)r == 0 ? 0 : -1;
  }
}

static size_t put_varint(uint8_t *p, size_t v) {
  size_t n = 0;
  do {
    uint8_t d = v % 128;
    v /= 128;
    if (v) d |= 0x80;
    p[n++] = d;
  } while (v);
  return n;
}

static size_t put_str(uint8_t *p, const char *s, size_t n) {
  p[0] = (uint8_t)(n >> 8);
  p[1] = (uint8_t)n;
  memcpy(p + 2, s, n);
  return n + 2;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static void buf_connect(conn_t *c, const char *client_id) {
  size_t idl = strlen(client_id);
  size_t rem = 10 + 2 + idl;
  uint8_t *p = conn_reserve(c, rem + 5), *s = p;
  *p++ = P_CONNECT << 4;
  p += put_varint(p, rem);
  p += put_str(p, "MQTT", 4);
  *p++ = 4;    /* protocol level 3.1.1 */
  *p++ = 0x02; /* clean session */
  *p++ = (uint8_t)(A.keepalive >> 8);
  *p++ = (uint8_t)A.keepalive;
  p += put_str(p, client_id, idl);
  c->wl += (size_t)(p - s);
}

static void buf_subscribe(conn_t *c, uint16_t pid, const char *topic, int qos) {
  size_t tl = strlen(topic);
  size_t rem = 2 + 2 + tl + 1;
  uint8_t *p = conn_reserve(c, rem + 5), *s = p;
  *p++ = (P_SUBSCRIBE << 4) | 0x02;
  p += put_varint(p, rem);
  *p++ = (uint8_t)(pid >> 8);
  *p++ = (uint8_t)pid;
  p += put_str(p, topic, tl);
  *p++ = (uint8_t)qos;
  c->wl += (size_t)(p - s);
}

static void buf_simple(conn_t *c, int type, int flags) {
  uint8_t *p = conn_reserve(c, 2);
  p[0] = (uint8_t)((type << 4) | flags);
  p[1] = 0;
  c->wl += 2;
}

static void buf_ack(conn_t *c, int type, int flags, uint16_t pid) {
  uint8_t *p = conn_reserve(c, 4);
  p[0] = (uint8_t)((type << 4) | flags);
  p[1] = 2;
  p[2] = (uint8_t)(pid >> 8);
  p[3] = (uint8_t)pid;
  c->wl += 4;
}

static const char *connack_text(int rc) {
  switch (rc) {
    case 1: return "unacceptable protocol version";
    case 2: return "identifier rejected";
    case 3: return "server unavailable";
    case 4: return "bad user name or password";
    case 5: return "not authorized";
    default: return "unknown return code";
  }
}

/* Wait for the CONNACK of a CONNECT already written; dies unless it accepts. */
static void wait_connack(conn_t *c, const char *who) {
  pkt_t p;
  int r = conn_next(c, &p, A.timeout_ms);
  if (r < 0) die("%s: no CONNACK within %d ms", who, A.timeout_ms);
  if (r == 0) die("%s: connection closed before CONNACK", who);
  if (p.type != P_CONNACK || p.len < 2) die("%s: expected CONNACK, got packet type %d", who, p.type);
  if (p.body[1] != 0) die("%s: CONNACK refused: %d (%s)", who, p.body[1], connack_text(p.body[1]));
}

/* Wait for the SUBACK of packet id pid; returns the granted QoS, dies on 0x80 (failure). */
static int wait_suback(conn_t *c, uint16_t pid, const char *who) {
  pkt_t p;
  for (;;) {
    int r = conn_next(c, &p, A.timeout_ms);
    if (r < 0) die("%s: no SUBACK within %d ms", who, A.timeout_ms);
    if (r == 0) die("%s: connection closed before SUBACK", who);
    if (p.type == P_PUBLISH) continue; /* retained messages may precede it */
    if (p.type != P_SUBACK || p.len < 3) die("%s: expected SUBACK, got packet type %d", who, p.type);
    if (get_u16(p.body) != pid) die("%s: SUBACK for packet id %d, expected %d", who, get_u16(p.body), pid);
    if (p.body[2] == 0x80) die("%s: subscription refused (SUBACK 0x80)", who);
    return p.body[2];
  }
}

static void client_open(conn_t *c, const char *client_id, size_t rcap, size_t wcap) {
  int fd = tcp_connect(A.host, A.port, 0);
  if (fd < 0) die("%s: connect %s:%d: %s", client_id, A.host, A.port, strerror(-fd));
  conn_init(c, fd, rcap, wcap);
  buf_connect(c, client_id);
  conn_flush(c);
  wait_connack(c, client_id);
}

static void client_close(conn_t *c) {
  buf_simple(c, P_DISCONNECT, 0);
  /* the server may already be gone: a failed write here is not an error */
  if (c->wl) {
    ssize_t w = write(c->fd, c->wb, c->wl);
    (void)w;
    c->wl = 0;
  }
  shutdown(c->fd, SHUT_WR);
  close(c->fd);
  conn_free(c);
}

/* ------------------------------------------------------------------ pub */

static void mode_pub(void) {
  char id[32];
  snprintf(id, sizeof(id), "mg%dp", (int)getpid());
  conn_t c;
  client_open(&c, id, 1 << 16, 1 << 16);

  /* one PUBLISH, built once; per message only the packet id and sequence number change */
  size_t tl = strlen(A.topic);
  size_t rem = 2 + tl + (A.qos ? 2 : 0) + (size_t)A.size;
  uint8_t *tmpl = malloc(rem + 5);
  uint8_t *p = tmpl;
  *p++ = (uint8_t)((P_PUBLISH << 4) | (A.qos << 1));
  p += put_varint(p, rem);
  p += put_str(p, A.topic, tl);
  size_t pid_off = (size_t)(p - tmpl);
  if (A.qos) p += 2;
  size_t pay_off = (size_t)(p - tmpl);
  for (int i = 0; i < A.size; i++) p[i] = (uint8_t)('a' + i % 26);
  int has_seq = A.size >= SEQ_HDR;
  if (has_seq) memcpy(p, MAGIC, 4);
  p += A.size;
  size_t plen = (size_t)(p - tmpl);

  int64_t *slot_t = NULL;  /* by packet id: when its PUBLISH was buffered, 0 = free */
  int64_t *lat = NULL;     /* PUBACK latencies, ns */
  if (A.qos) {
    slot_t = calloc(65536, sizeof(int64_t));
    lat = malloc((size_t)(A.count > 0 ? A.count : 1) * sizeof(int64_t));
    if (!slot_t || !lat) die("out of memory");
  }
  long long sent = 0, acked = 0, unknown_acks = 0, other = 0;
  long long inflight = 0;
  unsigned next_pid = 1;
  const char *end = "done";
  int64_t t_first = now_ns(), t_written = 0, t_flushed = 0, t_last_ack = 0;
  int64_t deadline = t_first + (int64_t)(A.max_seconds * 1e9);

  if (A.qos == 0) {
    while (sent < A.count) {
      uint8_t *d = conn_reserve(&c, plen);
      memcpy(d, tmpl, plen);
      if (has_seq) {
        uint64_t s = (uint64_t)sent;
        memcpy(d + pay_off + 4, &s, 8);
      }
      c.wl += plen;
      sent++;
      if ((sent & 4095) == 0 && now_ns() > deadline) {
        end = "max-seconds";
        break;
      }
    }
    conn_flush(&c);
    t_written = now_ns();
    buf_simple(&c, P_PINGREQ, 0);
    conn_flush(&c);
    pkt_t pk;
    for (;;) {
      int r = conn_next(&c, &pk, A.timeout_ms);
      if (r < 0) die("no PINGRESP within %d ms after %lld messages", A.timeout_ms, sent);
      if (r == 0) die("server closed the connection after %lld messages", sent);
      if (pk.type == P_PINGRESP) break;
      other++;
    }
    t_flushed = now_ns();
  } else {
    pkt_t pk;
    while (acked < A.count) {
      while (inflight < A.window && sent < A.count) {
        while (slot_t[next_pid]) next_pid = next_pid % 65535 + 1;
        uint8_t *d = conn_reserve(&c, plen);
        memcpy(d, tmpl, plen);
        d[pid_off] = (uint8_t)(next_pid >> 8);
        d[pid_off + 1] = (uint8_t)next_pid;
        if (has_seq) {
          uint64_t s = (uint64_t)sent;
          memcpy(d + pay_off + 4, &s, 8);
        }
        c.wl += plen;
        slot_t[next_pid] = now_ns();
        next_pid = next_pid % 65535 + 1;
        sent++;
        inflight++;
      }
      conn_flush(&c);
      if (sent == A.count && !t_written) t_written = now_ns();
      ssize_t r = conn_fill(&c, A.timeout_ms);
      if (r < 0) {
        end = "timeout";
        break;
      }
      if (r == 0) {
        end = "closed";
        break;
      }
      while (conn_parse(&c, &pk)) {
        if (pk.type == P_PUBACK && pk.len >= 2) {
          uint16_t pid = get_u16(pk.body);
          if (!slot_t[pid]) {
            unknown_acks++;
            continue;
          }
          lat[acked++] = c.t_read - slot_t[pid];
          slot_t[pid] = 0;
          inflight--;
          t_last_ack = c.t_read;
        } else {
          other++;
        }
      }
      if (c.t_read > deadline) {
        end = "max-seconds";
        break;
      }
    }
    t_flushed = t_last_ack;
  }
  client_close(&c);

  double secs = (t_flushed - t_first) / 1e9;
  long long done = A.qos ? acked : sent;
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
  if (A.qos && acked > 0) {
    qsort(lat, (size_t)acked, sizeof(int64_t), cmp_i64);
    p50 = pct(lat, acked, 0.5) / 1e3;
    p90 = pct(lat, acked, 0.9) / 1e3;
    p99 = pct(lat, acked, 0.99) / 1e3;
    max = lat[acked - 1] / 1e3;
  }
  print_result("\"mode\":\"pub\",\"qos\":%d,\"window\":%d,\"count\":%lld,\"size\":%d,\"sent\":%lld,"
               "\"acked\":%lld,\"unacked\":%lld,\"unknown_acks\":%lld,\"other_packets\":%lld,\"t_first\":%lld,"
               "\"t_written\":%lld,\"t_flushed\":%lld,\"elapsed_s\":%.6f,\"rate\":%.1f,\"p50_us\":%.1f,"
               "\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"end\":\"%s\",\"cpu_s\":%.4f",
               A.qos, A.qos ? A.window : 0, A.count, A.size, sent, acked, A.qos ? inflight : 0, unknown_acks, other,
               (long long)t_first, (long long)t_written, (long long)t_flushed, secs, secs > 0 ? done / secs : 0.0,
               p50, p90, p99, max, end, cpu_seconds());
  exit(strcmp(end, "done") ? 1 : 0);
}

/* ------------------------------------------------------------------ sub */

static void mode_sub(void) {
  char id[32];
  snprintf(id, sizeof(id), "mg%ds", (int)getpid());
  conn_t c;
  client_open(&c, id, 4 << 20, 1 << 16);
  buf_subscribe(&c, 1, A.topic, A.qos);
  conn_flush(&c);
  int granted = wait_suback(&c, 1, id);
  if (granted != A.qos) fprintf(stderr, GEN_NAME ": asked for QoS %d, granted %d\n", A.qos, granted);
  int64_t t_sub = now_ns();
  printf("READY\n");
  fflush(stdout);

  long long n = A.count;
  uint8_t *seen = calloc((size_t)(n / 8 + 1), 1);
  if (!seen) die("out of memory");
  long long received = 0, dups = 0, ooo = 0, unchecked = 0, out_of_range = 0, dup_flag = 0, bytes = 0;
  long long by_qos[3] = {0, 0, 0}, other = 0;
  long long max_seq = -1;
  int64_t t_first = 0, t_last = 0;
  int64_t deadline = t_sub + (int64_t)(A.max_seconds * 1e9);
  const char *end = "count";
  pkt_t p;
  while (received < n) {
    ssize_t r = conn_fill(&c, A.idle_ms);
    if (r < 0) {
      end = "idle";
      break;
    }
    if (r == 0) {
      end = "closed";
      break;
    }
    while (conn_parse(&c, &p)) {
      if (p.type != P_PUBLISH) {
        if (p.type == P_DISCONNECT) end = "disconnect";
        other++;
        continue;
      }
      int q = (p.flags >> 1) & 3;
      if (p.len < 2) die("malformed PUBLISH");
      size_t tl = get_u16(p.body);
      size_t off = 2 + tl;
      if (q > 0) {
        if (p.len < off + 2) die("malformed PUBLISH");
        uint16_t pid = get_u16(p.body + off);
        off += 2;
        if (q == 1) buf_ack(&c, P_PUBACK, 0, pid);
        else buf_ack(&c, P_PUBREC, 0, pid); /* not expected: we subscribe at QoS <= 1 */
      }
      if (off > p.len) die("malformed PUBLISH");
      const uint8_t *pay = p.body + off;
      size_t pl = p.len - off;
      if (q <= 2) by_qos[q]++;
      if (p.flags & 0x08) dup_flag++;
      bytes += (long long)pl;
      if (received == 0) t_first = c.t_read;
      received++;
      if (received == n) t_last = c.t_read;
      if (pl >= SEQ_HDR && !memcmp(pay, MAGIC, 4)) {
        uint64_t s;
        memcpy(&s, pay + 4, 8);
        if (s >= (uint64_t)n) {
          out_of_range++;
        } else {
          long long si = (long long)s;
          if (seen[si >> 3] & (1u << (si & 7))) {
            dups++;
          } else {
            seen[si >> 3] |= (uint8_t)(1u << (si & 7));
            if (si < max_seq) ooo++;
          }
          if (si > max_seq) max_seq = si;
        }
      } else {
        unchecked++;
      }
    }
    conn_flush(&c); /* the PUBACKs of this read, one write */
    if (!strcmp(end, "disconnect")) break;
    if (c.t_read > deadline) {
      end = "max-seconds";
      break;
    }
  }
  if (!t_last) t_last = received ? c.t_read : 0;
  client_close(&c);
  double secs = (t_last - t_first) / 1e9;
  print_result("\"mode\":\"sub\",\"qos\":%d,\"granted\":%d,\"expected\":%lld,\"received\":%lld,"
               "\"payload_bytes\":%lld,\"qos0\":%lld,\"qos1\":%lld,\"dups\":%lld,\"out_of_order\":%lld,"
               "\"unchecked\":%lld,\"out_of_range\":%lld,\"dup_flag\":%lld,\"other_packets\":%lld,\"t_sub\":%lld,"
               "\"t_first\":%lld,\"t_last\":%lld,\"elapsed_s\":%.6f,\"rate\":%.1f,\"end\":\"%s\",\"cpu_s\":%.4f",
               A.qos, granted, n, received, bytes, by_qos[0], by_qos[1], dups, ooo, unchecked, out_of_range, dup_flag,
               other, (long long)t_sub, (long long)t_first, (long long)t_last, secs,
               secs > 0 && received > 1 ? (received - 1) / secs : 0.0, end, cpu_seconds());
  exit(received == n ? 0 : 1);
}

/* ---------------------------------------------------------------- conns */

static void mode_conns(void) {
  long long n = A.count;
  if (n < 1) die("--count must be >= 1");
  conn_t *cs = calloc((size_t)n, sizeof(conn_t));
  int64_t *lat = malloc((size_t)n * sizeof(int64_t));
  int64_t *t0s = malloc((size_t)A.parallel * sizeof(int64_t));
  if (!cs || !lat || !t0s) die("out of memory");
  char id[64], topic[65536];
  int64_t t_first = now_ns();
  for (long long base = 0; base < n; base += A.parallel) {
    long long w = n - base < A.parallel ? n - base : A.parallel;
    for (long long j = 0; j < w; j++) {
      long long i = base + j;
      snprintf(id, sizeof(id), "mg%dc%lld", (int)getpid(), i);
      t0s[j] = now_ns();
      int fd = tcp_connect(A.host, A.port, 0);
      if (fd < 0) die("client %lld of %lld: connect %s:%d: %s", i + 1, n, A.host, A.port, strerror(-fd));
      conn_init(&cs[i], fd, 256, 256);
      buf_connect(&cs[i], id);
      conn_flush(&cs[i]);
    }
    for (long long j = 0; j < w; j++) {
      long long i = base + j;
      snprintf(id, sizeof(id), "client %lld of %lld", i + 1, n);
      wait_connack(&cs[i], id);
      snprintf(topic, sizeof(topic), "%s/%lld", A.topic_prefix, i);
      buf_subscribe(&cs[i], 1, topic, A.qos);
      conn_flush(&cs[i]);
    }
    for (long long j = 0; j < w; j++) {
      long long i = base + j;
      snprintf(id, sizeof(id), "client %lld of %lld", i + 1, n);
      wait_suback(&cs[i], 1, id);
      lat[i] = now_ns() - t0s[j];
    }
  }
  int64_t t_last = now_ns();
  double secs = (t_last - t_first) / 1e9;
  printf("READY conns=%lld elapsed_ms=%.1f\n", n, secs * 1e3);
  fflush(stdout);

  /* hold until a line or EOF on stdin */
  char line[256];
  while (!fgets(line, sizeof(line), stdin) && !feof(stdin) && errno == EINTR) {
  }
  int64_t t_release = now_ns();

  /* which connections did the server close meanwhile? */
  long long closed = 0, unexpected = 0;
  for (long long i = 0; i < n; i++) {
    struct pollfd pfd = {.fd = cs[i].fd, .events = POLLIN};
    if (poll(&pfd, 1, 0) > 0) {
      uint8_t b[64];
      ssize_t r = recv(cs[i].fd, b, sizeof(b), MSG_DONTWAIT | MSG_PEEK);
      if (r == 0 || (r < 0 && errno == ECONNRESET) || (pfd.revents & (POLLHUP | POLLERR))) closed++;
      else if (r > 0) unexpected++;
    }
  }
  for (long long i = 0; i < n; i++) client_close(&cs[i]);

  qsort(lat, (size_t)n, sizeof(int64_t), cmp_i64);
  print_result("\"mode\":\"conns\",\"count\":%lld,\"parallel\":%d,\"qos\":%d,\"t_first\":%lld,\"t_last\":%lld,"
               "\"elapsed_s\":%.6f,\"rate\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"held_s\":%.3f,"
               "\"closed_by_server\":%lld,\"unexpected_data\":%lld,\"cpu_s\":%.4f",
               n, A.parallel, A.qos, (long long)t_first, (long long)t_last, secs, secs > 0 ? n / secs : 0.0,
               pct(lat, n, 0.5) / 1e6, pct(lat, n, 0.99) / 1e6, lat[n - 1] / 1e6, (t_release - t_last) / 1e9, closed,
               unexpected, cpu_seconds());
  exit(closed ? 1 : 0);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  parse_args(argc, argv);
  if (!strcmp(A.mode, "pub")) mode_pub();
  else if (!strcmp(A.mode, "sub")) mode_sub();
  else if (!strcmp(A.mode, "conns")) mode_conns();
  else die("unknown mode %s (pub, sub, conns)", A.mode);
  return 0;
}
