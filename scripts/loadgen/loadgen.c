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
 * Fake-server modes (measure the generator's own ceiling without any broker):
 *   sink   listens on 127.0.0.1:0, swallows PUB frames (publisher ceiling)
 *   blast  --count N --size B   listens, waits for a SUB, then sends N MSG frames (subscriber ceiling)
 *   echo   listens, answers every PUB that has a reply subject (requester latency floor)
 *   version
 *
 * "raw" is a minimal hand-written NATS protocol client over a blocking socket
 * (no threads, one big read buffer, MSG frames parsed in place); "natsc" uses
 * the nats.c library (Debian libnats-dev).
 *
 * Protocol of this program towards bench.ts (stdout, line based):
 *   READY [port=N]      once it is connected/subscribed (or listening, for fake servers)
 *   RESULT {json}       once, at the end
 * Errors go to stderr, exit code != 0.
 * All timestamps are CLOCK_MONOTONIC nanoseconds, comparable across processes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

/* ------------------------------------------------------------------ util */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru); /* all threads of this process */
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void say_ready(int port) {
  if (port > 0)
    printf("READY port=%d\n", port);
  else
    printf("READY\n");
  fflush(stdout);
}

typedef struct {
  const char *mode;
  const char *host;
  int port;
  const char *subject;
  long long count;
  long long warmup;
  int size;
  const char *impl;
  int idle_ms;
  double max_seconds;
  int rcvbuf;
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
};

static void parse_args(int argc, char **argv) {
  if (argc < 2) die("usage: loadgen <mode> [options]  (see source header)");
  A.mode = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *k = argv[i];
    if (i + 1 >= argc) die("missing value for %s", k);
    const char *v = argv[++i];
    if (!strcmp(k, "--host")) A.host = v;
    else if (!strcmp(k, "--port")) A.port = atoi(v);
    else if (!strcmp(k, "--subject")) A.subject = v;
    else if (!strcmp(k, "--count")) A.count = atoll(v);
    else if (!strcmp(k, "--warmup")) A.warmup = atoll(v);
    else if (!strcmp(k, "--size")) A.size = atoi(v);
    else if (!strcmp(k, "--impl")) A.impl = v;
    else if (!strcmp(k, "--idle-ms")) A.idle_ms = atoi(v);
    else if (!strcmp(k, "--max-seconds")) A.max_seconds = atof(v);
    else if (!strcmp(k, "--rcvbuf")) A.rcvbuf = atoi(v);
    else die("unknown option %s", k);
  }
  if (strcmp(A.impl, "raw") && strcmp(A.impl, "natsc")) die("--impl must be raw or natsc");
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
  const char *payload;
  size_t len;
} frame_t;

typedef struct {
  int fd;
  char *rb;
  size_t rcap, rs, re; /* read buffer [rs, re) holds unparsed bytes */
  char *wb;
  size_t wcap, wl;
  int64_t last_read_ns; /* time of the most recent successful read() */
  long long bytes_read;
} rconn_t;

