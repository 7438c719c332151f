/*
 * membrane-cni: the CNI plugin (spec 1.0/1.1) the runtime executes once per container and command.
 *
 * Why C: the plugin's process start is on every container's start path, and Node's own start is
 * ~121 ms of CPU on the project's machines (the Node plugin cost 150 ms CPU per ADD, more than the
 * agent's whole ADD). Cilium's plugin is likewise a small native binary talking to its agent.
 *
 * What it does, and nothing more: reads the CNI_* variables and the network configuration on
 * stdin, checks that configuration (the spec's codes: 6 not JSON, 7 bad field, 1 unsupported
 * cniVersion, 4 bad CNI_COMMAND), answers VERSION itself, and forwards every other command as one
 * `POST /v1/cni/exec` (HTTP/1.0) on the agent's unix socket. The agent (src/cni/protocol.ts) runs
 * the command and answers {"exit":0|1,"result":{...}}; the plugin prints the result and exits with
 * that status. An agent that is not there is the spec's error 11 (50 for STATUS), produced here.
 * The configuration checks mirror src/cni/spec.ts parseNetConf (test/unit/cni/plugin-binary.test.ts
 * holds the two to the same answers), so a bad configuration is reported the same with or without
 * the agent.
 *
 * It runs as root with input from the runtime: every read is bounded (stdin 1 MiB, each variable
 * 64 KiB, the agent's answer 4 MiB), the JSON parser validates the whole document (depth 64,
 * UTF-8) before anything is taken from it, every length is checked before a copy, and the agent
 * call has a deadline (the configuration's timeoutMs, else 60 s).
 *
 * Built by scripts/build-cni.sh into dist/cni/membrane-cni.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define STDIN_MAX (1u << 20)
#define ENV_MAX (64u << 10)
#define REPLY_MAX (4u << 20)
#define DEPTH_MAX 64
#define DEFAULT_TIMEOUT_MS 60000
#define FIELD_MAX 4096

/* src/cni/spec.ts SUPPORTED_VERSIONS and CNI_COMMANDS */
static const char *const VERSIONS[] = {"1.0.0", "1.1.0"};
#define N_VERSIONS (sizeof(VERSIONS) / sizeof(VERSIONS[0]))
#define LATEST (VERSIONS[N_VERSIONS - 1])
static const char *const COMMANDS[] = {"ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

/* src/cni/spec.ts CniCode */
enum {
  CNI_INCOMPATIBLE_VERSION = 1,
  CNI_INVALID_ENVIRONMENT = 4,
  CNI_IO_FAILURE = 5,
  CNI_DECODE_FAILURE = 6,
  CNI_INVALID_NETWORK_CONFIG = 7,
  CNI_TRY_AGAIN_LATER = 11,
  CNI_PLUGIN_NOT_AVAILABLE = 50,
};

/* ---- growable buffer with a hard limit ---- */

struct buf {
  char *p;
  size_t len, cap, max;
};

static void fail(const char *version, int code, const char *msg, const char *details) __attribute__((noreturn));

static void buf_put(struct buf *b, const void *s, size_t n) {
  if (n > b->max - b->len) fail(LATEST, CNI_IO_FAILURE, "membrane-cni: a message is over its size limit", NULL);
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) fail(LATEST, CNI_IO_FAILURE, "membrane-cni: out of memory", NULL);
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* a JSON string literal: quotes, backslashes and control characters escaped; other bytes as they are */
static void buf_json_string(struct buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  buf_put(b, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    buf_put(b, s + run, i - run);
    run = i + 1;
    char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
    if (c == '"' || c == '\\') { esc[1] = (char)c; esc[2] = 0; }
    else if (c == '\n') { esc[1] = 'n'; esc[2] = 0; }
    else if (c == '\t') { esc[1] = 't'; esc[2] = 0; }
    buf_str(b, esc);
  }
  buf_put(b, s + run, n - run);
  buf_put(b, "\"", 1);
}

/* ---- output ---- */

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    p += w;
    n -= (size_t)w;
  }
}

