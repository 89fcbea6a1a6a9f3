/*
 * sd_notify for mq9-edge: sends one datagram to $NOTIFY_SOCKET from the broker's own
 * process. Node cannot send unix datagrams, and the systemd-notify command sends from
 * a short-lived child that PID 1 may fail to attribute to the unit (it reads the
 * sender's cgroup after the fact), so READY=1 or WATCHDOG=1 could be lost.
 *
 * Node-API is a stable C ABI; the few functions used are declared here so the addon
 * builds with nothing but a C compiler (and cross-compiles for arm64 the same way).
 * JS: notify(socketPath: string, message: string) -> 0, or an errno.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status; /* napi_ok == 0 */
typedef napi_value (*napi_callback)(napi_env env, napi_callback_info info);

napi_status napi_get_cb_info(napi_env env, napi_callback_info cbinfo, size_t *argc, napi_value *argv, napi_value *this_arg, void **data);
napi_status napi_get_value_string_utf8(napi_env env, napi_value value, char *buf, size_t bufsize, size_t *result);
napi_status napi_create_int32(napi_env env, int value, napi_value *result);
napi_status napi_create_function(napi_env env, const char *utf8name, size_t length, napi_callback cb, void *data, napi_value *result);
napi_status napi_set_named_property(napi_env env, napi_value object, const char *utf8name, napi_value value);

static napi_value result(napi_env env, int code) {
  napi_value v;
  napi_create_int32(env, code, &v);
  return v;
}

static napi_value notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  char msg[4096];
  size_t path_len = 0, msg_len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != 0 || argc < 2) return result(env, EINVAL);
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != 0) return result(env, EINVAL);
  if (napi_get_value_string_utf8(env, argv[1], msg, sizeof msg, &msg_len) != 0) return result(env, EINVAL);
  if (path_len == 0 || path_len >= sizeof path - 1) return result(env, ENAMETOOLONG);

  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, path_len);
  if (path[0] == '@') addr.sun_path[0] = '\0'; /* abstract namespace */
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return result(env, errno);
  int code = 0;
  if (sendto(fd, msg, msg_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0) code = errno;
  close(fd);
  return result(env, code);
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "notify", (size_t)-1, notify, NULL, &fn) == 0) napi_set_named_property(env, exports, "notify", fn);
  return exports;
}

/* NAPI_MODULE_VERSION: tells Node which Node-API version the module was built for. */
int node_api_module_get_api_version_v1(void) { return 8; }
