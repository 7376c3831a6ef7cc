/* Sealed secrets: [version][24-byte nonce][XChaCha20-Poly1305 ciphertext+tag]
 * with the context as associated data. */
#include "crypto/crypto.h"

#include "core/error.h"

#include <sodium.h>
#include <string.h>

#define NONCE_SIZE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_SIZE crypto_aead_xchacha20poly1305_ietf_ABYTES
#define HDR_SIZE (1 + NONCE_SIZE)

_Static_assert(LB_SEAL_OVERHEAD == HDR_SIZE + TAG_SIZE, "LB_SEAL_OVERHEAD out of date");
_Static_assert(LB_KEY_SIZE == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key size");

size_t lb_seal_size(size_t len, size_t context_len)
{
    (void)context_len; /* the context is authenticated, not stored */
    return len + LB_SEAL_OVERHEAD;
}

size_t lb_seal(const lb_master_key *k, const char *context, const void *plain, size_t len,
               uint8_t *out)
{
    const unsigned char *ad = (const unsigned char *)(context != NULL ? context : "");
    unsigned long long clen = 0;

    out[0] = LB_SEAL_VERSION;
    randombytes_buf(out + 1, NONCE_SIZE);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + HDR_SIZE, &clen, plain, len, ad,
                                               strlen((const char *)ad), NULL, out + 1, k->key);
    return HDR_SIZE + (size_t)clen;
}

long lb_open(const lb_master_key *k, const char *context, const uint8_t *sealed, size_t sealed_len,
             uint8_t *out)
{
    const unsigned char *ad = (const unsigned char *)(context != NULL ? context : "");
    unsigned long long mlen = 0;

    /* The version byte is outside the MAC but must match exactly, so
     * changing it fails like any other tampering. */
    if (sealed == NULL || sealed_len < LB_SEAL_OVERHEAD || sealed[0] != LB_SEAL_VERSION)
        return LB_ECORRUPT;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            out, &mlen, NULL, sealed + HDR_SIZE, sealed_len - HDR_SIZE, ad,
            strlen((const char *)ad), sealed + 1, k->key) != 0)
        return LB_ECORRUPT;
    return (long)mlen;
}
