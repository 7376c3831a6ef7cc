#include "core/alloc.h"
#include "core/error.h"
#include "crypto/crypto.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------- */

static void unhex(const char *hex, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static int group_setup(void **state)
{
    return lb_crypto_init();
}

/* A fresh temporary directory per test, removed (with its files) after. */
static int tmp_setup(void **state)
{
    char *dir = strdup("/tmp/lb-test-crypto-XXXXXX");
    if (dir == NULL || mkdtemp(dir) == NULL) return -1;
    *state = dir;
    return 0;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
                char sub[4096];
                snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
                rm_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int tmp_teardown(void **state)
{
    rm_tree(*state);
    free(*state);
    return 0;
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
}

static size_t read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, size - 1);
    assert_true(n >= 0);
    close(fd);
    buf[n] = '\0';
    return (size_t)n;
}

/* ---- HMAC: RFC 4231 ---------------------------------------------------- */

static void test_hmac_rfc4231(void **state)
{
    static const char case7_data[] =
        "This is a test using a larger than block-size key and a larger than block-size data. "
        "The key needs to be hashed before being used by the HMAC algorithm.";
    uint8_t k20_0b[20], k20_aa[20], k20_0c[20], k25[25], k131[131], d50_dd[50], d50_cd[50];
    memset(k20_0b, 0x0b, sizeof(k20_0b));
    memset(k20_aa, 0xaa, sizeof(k20_aa));
    memset(k20_0c, 0x0c, sizeof(k20_0c));
    for (size_t i = 0; i < sizeof(k25); i++)
        k25[i] = (uint8_t)(i + 1);
    memset(k131, 0xaa, sizeof(k131));
    memset(d50_dd, 0xdd, sizeof(d50_dd));
    memset(d50_cd, 0xcd, sizeof(d50_cd));

    struct {
        const void *key;
        size_t keylen;
        const void *data;
        size_t datalen;
        const char *mac; /* hex; case 5 is truncated to 128 bits */
    } cases[] = {
        {k20_0b, 20, "Hi There", 8,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"Jefe", 4, "what do ya want for nothing?", 28,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {k20_aa, 20, d50_dd, 50,
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {k25, 25, d50_cd, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {k20_0c, 20, "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b"},
        {k131, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {k131, 131, case7_data, sizeof(case7_data) - 1,
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < LB_COUNTOF(cases); i++) {
        uint8_t mac[32], want[32];
        size_t n = strlen(cases[i].mac) / 2;
        unhex(cases[i].mac, want, n);
        lb_hmac_sha256(cases[i].key, cases[i].keylen, cases[i].data, cases[i].datalen, mac);
        assert_memory_equal(mac, want, n);
    }
    assert_int_equal(sizeof(case7_data) - 1, 152);
}

/* ---- Lever signatures -------------------------------------------------- */

/* Computed independently:
 * python3 -c 'import hmac,hashlib; print(hmac.new(b"lever-signature-token-abc",
 *   b"0f2f4c1e-1b7a-4f10-9f1a-2b3c4d5e6f70" b"1700000000000", hashlib.sha256).hexdigest())' */
#define SIG_KEY "lever-signature-token-abc"
#define SIG_TOKEN "0f2f4c1e-1b7a-4f10-9f1a-2b3c4d5e6f70"
#define SIG_TA "1700000000000"
#define SIG_HEX "97c0e373f3eba9583cb8ce25ba5a2cf1068f69927ce88db7391516a184a3d623"

static int sig_ok(const char *key, const char *token, const char *ta, const char *sig)
{
    return lb_lever_signature_ok(key, strlen(key), token, strlen(token), ta, strlen(ta), sig,
                                 strlen(sig));
}

static void test_lever_signature_valid(void **state)
{
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, SIG_HEX), 1);
    /* Upper-case hex is the same bytes. */
    char upper[65];
    for (size_t i = 0; i < 64; i++)
        upper[i] = (char)((SIG_HEX[i] >= 'a' && SIG_HEX[i] <= 'f') ? SIG_HEX[i] - 32 : SIG_HEX[i]);
    upper[64] = '\0';
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, upper), 1);
    /* Second vector, short key:
     * hmac.new(b"kkkkkkk", b"tok" b"1", hashlib.sha256).hexdigest() */
    assert_int_equal(sig_ok("kkkkkkk", "tok", "1",
                            "b59100bd8938e41742af9ddedac57c154c5fc71a5d54b9f78b5d0920ac61e55b"),
                     1);
    /* Inputs are not NUL-terminated: lengths rule. */
    assert_int_equal(lb_lever_signature_ok(SIG_KEY "xyz", strlen(SIG_KEY), SIG_TOKEN "!",
                                           strlen(SIG_TOKEN), SIG_TA "0", strlen(SIG_TA),
                                           SIG_HEX "00", 64),
                     1);
}

static void test_lever_signature_matches_hmac(void **state)
{
    /* The same algorithm through lb_hmac_sha256 + lb_hex_encode. */
    char msg[] = SIG_TOKEN SIG_TA;
    uint8_t mac[32];
    char hex[65];
    lb_hmac_sha256(SIG_KEY, strlen(SIG_KEY), msg, strlen(msg), mac);
    lb_hex_encode(mac, sizeof(mac), hex);
    assert_string_equal(hex, SIG_HEX);
}

static void test_lever_signature_rejected(void **state)
{
    char bad[65];

    /* Each hex digit changed in turn. */
    for (size_t i = 0; i < 64; i++) {
        memcpy(bad, SIG_HEX, sizeof(bad));
        bad[i] = bad[i] == '0' ? '1' : '0';
        assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, bad), 0);
    }
    /* Wrong key, token, timestamp. */
    assert_int_equal(sig_ok("lever-signature-token-abd", SIG_TOKEN, SIG_TA, SIG_HEX), 0);
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN "x", SIG_TA, SIG_HEX), 0);
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, "1700000000001", SIG_HEX), 0);
    /* The split between token and triggered_at is not authenticated by
     * Lever's scheme, but the concatenation is. */
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN "1", "700000000000", SIG_HEX), 1);
    /* Short, long, odd length, empty, non-hex, embedded separators. */
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, ""), 0);
    memcpy(bad, SIG_HEX, sizeof(bad));
    bad[62] = '\0';
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, bad), 0);
    bad[62] = SIG_HEX[62];
    bad[63] = '\0';
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, bad), 0); /* 63: odd */
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, SIG_HEX "00"), 0);
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, SIG_HEX "0"), 0);
    memcpy(bad, SIG_HEX, sizeof(bad));
    bad[10] = 'g';
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, bad), 0);
    bad[10] = ':';
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, bad), 0);
    bad[10] = ' ';
    assert_int_equal(sig_ok(SIG_KEY, SIG_TOKEN, SIG_TA, bad), 0);
    /* A hex string with a NUL inside, length still 64. */
    memcpy(bad, SIG_HEX, sizeof(bad));
    bad[20] = '\0';
    assert_int_equal(lb_lever_signature_ok(SIG_KEY, strlen(SIG_KEY), SIG_TOKEN, strlen(SIG_TOKEN),
                                           SIG_TA, strlen(SIG_TA), bad, 64),
                     0);
    /* An empty signing key is refused even with a matching MAC. */
    uint8_t mac[32];
    char hex[65];
    lb_hmac_sha256("", 0, SIG_TOKEN SIG_TA, strlen(SIG_TOKEN SIG_TA), mac);
    lb_hex_encode(mac, sizeof(mac), hex);
    assert_int_equal(sig_ok("", SIG_TOKEN, SIG_TA, hex), 0);
    assert_int_equal(lb_lever_signature_ok(NULL, 0, SIG_TOKEN, strlen(SIG_TOKEN), SIG_TA,
                                           strlen(SIG_TA), hex, 64),
                     0);
    assert_int_equal(lb_lever_signature_ok(SIG_KEY, strlen(SIG_KEY), SIG_TOKEN, strlen(SIG_TOKEN),
                                           SIG_TA, strlen(SIG_TA), NULL, 0),
                     0);
}

