/*
 * loadgen.c — load generator for scripts/bench.ts (mq9-edge vs nats-server).
 *
 * Built at bench time:  gcc -O2 -Wall -o .bench/loadgen scripts/loadgen/loadgen.c -lnats -lpthread
 *
 * Client modes (talk to a broker at --host/--port):
 *   pub    --subject S --count N --size B [--impl raw|natsc] [--max-seconds T]
 *   sub    --subject S --count N [--impl raw|natsc] [--idle-ms MS]
 *   rep    --subject S [--impl raw|natsc]            responder; runs until killed / stdin EOF
 *   req    --subject S --count N --warmup W --size B [--impl raw|natsc]
 *   stall  --subject S [--rcvbuf BYTES]              subscribes, then stops reading until a
 *                                                    line arrives on stdin; then reports whether
 *                                                    the server closed the connection
 *   preq   --subject T[,T2...] --count N [--warmup W] [--window K] [--size B | --payload P]
 *          [--fanout F] [--timeout-ms MS] [--show N] [--replies-out FILE]
 *          pipelined requester (raw client only): keeps up to K requests in flight, each
 *          PUB <subject> _INBOX.lg<pid>.<seq> <len>, replies read on one wildcard SUB; every
 *          reply is checked (a JSON body with a non-empty "error", or a 503 no-responders
 *          status, is a failure). Request i uses template T[i % #templates]; "%d" in a
 *          template or in P becomes (i / #templates) % F. --window 1 = sequential requests.
 *          --subject @FILE reads the templates from FILE, one per line (e.g. one subject per
 *          request). --replies-out FILE writes "<seq> <reply payload>" per reply, in arrival order.
 *   replay --subject S --count N [--order mq9|js|none] [--create-subject S2 --create-payload P]
 *          [--idle-ms MS] [--id-header H] [--dump FILE] [--linger-ms MS]
 *          (raw client only, CONNECT headers:true)
 *          times one subscriber from its SUB (or, with --create-subject, from the request that
 *          creates a JetStream push consumer delivering to S) to the N-th message; checks the
 *          order: mq9 = mq9-priority non-decreasing (critical, urgent, normal) and mq9-msg-id
 *          increasing within a priority; js = stream sequence (from the $JS.ACK reply) increasing.
 *          --id-header: the id header the mq9 order check reads (default mq9-msg-id; e.g.
 *          mq9-cloud-msg-id for an edge's uplink mailbox). Prints "SUBSCRIBED" once the server
 *          answered the PING after the SUB (a -ERR before that ends the run: "sub-refused").
 *          --dump FILE writes "<rank> <id> <t_ns>" per message (rank 0 critical, 1 urgent,
 *          2 normal, -1 no header; id -1 without the id header; t = CLOCK_MONOTONIC of the read).
 *          --linger-ms MS: after the N-th message keep reading MS more and count "extra" ones.
 * Fake-server modes (measure the generator's own ceiling without any broker):
 *   sink   listens on 127.0.0.1:0, swallows PUB frames (publisher ceiling)
 *   blast  --count N --size B [--order mq9]   listens, waits for a SUB, then sends N MSG frames
 *          (HMSG with an mq9 header block with --order mq9) (subscriber / replay ceiling)
 *   echo   listens, answers every PUB that has a reply subject (requester latency floor)
 *   version
 *
 * "raw" is a minimal hand-written NATS protocol client over a blocking socket
 * (no threads, one big read buffer, MSG frames parsed in place); "natsc" uses
 * the nats.c library (Debian libnats-dev).
 *
 * Protocol of this program towards bench.ts (stdout, line based; see common.h):
 *   READY [port=N]      once it is connected/subscribed (or listening, for fake servers)
 *   RESULT {json}       once, at the end
 * Errors go to stderr, exit code != 0.
 * All timestamps are CLOCK_MONOTONIC nanoseconds, comparable across processes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include <nats/nats.h>

#define GEN_NAME "loadgen"
#include "common.h"

/* ------------------------------------------------------------------ util */

static void say_ready(int port) {
  if (port > 0)
    printf("READY port=%d\n", port);
  else
    printf("READY\n");
  fflush(stdout);
}

typedef struct {
  COMMON_ARGS_FIELDS;
  const char *subject;
  long long warmup;
  const char *impl;
  int rcvbuf;
  const char *payload;
  long long fanout;
  int show;
  const char *order;
  const char *create_subject;
  const char *create_payload;
  const char *replies_out;
  const char *id_header;
  const char *dump;
  int linger_ms;
} args_t;

static args_t A = {
    .mode = NULL,
    .host = "127.0.0.1",
    .port = 4222,
    .subject = "bench.subject",
    .count = 1000000,
    .warmup = 1000,
    .size = 128,
    .impl = "raw",
    .idle_ms = 5000,
    .max_seconds = 120,
    .rcvbuf = 0,
    .window = 1,
    .payload = NULL,
    .fanout = 1,
    .timeout_ms = 10000,
    .show = 0,
    .order = "none",
    .create_subject = NULL,
    .create_payload = "",
    .replies_out = NULL,
    .id_header = "mq9-msg-id",
    .dump = NULL,
    .linger_ms = 0,
};

static void parse_args(int argc, char **argv) {
  const opt_t opts[] = {
      COMMON_OPTS(A),
      OPT("--subject", A.subject),
      OPT("--warmup", A.warmup),
      OPT("--impl", A.impl),
      OPT("--rcvbuf", A.rcvbuf),
      OPT("--payload", A.payload),
      OPT("--fanout", A.fanout),
      OPT("--show", A.show),
      OPT("--order", A.order),
      OPT("--create-subject", A.create_subject),
      OPT("--create-payload", A.create_payload),
      OPT("--replies-out", A.replies_out),
      OPT("--id-header", A.id_header),
      OPT("--dump", A.dump),
      OPT("--linger-ms", A.linger_ms),
      OPT_END,
  };
  A.mode = parse_opts(argc, argv, "usage: loadgen <mode> [options]  (see source header)", opts);
  if (strcmp(A.impl, "raw") && strcmp(A.impl, "natsc")) die("--impl must be raw or natsc");
  if (A.window < 1) A.window = 1;
  if (A.fanout < 1) A.fanout = 1;
}

static char *make_payload(int size) {
  char *p = malloc(size > 0 ? (size_t)size : 1);
  for (int i = 0; i < size; i++) p[i] = (char)('a' + i % 26);
  return p;
}

/* ------------------------------------------------------ raw NATS client */

enum { FR_MSG = 1, FR_PUB, FR_SUB, FR_PING, FR_PONG, FR_OK, FR_ERR, FR_INFO, FR_CONNECT, FR_OTHER };

typedef struct {
  int type;
  const char *line; /* without \r\n */
  size_t line_len;
  const char *subj;
  size_t subj_len;
  const char *sid;
  size_t sid_len;
  const char *reply; /* may be NULL */
  size_t reply_len;
  const char *payload; /* HMSG: the body after the header block */
  size_t len;
  const char *hdr; /* HMSG only: the header block; NULL for MSG */
  size_t hdr_len;
} frame_t;

typedef struct {
  int fd;
  char *rb;
  size_t rcap, rs, re; /* read buffer [rs, re) holds unparsed bytes */
  char *wb;
  size_t wcap, wl;
  int64_t last_read_ns; /* time of the most recent successful read() */
  long long bytes_read;
  int nofill; /* set: rc_next returns -3 instead of reading when no whole frame is buffered */
} rconn_t;

static void rc_init(rconn_t *c, int fd) {
  memset(c, 0, sizeof(*c));
  c->fd = fd;
  c->rcap = 1 << 20;
  c->rb = malloc(c->rcap);
  c->wcap = 1 << 16;
  c->wb = malloc(c->wcap);
}

