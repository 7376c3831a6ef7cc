/* The master key and the admin token: decoded from configuration, read from
 * a file, or generated once and written to that file (exclusively, 0600). */
#include "crypto/crypto.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A key or token file holds one short line; anything bigger is not ours. */
#define SECRET_FILE_MAX 1024
#define TOKEN_MIN 16
#define TOKEN_MAX 256
#define TOKEN_RANDOM_BYTES 32

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

int lb_key_decode(const char *text, lb_master_key *out)
{
    static const int variants[] = {
        sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
        sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    uint8_t bin[LB_KEY_SIZE];
    size_t bin_len = 0;
    const char *end = NULL;

    if (text == NULL) return LB_EINVAL;
    const char *s = text;
    size_t n = strlen(text);
    trim(&s, &n);
    if (n == 0) return LB_EINVAL;

    int ok = 0;
    if (n == 2 * LB_KEY_SIZE) {
        ok = sodium_hex2bin(bin, sizeof(bin), s, n, NULL, &bin_len, &end) == 0 && end == s + n &&
             bin_len == sizeof(bin);
    }
    for (size_t i = 0; !ok && i < LB_COUNTOF(variants); i++) {
        ok = sodium_base642bin(bin, sizeof(bin), s, n, NULL, &bin_len, &end, variants[i]) == 0 &&
             end == s + n && bin_len == sizeof(bin);
    }
    if (ok) memcpy(out->key, bin, sizeof(bin));
    sodium_memzero(bin, sizeof(bin));
    return ok ? 0 : LB_EINVAL;
}

/* ---- files ------------------------------------------------------------- */

/* What differs between the master key and the admin token. */
typedef struct {
    const char *setting; /* the environment variable, for messages */
    const char *name;    /* "master key", for messages */
    const char *format;  /* what a valid value looks like, for messages */
    int (*parse)(const char *text, void *out);
    /* Writes a new random value (NUL-terminated, no newline) into buf. */
    void (*generate)(char *buf, size_t size);
} secret_kind;

/* Reads the whole file into buf (NUL-terminated). 0; -ENOENT (no message);
 * or another negative code with a message in err. */
static int read_secret_file(const secret_kind *kind, const char *path, char *buf, size_t size,
                            char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) return -ENOENT;
        snprintf(err, errlen, "cannot read %s file %s: %s", kind->name, path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s file %s is not a regular file", kind->name, path);
        close(fd);
        return LB_EINVAL;
    }
    if ((st.st_mode & 077) != 0)
        lb_warn("crypto", "%s file %s is accessible to group or others (mode %03o); chmod 600 it",
                kind->name, path, (unsigned)(st.st_mode & 0777));

    size_t len = 0;
    for (;;) {
        if (len == size - 1) {
            /* Full: one more byte means the file is too large. */
            char extra;
            ssize_t r = read(fd, &extra, 1);
            if (r == 0) break;
            if (r < 0 && errno == EINTR) continue;
            if (r > 0) {
                snprintf(err, errlen, "%s file %s is too large to hold a %s", kind->name, path,
                         kind->name);
                close(fd);
                return LB_ECORRUPT;
            }
        } else {
            ssize_t r = read(fd, buf + len, size - 1 - len);
            if (r > 0) {
                len += (size_t)r;
                continue;
            }
            if (r == 0) break;
            if (errno == EINTR) continue;
        }
        int e = errno;
        snprintf(err, errlen, "cannot read %s file %s: %s", kind->name, path, strerror(e));
        close(fd);
        return -e;
    }
    close(fd);
    buf[len] = '\0';
    return 0;
}

/* Creates every missing directory above path's last component, mode 0700. */
static int make_parent_dirs(const secret_kind *kind, const char *path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);

    if (n >= sizeof(dir)) {
        snprintf(err, errlen, "%s file path is too long", kind->name);
        return -ENAMETOOLONG;
    }
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir) return 0;
    *slash = '\0';

    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            snprintf(err, errlen, "cannot create directory %s for %s file %s: %s", dir, kind->name,
                     path, strerror(e));
            return -e;
        }
        *p = c;
        if (c == '\0') return 0;
    }
}

static void fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);

    if (n >= sizeof(dir)) return;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: not every file system supports it */
        close(fd);
    }
}

/* Creates path exclusively with mode 0600 and writes text to it, durably.
 * 0; -EEXIST (no message; the file is left alone); or another negative code
 * with a message in err (and no file left behind). */
