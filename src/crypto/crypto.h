/* Cryptography over libsodium: the master key, sealed secrets, HMAC-SHA256
 * verification, MACs for short-lived grants, random ids. lb_crypto_init()
 * (sodium_init) runs once in main before any thread starts. */
#ifndef LB_CRYPTO_CRYPTO_H
#define LB_CRYPTO_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define LB_KEY_SIZE 32

/* Version byte in front of every sealed value; a new master key scheme gets
 * a new version and old values stay readable. */
#define LB_SEAL_VERSION 1
/* Bytes a sealed value adds to its plaintext: version + nonce + MAC. */
#define LB_SEAL_OVERHEAD (1 + 24 + 16)

int lb_crypto_init(void);

typedef struct {
    uint8_t key[LB_KEY_SIZE];
} lb_master_key;

/* Decodes 32 bytes given as 64 hex digits or base64 (standard or URL-safe,
 * padding optional); leading/trailing whitespace ignored. 0 or LB_EINVAL. */
int lb_key_decode(const char *text, lb_master_key *out);

/* Resolves the master key: from `configured` (the LEVERBRIDGE_MASTER_KEY value)
 * when not NULL, else from the file at path, else generates one and writes it
 * there (hex + newline, mode 0600, created exclusively and fsynced, missing
 * parent directories created with mode 0700; never overwrites). 0, or a
 * negative code (LB_EINVAL for a bad configured value, LB_ECORRUPT for a file
 * that does not decode, -errno for I/O) with one line in err naming
 * LEVERBRIDGE_MASTER_KEY or the file. */
int lb_key_load(const char *configured, const char *path, lb_master_key *out, char *err,
                size_t errlen);

/* Same for the admin token (LEVERBRIDGE_ADMIN_TOKEN): configured value, else the
 * file, else a new random token (32 bytes, URL-safe base64 without padding)
 * written with mode 0600. A configured or stored token must be 16..256
 * printable characters without spaces (surrounding whitespace is trimmed).
 * *out is lb_malloc'd (NULL on error). */
int lb_token_load(const char *configured, const char *path, char **out, char *err, size_t errlen);

/* Seals plaintext bound to `context` (the owning row, e.g. "connection:acme:api_key";
 * NULL is the same as ""). Format:
 *   [LB_SEAL_VERSION][24-byte random nonce][XChaCha20-Poly1305 ciphertext + 16-byte tag]
 * (crypto_aead_xchacha20poly1305_ietf) with the context as associated data: it is
 * authenticated but not stored, so a value moved to another row fails to open.
 * out must hold lb_seal_size(len, strlen(context)) bytes, which is always
 * len + LB_SEAL_OVERHEAD (context_len is accepted for future formats).
 * Returns bytes written. */
size_t lb_seal_size(size_t len, size_t context_len);
size_t lb_seal(const lb_master_key *k, const char *context, const void *plain, size_t len,
               uint8_t *out);
/* Opens what lb_seal made. Returns plaintext length (>= 0) written to out
 * (which must hold sealed_len bytes), or LB_ECORRUPT on any mismatch: wrong
 * key, wrong context, tampered bytes, unknown version. */
long lb_open(const lb_master_key *k, const char *context, const uint8_t *sealed, size_t sealed_len,
             uint8_t *out);

/* HMAC-SHA256 with a key of any length. */
void lb_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                    uint8_t out[32]);
/* Lever's webhook signature: hex(HMAC-SHA256(signature_token, token || triggered_at)).
 * Decodes sig_hex (exactly 64 hex digits, either case) and compares in constant
 * time. 1 when valid, 0 otherwise (also for an empty signature_token). */
int lb_lever_signature_ok(const char *signature_token, size_t toklen, const char *token,
                          size_t token_len, const char *triggered_at, size_t ta_len,
                          const char *sig_hex, size_t sig_len);

/* Constant-time equality of two byte strings of possibly different lengths
 * (time depends only on the lengths). 1 when equal. */
int lb_secure_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Random bytes, and random URL-safe ids: prefix + base64url of nbytes random
 * bytes (no padding). lb_random_id("ev_", 16) -> "ev_<22 chars>". *out lb_malloc'd. */
void lb_random_bytes(void *buf, size_t n);
char *lb_random_id(const char *prefix, size_t nbytes);

/* Like lb_random_id, but the id starts with the time (12 hex digits of ms
 * since the epoch), so ids made later sort later: a table keyed by them
 * grows at its right edge instead of touching a random page per insert.
 * nbytes random bytes follow (>= 10 keeps ids unguessable). */
char *lb_sortable_id(const char *prefix, int64_t now_ms, size_t nbytes);
/* The same id written into out[0..size) without allocating: 0, or
 * LB_ETOOBIG (out untouched) when it does not fit with its NUL. */
int lb_sortable_id_buf(char *out, size_t size, const char *prefix, int64_t now_ms, size_t nbytes);

/* Hex encoding (lower case); out must hold 2*n+1. */
void lb_hex_encode(const uint8_t *in, size_t n, char *out);

#endif