static void rc_flush(rconn_t *c) {
  if (c->wl) write_all(c->fd, c->wb, c->wl);
  c->wl = 0;
}

static void rc_buf(rconn_t *c, const char *p, size_t n) {
  if (c->wl + n > c->wcap) rc_flush(c);
  if (n > c->wcap) {
    write_all(c->fd, p, n);
    return;
  }
  memcpy(c->wb + c->wl, p, n);
  c->wl += n;
}

static void rc_bufs(rconn_t *c, const char *s) { rc_buf(c, s, strlen(s)); }

/* Read more bytes. Returns >0 bytes, 0 on EOF, -1 on timeout (SO_RCVTIMEO), -2 on error,
 * -3 when c->nofill is set (the caller only wants what is already buffered). */
static ssize_t rc_fill(rconn_t *c) {
  if (c->nofill) return -3;
  if (c->rs > 0 && (c->re == c->rcap || c->rs == c->re)) {
    memmove(c->rb, c->rb + c->rs, c->re - c->rs);
    c->re -= c->rs;
    c->rs = 0;
  }
  if (c->re == c->rcap) {
    c->rcap *= 2;
    c->rb = realloc(c->rb, c->rcap);
  }
  ssize_t r = read_some(c->fd, c->rb + c->re, c->rcap - c->re);
  if (r > 0) {
    c->re += (size_t)r;
    c->bytes_read += r;
    c->last_read_ns = now_ns();
  }
  return r;
}

/* split line into up to 6 space-separated tokens */
static int tokenize(const char *s, size_t n, const char **tok, size_t *tlen, int max) {
  int k = 0;
  size_t i = 0;
  while (i < n && k < max) {
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    if (i >= n) break;
    size_t st = i;
    while (i < n && s[i] != ' ' && s[i] != '\t') i++;
    tok[k] = s + st;
    tlen[k] = i - st;
    k++;
  }
  return k;
}

static long long parse_ll(const char *s, size_t n) {
  long long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

static int upper_eq(const char *s, size_t n, const char *w) {
  size_t wl = strlen(w);
  if (n != wl) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
    if (ch != w[i]) return 0;
  }
  return 1;
}

/* Next complete frame. Returns 1 (frame), 0 (EOF), -1 (timeout), -2 (error), -3 (nofill and
 * no whole frame buffered). An HMSG comes back as FR_MSG with hdr/hdr_len set. */
static int rc_next(rconn_t *c, frame_t *f) {
  for (;;) {
    size_t avail = c->re - c->rs;
    char *start = c->rb + c->rs;
    char *nl = avail ? memchr(start, '\n', avail) : NULL;
    if (nl) {
      size_t line_len = (size_t)(nl - start);
      size_t consumed = line_len + 1;
      if (line_len > 0 && start[line_len - 1] == '\r') line_len--;
      const char *tok[6];
      size_t tl[6];
      int nt = tokenize(start, line_len, tok, tl, 6);
      memset(f, 0, sizeof(*f));
      f->line = start;
      f->line_len = line_len;
      if (nt == 0) {
        c->rs += consumed;
        continue;
      }
      int is_msg = upper_eq(tok[0], tl[0], "MSG");
      int is_hmsg = !is_msg && upper_eq(tok[0], tl[0], "HMSG");
      int is_pub = !is_msg && !is_hmsg && upper_eq(tok[0], tl[0], "PUB");
      if (is_msg || is_hmsg || is_pub) {
        /* MSG subj sid [reply] len  |  HMSG subj sid [reply] hlen len  |  PUB subj [reply] len */
        int min = is_msg ? 4 : is_hmsg ? 5 : 3;
        if (nt < min || nt > min + 1) die("bad frame: %.*s", (int)line_len, start);
        long long len = parse_ll(tok[nt - 1], tl[nt - 1]);
        long long hlen = is_hmsg ? parse_ll(tok[nt - 2], tl[nt - 2]) : 0;
        if (len < 0 || hlen < 0 || hlen > len) die("bad length: %.*s", (int)line_len, start);
        size_t need = consumed + (size_t)len + 2;
        if (avail < need) {
          if (need > c->rcap) {
            memmove(c->rb, start, avail);
            c->rs = 0;
            c->re = avail;
            while (c->rcap < need) c->rcap *= 2;
            c->rb = realloc(c->rb, c->rcap);
          }
          ssize_t r = rc_fill(c);
          if (r <= 0) return r == 0 ? 0 : (int)r;
          continue;
        }
        f->type = is_pub ? FR_PUB : FR_MSG;
        f->subj = tok[1];
        f->subj_len = tl[1];
        if (!is_pub) {
          f->sid = tok[2];
          f->sid_len = tl[2];
        }
        if (nt == min + 1) {
          f->reply = tok[3 - is_pub];
          f->reply_len = tl[3 - is_pub];
        }
        if (is_hmsg) {
          f->hdr = start + consumed;
          f->hdr_len = (size_t)hlen;
        }
        f->payload = start + consumed + hlen;
        f->len = (size_t)(len - hlen);
        c->rs += need;
        return 1;
      }
      if (upper_eq(tok[0], tl[0], "PING")) f->type = FR_PING;
      else if (upper_eq(tok[0], tl[0], "PONG")) f->type = FR_PONG;
      else if (upper_eq(tok[0], tl[0], "+OK")) f->type = FR_OK;
      else if (upper_eq(tok[0], tl[0], "-ERR")) f->type = FR_ERR;
      else if (upper_eq(tok[0], tl[0], "INFO")) f->type = FR_INFO;
      else if (upper_eq(tok[0], tl[0], "CONNECT")) f->type = FR_CONNECT;
      else if (upper_eq(tok[0], tl[0], "SUB")) {
        f->type = FR_SUB;
        f->subj = nt > 1 ? tok[1] : NULL;
        f->subj_len = nt > 1 ? tl[1] : 0;
        f->sid = tok[nt - 1];
        f->sid_len = tl[nt - 1];
      } else f->type = FR_OTHER;
      c->rs += consumed;
      return 1;
    }
    ssize_t r = rc_fill(c);
    if (r <= 0) return r == 0 ? 0 : (int)r;
  }
}

/* Wait for PONG, answering PINGs, failing on -ERR. */
static void rc_wait_pong(rconn_t *c) {
  frame_t f;
  for (;;) {
    int r = rc_next(c, &f);
    if (r <= 0) die("connection lost while waiting for PONG (%d)", r);
    if (f.type == FR_PONG) return;
    if (f.type == FR_PING) {
      rc_bufs(c, "PONG\r\n");
      rc_flush(c);
    }
    if (f.type == FR_ERR) die("server error: %.*s", (int)f.line_len, f.line);
  }
}

/* Connect, read INFO, send CONNECT + PING, wait for PONG. `headers`: also headers:true and
 * no_responders:true (the server may then send HMSG, and a 503 status to a request nobody serves). */
static void rc_connect_h(rconn_t *c, int rcvbuf, int headers) {
  int fd = tcp_connect(A.host, A.port, rcvbuf);
  if (fd < 0) die("connect %s:%d: %s", A.host, A.port, strerror(-fd));
  rc_init(c, fd);
  set_rcvtimeo(fd, 10000);
  frame_t f;
  int r = rc_next(c, &f);
  if (r <= 0 || f.type != FR_INFO) die("expected INFO from server (%d)", r);
  rc_bufs(c,
          "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"loadgen\","
          "\"lang\":\"c-raw\",\"version\":\"1.0.0\",\"protocol\":1,\"echo\":true");
  if (headers) rc_bufs(c, ",\"headers\":true,\"no_responders\":true");
  rc_bufs(c, "}\r\nPING\r\n");
  rc_flush(c);
  rc_wait_pong(c);
}