/* The spec's error result on stdout, exit status 1. */
static void fail(const char *version, int code, const char *msg, const char *details) {
  static int failing;
  if (failing++) {
    /* building the error result failed (out of memory): a fixed one */
    static const char last[] = "{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"membrane-cni: out of memory\"}\n";
    write_all(1, last, sizeof last - 1);
    _exit(1);
  }
  struct buf b = {.max = 1u << 20};
  char num[16];
  buf_str(&b, "{\"cniVersion\":");
  buf_json_string(&b, version, strlen(version));
  snprintf(num, sizeof num, "%d", code);
  buf_str(&b, ",\"code\":");
  buf_str(&b, num);
  buf_str(&b, ",\"msg\":");
  buf_json_string(&b, msg, strlen(msg));
  if (details && *details) {
    buf_str(&b, ",\"details\":");
    buf_json_string(&b, details, strlen(details));
  }
  buf_str(&b, "}\n");
  write_all(1, b.p, b.len);
  exit(1);
}

static void failf(const char *version, int code, const char *details, const char *fmt, ...) __attribute__((noreturn, format(printf, 4, 5)));
static void failf(const char *version, int code, const char *details, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fail(version, code, msg, details);
}

/* ---- JSON (RFC 8259): a validating scanner; values are taken as spans of the validated text ---- */

struct json {
  const char *s;
  size_t n, i;
  char err[96];
};

static int json_error(struct json *j, const char *what) {
  snprintf(j->err, sizeof j->err, "%s at byte %zu", what, j->i);
  return -1;
}

static void skip_ws(struct json *j) {
  while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r')) j->i++;
}