/* ---- secure_equal ------------------------------------------------------ */

static void test_secure_equal(void **state)
{
    assert_int_equal(lb_secure_equal("abc", 3, "abc", 3), 1);
    assert_int_equal(lb_secure_equal("", 0, "", 0), 1);
    assert_int_equal(lb_secure_equal("abc", 3, "abd", 3), 0);
    assert_int_equal(lb_secure_equal("abc", 3, "abcd", 4), 0);
    assert_int_equal(lb_secure_equal("abc", 3, "ab", 2), 0);
    assert_int_equal(lb_secure_equal("", 0, "a", 1), 0);
    /* Embedded NULs count. */
    assert_int_equal(lb_secure_equal("a\0b", 3, "a\0c", 3), 0);
    assert_int_equal(lb_secure_equal("a\0b", 3, "a\0b", 3), 1);
}

/* ---- seal / open ------------------------------------------------------- */

static void make_key(lb_master_key *k, uint8_t fill)
{
    memset(k->key, fill, sizeof(k->key));
}

static void test_seal_roundtrip(void **state)
{
    lb_master_key k;
    make_key(&k, 7);
    const char *ctx = "connection:acme:api_key";
    const char *secret = "sk_live_0123456789";
    size_t len = strlen(secret);

    size_t cap = lb_seal_size(len, strlen(ctx));
    assert_int_equal(cap, len + LB_SEAL_OVERHEAD);
    uint8_t *sealed = lb_malloc(cap);
    size_t n = lb_seal(&k, ctx, secret, len, sealed);
    assert_int_equal(n, cap);
    assert_int_equal(sealed[0], LB_SEAL_VERSION);
    assert_null(memmem(sealed, n, secret, len)); /* not in the clear */

    uint8_t *out = lb_malloc(n);
    long m = lb_open(&k, ctx, sealed, n, out);
    assert_int_equal(m, (long)len);
    assert_memory_equal(out, secret, len);

    /* Two seals of the same value differ (random nonce) and both open. */
    uint8_t *sealed2 = lb_malloc(cap);
    assert_int_equal(lb_seal(&k, ctx, secret, len, sealed2), n);
    assert_memory_not_equal(sealed, sealed2, n);
    assert_int_equal(lb_open(&k, ctx, sealed2, n, out), (long)len);

    /* Empty plaintext and NULL context (same as ""). */
    uint8_t e[LB_SEAL_OVERHEAD];
    assert_int_equal(lb_seal(&k, NULL, "", 0, e), LB_SEAL_OVERHEAD);
    assert_int_equal(lb_open(&k, "", e, sizeof(e), out), 0);
    assert_int_equal(lb_open(&k, "x", e, sizeof(e), out), LB_ECORRUPT);

    lb_free(sealed);
    lb_free(sealed2);
    lb_free(out);
}