static int create_secret_file(const secret_kind *kind, const char *path, const char *text,
                              size_t len, char *err, size_t errlen)
{
    int rc = make_parent_dirs(kind, path, err, errlen);
    if (rc != 0) return rc;

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        if (e == EEXIST) return -EEXIST;
        snprintf(err, errlen, "cannot create %s file %s: %s", kind->name, path, strerror(e));
        return -e;
    }
    size_t off = 0;
    int e = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            e = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    if (e == 0 && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && e == 0) e = errno;
    if (e != 0) {
        /* Ours alone (created exclusively above): remove the partial file so
         * that the next start does not find a broken one. */
        unlink(path);
        snprintf(err, errlen, "cannot write %s file %s: %s", kind->name, path, strerror(e));
        return -e;
    }
    fsync_parent(path);
    return 0;
}

static int load_secret(const secret_kind *kind, const char *configured, const char *path, void *out,
                       char *err, size_t errlen)
{
    char buf[SECRET_FILE_MAX + 1];
    int rc;

    if (err != NULL && errlen > 0) err[0] = '\0';
    if (configured != NULL) {
        if (kind->parse(configured, out) != 0) {
            snprintf(err, errlen, "%s is not %s", kind->setting, kind->format);
            return LB_EINVAL;
        }
        return 0;
    }
    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "no %s: set %s", kind->name, kind->setting);
        return LB_EINVAL;
    }

    /* Twice at most: when another process creates the file between our
     * read and our exclusive create, read what it wrote. */
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = read_secret_file(kind, path, buf, sizeof(buf), err, errlen);
        if (rc == 0) {
            rc = kind->parse(buf, out);
            sodium_memzero(buf, sizeof(buf));
            if (rc != 0) {
                snprintf(err, errlen, "%s file %s does not hold %s", kind->name, path,
                         kind->format);
                return LB_ECORRUPT;
            }
            return 0;
        }
        if (rc != -ENOENT) return rc;

        kind->generate(buf, sizeof(buf) - 1);
        size_t n = strlen(buf);
        buf[n] = '\n';
        rc = create_secret_file(kind, path, buf, n + 1, err, errlen);
        buf[n] = '\0';
        if (rc == 0) {
            rc = kind->parse(buf, out);
            sodium_memzero(buf, sizeof(buf));
            if (rc == 0) lb_info("crypto", "generated a new %s in %s", kind->name, path);
            return rc;
        }
        sodium_memzero(buf, sizeof(buf));
        if (rc != -EEXIST) return rc;
    }
    /* Opening says "no such file", creating says "exists": a dangling
     * symbolic link (or a file that keeps coming and going). */
    snprintf(err, errlen, "%s file %s exists but cannot be opened (dangling symbolic link?)",
             kind->name, path);
    return LB_EIO;
}

/* ---- master key -------------------------------------------------------- */

static int key_parse(const char *text, void *out)
{
    return lb_key_decode(text, out);
}

static void key_generate(char *buf, size_t size)
{
    uint8_t k[LB_KEY_SIZE];

    crypto_aead_xchacha20poly1305_ietf_keygen(k);
    sodium_bin2hex(buf, size, k, sizeof(k));
    sodium_memzero(k, sizeof(k));
}

static const secret_kind master_key_kind = {
    .setting = "LEVERBRIDGE_MASTER_KEY",
    .name = "master key",
    .format = "a 32-byte key (64 hex digits or base64)",
    .parse = key_parse,
    .generate = key_generate,
};

int lb_key_load(const char *configured, const char *path, lb_master_key *out, char *err,
                size_t errlen)
{
    return load_secret(&master_key_kind, configured, path, out, err, errlen);
}

/* ---- admin token ------------------------------------------------------- */

static int token_parse(const char *text, void *out)
{
    const char *s = text;
    size_t n = strlen(text);

    trim(&s, &n);
    if (n < TOKEN_MIN || n > TOKEN_MAX) return LB_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) return LB_EINVAL;
    }
    *(char **)out = lb_strndup(s, n);
    return 0;
}

static void token_generate(char *buf, size_t size)
{
    uint8_t raw[TOKEN_RANDOM_BYTES];

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(buf, size, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

static const secret_kind admin_token_kind = {
    .setting = "LEVERBRIDGE_ADMIN_TOKEN",
    .name = "admin token",
    .format = "a token of 16 to 256 printable characters without spaces",
    .parse = token_parse,
    .generate = token_generate,
};

int lb_token_load(const char *configured, const char *path, char **out, char *err, size_t errlen)
{
    *out = NULL;
    return load_secret(&admin_token_kind, configured, path, out, err, errlen);
}