/* length of the well-formed UTF-8 sequence at p (1-4), or 0 */
static size_t utf8_len(const unsigned char *p, size_t left) {
  unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
  else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
  else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
  else return 0;
  if (left < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((p[k] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[k] & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

static int hex4(const char *p, uint32_t *out) {
  uint32_t v = 0;
  for (int k = 0; k < 4; k++) {
    char c = p[k];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static int scan_string(struct json *j) {
  if (j->i >= j->n || j->s[j->i] != '"') return json_error(j, "expected a string");
  j->i++;
  while (j->i < j->n) {
    unsigned char c = (unsigned char)j->s[j->i];
    if (c == '"') { j->i++; return 0; }
    if (c < 0x20) return json_error(j, "control character in a string");
    if (c == '\\') {
      if (j->i + 1 >= j->n) break;
      char e = j->s[j->i + 1];
      if (e == 'u') {
        uint32_t u;
        if (j->i + 6 > j->n || hex4(j->s + j->i + 2, &u) < 0) return json_error(j, "bad \\u escape");
        j->i += 6;
      } else if (strchr("\"\\/bfnrt", e) && e) {
        j->i += 2;
      } else {
        return json_error(j, "bad escape");
      }
      continue;
    }
    size_t l = utf8_len((const unsigned char *)j->s + j->i, j->n - j->i);
    if (!l) return json_error(j, "invalid UTF-8");
    j->i += l;
  }
  return json_error(j, "unterminated string");
}

static int scan_digits(struct json *j) {
  size_t start = j->i;
  while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') j->i++;
  return j->i > start ? 0 : json_error(j, "expected a digit");
}

static int scan_number(struct json *j) {
  if (j->i < j->n && j->s[j->i] == '-') j->i++;
  if (j->i < j->n && j->s[j->i] == '0') j->i++;
  else if (scan_digits(j) < 0) return -1;
  if (j->i < j->n && j->s[j->i] == '.') {
    j->i++;
    if (scan_digits(j) < 0) return -1;
  }
  if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
    j->i++;
    if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-')) j->i++;
    if (scan_digits(j) < 0) return -1;
  }
  return 0;
}

static int scan_value(struct json *j, int depth);

static int scan_container(struct json *j, int depth, char close) {
  if (depth >= DEPTH_MAX) return json_error(j, "nested too deep");
  j->i++;
  skip_ws(j);
  if (j->i < j->n && j->s[j->i] == close) { j->i++; return 0; }
  for (;;) {
    if (close == '}') {
      if (scan_string(j) < 0) return -1;
      skip_ws(j);
      if (j->i >= j->n || j->s[j->i] != ':') return json_error(j, "expected ':'");
      j->i++;
    }
    if (scan_value(j, depth + 1) < 0) return -1;
    skip_ws(j);
    if (j->i < j->n && j->s[j->i] == ',') { j->i++; skip_ws(j); continue; }
    if (j->i < j->n && j->s[j->i] == close) { j->i++; return 0; }
    return json_error(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static int scan_literal(struct json *j, const char *lit) {
  size_t l = strlen(lit);
  if (j->n - j->i < l || memcmp(j->s + j->i, lit, l) != 0) return json_error(j, "unexpected token");
  j->i += l;
  return 0;
}

static int scan_value(struct json *j, int depth) {
  skip_ws(j);
  if (j->i >= j->n) return json_error(j, "unexpected end");
  switch (j->s[j->i]) {
    case '{': return scan_container(j, depth, '}');
    case '[': return scan_container(j, depth, ']');
    case '"': return scan_string(j);
    case 't': return scan_literal(j, "true");
    case 'f': return scan_literal(j, "false");
    case 'n': return scan_literal(j, "null");
    default:
      if (j->s[j->i] == '-' || (j->s[j->i] >= '0' && j->s[j->i] <= '9')) return scan_number(j);
      return json_error(j, "unexpected token");
  }
}

/* The whole text is one JSON value (surrounded by whitespace only). */
static int json_validate(struct json *j) {
  j->i = 0;
  j->err[0] = 0;
  if (scan_value(j, 0) < 0) return -1;
  skip_ws(j);
  if (j->i != j->n) return json_error(j, "unexpected text after the value");
  return 0;
}

/* A span of validated JSON text: one value. */
struct span {
  const char *p;
  size_t n;
};

static char span_type(struct span v) {
  if (!v.p || !v.n) return 0;
  char c = v.p[0];
  if (c == '-' || (c >= '0' && c <= '9')) return '0';
  return c; /* { [ " t f n */
}

/*
 * Decodes a validated string span (with its quotes) into out (NUL-terminated). Returns the decoded
 * length, or -1 when it does not fit in cap-1 bytes. \u escapes become UTF-8 (a lone surrogate as
 * its 3-byte form, as JavaScript keeps it); \u0000 becomes a NUL byte, which callers that need a
 * C string reject by comparing strlen with the length.
 */
static long json_decode_string(struct span v, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 1; i + 1 < v.n;) {
    char c = v.p[i];
    char tmp[4];
    size_t tl = 1;
    if (c != '\\') {
      tmp[0] = c;
      i++;
    } else {
      char e = v.p[i + 1];
      i += 2;
      switch (e) {
        case 'b': tmp[0] = '\b'; break;
        case 'f': tmp[0] = '\f'; break;
        case 'n': tmp[0] = '\n'; break;
        case 'r': tmp[0] = '\r'; break;
        case 't': tmp[0] = '\t'; break;
        case 'u': {
          uint32_t u = 0, lo = 0;
          hex4(v.p + i, &u);
          i += 4;
          if (u >= 0xd800 && u <= 0xdbff && i + 6 <= v.n - 1 && v.p[i] == '\\' && v.p[i + 1] == 'u' && hex4(v.p + i + 2, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
          }
          if (u < 0x80) { tmp[0] = (char)u; }
          else if (u < 0x800) { tmp[0] = (char)(0xc0 | (u >> 6)); tmp[1] = (char)(0x80 | (u & 0x3f)); tl = 2; }
          else if (u < 0x10000) { tmp[0] = (char)(0xe0 | (u >> 12)); tmp[1] = (char)(0x80 | ((u >> 6) & 0x3f)); tmp[2] = (char)(0x80 | (u & 0x3f)); tl = 3; }
          else { tmp[0] = (char)(0xf0 | (u >> 18)); tmp[1] = (char)(0x80 | ((u >> 12) & 0x3f)); tmp[2] = (char)(0x80 | ((u >> 6) & 0x3f)); tmp[3] = (char)(0x80 | (u & 0x3f)); tl = 4; }
          break;
        }
        default: tmp[0] = e; break; /* " \ / */
      }
    }
    if (tl >= cap - o) return -1;
    memcpy(out + o, tmp, tl);
    o += tl;
  }
  out[o] = 0;
  return (long)o;
}

/* The value of a top-level member of a validated object (the last one, as JSON.parse keeps it). */
static struct span json_member(struct span obj, const char *key) {
  struct span found = {0};
  struct json j = {.s = obj.p, .n = obj.n, .i = 0};
  skip_ws(&j);
  if (j.i >= j.n || j.s[j.i] != '{') return found;
  j.i++;
  size_t klen = strlen(key);
  for (;;) {
    skip_ws(&j);
    if (j.i >= j.n || j.s[j.i] != '"') return found;
    size_t ks = j.i;
    if (scan_string(&j) < 0) return found;
    struct span k = {j.s + ks, j.i - ks};
    char kbuf[256];
    long kl = json_decode_string(k, kbuf, sizeof kbuf);
    skip_ws(&j);
    j.i++; /* ':' */
    skip_ws(&j);
    size_t vs = j.i;
    if (scan_value(&j, 1) < 0) return found;
    if (kl == (long)klen && memcmp(kbuf, key, klen) == 0) found = (struct span){j.s + vs, j.i - vs};
    skip_ws(&j);
    if (j.i >= j.n || j.s[j.i] != ',') return found;
    j.i++;
  }
}

/* A string member decoded into out; 1 when it is a string that fits (no NUL inside), 0 when absent, -1 otherwise. */
static int member_string(struct span obj, const char *key, char *out, size_t cap, struct span *raw) {
  struct span v = json_member(obj, key);
  if (raw) *raw = v;
  if (!v.p) return 0;
  if (span_type(v) != '"') return -1;
  long l = json_decode_string(v, out, cap);
  if (l < 0 || strlen(out) != (size_t)l) return -1;
  return 1;
}

/* ---- the network configuration: the checks of src/cni/spec.ts parseNetConf, in its order ---- */

static int is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/* /^[A-Za-z0-9][A-Za-z0-9_.-]*$/ */
static int valid_network_name(const char *s) {
  if (!is_alnum(s[0])) return 0;
  for (const char *p = s + 1; *p; p++) if (!is_alnum(*p) && *p != '_' && *p != '.' && *p != '-') return 0;
  return 1;
}

/* /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/ */
static int valid_dns_label(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 63) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int lower = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!lower && !(c == '-' && i > 0 && i < n - 1)) return 0;
  }
  return 1;
}

/* /^\/./ as JavaScript reads it ('.' is any character but a line terminator) */
static int valid_absolute(const char *s) {
  if (s[0] != '/' || !s[1] || s[1] == '\n' || s[1] == '\r') return 0;
  if ((unsigned char)s[1] == 0xe2 && (unsigned char)s[2] == 0x80 && ((unsigned char)s[3] == 0xa8 || (unsigned char)s[3] == 0xa9)) return 0;
  return 1;
}

/* a JSON number that is an integer within [lo, hi] (Number.isInteger: 1e3 and 1000.0 count) */
static int integer_in(struct span v, double lo, double hi, double *out) {
  if (span_type(v) != '0' || v.n > 64) return 0;
  char tmp[65];
  memcpy(tmp, v.p, v.n);
  tmp[v.n] = 0;
  double d = strtod(tmp, NULL);
  if (!isfinite(d) || floor(d) != d || d < lo || d > hi) return 0;
  if (out) *out = d;
  return 1;
}

/* every element an object with string containerID and ifname */
static int valid_attachments(struct span v) {
  if (span_type(v) != '[') return 0;
  struct json j = {.s = v.p, .n = v.n, .i = 1};
  for (;;) {
    skip_ws(&j);
    if (j.i < j.n && j.s[j.i] == ']') return 1;
    size_t es = j.i;
    if (scan_value(&j, 1) < 0) return 0;
    struct span e = {j.s + es, j.i - es};
    if (span_type(e) != '{') return 0;
    if (span_type(json_member(e, "containerID")) != '"' || span_type(json_member(e, "ifname")) != '"') return 0;
    skip_ws(&j);
    if (j.i < j.n && j.s[j.i] == ',') j.i++;
  }
}

struct netconf {
  char version[FIELD_MAX];
  char socket[FIELD_MAX];
  int has_socket;
  int timeout_ms;
};

static void parse_netconf(const char *stdin_text, size_t n, struct netconf *c) {
  struct json j = {.s = stdin_text, .n = n};
  if (json_validate(&j) < 0) fail(LATEST, CNI_DECODE_FAILURE, "the network configuration on stdin is not JSON", j.err);
  struct span doc = {stdin_text, n};
  while (doc.n && strchr(" \t\r\n", doc.p[0])) { doc.p++; doc.n--; }
  if (span_type(doc) != '{') fail(LATEST, CNI_INVALID_NETWORK_CONFIG, "invalid network configuration: not a JSON object", NULL);

  struct buf problems = {.max = 1u << 16};
  char tmp[FIELD_MAX];
  struct span raw;
  int r;
#define PROBLEM(text) do { if (problems.len) buf_str(&problems, "; "); buf_str(&problems, text); } while (0)

  r = member_string(doc, "cniVersion", c->version, sizeof c->version, &raw);
  if (!raw.p) PROBLEM("cniVersion: missing (a version string)");
  else if (r != 1 || !c->version[0]) PROBLEM("cniVersion: not a version string");

  r = member_string(doc, "name", tmp, sizeof tmp, &raw);
  if (!raw.p) PROBLEM("name: missing (a network name (letters, digits, _ . -))");
  else if (r != 1 || !valid_network_name(tmp)) PROBLEM("name: not a network name (letters, digits, _ . -)");

  r = member_string(doc, "type", tmp, sizeof tmp, &raw);
  if (!raw.p) PROBLEM("type: missing (the plugin type)");
  else if (r != 1 || !tmp[0]) PROBLEM("type: not the plugin type");

  r = member_string(doc, "agentSocket", c->socket, sizeof c->socket, &raw);
  c->has_socket = raw.p != NULL;
  if (raw.p && (r != 1 || !valid_absolute(c->socket))) PROBLEM("agentSocket: not an absolute path");

  r = member_string(doc, "namespace", tmp, sizeof tmp, &raw);
  if (raw.p && (r != 1 || !valid_dns_label(tmp))) PROBLEM("namespace: not a namespace name (DNS label)");

  double t = DEFAULT_TIMEOUT_MS;
  raw = json_member(doc, "timeoutMs");
  if (raw.p && !integer_in(raw, 100, 600000, &t)) PROBLEM("timeoutMs: not an integer 100..600000");
  c->timeout_ms = (int)t;

  raw = json_member(doc, "cni.dev/valid-attachments");
  if (raw.p && !valid_attachments(raw)) PROBLEM("cni.dev/valid-attachments: not a list of {containerID, ifname}");
#undef PROBLEM

  if (problems.len) {
    const char *semi = strstr(problems.p, "; ");
    char first[512];
    snprintf(first, sizeof first, "%.*s", semi ? (int)(semi - problems.p) : (int)problems.len, problems.p);
    failf(LATEST, CNI_INVALID_NETWORK_CONFIG, problems.p, "invalid network configuration: %s", first);
  }
  free(problems.p);
  int supported = 0;
  for (size_t k = 0; k < N_VERSIONS; k++) if (strcmp(c->version, VERSIONS[k]) == 0) supported = 1;
  if (!supported) failf(LATEST, CNI_INCOMPATIBLE_VERSION, "membrane-cni supports 1.0.0, 1.1.0", "cniVersion %s is not supported", c->version);
}

/* ---- input ---- */

static size_t read_stdin(char **out) {
  struct buf b = {.max = STDIN_MAX};
  char chunk[65536];
  buf_put(&b, "", 0);
  for (;;) {
    ssize_t r = read(0, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        poll(&p, 1, 1000);
        continue;
      }
      if (errno == EBADF) break; /* no stdin at all: empty */
      failf(LATEST, CNI_IO_FAILURE, strerror(errno), "membrane-cni: reading stdin failed");
    }
    if (r == 0) break;
    if ((size_t)r > b.max - b.len) failf(LATEST, CNI_INVALID_NETWORK_CONFIG, NULL, "invalid network configuration: stdin is over %u bytes", STDIN_MAX);
    buf_put(&b, chunk, (size_t)r);
  }
  *out = b.p;
  return b.len;
}

/* ---- the agent call ---- */

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* waits for fd to be ready before the deadline; 0 ready, -1 timed out */
static int wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) return -1;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) return 0; /* let the read/write report it */
  }
}