static void rc_init(rconn_t *c, int fd) {
  memset(c, 0, sizeof(*c));
  c->fd = fd;
  c->rcap = 1 << 20;
  c->rb = malloc(c->rcap);
  c->wcap = 1 << 16;
  c->wb = malloc(c->wcap);
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write: %s", strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
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

/* Read more bytes. Returns >0 bytes, 0 on EOF, -1 on timeout (SO_RCVTIMEO), -2 on error. */
static ssize_t rc_fill(rconn_t *c) {
  if (c->rs > 0 && (c->re == c->rcap || c->rs == c->re)) {
    memmove(c->rb, c->rb + c->rs, c->re - c->rs);
    c->re -= c->rs;
    c->rs = 0;
  }
  if (c->re == c->rcap) {
    c->rcap *= 2;
    c->rb = realloc(c->rb, c->rcap);
  }
  for (;;) {
    ssize_t r = read(c->fd, c->rb + c->re, c->rcap - c->re);
    if (r > 0) {
      c->re += (size_t)r;
      c->bytes_read += r;
      c->last_read_ns = now_ns();
      return r;
    }
    if (r == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    return -2;
  }
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

/* Next complete frame. Returns 1 (frame), 0 (EOF), -1 (timeout), -2 (error). */
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
      int is_pub = !is_msg && upper_eq(tok[0], tl[0], "PUB");
      if (is_msg || is_pub) {
        /* MSG subj sid [reply] len  |  PUB subj [reply] len */
        int min = is_msg ? 4 : 3;
        if (nt < min || nt > min + 1) die("bad frame: %.*s", (int)line_len, start);
        long long len = parse_ll(tok[nt - 1], tl[nt - 1]);
        if (len < 0) die("bad length: %.*s", (int)line_len, start);
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
        f->type = is_msg ? FR_MSG : FR_PUB;
        f->subj = tok[1];
        f->subj_len = tl[1];
        if (is_msg) {
          f->sid = tok[2];
          f->sid_len = tl[2];
        }
        if (nt == min + 1) {
          f->reply = tok[nt - 2];
          f->reply_len = tl[nt - 2];
        }
        f->payload = start + consumed;
        f->len = (size_t)len;
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

static void set_rcvtimeo(int fd, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static int tcp_connect(const char *host, int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("bad host %s (IPv4 literal expected)", host);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) die("connect %s:%d: %s", host, port, strerror(errno));
  return fd;
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

/* Connect, read INFO, send CONNECT + PING, wait for PONG. */
static void rc_connect(rconn_t *c, int rcvbuf) {
  int fd = tcp_connect(A.host, A.port, rcvbuf);
  rc_init(c, fd);
  set_rcvtimeo(fd, 10000);
  frame_t f;
  int r = rc_next(c, &f);
  if (r <= 0 || f.type != FR_INFO) die("expected INFO from server (%d)", r);
  rc_bufs(c,
          "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"loadgen\","
          "\"lang\":\"c-raw\",\"version\":\"1.0.0\",\"protocol\":1,\"echo\":true}\r\nPING\r\n");
  rc_flush(c);
  rc_wait_pong(c);
}

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
  printf("RESULT {\"mode\":\"pub\",\"impl\":\"%s\",\"sent\":%lld,\"size\":%d,\"t_first\":%lld,"
         "\"t_written\":%lld,\"t_flushed\":%lld,\"rate\":%.1f,\"cpu_s\":%.4f}\n",
         A.impl, sent, A.size, (long long)t0, (long long)t_written, (long long)t_flushed,
         secs > 0 ? sent / secs : 0.0, cpu_seconds());
  fflush(stdout);
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
  printf("RESULT {\"mode\":\"sub\",\"impl\":\"%s\",\"expected\":%lld,\"received\":%lld,"
         "\"payload_bytes\":%lld,\"t_first\":%lld,\"t_last\":%lld,\"end\":\"%s\",\"cpu_s\":%.4f}\n",
         A.impl, A.count, count, bytes, (long long)tf, (long long)tl, end, cpu_seconds());
  fflush(stdout);
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
  printf("RESULT {\"mode\":\"rep\",\"impl\":\"raw\",\"served\":%lld,\"cpu_s\":%.4f}\n", served, cpu_seconds());
  fflush(stdout);
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
  printf("RESULT {\"mode\":\"rep\",\"impl\":\"natsc\",\"cpu_s\":%.4f}\n", cpu_seconds());
  fflush(stdout);
  _exit(0);
}

/* ------------------------------------------------------------ requester */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_us(const int64_t *v, long long n, double p) {
  if (n <= 0) return 0;
  long long idx = (long long)(p * (double)n + 0.999999) - 1; /* nearest rank */
  if (idx < 0) idx = 0;
  if (idx >= n) idx = n - 1;
  return v[idx] / 1000.0;
}

static void print_req_result(int64_t *lat, long long n, int64_t t0, int64_t t1) {
  qsort(lat, (size_t)n, sizeof(int64_t), cmp_i64);
  double sum = 0;
  for (long long i = 0; i < n; i++) sum += lat[i];
  printf("RESULT {\"mode\":\"req\",\"impl\":\"%s\",\"count\":%lld,\"p50_us\":%.2f,\"p90_us\":%.2f,"
         "\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,\"min_us\":%.2f,\"mean_us\":%.2f,"
         "\"elapsed_s\":%.4f,\"cpu_s\":%.4f}\n",
         A.impl, n, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99), pct_us(lat, n, 0.999),
         n ? lat[n - 1] / 1000.0 : 0, n ? lat[0] / 1000.0 : 0, n ? sum / n / 1000.0 : 0, (t1 - t0) / 1e9,
         cpu_seconds());
  fflush(stdout);
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
  printf("RESULT {\"mode\":\"stall\",\"closed\":%s,\"how\":\"%s\",\"drained_bytes\":%lld,\"saw_err\":%s,"
         "\"cpu_s\":%.4f}\n",
         closed ? "true" : "false", how, drained, saw_err ? "true" : "false", cpu_seconds());
  fflush(stdout);
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
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
  printf("RESULT {\"mode\":\"sink\",\"pubs\":%lld,\"payload_bytes\":%lld,\"t_first\":%lld,\"t_last\":%lld,"
         "\"cpu_s\":%.4f}\n",
         pubs, bytes, (long long)t_first, (long long)t_last, cpu_seconds());
  fflush(stdout);
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
  int hl = snprintf(hdr, sizeof(hdr), "MSG %s %s %d\r\n", A.subject, sid, A.size);
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
  printf("RESULT {\"mode\":\"blast\",\"sent\":%lld,\"t_first\":%lld,\"t_written\":%lld,\"cpu_s\":%.4f}\n", sent,
         (long long)t0, (long long)t1, cpu_seconds());
  fflush(stdout);
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
  printf("RESULT {\"mode\":\"echo\",\"served\":%lld,\"cpu_s\":%.4f}\n", served, cpu_seconds());
  fflush(stdout);
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  parse_args(argc, argv);
  int natsc = !strcmp(A.impl, "natsc");
  const char *m = A.mode;
  if (!strcmp(m, "version")) {
    printf("RESULT {\"mode\":\"version\",\"nats_c\":\"%s\"}\n", nats_GetVersion());
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
  else if (!strcmp(m, "stall")) mode_stall();
  else if (!strcmp(m, "sink")) mode_sink();
  else if (!strcmp(m, "blast")) mode_blast();
  else if (!strcmp(m, "echo")) mode_echo();
  else die("unknown mode %s", m);
  return 0;
}
