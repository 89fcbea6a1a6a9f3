/*
 * common.h — what the C programs of the bench (scripts/bench.ts) share: the load generators
 * loadgen.c (NATS) and mqttgen.c (MQTT 3.1.1), and commitloop.c (durable-seq's bare LMDB-commit
 * loop). Header only, every function static inline (each program is one translation unit; an
 * unused one draws no -Wall warning). scripts/bench/loadgen.ts rebuilds a program when its
 * source or this file is newer than its binary.
 *
 * Define GEN_NAME (the program's name: the prefix of its error messages) before including it.
 *
 * Both speak the same line protocol towards bench.ts on stdout:
 *   READY ...           once it is connected/subscribed (or listening)
 *   RESULT {json}       once, at the end (print_result)
 * Errors go to stderr (die), exit code != 0. Timestamps are CLOCK_MONOTONIC nanoseconds
 * (now_ns), comparable across processes and with node's process.hrtime.bigint().
 */
#ifndef LOADGEN_COMMON_H
#define LOADGEN_COMMON_H

#ifndef GEN_NAME
#error "define GEN_NAME before including common.h"
#endif

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ util */

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* user + system CPU seconds of this process (all its threads) */
static inline double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

__attribute__((format(printf, 1, 2), noreturn)) static inline void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, GEN_NAME ": ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

/* qsort comparator for int64_t */
static inline int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* p-th percentile (0..1) of sorted v[0..n) in nanoseconds, by nearest rank, in µs (0 for n = 0) */
static inline double pct_us(const int64_t *v, long long n, double p) {
  if (n <= 0) return 0;
  long long idx = (long long)(p * (double)n + 0.999999) - 1; /* nearest rank */
  if (idx < 0) idx = 0;
  if (idx >= n) idx = n - 1;
  return v[idx] / 1000.0;
}

/* The RESULT line: "RESULT {" + the JSON members fmt prints + "}", then flushed. */
__attribute__((format(printf, 1, 2))) static inline void print_result(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("RESULT {", stdout);
  vprintf(fmt, ap);
  fputs("}\n", stdout);
  va_end(ap);
  fflush(stdout);
}

/* ------------------------------------------------------------- arguments */

typedef enum { OPT_STR, OPT_INT, OPT_LL, OPT_DBL } opt_kind_t;

typedef struct {
  const char *name; /* "--name"; NULL ends a table */
  opt_kind_t kind;
  void *dst;
} opt_t;

/* A table entry for option `name` stored in `field`; the field's type picks the conversion
 * (const char *: as given, int: atoi, long long: atoll, double: atof). */
#define OPT(name, field)                                                                          \
  {                                                                                               \
    name,                                                                                         \
        _Generic((field), const char *: OPT_STR, int: OPT_INT, long long: OPT_LL, double: OPT_DBL), \
        &(field)                                                                                  \
  }

/* The end of a table. */
#define OPT_END \
  { NULL, OPT_STR, NULL }

/* The fields both generators' argument structs start with (the mode, and the options of
 * COMMON_OPTS); each program sets its own defaults. */
#define COMMON_ARGS_FIELDS \
  const char *mode;        \
  const char *host;        \
  int port;                \
  long long count;         \
  int size;                \
  int window;              \
  int idle_ms;             \
  int timeout_ms;          \
  double max_seconds

/* The options both generators take, for the start of their tables (`a`: the argument struct,
 * which starts with COMMON_ARGS_FIELDS). */
#define COMMON_OPTS(a)                                                                              \
  OPT("--host", a.host), OPT("--port", a.port), OPT("--count", a.count), OPT("--size", a.size),     \
      OPT("--window", a.window), OPT("--idle-ms", a.idle_ms), OPT("--timeout-ms", a.timeout_ms), \
      OPT("--max-seconds", a.max_seconds)

/* argv[1] is the mode (returned), then "--name value" pairs stored through `opts`. No mode, a
 * missing value or an option not in the table dies (no mode: with `usage`). */
static inline const char *parse_opts(int argc, char **argv, const char *usage, const opt_t *opts) {
  if (argc < 2) die("%s", usage);
  for (int i = 2; i < argc; i++) {
    const char *k = argv[i];
    if (i + 1 >= argc) die("missing value for %s", k);
    const char *v = argv[++i];
    const opt_t *o = opts;
    while (o->name && strcmp(k, o->name)) o++;
    if (!o->name) die("unknown option %s", k);
    switch (o->kind) {
      case OPT_STR: *(const char **)o->dst = v; break;
      case OPT_INT: *(int *)o->dst = atoi(v); break;
      case OPT_LL: *(long long *)o->dst = atoll(v); break;
      case OPT_DBL: *(double *)o->dst = atof(v); break;
    }
  }
  return argv[1];
}

/* --------------------------------------------------------------- sockets */

/* Write all n bytes (retrying on EINTR); dies on an error. */
static inline void write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
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

/* SO_RCVTIMEO: a read() on fd waits at most ms (0: no limit). */
static inline void set_rcvtimeo(int fd, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static inline void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A TCP connection to host:port with TCP_NODELAY (and SO_RCVBUF = rcvbuf when > 0, set before
 * the connect); the fd, or -errno when no address of host accepts. Dies when host does not resolve. */
static inline int tcp_connect(const char *host, int port, int rcvbuf) {
  char ps[16];
  snprintf(ps, sizeof(ps), "%d", port);
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int e = getaddrinfo(host, ps, &hints, &res);
  if (e != 0) die("resolve %s: %s", host, gai_strerror(e));
  int fd = -1, err = EHOSTUNREACH;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    set_nodelay(fd);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd < 0 ? -err : fd;
}

/* read() retried on EINTR: >0 bytes, 0 EOF, -1 timeout (SO_RCVTIMEO), -2 any other error (errno
 * tells which). */
static inline ssize_t read_some(int fd, void *buf, size_t n) {
  for (;;) {
    ssize_t r = read(fd, buf, n);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
  }
}

#endif /* LOADGEN_COMMON_H */