struct reply {
  int status;
  struct span body;
};

static void call_agent(const struct netconf *c, const char *command, const char *socket_path, const struct buf *body, const char *version, struct buf *raw, struct reply *rep) {
  int status_cmd = strcmp(command, "STATUS") == 0;
  long long deadline = now_ms() + c->timeout_ms;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t plen = strlen(socket_path);
  if (plen >= sizeof sa.sun_path) failf(version, CNI_INVALID_NETWORK_CONFIG, NULL, "invalid network configuration: agentSocket: %zu bytes, a unix socket path has at most %zu", plen, sizeof sa.sun_path - 1);
  memcpy(sa.sun_path, socket_path, plen + 1);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) failf(version, CNI_IO_FAILURE, strerror(errno), "membrane-cni: socket(AF_UNIX) failed");
  /* connect blocks only while the agent's backlog is full; bounded by the same deadline */
  struct timeval tv = {.tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (errno == EINTR) continue;
    if (errno == ENOENT || errno == ECONNREFUSED) {
      failf(version, status_cmd ? CNI_PLUGIN_NOT_AVAILABLE : CNI_TRY_AGAIN_LATER, "start it with `membrane agent` (or `systemctl start membrane-agent`), then retry",
            "the membrane agent is not running: no API socket at %s", socket_path);
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINPROGRESS) failf(version, CNI_TRY_AGAIN_LATER, "the agent is busy or stuck; see its log", "agent at %s did not accept the connection within %d ms", socket_path, c->timeout_ms);
    failf(version, CNI_IO_FAILURE, strerror(errno), "membrane-cni: cannot connect to the agent at %s", socket_path);
  }

  char head[256];
  int hl = snprintf(head, sizeof head, "POST /v1/cni/exec HTTP/1.0\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", body->len);
  struct iovec_like { const char *p; size_t n; } parts[2] = {{head, (size_t)hl}, {body->p, body->len}};
  for (int k = 0; k < 2; k++) {
    const char *p = parts[k].p;
    size_t n = parts[k].n;
    while (n > 0) {
      if (wait_fd(fd, POLLOUT, deadline) < 0) failf(version, CNI_TRY_AGAIN_LATER, "the agent is busy or stuck; see its log", "agent at %s did not take the request within %d ms", socket_path, c->timeout_ms);
      ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        failf(version, CNI_IO_FAILURE, strerror(errno), "membrane-cni: sending to the agent at %s failed", socket_path);
      }
      p += w;
      n -= (size_t)w;
    }
  }
  /* HTTP/1.0: the agent answers and closes; everything up to EOF is the answer */
  char chunk[65536];
  for (;;) {
    if (wait_fd(fd, POLLIN, deadline) < 0) failf(version, CNI_TRY_AGAIN_LATER, "the agent is busy or stuck; see its log", "agent at %s did not answer POST /v1/cni/exec within %d ms", socket_path, c->timeout_ms);
    ssize_t r = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      failf(version, CNI_IO_FAILURE, strerror(errno), "membrane-cni: reading the agent's answer failed");
    }
    if (r == 0) break;
    if ((size_t)r > raw->max - raw->len) failf(version, CNI_IO_FAILURE, NULL, "membrane-cni: the agent's answer is over %u bytes", REPLY_MAX);
    buf_put(raw, chunk, (size_t)r);
  }
  close(fd);

  if (!raw->len) failf(version, CNI_IO_FAILURE, NULL, "the agent at %s closed the connection without an answer", socket_path);
  char *end = memmem(raw->p, raw->len, "\r\n\r\n", 4);
  if (!end) failf(version, CNI_IO_FAILURE, NULL, "the agent at %s closed the connection before a complete answer", socket_path);
  size_t head_len = (size_t)(end - raw->p);
  if (head_len < 12 || memcmp(raw->p, "HTTP/1.", 7) != 0 || (raw->p[7] != '0' && raw->p[7] != '1') || raw->p[8] != ' ' ||
      raw->p[9] < '1' || raw->p[9] > '5' || raw->p[10] < '0' || raw->p[10] > '9' || raw->p[11] < '0' || raw->p[11] > '9') {
    failf(version, CNI_IO_FAILURE, NULL, "not an HTTP answer from %s", socket_path);
  }
  rep->status = (raw->p[9] - '0') * 100 + (raw->p[10] - '0') * 10 + (raw->p[11] - '0');
  /* the agent's server never chunks an answer to HTTP/1.0; anything else is not the agent */
  for (size_t k = 0; k + 18 <= head_len; k++) {
    if (strncasecmp(raw->p + k, "\ntransfer-encoding", 18) == 0) failf(version, CNI_IO_FAILURE, NULL, "unexpected transfer encoding in the answer from %s", socket_path);
  }
  rep->body = (struct span){end + 4, raw->len - head_len - 4};
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const char *version = LATEST;

  /* stdin is read to its end first, whatever the command: a runtime still writing it must not
     get EPIPE because the plugin answered an error early */
  char *in = NULL;
  size_t in_len = read_stdin(&in);

  const char *command = getenv("CNI_COMMAND");
  int known = 0;
  for (size_t k = 0; command && k < N_COMMANDS; k++) if (strcmp(command, COMMANDS[k]) == 0) known = 1;
  if (!known) {
    char shown[80];
    snprintf(shown, sizeof shown, "%s", command ? command : "");
    failf(version, CNI_INVALID_ENVIRONMENT, NULL, "CNI_COMMAND \"%s\" is not one of ADD, DEL, CHECK, VERSION, STATUS, GC", shown);
  }

  if (strcmp(command, "VERSION") == 0) {
    /* VERSION may come with no configuration: the caller's cniVersion when it names one */
    char asked[FIELD_MAX];
    struct json j = {.s = in, .n = in_len};
    struct span doc = {in, in_len};
    while (doc.n && strchr(" \t\r\n", doc.p[0])) { doc.p++; doc.n--; }
    if (json_validate(&j) < 0 || span_type(doc) != '{' || member_string(doc, "cniVersion", asked, sizeof asked, NULL) != 1 || !asked[0]) {
      snprintf(asked, sizeof asked, "%s", LATEST);
    }
    struct buf out = {.max = 1u << 16};
    buf_str(&out, "{\"cniVersion\":");
    buf_json_string(&out, asked, strlen(asked));
    buf_str(&out, ",\"supportedVersions\":[");
    for (size_t k = 0; k < N_VERSIONS; k++) {
      if (k) buf_str(&out, ",");
      buf_json_string(&out, VERSIONS[k], strlen(VERSIONS[k]));
    }
    buf_str(&out, "]}\n");
    write_all(1, out.p, out.len);
    return 0;
  }

  struct netconf conf;
  memset(&conf, 0, sizeof conf);
  parse_netconf(in, in_len, &conf);
  /* errors from here on answer in the caller's version */
  version = conf.version;

  char socket_path[FIELD_MAX];
  if (conf.has_socket) {
    snprintf(socket_path, sizeof socket_path, "%s", conf.socket);
  } else {
    struct utsname u;
    if (uname(&u) < 0) failf(version, CNI_IO_FAILURE, strerror(errno), "membrane-cni: uname failed");
    snprintf(socket_path, sizeof socket_path, "/run/membrane/host/nodes/%s/agent.sock", u.nodename);
  }

  /* the request: the call's variables (unset or empty ones left out) and stdin as it came */
  struct buf body = {.max = STDIN_MAX * 6 + 7 * ENV_MAX * 6 + 4096};
  static const char *const vars[][2] = {
    {"command", "CNI_COMMAND"}, {"containerId", "CNI_CONTAINERID"}, {"netns", "CNI_NETNS"},
    {"ifname", "CNI_IFNAME"}, {"args", "CNI_ARGS"}, {"path", "CNI_PATH"},
  };
  buf_str(&body, "{");
  for (size_t k = 0; k < sizeof vars / sizeof vars[0]; k++) {
    const char *v = getenv(vars[k][1]);
    if (!v || !*v) continue;
    size_t vl = strnlen(v, ENV_MAX + 1);
    if (vl > ENV_MAX) failf(version, CNI_INVALID_ENVIRONMENT, NULL, "%s is over %u bytes", vars[k][1], ENV_MAX);
    buf_json_string(&body, vars[k][0], strlen(vars[k][0]));
    buf_str(&body, ":");
    buf_json_string(&body, v, vl);
    buf_str(&body, ",");
  }
  buf_str(&body, "\"stdin\":");
  buf_json_string(&body, in, in_len);
  buf_str(&body, "}");

  struct buf raw = {.max = REPLY_MAX};
  struct reply rep;
  call_agent(&conf, command, socket_path, &body, version, &raw, &rep);

  struct json j = {.s = rep.body.p, .n = rep.body.n};
  struct span doc = rep.body;
  while (doc.n && strchr(" \t\r\n", doc.p[0])) { doc.p++; doc.n--; }
  if (json_validate(&j) < 0 || span_type(doc) != '{') failf(version, CNI_IO_FAILURE, j.err[0] ? j.err : NULL, "the agent at %s answered HTTP %d with no JSON object", socket_path, rep.status);
  if (rep.status != 200) {
    /* the API's error answer {code, message, hint}: the agent refused the call itself */
    char code[128] = "AGENT_INTERNAL", message[1024] = "", hint[1024] = "";
    member_string(doc, "code", code, sizeof code, NULL);
    member_string(doc, "message", message, sizeof message, NULL);
    member_string(doc, "hint", hint, sizeof hint, NULL);
    failf(version, CNI_IO_FAILURE, hint[0] ? hint : NULL, "the membrane agent at %s refused the call (HTTP %d): %s: %s", socket_path, rep.status, code, message);
  }
  double exit_status = 1;
  if (!integer_in(json_member(doc, "exit"), 0, 1, &exit_status)) failf(version, CNI_IO_FAILURE, NULL, "the agent at %s answered without an exit status", socket_path);
  struct span result = json_member(doc, "result");
  if (result.p) {
    if (span_type(result) != '{') failf(version, CNI_IO_FAILURE, NULL, "the agent at %s answered a result that is not an object", socket_path);
    write_all(1, result.p, result.n);
    write_all(1, "\n", 1);
  }
  return (int)exit_status;
}