static void rc_connect(rconn_t *c, int rcvbuf) { rc_connect_h(c, rcvbuf, 0); }

static void rc_sub(rconn_t *c, const char *subj, int sid) {
  char line[512];
  snprintf(line, sizeof(line), "SUB %s %d\r\nPING\r\n", subj, sid);
  rc_bufs(c, line);
  rc_flush(c);
  rc_wait_pong(c);
}

/* ------------------------------------------------------------------ pub */

static void print_pub_result(long long sent, int64_t t0, int64_t t_written, int64_t t_flushed) {
  double secs = (t_flushed - t0) / 1e9;
  print_result("\"mode\":\"pub\",\"impl\":\"%s\",\"sent\":%lld,\"size\":%d,\"t_first\":%lld,"
               "\"t_written\":%lld,\"t_flushed\":%lld,\"rate\":%.1f,\"cpu_s\":%.4f",
               A.impl, sent, A.size, (long long)t0, (long long)t_written, (long long)t_flushed,
               secs > 0 ? sent / secs : 0.0, cpu_seconds());
}

static void mode_pub_raw(void) {
  rconn_t c;
  rc_connect(&c, 0);
  char hdr[512];
  int hl = snprintf(hdr, sizeof(hdr), "PUB %s %d\r\n", A.subject, A.size);
  size_t fl = (size_t)hl + (size_t)A.size + 2;
  size_t per_chunk = (64 * 1024) / fl;
  if (per_chunk < 1) per_chunk = 1;
  char *chunk = malloc(per_chunk * fl);
  char *payload = make_payload(A.size);
  for (size_t i = 0; i < per_chunk; i++) {
    char *p = chunk + i * fl;
    memcpy(p, hdr, (size_t)hl);
    memcpy(p + hl, payload, (size_t)A.size);
    memcpy(p + hl + A.size, "\r\n", 2);
  }
  long long sent = 0;
  int64_t t0 = now_ns();
  int64_t deadline = t0 + (int64_t)(A.max_seconds * 1e9);
  while (sent < A.count) {
    long long k = A.count - sent;
    if (k > (long long)per_chunk) k = (long long)per_chunk;
    write_all(c.fd, chunk, (size_t)k * fl);
    sent += k;
    if ((sent & 0x3fff) < k && now_ns() > deadline) {
      fprintf(stderr, "loadgen pub: --max-seconds reached after %lld messages\n", sent);
      break;
    }
  }
  int64_t t1 = now_ns();
  set_rcvtimeo(c.fd, (int)(A.max_seconds * 1000));
  rc_bufs(&c, "PING\r\n");
  rc_flush(&c);
  rc_wait_pong(&c);
  int64_t t2 = now_ns();
  print_pub_result(sent, t0, t1, t2);
  close(c.fd);
}

static natsConnection *natsc_connect(int send_asap) {
  natsOptions *o = NULL;
  natsConnection *nc = NULL;
  char url[256];
  snprintf(url, sizeof(url), "nats://%s:%d", A.host, A.port);
  if (natsOptions_Create(&o) != NATS_OK) die("natsOptions_Create");
  natsOptions_SetURL(o, url);
  natsOptions_SetAllowReconnect(o, false);
  natsOptions_SetIOBufSize(o, 64 * 1024);
  if (send_asap) natsOptions_SetSendAsap(o, true);
  natsStatus s = natsConnection_Connect(&nc, o);
  if (s != NATS_OK) die("natsConnection_Connect %s: %s", url, natsStatus_GetText(s));
  natsOptions_Destroy(o);
  return nc;
}

static void mode_pub_natsc(void) {
  natsConnection *nc = natsc_connect(0);
  char *payload = make_payload(A.size);
  long long sent = 0;
  int64_t t0 = now_ns();
  int64_t deadline = t0 + (int64_t)(A.max_seconds * 1e9);
  for (; sent < A.count; sent++) {
    natsStatus s = natsConnection_Publish(nc, A.subject, payload, A.size);
    if (s != NATS_OK) die("publish: %s", natsStatus_GetText(s));
    if ((sent & 0x3fff) == 0 && now_ns() > deadline) break;
  }
  int64_t t1 = now_ns();
  natsStatus s = natsConnection_FlushTimeout(nc, (int64_t)(A.max_seconds * 1000));
  if (s != NATS_OK) die("flush: %s", natsStatus_GetText(s));
  int64_t t2 = now_ns();
  print_pub_result(sent, t0, t1, t2);
  natsConnection_Destroy(nc);
}

/* ------------------------------------------------------------------ sub */

static void print_sub_result(long long count, long long bytes, int64_t tf, int64_t tl, const char *end) {
  print_result("\"mode\":\"sub\",\"impl\":\"%s\",\"expected\":%lld,\"received\":%lld,"
               "\"payload_bytes\":%lld,\"t_first\":%lld,\"t_last\":%lld,\"end\":\"%s\",\"cpu_s\":%.4f",
               A.impl, A.count, count, bytes, (long long)tf, (long long)tl, end, cpu_seconds());
}

static void mode_sub_raw(void) {
  rconn_t c;
  rc_connect(&c, 0);
  rc_sub(&c, A.subject, 1);
  set_rcvtimeo(c.fd, A.idle_ms);
  say_ready(0);
  long long count = 0, bytes = 0;
  int64_t t_first = 0, t_last = 0;
  const char *end = "complete";
  frame_t f;
  while (count < A.count) {
    int r = rc_next(&c, &f);
    if (r <= 0) {
      end = r == 0 ? "eof" : r == -1 ? "idle-timeout" : "error";
      break;
    }
    if (f.type == FR_MSG) {
      if (count == 0) t_first = c.last_read_ns;
      count++;
      bytes += (long long)f.len;
      t_last = c.last_read_ns;
    } else if (f.type == FR_PING) {
      rc_bufs(&c, "PONG\r\n");
      rc_flush(&c);
    } else if (f.type == FR_ERR) {
      fprintf(stderr, "loadgen sub: %.*s\n", (int)f.line_len, f.line);
    }
  }
  print_sub_result(count, bytes, t_first, t_last, end);
  close(c.fd);
}

typedef struct {
  long long count, bytes;
  int64_t t_first, t_last;
} natsc_sub_state;

static void natsc_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)nc;
  (void)sub;
  natsc_sub_state *st = closure;
  int64_t t = now_ns();
  if (st->count == 0) __atomic_store_n(&st->t_first, t, __ATOMIC_RELAXED);
  __atomic_store_n(&st->bytes, st->bytes + natsMsg_GetDataLength(msg), __ATOMIC_RELAXED);
  __atomic_store_n(&st->t_last, t, __ATOMIC_RELAXED);
  __atomic_store_n(&st->count, st->count + 1, __ATOMIC_RELEASE);
  natsMsg_Destroy(msg);
}