static void test_seal_tamper(void **state)
{
    lb_master_key k;
    make_key(&k, 9);
    const char *ctx = "connection:acme:api_key";
    const char *secret = "hunter2-hunter2";
    size_t len = strlen(secret);
    uint8_t sealed[64], out[64];
    size_t n = lb_seal(&k, ctx, secret, len, sealed);
    assert_true(n <= sizeof(sealed));

    for (size_t i = 0; i < n; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            sealed[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(lb_open(&k, ctx, sealed, n, out), LB_ECORRUPT);
            sealed[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Truncated at every length, and one extra byte. */
    for (size_t l = 0; l < n; l++)
        assert_int_equal(lb_open(&k, ctx, sealed, l, out), LB_ECORRUPT);
    uint8_t longer[65];
    memcpy(longer, sealed, n);
    longer[n] = 0;
    assert_int_equal(lb_open(&k, ctx, longer, n + 1, out), LB_ECORRUPT);
    /* Untouched, it still opens. */
    assert_int_equal(lb_open(&k, ctx, sealed, n, out), (long)len);
}

static void test_seal_wrong_context_and_key(void **state)
{
    lb_master_key k, k2;
    make_key(&k, 1);
    make_key(&k2, 1);
    k2.key[31] ^= 1;
    const char *secret = "s3cret";
    uint8_t sealed[64], out[64];
    size_t n = lb_seal(&k, "connection:acme:api_key", secret, 6, sealed);

    assert_int_equal(lb_open(&k, "connection:acme:api_key", sealed, n, out), 6);
    assert_int_equal(lb_open(&k, "connection:acme:api_kez", sealed, n, out), LB_ECORRUPT);
    assert_int_equal(lb_open(&k, "connection:acme2:api_key", sealed, n, out), LB_ECORRUPT);
    assert_int_equal(lb_open(&k, "connection:acme:api_ke", sealed, n, out), LB_ECORRUPT);
    assert_int_equal(lb_open(&k, "", sealed, n, out), LB_ECORRUPT);
    assert_int_equal(lb_open(&k, NULL, sealed, n, out), LB_ECORRUPT);
    assert_int_equal(lb_open(&k2, "connection:acme:api_key", sealed, n, out), LB_ECORRUPT);
    /* A future version byte is refused by this code. */
    sealed[0] = LB_SEAL_VERSION + 1;
    assert_int_equal(lb_open(&k, "connection:acme:api_key", sealed, n, out), LB_ECORRUPT);
}

/* ---- key decoding ------------------------------------------------------ */

static void test_key_decode(void **state)
{
    lb_master_key k;
    uint8_t want[32];
    for (size_t i = 0; i < 32; i++)
        want[i] = (uint8_t)i;

    static const char *good[] = {
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "  000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "\tAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n",
    };
    for (size_t i = 0; i < LB_COUNTOF(good); i++) {
        memset(&k, 0xff, sizeof(k));
        assert_int_equal(lb_key_decode(good[i], &k), 0);
        assert_memory_equal(k.key, want, 32);
    }

    /* URL-safe alphabet (bytes 200..231 need '-' and '_'), padded or not. */
    uint8_t want2[32];
    for (size_t i = 0; i < 32; i++)
        want2[i] = (uint8_t)(200 + i);
    assert_int_equal(lb_key_decode("yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5uc=", &k), 0);
    assert_memory_equal(k.key, want2, 32);
    assert_int_equal(lb_key_decode("yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5uc", &k), 0);
    assert_memory_equal(k.key, want2, 32);
    /* Same bytes in the standard alphabet. */
    assert_int_equal(lb_key_decode("yMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5uc=", &k), 0);
    assert_memory_equal(k.key, want2, 32);

    static const char *bad[] = {
        "",
        "   ",
        /* 31 and 33 bytes of hex, odd length */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
        /* non-hex digit */
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",
        /* base64 of 31 and 33 bytes */
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",
        /* mixed alphabets, inner space, junk after */
        "yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5uc=",
        "AAECAwQFBgcICQoLDA0O DxAREhMUFRYXGBkaGxwdHh8=",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=x",
        "not a key at all",
    };
    for (size_t i = 0; i < LB_COUNTOF(bad); i++)
        assert_int_equal(lb_key_decode(bad[i], &k), LB_EINVAL);
    assert_int_equal(lb_key_decode(NULL, &k), LB_EINVAL);
}

/* ---- key files --------------------------------------------------------- */

static void test_key_load_configured(void **state)
{
    lb_master_key k;
    char err[256];
    const char *dir = *state;
    char path[512];
    snprintf(path, sizeof(path), "%s/master.key", dir);

    assert_int_equal(lb_key_load("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                                 path, &k, err, sizeof(err)),
                     0);
    assert_int_equal(k.key[31], 31);
    /* The configured value wins: no file is created. */
    assert_int_equal(access(path, F_OK), -1);

    assert_int_equal(lb_key_load("deadbeef", path, &k, err, sizeof(err)), LB_EINVAL);
    assert_non_null(strstr(err, "LEVERBRIDGE_MASTER_KEY"));
    assert_null(strchr(err, '\n'));
    assert_null(strstr(err, "deadbeef")); /* the value itself is never echoed */
    assert_int_equal(access(path, F_OK), -1);
}

static void test_key_load_generates(void **state)
{
    const char *dir = *state;
    char path[512], err[256], buf[256];
    lb_master_key k1, k2;

    /* Parent directory missing: created 0700. */
    snprintf(path, sizeof(path), "%s/data/sub/master.key", dir);
    assert_int_equal(lb_key_load(NULL, path, &k1, err, sizeof(err)), 0);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/data/sub", dir);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    /* Content: 64 lower-case hex digits and a newline, decoding to the key. */
    size_t n = read_file(path, buf, sizeof(buf));
    assert_int_equal(n, 65);
    assert_int_equal(buf[64], '\n');
    assert_int_equal(strspn(buf, "0123456789abcdef"), 64);
    char hex[65];
    lb_hex_encode(k1.key, sizeof(k1.key), hex);
    assert_memory_equal(buf, hex, 64);

    /* Loading again reads the same key back and leaves the file as it was. */
    assert_int_equal(lb_key_load(NULL, path, &k2, err, sizeof(err)), 0);
    assert_memory_equal(k1.key, k2.key, sizeof(k1.key));
    char buf2[256];
    assert_int_equal(read_file(path, buf2, sizeof(buf2)), n);
    assert_string_equal(buf, buf2);

    /* A second generated key (another file) differs. */
    snprintf(path, sizeof(path), "%s/other.key", dir);
    assert_int_equal(lb_key_load(NULL, path, &k2, err, sizeof(err)), 0);
    assert_memory_not_equal(k1.key, k2.key, sizeof(k1.key));
}

static void test_key_load_reads_base64_file(void **state)
{
    const char *dir = *state;
    char path[512], err[256];
    lb_master_key k;

    snprintf(path, sizeof(path), "%s/master.key", dir);
    write_file(path, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", 0600);
    assert_int_equal(lb_key_load(NULL, path, &k, err, sizeof(err)), 0);
    assert_int_equal(k.key[0], 0);
    assert_int_equal(k.key[31], 31);
}

static void test_key_load_corrupt_file(void **state)
{
    const char *dir = *state;
    char path[512], err[256], buf[256];
    lb_master_key k;
    static const char *corrupt[] = {
        "this is not a key\n",
        "",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e\n",
    };

    snprintf(path, sizeof(path), "%s/master.key", dir);
    for (size_t i = 0; i < LB_COUNTOF(corrupt); i++) {
        write_file(path, corrupt[i], 0600);
        err[0] = '\0';
        assert_int_equal(lb_key_load(NULL, path, &k, err, sizeof(err)), LB_ECORRUPT);
        assert_non_null(strstr(err, path));
        assert_null(strchr(err, '\n'));
        /* Not overwritten. */
        read_file(path, buf, sizeof(buf));
        assert_string_equal(buf, corrupt[i]);
    }

    /* Too large. */
    char big[2048];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    write_file(path, big, 0600);
    assert_true(lb_key_load(NULL, path, &k, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));

    /* A directory where the file should be. */
    snprintf(path, sizeof(path), "%s/adir", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_true(lb_key_load(NULL, path, &k, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, path));

    /* A parent that is a file: cannot create. */
    snprintf(path, sizeof(path), "%s/master.key/inner.key", dir);
    assert_true(lb_key_load(NULL, path, &k, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "master.key"));
}

static void test_key_load_no_overwrite_symlink(void **state)
{
    /* A dangling symlink at the path is not followed to create a file. */
    const char *dir = *state;
    char path[512], target[512], err[256];
    lb_master_key k;

    snprintf(path, sizeof(path), "%s/master.key", dir);
    snprintf(target, sizeof(target), "%s/elsewhere", dir);
    assert_int_equal(symlink(target, path), 0);
    assert_true(lb_key_load(NULL, path, &k, err, sizeof(err)) < 0);
    assert_int_equal(access(target, F_OK), -1);
}

/* ---- admin token ------------------------------------------------------- */

static void test_token_load(void **state)
{
    const char *dir = *state;
    char path[512], err[256], buf[256];
    char *tok = NULL, *tok2 = NULL;

    snprintf(path, sizeof(path), "%s/state/admin-token", dir);
    assert_int_equal(lb_token_load(NULL, path, &tok, err, sizeof(err)), 0);
    assert_non_null(tok);
    assert_int_equal(strlen(tok), 43); /* 32 bytes, base64url, no padding */
    assert_int_equal(
        strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    read_file(path, buf, sizeof(buf));
    assert_int_equal(strlen(buf), 44);
    assert_memory_equal(buf, tok, 43);
    assert_int_equal(buf[43], '\n');

    assert_int_equal(lb_token_load(NULL, path, &tok2, err, sizeof(err)), 0);
    assert_string_equal(tok, tok2);
    lb_free(tok);
    lb_free(tok2);

    /* Configured value wins, trimmed. */
    assert_int_equal(lb_token_load(" abcdefghijklmnop\n", path, &tok, err, sizeof(err)), 0);
    assert_string_equal(tok, "abcdefghijklmnop");
    lb_free(tok);

    /* Bad configured values. */
    static const char *bad[] = {"short", "abcdefgh ijklmnop", "abcdefghijklmnop\x01",
                                "abcdefghijklmnop\xc3\xa9", ""};
    for (size_t i = 0; i < LB_COUNTOF(bad); i++) {
        tok = (char *)1;
        assert_int_equal(lb_token_load(bad[i], path, &tok, err, sizeof(err)), LB_EINVAL);
        assert_null(tok);
        assert_non_null(strstr(err, "LEVERBRIDGE_ADMIN_TOKEN"));
    }
    char longtok[258];
    memset(longtok, 'x', 257);
    longtok[257] = '\0';
    assert_int_equal(lb_token_load(longtok, path, &tok, err, sizeof(err)), LB_EINVAL);
    longtok[256] = '\0';
    assert_int_equal(lb_token_load(longtok, path, &tok, err, sizeof(err)), 0);
    assert_int_equal(strlen(tok), 256);
    lb_free(tok);

    /* A bad token file: error naming it, file untouched. */
    snprintf(path, sizeof(path), "%s/bad-token", dir);
    write_file(path, "too short\n", 0600);
    assert_int_equal(lb_token_load(NULL, path, &tok, err, sizeof(err)), LB_ECORRUPT);
    assert_non_null(strstr(err, path));
    read_file(path, buf, sizeof(buf));
    assert_string_equal(buf, "too short\n");
}

/* ---- random ------------------------------------------------------------ */

static void test_random_id(void **state)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *a = lb_random_id("ev_", 16);
    char *b = lb_random_id("ev_", 16);
    assert_int_equal(strlen(a), 3 + 22);
    assert_memory_equal(a, "ev_", 3);
    assert_int_equal(strspn(a + 3, alphabet), 22);
    assert_string_not_equal(a, b);
    lb_free(a);
    lb_free(b);

    a = lb_random_id("", 32);
    assert_int_equal(strlen(a), 43);
    assert_int_equal(strspn(a, alphabet), 43);
    lb_free(a);
    a = lb_random_id(NULL, 3);
    assert_int_equal(strlen(a), 4);
    lb_free(a);
    a = lb_random_id("x", 0);
    assert_string_equal(a, "x");
    lb_free(a);

    uint8_t r1[32] = {0}, r2[32] = {0}, zero[32] = {0};
    lb_random_bytes(r1, sizeof(r1));
    lb_random_bytes(r2, sizeof(r2));
    assert_memory_not_equal(r1, zero, 32);
    assert_memory_not_equal(r1, r2, 32);
}

/* Time-ordered ids: the prefix, 12 hex digits of the time, the random part;
 * the buffer form writes the same shape and refuses a buffer too small. The
 * random bytes come from a per-thread pool: many ids in a row (more than one
 * 4 KiB refill) are all distinct. */
static void test_sortable_id(void **state)
{
    (void)state;
    char *a = lb_sortable_id("ev_", 0x0123456789abLL, 12);
    assert_int_equal(strlen(a), 3 + 12 + 16);
    assert_memory_equal(a, "ev_0123456789ab", 15);
    lb_free(a);

    char buf[32], small[30];
    assert_int_equal(lb_sortable_id_buf(buf, sizeof(buf), "job_", 1, 12), LB_ETOOBIG);
    memset(small, 'x', sizeof(small));
    assert_int_equal(lb_sortable_id_buf(small, sizeof(small), "ev_", 1, 12), LB_ETOOBIG);
    assert_int_equal(small[0], 'x'); /* untouched */
    assert_int_equal(lb_sortable_id_buf(buf, sizeof(buf), "ev_", 2, 12), 0);
    assert_int_equal(strlen(buf), 31);
    assert_memory_equal(buf, "ev_000000000002", 15);

    enum { N = 2000 }; /* 2000 x 12 bytes: six refills */
    static char ids[N][32];
    for (int i = 0; i < N; i++)
        assert_int_equal(lb_sortable_id_buf(ids[i], sizeof(ids[i]), "ev_", 7, 12), 0);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(ids[i], ids[j]);
    char *later = lb_sortable_id("ev_", 8, 12);
    assert_true(strcmp(later, ids[0]) > 0); /* a later time sorts after */
    lb_free(later);
}

static void test_hex_encode(void **state)
{
    static const uint8_t in[] = {0x00, 0x01, 0xab, 0xff};
    char out[9];
    lb_hex_encode(in, sizeof(in), out);
    assert_string_equal(out, "0001abff");
    lb_hex_encode(in, 0, out);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_lever_signature_valid),
        cmocka_unit_test(test_lever_signature_matches_hmac),
        cmocka_unit_test(test_lever_signature_rejected),
        cmocka_unit_test(test_secure_equal),
        cmocka_unit_test(test_seal_roundtrip),
        cmocka_unit_test(test_seal_tamper),
        cmocka_unit_test(test_seal_wrong_context_and_key),
        cmocka_unit_test(test_key_decode),
        cmocka_unit_test_setup_teardown(test_key_load_configured, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_key_load_generates, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_key_load_reads_base64_file, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_key_load_corrupt_file, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_key_load_no_overwrite_symlink, tmp_setup,
                                        tmp_teardown),
        cmocka_unit_test_setup_teardown(test_token_load, tmp_setup, tmp_teardown),
        cmocka_unit_test(test_random_id),
        cmocka_unit_test(test_sortable_id),
        cmocka_unit_test(test_hex_encode),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
