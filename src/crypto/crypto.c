/* Primitives: init, HMAC, Lever's signature check, constant-time equality,
 * random bytes and ids, hex. */
#include "crypto/crypto.h"

#include "core/alloc.h"
#include "core/error.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

int lb_crypto_init(void)
{
    return sodium_init() < 0 ? LB_EIO : 0;
}

void lb_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                    uint8_t out[32])
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
    if (signature_token == NULL || toklen == 0 || sig_hex == NULL)
        return 0;
    if (token == NULL && token_len > 0)
        return 0;
    if (triggered_at == NULL && ta_len > 0)
        return 0;
    if (sig_len != 2 * sizeof(sig))
        return 0;
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

char *lb_random_id(const char *prefix, size_t nbytes)
{
    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    size_t b64len = sodium_base64_ENCODED_LEN(nbytes, variant); /* NUL included */
    char *out = lb_malloc(plen + b64len);
    uint8_t *raw = lb_malloc(nbytes);

    if (plen > 0)
        memcpy(out, prefix, plen);
    randombytes_buf(raw, nbytes);
    sodium_bin2base64(out + plen, b64len, raw, nbytes, variant);
    lb_free(raw);
    return out;
}

char *lb_sortable_id(const char *prefix, int64_t now_ms, size_t nbytes)
{
    char head[64];
    snprintf(head, sizeof(head), "%s%012llx", prefix != NULL ? prefix : "",
             (unsigned long long)(now_ms & 0xFFFFFFFFFFFFLL));
    return lb_random_id(head, nbytes);
}

void lb_hex_encode(const uint8_t *in, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
}