static void mode_sub_natsc(void) {
  natsConnection *nc = natsc_connect(0);
  natsc_sub_state st = {0};
  natsSubscription *sub = NULL;
  natsStatus s = natsConnection_Subscribe(&sub, nc, A.subject, natsc_on_msg, &st);
  if (s != NATS_OK) die("subscribe: %s", natsStatus_GetText(s));
  natsSubscription_SetPendingLimits(sub, -1, -1);
  if ((s = natsConnection_Flush(nc)) != NATS_OK) die("flush: %s", natsStatus_GetText(s));
  say_ready(0);
  const char *end = "complete";
  long long last_seen = -1;
  int64_t last_change = now_ns();
  for (;;) {
    long long n = __atomic_load_n(&st.count, __ATOMIC_ACQUIRE);
    if (n >= A.count) break;
    int64_t t = now_ns();
    if (n != last_seen) {
      last_seen = n;
      last_change = t;
    } else if (t - last_change > (int64_t)A.idle_ms * 1000000LL) {
      end = "idle-timeout";
      break;
    }
    if (natsConnection_IsClosed(nc)) {
      end = "eof";
      break;
    }
    usleep(200);
  }
  print_sub_result(__atomic_load_n(&st.count, __ATOMIC_ACQUIRE), __atomic_load_n(&st.bytes, __ATOMIC_RELAXED),
                   st.t_first, __atomic_load_n(&st.t_last, __ATOMIC_RELAXED), end);
  _exit(0); /* skip orderly teardown: the callback thread may still be running */
}

/* ------------------------------------------------------------ responder */

static void mode_rep_raw(void) {
  rconn_t c;
  rc_connect(&c, 0);
  rc_sub(&c, A.subject, 1);
  set_rcvtimeo(c.fd, 0); /* block forever */
  say_ready(0);
  long long served = 0;
  frame_t f;
  char hdr[600];
  for (;;) {
    int r = rc_next(&c, &f);
    if (r <= 0) break;
    if (f.type == FR_MSG && f.reply) {
      int hl = snprintf(hdr, sizeof(hdr), "PUB %.*s %zu\r\n", (int)f.reply_len, f.reply, f.len);
      rc_buf(&c, hdr, (size_t)hl);
      rc_buf(&c, f.payload, f.len);
      rc_buf(&c, "\r\n", 2);
      served++;
    } else if (f.type == FR_PING) {
      rc_bufs(&c, "PONG\r\n");
    }
    if (c.rs == c.re) rc_flush(&c); /* nothing more buffered: send replies now */
  }
  print_result("\"mode\":\"rep\",\"impl\":\"raw\",\"served\":%lld,\"cpu_s\":%.4f", served, cpu_seconds());
}

static void natsc_on_req(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)sub;
  (void)closure;
  const char *reply = natsMsg_GetReply(msg);
  if (reply) natsConnection_Publish(nc, reply, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

static void mode_rep_natsc(void) {
  natsConnection *nc = natsc_connect(1);
  natsSubscription *sub = NULL;
  natsStatus s = natsConnection_Subscribe(&sub, nc, A.subject, natsc_on_req, NULL);
  if (s != NATS_OK) die("subscribe: %s", natsStatus_GetText(s));
  if ((s = natsConnection_Flush(nc)) != NATS_OK) die("flush: %s", natsStatus_GetText(s));
  say_ready(0);
  char buf[64];
  while (read(0, buf, sizeof(buf)) > 0) {
  } /* until stdin EOF */
  print_result("\"mode\":\"rep\",\"impl\":\"natsc\",\"cpu_s\":%.4f", cpu_seconds());
  _exit(0);
}

/* ------------------------------------------------------------ requester */

static void print_req_result(int64_t *lat, long long n, int64_t t0, int64_t t1) {
  qsort(lat, (size_t)n, sizeof(int64_t), cmp_i64);
  double sum = 0;
  for (long long i = 0; i < n; i++) sum += lat[i];
  print_result("\"mode\":\"req\",\"impl\":\"%s\",\"count\":%lld,\"p50_us\":%.2f,\"p90_us\":%.2f,"
               "\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,\"min_us\":%.2f,\"mean_us\":%.2f,"
               "\"elapsed_s\":%.4f,\"cpu_s\":%.4f",
               A.impl, n, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99), pct_us(lat, n, 0.999),
               n ? lat[n - 1] / 1000.0 : 0, n ? lat[0] / 1000.0 : 0, n ? sum / n / 1000.0 : 0, (t1 - t0) / 1e9,
               cpu_seconds());
}

static void mode_req_raw(void) {
  rconn_t c;
  rc_connect(&c, 0);
  char inbox[128];
  snprintf(inbox, sizeof(inbox), "_INBOX.loadgen.%d", (int)getpid());
  rc_sub(&c, inbox, 1);
  set_rcvtimeo(c.fd, 5000);
  char *payload = make_payload(A.size);
  char hdr[512];
  int hl = snprintf(hdr, sizeof(hdr), "PUB %s %s %d\r\n", A.subject, inbox, A.size);
  size_t fl = (size_t)hl + (size_t)A.size + 2;
  char *req = malloc(fl);
  memcpy(req, hdr, (size_t)hl);
  memcpy(req + hl, payload, (size_t)A.size);
  memcpy(req + hl + A.size, "\r\n", 2);
  int64_t *lat = malloc(sizeof(int64_t) * (size_t)(A.count > 0 ? A.count : 1));
  long long total = A.warmup + A.count, n = 0;
  int64_t tstart = 0;
  frame_t f;
  for (long long i = 0; i < total; i++) {
    if (i == A.warmup) tstart = now_ns();
    int64_t t0 = now_ns();
    write_all(c.fd, req, fl);
    for (;;) {
      int r = rc_next(&c, &f);
      if (r <= 0) die("request %lld: no reply (%s)", i, r == -1 ? "timeout 5s" : "connection closed");
      if (f.type == FR_MSG) break;
      if (f.type == FR_PING) {
        rc_bufs(&c, "PONG\r\n");
        rc_flush(&c);
      }
      if (f.type == FR_ERR) die("server error: %.*s", (int)f.line_len, f.line);
    }
    int64_t t1 = now_ns();
    if (i >= A.warmup) lat[n++] = t1 - t0;
  }
  print_req_result(lat, n, tstart, now_ns());
  close(c.fd);
}

static void mode_req_natsc(void) {
  natsConnection *nc = natsc_connect(1);
  char *payload = make_payload(A.size);
  int64_t *lat = malloc(sizeof(int64_t) * (size_t)(A.count > 0 ? A.count : 1));
  long long total = A.warmup + A.count, n = 0;
  int64_t tstart = 0;
  for (long long i = 0; i < total; i++) {
    if (i == A.warmup) tstart = now_ns();
    natsMsg *reply = NULL;
    int64_t t0 = now_ns();
    natsStatus s = natsConnection_Request(&reply, nc, A.subject, payload, A.size, 5000);
    int64_t t1 = now_ns();
    if (s != NATS_OK) die("request %lld: %s", i, natsStatus_GetText(s));
    natsMsg_Destroy(reply);
    if (i >= A.warmup) lat[n++] = t1 - t0;
  }
  print_req_result(lat, n, tstart, now_ns());
  _exit(0);
}

/* ------------------------------------------------- pipelined requester */

/* Appends s[0..n) to a JSON string being built in out (at most cap-1 bytes, escaped). */
static void json_escape(char *out, size_t cap, const char *s, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 7 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') {
      out[o++] = '\\';
      out[o++] = (char)ch;
    } else if (ch < 0x20 || ch >= 0x7f) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
    } else
      out[o++] = (char)ch;
  }
  out[o] = 0;
}

/* A reply is a success unless it is a JSON object whose "error" is present and non-empty
 * (mq9: {"error":"",...} is success; JetStream: a PubAck / API reply without "error"). */
static int reply_ok(const char *p, size_t n) {
  static const char key[] = "\"error\"";
  const size_t kl = sizeof(key) - 1;
  for (size_t i = 0; i + kl <= n; i++) {
    if (p[i] != '"' || memcmp(p + i, key, kl)) continue;
    size_t j = i + kl;
    while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
    if (j >= n || p[j] != ':') continue; /* "error" as a value, not a key */
    j++;
    while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
    if (j + 1 < n && p[j] == '"' && p[j + 1] == '"') continue; /* "error":"" */
    if (j + 3 < n && !memcmp(p + j, "null", 4)) continue;
    return 0;
  }
  return 1;
}

