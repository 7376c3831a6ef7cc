/* Primitives: init, HMAC, Lever's signature check, constant-time equality,
 * random bytes and ids, hex. */
#include "crypto/crypto.h"

#include "core/alloc.h"
#include "core/error.h"

#include <sodium.h>
#include <string.h>

int lb_crypto_init(void)
{
    return sodium_init() < 0 ? LB_EIO : 0;
}

void lb_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen, uint8_t out[32])
{
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, msg, msglen);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof(st));
}

int lb_lever_signature_ok(const char *signature_token, size_t toklen, const char *token,
                          size_t token_len, const char *triggered_at, size_t ta_len,
                          const char *sig_hex, size_t sig_len)
{
    uint8_t sig[crypto_auth_hmacsha256_BYTES];
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    size_t bin_len = 0;
    const char *end = NULL;
    crypto_auth_hmacsha256_state st;

    /* An empty signing key would make every signature forgeable. */
    if (signature_token == NULL || toklen == 0 || sig_hex == NULL) return 0;
    if (token == NULL && token_len > 0) return 0;
    if (triggered_at == NULL && ta_len > 0) return 0;
    if (sig_len != 2 * sizeof(sig)) return 0;
    if (sodium_hex2bin(sig, sizeof(sig), sig_hex, sig_len, NULL, &bin_len, &end) != 0 ||
        bin_len != sizeof(sig) || end != sig_hex + sig_len)
        return 0;

    crypto_auth_hmacsha256_init(&st, (const unsigned char *)signature_token, toklen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)token, token_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)triggered_at, ta_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));

    int ok = sodium_memcmp(sig, mac, sizeof(mac)) == 0;
    sodium_memzero(mac, sizeof(mac));
    return ok;
}

int lb_secure_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    uint8_t ha[crypto_generichash_BYTES];
    uint8_t hb[crypto_generichash_BYTES];

    /* Hashing both makes the comparison's time depend on the lengths only,
     * and the digests compare in constant time. */
    crypto_generichash(ha, sizeof(ha), a, alen, NULL, 0);
    crypto_generichash(hb, sizeof(hb), b, blen, NULL, 0);
    int same = sodium_memcmp(ha, hb, sizeof(ha)) == 0;
    return same & (alen == blen);
}

void lb_random_bytes(void *buf, size_t n)
{
    randombytes_buf(buf, n);
}

/* Random bytes for ids come from a per-thread pool refilled POOL_SIZE bytes
 * at a time, so that an id costs a copy instead of a getrandom() call. Bytes
 * are wiped as they are handed out: no byte is ever handed out twice, and
 * none that was handed out stays in the pool. Keys and nonces do not use it
 * (lb_random_bytes, seal.c, key.c call libsodium directly). */
#define POOL_SIZE 4096
#define ID_BYTES_MAX 64

typedef struct {
    size_t pos; /* bytes before pos are used (and zeroed) */
    uint8_t buf[POOL_SIZE];
} id_pool;

static _Thread_local id_pool pool = {.pos = POOL_SIZE};

static void id_pool_take(uint8_t *out, size_t n)
{
    while (n > 0) {
        if (pool.pos == POOL_SIZE) {
            randombytes_buf(pool.buf, POOL_SIZE);
            pool.pos = 0;
        }
        size_t k = POOL_SIZE - pool.pos;
        if (k > n) k = n;
        memcpy(out, pool.buf + pool.pos, k);
        sodium_memzero(pool.buf + pool.pos, k);
        pool.pos += k;
        out += k;
        n -= k;
    }
}

/* prefix (plen bytes) + base64url(nbytes random bytes) into out, which
 * holds plen + sodium_base64_ENCODED_LEN(nbytes) bytes. prefix may be out
 * itself (already in place). */
static void random_id_into(char *out, const char *prefix, size_t plen, size_t nbytes)
{
    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t b64len = sodium_base64_ENCODED_LEN(nbytes, variant); /* NUL included */
    uint8_t small[ID_BYTES_MAX];
    uint8_t *raw = nbytes <= sizeof(small) ? small : lb_malloc(nbytes);

    if (plen > 0 && out != prefix) memcpy(out, prefix, plen);
    id_pool_take(raw, nbytes);
    sodium_bin2base64(out + plen, b64len, raw, nbytes, variant);
    sodium_memzero(raw, nbytes);
    if (raw != small) lb_free(raw);
}

char *lb_random_id(const char *prefix, size_t nbytes)
{
    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    char *out = lb_malloc(plen + sodium_base64_ENCODED_LEN(nbytes, variant));

    random_id_into(out, prefix, plen, nbytes);
    return out;
}

/* prefix + 12 lower-case hex digits of now_ms's low 48 bits into head
 * (which holds plen + 13 bytes); returns plen + 12. */
static size_t sortable_head(char *head, const char *prefix, size_t plen, int64_t now_ms)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t t = (uint64_t)now_ms & 0xFFFFFFFFFFFFULL;

    if (plen > 0) memcpy(head, prefix, plen);
    for (int i = 11; i >= 0; i--) {
        head[plen + (size_t)i] = hex[t & 15];
        t >>= 4;
    }
    head[plen + 12] = '\0';
    return plen + 12;
}

static size_t sortable_size(const char *prefix, size_t nbytes)
{
    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    return (prefix != NULL ? strlen(prefix) : 0) + 12 + sodium_base64_ENCODED_LEN(nbytes, variant);
}

char *lb_sortable_id(const char *prefix, int64_t now_ms, size_t nbytes)
{
    size_t size = sortable_size(prefix, nbytes);
    char *out = lb_malloc(size);
    lb_sortable_id_buf(out, size, prefix, now_ms, nbytes); /* fits: sized above */
    return out;
}

int lb_sortable_id_buf(char *out, size_t size, const char *prefix, int64_t now_ms, size_t nbytes)
{
    if (size < sortable_size(prefix, nbytes)) return LB_ETOOBIG;
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    size_t hlen = sortable_head(out, prefix, plen, now_ms);
    random_id_into(out, out, hlen, nbytes);
    return 0;
}

void lb_hex_encode(const uint8_t *in, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
}
