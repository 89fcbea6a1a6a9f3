/*
 * commitloop.c — the bare loop of what one LMDB commit must do, for the bench's durable-seq
 * scenario: the floor under a durable send that is answered once its commit is on disk.
 *
 * Built at bench time:  gcc -O2 -Wall -o .bench/commitloop scripts/loadgen/commitloop.c
 *
 *   commitloop run --dir D [--count N] [--warmup W] [--pages P]
 *
 * In D (a temp dir on the servers' file system) it creates data.mdb and opens it twice, as LMDB
 * opens its data file: a plain fd for the data pages, an O_DSYNC fd for the meta pages. The file
 * is first written in full (2 meta pages, then P data pages; fsync), so that the loop overwrites
 * allocated blocks, as LMDB does once it reuses freed pages, and never grows the file. Each
 * iteration i is one commit:
 *   pwrite a 4096-byte data page at page 2 + i % P, then fdatasync the data fd;
 *   pwrite a 4096-byte meta page at page i % 2 through the O_DSYNC fd.
 * W untimed iterations, then N timed ones, each timed alone (CLOCK_MONOTONIC before the data
 * page's pwrite, after the meta page's).
 *
 * Towards the bench (stdout, line based, as loadgen.c and mqttgen.c; see common.h):
 *   RESULT {"mode":"run", "count", "warmup", "pages", "p50_us", "p90_us", "p99_us", "max_us",
 *           "min_us", "mean_us" (whole iteration), "data_p50_us" (data page + fdatasync),
 *           "meta_p50_us" (O_DSYNC meta page), "elapsed_s", "cpu_s"}
 * Errors go to stderr, exit code != 0. The caller removes D.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>

#define GEN_NAME "commitloop"
#include "common.h"

#define PAGE 4096

static struct {
  const char *mode;
  const char *dir;
  long long count;
  long long warmup;
  int pages;
} A = {.count = 2000, .warmup = 100, .pages = 256};

static void pwrite_page(int fd, const char *page, long long pgno, const char *what) {
  ssize_t w = pwrite(fd, page, PAGE, (off_t)pgno * PAGE);
  if (w != PAGE) die("pwrite %s page %lld: %s", what, pgno, w < 0 ? strerror(errno) : "short write");
}

int main(int argc, char **argv) {
  const opt_t opts[] = {OPT("--dir", A.dir), OPT("--count", A.count), OPT("--warmup", A.warmup),
                        OPT("--pages", A.pages), OPT_END};
  A.mode = parse_opts(argc, argv, "usage: commitloop run --dir D [--count N] [--warmup W] [--pages P]", opts);
  if (strcmp(A.mode, "run") != 0) die("unknown mode %s", A.mode);
  if (!A.dir) die("--dir is required");
  if (A.count < 1 || A.warmup < 0 || A.pages < 1) die("--count and --pages must be >= 1, --warmup >= 0");

  char file[4096];
  snprintf(file, sizeof(file), "%s/data.mdb", A.dir);
  int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open %s: %s", file, strerror(errno));
  int mfd = open(file, O_RDWR | O_DSYNC);
  if (mfd < 0) die("open %s O_DSYNC: %s", file, strerror(errno));

  static char page[PAGE], meta[PAGE];
  memset(page, 0xa5, sizeof(page));
  memset(meta, 0x5a, sizeof(meta));
  for (long long p = 0; p < 2 + (long long)A.pages; p++) pwrite_page(fd, page, p, "initial");
  if (fsync(fd) != 0) die("fsync: %s", strerror(errno));

  int64_t *lat = malloc(sizeof(int64_t) * (size_t)A.count);
  int64_t *data = malloc(sizeof(int64_t) * (size_t)A.count);
  int64_t *metas = malloc(sizeof(int64_t) * (size_t)A.count);
  if (!lat || !data || !metas) die("out of memory");
  long long total = A.warmup + A.count;
  int64_t t_start = 0;
  for (long long i = 0; i < total; i++) {
    if (i == A.warmup) t_start = now_ns();
    /* a different page content per commit (the first bytes: the iteration) */
    memcpy(page, &i, sizeof(i));
    memcpy(meta, &i, sizeof(i));
    int64_t t0 = now_ns();
    pwrite_page(fd, page, 2 + i % A.pages, "data");
    if (fdatasync(fd) != 0) die("fdatasync: %s", strerror(errno));
    int64_t t1 = now_ns();
    pwrite_page(mfd, meta, i % 2, "meta");
    int64_t t2 = now_ns();
    if (i >= A.warmup) {
      long long k = i - A.warmup;
      lat[k] = t2 - t0;
      data[k] = t1 - t0;
      metas[k] = t2 - t1;
    }
  }
  double secs = (now_ns() - t_start) / 1e9;
  close(mfd);
  close(fd);

  long long n = A.count;
  double sum = 0;
  for (long long i = 0; i < n; i++) sum += lat[i];
  qsort(lat, (size_t)n, sizeof(int64_t), cmp_i64);
  qsort(data, (size_t)n, sizeof(int64_t), cmp_i64);
  qsort(metas, (size_t)n, sizeof(int64_t), cmp_i64);
  print_result("\"mode\":\"run\",\"count\":%lld,\"warmup\":%lld,\"pages\":%d,\"p50_us\":%.2f,\"p90_us\":%.2f,"
               "\"p99_us\":%.2f,\"max_us\":%.2f,\"min_us\":%.2f,\"mean_us\":%.2f,\"data_p50_us\":%.2f,"
               "\"meta_p50_us\":%.2f,\"elapsed_s\":%.4f,\"cpu_s\":%.4f",
               n, A.warmup, A.pages, pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99),
               lat[n - 1] / 1000.0, lat[0] / 1000.0, sum / n / 1000.0, pct_us(data, n, 0.50),
               pct_us(metas, n, 0.50), secs, cpu_seconds());
  return 0;
}