/* Status code of an HMSG header block ("NATS/1.0 503"), or 0. */
static int hdr_status(const char *h, size_t n) {
  if (n < 12 || memcmp(h, "NATS/1.0 ", 9)) return 0;
  int code = 0;
  for (size_t i = 9; i < n && h[i] >= '0' && h[i] <= '9'; i++) code = code * 10 + (h[i] - '0');
  return code;
}

/* Builds s with "%d" replaced by v into out; returns the length. */
static size_t subst(char *out, size_t cap, const char *s, long long v) {
  const char *d = strstr(s, "%d");
  if (!d) return (size_t)snprintf(out, cap, "%s", s);
  return (size_t)snprintf(out, cap, "%.*s%lld%s", (int)(d - s), s, v, d + 2);
}

typedef struct {
  rconn_t c;
  char inbox[64];
  size_t inbox_len;
  char **tmpl; /* subject templates */
  int ntmpl;
  int tmpl_has_d;
  const char *payload; /* fixed payload, or a template with %d */
  size_t payload_len;
  int payload_has_d;
  int64_t *t_sent;     /* by seq */
  unsigned char *seen; /* by seq: reply received */
  int64_t *lat;        /* timed phase latencies */
  long long nlat;
  long long ok, errors, dups, unknown, no_responders;
  char first_error[400];
  int shown;
  int64_t t_last_reply;
  FILE *replies_out;
} preq_t;

static void preq_reply(preq_t *q, frame_t *f, long long lo, long long hi, long long *got, int timed) {
  /* subject: <inbox>.<seq> */
  if (f->subj_len <= q->inbox_len + 1 || memcmp(f->subj, q->inbox, q->inbox_len) || f->subj[q->inbox_len] != '.') {
    q->unknown++;
    return;
  }
  long long seq = parse_ll(f->subj + q->inbox_len + 1, f->subj_len - q->inbox_len - 1);
  if (seq < lo || seq >= hi) {
    q->unknown++;
    return;
  }
  if (q->seen[seq]) {
    q->dups++;
    return;
  }
  q->seen[seq] = 1;
  (*got)++;
  int64_t t = q->c.last_read_ns;
  q->t_last_reply = t;
  if (timed) q->lat[q->nlat++] = t - q->t_sent[seq];
  int status = f->hdr ? hdr_status(f->hdr, f->hdr_len) : 0;
  int good = status == 0 || (status >= 200 && status < 300) ? reply_ok(f->payload, f->len) : 0;
  if (status == 503) q->no_responders++;
  if (good) q->ok++;
  else {
    q->errors++;
    if (!q->first_error[0]) {
      char body[300];
      if (status) snprintf(body, sizeof(body), "status %d %.*s", status, (int)(f->len < 200 ? f->len : 200), f->payload);
      else snprintf(body, sizeof(body), "%.*s", (int)(f->len < 280 ? f->len : 280), f->payload);
      json_escape(q->first_error, sizeof(q->first_error), body, strlen(body));
      fprintf(stderr, "loadgen preq: request %lld failed: %s\n", seq, body);
    }
  }
  if (q->replies_out) fprintf(q->replies_out, "%lld %.*s\n", seq, (int)f->len, f->payload);
  if (q->shown < A.show) {
    q->shown++;
    printf("REPLY %lld %.*s\n", seq, (int)f->len, f->payload);
    fflush(stdout);
  }
}

/* Runs requests [lo, hi) with at most A.window in flight; returns 0 when every one was answered,
 * else the number still outstanding when the connection went quiet for --timeout-ms. */
static long long preq_run(preq_t *q, long long lo, long long hi, int timed) {
  rconn_t *c = &q->c;
  long long next = lo, got = 0;
  char subj[1024], pay[4096], hdr[1400];
  int64_t deadline = now_ns() + (int64_t)(A.max_seconds * 1e9);
  while (got < hi - lo) {
    /* top the window up */
    long long first_new = next;
    while (next < hi && (next - lo) - got < A.window) {
      const char *t = q->tmpl[next % q->ntmpl];
      long long v = (next / q->ntmpl) % A.fanout;
      size_t sl = q->tmpl_has_d ? subst(subj, sizeof(subj), t, v) : (size_t)snprintf(subj, sizeof(subj), "%s", t);
      const char *p = q->payload;
      size_t pl = q->payload_len;
      if (q->payload_has_d) {
        pl = subst(pay, sizeof(pay), q->payload, v);
        p = pay;
      }
      int hl = snprintf(hdr, sizeof(hdr), "PUB %.*s %s.%lld %zu\r\n", (int)sl, subj, q->inbox, next, pl);
      rc_buf(c, hdr, (size_t)hl);
      rc_buf(c, p, pl);
      rc_buf(c, "\r\n", 2);
      next++;
    }
    if (next > first_new) {
      int64_t t = now_ns();
      for (long long i = first_new; i < next; i++) q->t_sent[i] = t;
      rc_flush(c);
    }
    /* wait for at least one frame, then take whatever else is already buffered */
    frame_t f;
    int r = rc_next(c, &f);
    for (;;) {
      if (r == -3) break;
      if (r == -1) {
        fprintf(stderr, "loadgen preq: no reply for %d ms, %lld of %lld requests outstanding\n", A.timeout_ms,
                (next - lo) - got, hi - lo);
        return (hi - lo) - got;
      }
      if (r <= 0) die("preq: connection %s after %lld of %lld replies", r == 0 ? "closed" : "failed", got, hi - lo);
      if (f.type == FR_MSG) {
        if (f.sid_len == 1 && f.sid[0] == '1') preq_reply(q, &f, lo, hi, &got, timed);
        else q->unknown++;
      } else if (f.type == FR_PING) {
        rc_bufs(c, "PONG\r\n");
      } else if (f.type == FR_ERR) {
        fprintf(stderr, "loadgen preq: server: %.*s\n", (int)f.line_len, f.line);
        if (!q->first_error[0]) json_escape(q->first_error, sizeof(q->first_error), f.line, f.line_len);
      }
      c->nofill = 1;
      r = rc_next(c, &f);
    }
    c->nofill = 0;
    if (now_ns() > deadline) {
      fprintf(stderr, "loadgen preq: --max-seconds reached, %lld of %lld replies\n", got, hi - lo);
      return (hi - lo) - got;
    }
  }
  return 0;
}

static void mode_preq(void) {
  if (strcmp(A.impl, "raw")) die("preq: only --impl raw");
  preq_t *q = calloc(1, sizeof(*q));
  rc_connect_h(&q->c, 0, 1);
  snprintf(q->inbox, sizeof(q->inbox), "_INBOX.lg%d", (int)getpid());
  q->inbox_len = strlen(q->inbox);
  char wild[80];
  snprintf(wild, sizeof(wild), "%s.*", q->inbox);
  rc_sub(&q->c, wild, 1);
  set_rcvtimeo(q->c.fd, A.timeout_ms);
  /* subject templates: comma separated, or one per line of @FILE */
  char *subjects;
  const char *sep = ",";
  if (A.subject[0] == '@') {
    FILE *sf = fopen(A.subject + 1, "r");
    if (!sf) die("preq: cannot open %s: %s", A.subject + 1, strerror(errno));
    fseek(sf, 0, SEEK_END);
    long sz = ftell(sf);
    fseek(sf, 0, SEEK_SET);
    subjects = malloc((size_t)sz + 1);
    if (fread(subjects, 1, (size_t)sz, sf) != (size_t)sz) die("preq: cannot read %s", A.subject + 1);
    subjects[sz] = 0;
    fclose(sf);
    sep = "\r\n";
  } else
    subjects = strdup(A.subject);
  q->tmpl = malloc(sizeof(char *) * (strlen(subjects) + 1));
  for (char *save = NULL, *t = strtok_r(subjects, sep, &save); t; t = strtok_r(NULL, sep, &save)) {
    q->tmpl[q->ntmpl++] = t;
    if (strstr(t, "%d")) q->tmpl_has_d = 1;
  }
  if (A.replies_out) {
    q->replies_out = fopen(A.replies_out, "w");
    if (!q->replies_out) die("preq: cannot create %s: %s", A.replies_out, strerror(errno));
  }
  if (q->ntmpl == 0) die("preq: --subject is empty");
  if (A.payload) {
    q->payload = A.payload;
    q->payload_len = strlen(A.payload);
    q->payload_has_d = strstr(A.payload, "%d") != NULL;
  } else {
    q->payload = make_payload(A.size);
    q->payload_len = (size_t)A.size;
  }
  long long total = A.warmup + A.count;
  q->t_sent = malloc(sizeof(int64_t) * (size_t)(total > 0 ? total : 1));
  q->seen = calloc((size_t)(total > 0 ? total : 1), 1);
  q->lat = malloc(sizeof(int64_t) * (size_t)(A.count > 0 ? A.count : 1));
  say_ready(0);
  long long missing = 0;
  if (A.warmup > 0) missing = preq_run(q, 0, A.warmup, 0);
  int64_t t0 = now_ns();
  if (!missing) missing = preq_run(q, A.warmup, total, 1);
  int64_t t1 = q->t_last_reply > t0 ? q->t_last_reply : now_ns();
  if (q->replies_out && fclose(q->replies_out) != 0) die("preq: writing %s: %s", A.replies_out, strerror(errno));
  long long n = q->nlat;
  qsort(q->lat, (size_t)n, sizeof(int64_t), cmp_i64);
  double sum = 0;
  for (long long i = 0; i < n; i++) sum += q->lat[i];
  double secs = (t1 - t0) / 1e9;
  print_result("\"mode\":\"preq\",\"impl\":\"raw\",\"window\":%d,\"count\":%lld,\"warmup\":%lld,\"replied\":%lld,"
               "\"ok\":%lld,\"errors\":%lld,\"no_responders\":%lld,\"dups\":%lld,\"unknown\":%lld,\"missing\":%lld,"
               "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,\"min_us\":%.2f,"
               "\"mean_us\":%.2f,\"t_first\":%lld,\"t_last\":%lld,\"elapsed_s\":%.4f,\"rate\":%.1f,\"cpu_s\":%.4f,"
               "\"first_error\":\"%s\"",
               A.window, A.count, A.warmup, n, q->ok, q->errors, q->no_responders, q->dups, q->unknown, missing,
               pct_us(q->lat, n, 0.50), pct_us(q->lat, n, 0.90), pct_us(q->lat, n, 0.99), pct_us(q->lat, n, 0.999),
               n ? q->lat[n - 1] / 1000.0 : 0, n ? q->lat[0] / 1000.0 : 0, n ? sum / n / 1000.0 : 0, (long long)t0,
               (long long)t1, secs, secs > 0 ? n / secs : 0.0, cpu_seconds(), q->first_error);
  close(q->c.fd);
  exit(missing || q->errors ? 3 : 0);
}

/* ------------------------------------------------------------- replay */

/* Value of header `name` (case-insensitive) in an HMSG header block, or NULL. */
static const char *hdr_value(const char *h, size_t n, const char *name, size_t *vlen) {
  size_t nl = strlen(name);
  size_t i = 0;
  while (i < n) {
    const char *eol = memchr(h + i, '\n', n - i);
    size_t end = eol ? (size_t)(eol - h) : n;
    size_t ll = end - i;
    if (ll > nl && !strncasecmp(h + i, name, nl) && h[i + nl] == ':') {
      size_t s = i + nl + 1;
      while (s < end && (h[s] == ' ' || h[s] == '\t')) s++;
      size_t e = end;
      while (e > s && (h[e - 1] == '\r' || h[e - 1] == ' ')) e--;
      *vlen = e - s;
      return h + s;
    }
    i = end + 1;
  }
  return NULL;
}

static int rank_of(const char *v, size_t n) {
  if (n == 8 && !memcmp(v, "critical", 8)) return 0;
  if (n == 6 && !memcmp(v, "urgent", 6)) return 1;
  if (n == 6 && !memcmp(v, "normal", 6)) return 2;
  return -1;
}

static void mode_replay(void) {
  if (strcmp(A.impl, "raw")) die("replay: only --impl raw");
  int order_mq9 = !strcmp(A.order, "mq9"), order_js = !strcmp(A.order, "js");
  rconn_t c;
  rc_connect_h(&c, 0, 1);
  char inbox[64];
  snprintf(inbox, sizeof(inbox), "_INBOX.lgr%d", (int)getpid());
  char line[1200];
  if (A.create_subject) rc_sub(&c, inbox, 2);
  set_rcvtimeo(c.fd, A.idle_ms);
  say_ready(0);
  int64_t t0 = now_ns();
  if (A.create_subject) {
    /* SUB the delivery subject first (and make sure the server has it), then create the consumer */
    rc_sub(&c, A.subject, 1);
    printf("SUBSCRIBED\n");
    fflush(stdout);
    t0 = now_ns();
    int hl = snprintf(line, sizeof(line), "PUB %s %s %zu\r\n", A.create_subject, inbox, strlen(A.create_payload));
    rc_buf(&c, line, (size_t)hl);
    rc_bufs(&c, A.create_payload);
    rc_bufs(&c, "\r\n");
    rc_flush(&c);
  } else {
    /* (the PING only lets the fake blast server know the SUB is complete) */
    int hl = snprintf(line, sizeof(line), "SUB %s 1\r\nPING\r\n", A.subject);
    rc_buf(&c, line, (size_t)hl);
    rc_flush(&c);
  }
  long long count = 0, extra = 0, bytes = 0, violations = 0, no_header = 0, by_rank[3] = {0, 0, 0};
  long long last_id[3] = {0, 0, 0}, last_seq = 0;
  int last_rank = 0;
  int64_t t_first = 0, t_last = 0, t_first_rank[3] = {0, 0, 0};
  char first_violation[300] = "", create_reply[300] = "";
  const char *end = "complete";
  int subscribed = A.create_subject != NULL, lingering = 0;
  int64_t linger_end = 0;
  FILE *dump = NULL;
  if (A.dump) {
    dump = fopen(A.dump, "w");
    if (!dump) die("replay: cannot create %s: %s", A.dump, strerror(errno));
  }
  frame_t f;
  for (;;) {
    if (!lingering && count >= A.count) {
      if (A.linger_ms <= 0) break;
      lingering = 1;
      linger_end = now_ns() + (int64_t)A.linger_ms * 1000000LL;
    }
    if (lingering) {
      int64_t left = linger_end - now_ns();
      if (left <= 0) break;
      set_rcvtimeo(c.fd, (int)(left / 1000000) + 1);
    }
    int r = rc_next(&c, &f);
    if (r <= 0) {
      if (!lingering) end = r == 0 ? "eof" : r == -1 ? "idle-timeout" : "error";
      break;
    }
    if (f.type == FR_MSG && f.sid_len == 1 && f.sid[0] == '2') {
      json_escape(create_reply, sizeof(create_reply), f.payload, f.len < 250 ? f.len : 250);
      if (!reply_ok(f.payload, f.len)) {
        fprintf(stderr, "loadgen replay: consumer create failed: %.*s\n", (int)f.len, f.payload);
        end = "create-failed";
        break;
      }
      continue;
    }
    if (f.type == FR_MSG) {
      if (f.hdr && hdr_status(f.hdr, f.hdr_len)) continue; /* JetStream heartbeat / flow control */
      if (count >= A.count) {
        extra++; /* while lingering */
      } else {
        if (count == 0) t_first = c.last_read_ns;
        count++;
        bytes += (long long)f.len;
        t_last = c.last_read_ns;
      }
      char why[200] = "";
      int rank = -1;
      long long id = -1;
      size_t pl = 0, il = 0;
      const char *pv = NULL;
      if (order_mq9 || dump) {
        pv = f.hdr ? hdr_value(f.hdr, f.hdr_len, "mq9-priority", &pl) : NULL;
        const char *iv = f.hdr ? hdr_value(f.hdr, f.hdr_len, A.id_header, &il) : NULL;
        rank = pv ? rank_of(pv, pl) : -1;
        id = iv ? parse_ll(iv, il) : -1;
        if (rank >= 0 && !t_first_rank[rank]) t_first_rank[rank] = c.last_read_ns;
        if (dump) fprintf(dump, "%d %lld %lld\n", rank, id, (long long)c.last_read_ns);
      }
      if (order_mq9) {
        if (rank < 0 || id < 0) {
          no_header++;
          snprintf(why, sizeof(why), "message %lld: no mq9-priority/%s header", count + extra, A.id_header);
        } else {
          by_rank[rank]++;
          if (rank < last_rank)
            snprintf(why, sizeof(why), "message %lld: %.*s (id %lld) after a lower priority", count, (int)pl, pv, id);
          else if (id <= last_id[rank])
            snprintf(why, sizeof(why), "message %lld: %.*s id %lld not after id %lld", count, (int)pl, pv, id,
                     last_id[rank]);
          if (rank > last_rank) last_rank = rank;
          if (id > last_id[rank]) last_id[rank] = id;
        }
      } else if (order_js) {
        /* $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending> */
        long long seq = -1;
        if (f.reply) {
          const char *tok[12];
          size_t tl[12];
          int k = 0;
          size_t st = 0;
          for (size_t i = 0; i <= f.reply_len && k < 12; i++) {
            if (i == f.reply_len || f.reply[i] == '.') {
              tok[k] = f.reply + st;
              tl[k++] = i - st;
              st = i + 1;
            }
          }
          if (k >= 9) seq = parse_ll(tok[5], tl[5]);
        }
        if (seq < 0) {
          no_header++;
          snprintf(why, sizeof(why), "message %lld: no $JS.ACK reply subject", count);
        } else {
          if (seq <= last_seq) snprintf(why, sizeof(why), "message %lld: stream seq %lld after %lld", count, seq, last_seq);
          else last_seq = seq;
        }
      }
      if (why[0]) {
        violations++;
        if (!first_violation[0]) {
          json_escape(first_violation, sizeof(first_violation), why, strlen(why));
          fprintf(stderr, "loadgen replay: %s\n", why);
        }
      }
    } else if (f.type == FR_PING) {
      rc_bufs(&c, "PONG\r\n");
      rc_flush(&c);
    } else if (f.type == FR_PONG && !subscribed) {
      subscribed = 1; /* the server has processed the SUB */
      printf("SUBSCRIBED\n");
      fflush(stdout);
    } else if (f.type == FR_ERR) {
      fprintf(stderr, "loadgen replay: %.*s\n", (int)f.line_len, f.line);
      if (!first_violation[0]) json_escape(first_violation, sizeof(first_violation), f.line, f.line_len);
      if (!subscribed) {
        end = "sub-refused";
        break;
      }
    }
  }
  if (dump && fclose(dump) != 0) die("replay: writing %s: %s", A.dump, strerror(errno));
  double secs = count ? (t_last - t0) / 1e9 : 0;
  print_result("\"mode\":\"replay\",\"impl\":\"raw\",\"expected\":%lld,\"received\":%lld,\"payload_bytes\":%lld,"
               "\"t_sub\":%lld,\"t_first\":%lld,\"t_last\":%lld,\"elapsed_s\":%.4f,\"rate\":%.1f,\"end\":\"%s\","
               "\"order\":\"%s\",\"violations\":%lld,\"unchecked\":%lld,\"critical\":%lld,\"urgent\":%lld,\"normal\":%lld,"
               "\"first_violation\":\"%s\",\"create_reply\":\"%s\",\"extra\":%lld,\"t_first_critical\":%lld,"
               "\"t_first_urgent\":%lld,\"t_first_normal\":%lld,\"cpu_s\":%.4f",
               A.count, count, bytes, (long long)t0, (long long)t_first, (long long)t_last, secs,
               secs > 0 ? count / secs : 0.0, end, A.order, violations, no_header, by_rank[0], by_rank[1], by_rank[2],
               first_violation, create_reply, extra, (long long)t_first_rank[0], (long long)t_first_rank[1],
               (long long)t_first_rank[2], cpu_seconds());
  close(c.fd);
}

/* ---------------------------------------------------------------- stall */

static void mode_stall(void) {
  rconn_t c;
  rc_connect(&c, A.rcvbuf);
  rc_sub(&c, A.subject, 1);
  say_ready(0);
  /* stop reading the socket until told to check */
  char buf[64];
  ssize_t rr;
  do {
    rr = read(0, buf, sizeof(buf));
  } while (rr < 0 && errno == EINTR);
  /* drain: the kernel buffer still holds what the server wrote before closing us */
  set_rcvtimeo(c.fd, 2000);
  long long drained = 0;
  int closed = 0;
  const char *how = "still-open";
  char tail[512];
  size_t tail_len = 0;
  int64_t deadline = now_ns() + 15LL * 1000000000LL;
  static char dbuf[1 << 20];
  for (;;) {
    ssize_t r = read(c.fd, dbuf, sizeof(dbuf));
    if (r > 0) {
      drained += r;
      size_t keep = (size_t)r < sizeof(tail) ? (size_t)r : sizeof(tail);
      if (tail_len + keep > sizeof(tail)) tail_len = 0;
      memcpy(tail + tail_len, dbuf + r - keep, keep);
      tail_len += keep;
      if (now_ns() > deadline) {
        how = "still-open (drain deadline)";
        break;
      }
      continue;
    }
    if (r == 0) {
      closed = 1;
      how = "eof";
      break;
    }
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) {
      closed = 1;
      how = "reset";
      break;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      how = "still-open (no data for 2s)";
      break;
    }
    how = "error";
    break;
  }
  int saw_err = 0;
  for (size_t i = 0; i + 4 <= tail_len; i++)
    if (!memcmp(tail + i, "-ERR", 4)) saw_err = 1;
  print_result("\"mode\":\"stall\",\"closed\":%s,\"how\":\"%s\",\"drained_bytes\":%lld,\"saw_err\":%s,"
               "\"cpu_s\":%.4f",
               closed ? "true" : "false", how, drained, saw_err ? "true" : "false", cpu_seconds());
}

/* --------------------------------------------------------- fake servers */

static int listen_any(int *port_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = 0;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("bind: %s", strerror(errno));
  if (listen(fd, 4) < 0) die("listen: %s", strerror(errno));
  socklen_t sl = sizeof(sa);
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  *port_out = ntohs(sa.sin_port);
  return fd;
}

static int fake_accept(rconn_t *c) {
  int port;
  int lfd = listen_any(&port);
  say_ready(port);
  int fd = accept(lfd, NULL, NULL);
  if (fd < 0) die("accept: %s", strerror(errno));
  close(lfd);
  set_nodelay(fd);
  rc_init(c, fd);
  const char *info = "INFO {\"server_id\":\"loadgen-fake\",\"server_name\":\"loadgen-fake\",\"version\":\"2.9.10\","
                     "\"proto\":1,\"go\":\"none\",\"host\":\"127.0.0.1\",\"port\":0,\"headers\":false,"
                     "\"max_payload\":1048576}\r\n";
  write_all(fd, info, strlen(info));
  return fd;
}

static void mode_sink(void) {
  rconn_t c;
  fake_accept(&c);
  long long pubs = 0, bytes = 0;
  int64_t t_first = 0, t_last = 0;
  frame_t f;
  for (;;) {
    int r = rc_next(&c, &f);
    if (r <= 0) break;
    if (f.type == FR_PUB) {
      if (pubs == 0) t_first = c.last_read_ns;
      pubs++;
      bytes += (long long)f.len;
      t_last = c.last_read_ns;
    } else if (f.type == FR_PING) {
      rc_bufs(&c, "PONG\r\n");
      rc_flush(&c);
    }
  }
  print_result("\"mode\":\"sink\",\"pubs\":%lld,\"payload_bytes\":%lld,\"t_first\":%lld,\"t_last\":%lld,"
               "\"cpu_s\":%.4f",
               pubs, bytes, (long long)t_first, (long long)t_last, cpu_seconds());
}

static volatile int blast_pong_needed = 0;
static volatile int blast_peer_gone = 0;

static void *blast_reader(void *arg) {
  rconn_t *c = arg;
  frame_t f;
  set_rcvtimeo(c->fd, 0);
  for (;;) {
    int r = rc_next(c, &f);
    if (r <= 0) break;
    if (f.type == FR_PING) __atomic_add_fetch(&blast_pong_needed, 1, __ATOMIC_RELAXED);
  }
  blast_peer_gone = 1;
  return NULL;
}

static void mode_blast(void) {
  rconn_t c;
  fake_accept(&c);
  frame_t f;
  char sid[64] = "1";
  int subscribed = 0;
  /* handshake: answer PINGs; start once a SUB was followed by a PING (the client's flush) */
  for (;;) {
    int r = rc_next(&c, &f);
    if (r <= 0) die("blast: client went away during handshake");
    if (f.type == FR_SUB) {
      snprintf(sid, sizeof(sid), "%.*s", (int)f.sid_len, f.sid);
      subscribed = 1;
    } else if (f.type == FR_PING) {
      write_all(c.fd, "PONG\r\n", 6);
      if (subscribed) break;
    }
  }
  pthread_t th;
  pthread_create(&th, NULL, blast_reader, &c);
  char hdr[512];
  /* --order mq9: HMSG frames with an mq9 delivery header block (msg ids repeat per chunk) */
  const char *mq9h = "NATS/1.0\r\nmq9-msg-id: 1000000\r\nmq9-priority: normal\r\nmq9-mail-address: bench.replay\r\n\r\n";
  int with_h = !strcmp(A.order, "mq9");
  size_t mhl = with_h ? strlen(mq9h) : 0;
  int hl = with_h ? snprintf(hdr, sizeof(hdr), "HMSG %s %s %zu %zu\r\n", A.subject, sid, mhl, mhl + (size_t)A.size)
                  : snprintf(hdr, sizeof(hdr), "MSG %s %s %d\r\n", A.subject, sid, A.size);
  size_t fl = (size_t)hl + mhl + (size_t)A.size + 2;
  size_t per_chunk = (64 * 1024) / fl;
  if (per_chunk < 1) per_chunk = 1;
  char *chunk = malloc(per_chunk * fl);
  char *payload = make_payload(A.size);
  for (size_t i = 0; i < per_chunk; i++) {
    char *p = chunk + i * fl;
    memcpy(p, hdr, (size_t)hl);
    memcpy(p + hl, mq9h, mhl);
    memcpy(p + hl + mhl, payload, (size_t)A.size);
    memcpy(p + hl + mhl + A.size, "\r\n", 2);
  }
  long long sent = 0;
  int64_t t0 = now_ns();
  while (sent < A.count && !blast_peer_gone) {
    long long k = A.count - sent;
    if (k > (long long)per_chunk) k = (long long)per_chunk;
    write_all(c.fd, chunk, (size_t)k * fl);
    sent += k;
    while (__atomic_load_n(&blast_pong_needed, __ATOMIC_RELAXED) > 0) {
      __atomic_sub_fetch(&blast_pong_needed, 1, __ATOMIC_RELAXED);
      write_all(c.fd, "PONG\r\n", 6);
    }
  }
  int64_t t1 = now_ns();
  print_result("\"mode\":\"blast\",\"sent\":%lld,\"t_first\":%lld,\"t_written\":%lld,\"cpu_s\":%.4f", sent,
               (long long)t0, (long long)t1, cpu_seconds());
  /* keep the connection open until the client disconnects (or 30 s) */
  for (int i = 0; i < 3000 && !blast_peer_gone; i++) usleep(10000);
  _exit(0);
}

static void mode_echo(void) {
  rconn_t c;
  fake_accept(&c);
  set_rcvtimeo(c.fd, 0);
  char sid[64] = "1";
  long long served = 0;
  frame_t f;
  char hdr[700];
  for (;;) {
    int r = rc_next(&c, &f);
    if (r <= 0) break;
    if (f.type == FR_SUB) {
      snprintf(sid, sizeof(sid), "%.*s", (int)f.sid_len, f.sid);
    } else if (f.type == FR_PING) {
      rc_bufs(&c, "PONG\r\n");
    } else if (f.type == FR_PUB && f.reply) {
      int hl = snprintf(hdr, sizeof(hdr), "MSG %.*s %s %zu\r\n", (int)f.reply_len, f.reply, sid, f.len);
      rc_buf(&c, hdr, (size_t)hl);
      rc_buf(&c, f.payload, f.len);
      rc_buf(&c, "\r\n", 2);
      served++;
    }
    if (c.rs == c.re) rc_flush(&c);
  }
  print_result("\"mode\":\"echo\",\"served\":%lld,\"cpu_s\":%.4f", served, cpu_seconds());
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  parse_args(argc, argv);
  int natsc = !strcmp(A.impl, "natsc");
  const char *m = A.mode;
  if (!strcmp(m, "version")) {
    print_result("\"mode\":\"version\",\"nats_c\":\"%s\"", nats_GetVersion());
    return 0;
  }
  if (natsc && (!strcmp(m, "pub") || !strcmp(m, "sub") || !strcmp(m, "rep") || !strcmp(m, "req"))) {
    natsStatus s = nats_Open(-1);
    if (s != NATS_OK) die("nats_Open: %s", natsStatus_GetText(s));
  }
  if (!strcmp(m, "pub")) natsc ? mode_pub_natsc() : mode_pub_raw();
  else if (!strcmp(m, "sub")) natsc ? mode_sub_natsc() : mode_sub_raw();
  else if (!strcmp(m, "rep")) natsc ? mode_rep_natsc() : mode_rep_raw();
  else if (!strcmp(m, "req")) natsc ? mode_req_natsc() : mode_req_raw();
  else if (!strcmp(m, "preq")) mode_preq();
  else if (!strcmp(m, "replay")) mode_replay();
  else if (!strcmp(m, "stall")) mode_stall();
  else if (!strcmp(m, "sink")) mode_sink();
  else if (!strcmp(m, "blast")) mode_blast();
  else if (!strcmp(m, "echo")) mode_echo();
  else die("unknown mode %s", m);
  return 0;
}
