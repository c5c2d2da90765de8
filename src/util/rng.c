/*
 * rng.c - the splitmix64 mixer and generator, and the seeded generator
 * (splitmix64-seeded xoshiro256**).  Declared in util/util.h.
 */
#include "util/util.h"

#include <math.h>
#include <stdint.h>

uint64_t splitmix64_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t splitmix64(uint64_t *state)
{
    return splitmix64_mix(*state += SPLITMIX64_GAMMA);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void rng_seed(rng *r, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&sm);
    /* splitmix64 is a bijection of its counter, so four outputs are never
     * all zero; the check keeps the xoshiro invariant explicit. */
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

/* xoshiro256** */
uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

double rng_uniform(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

float rng_normal(rng *r)
{
    /* u1 in (0, 1] so log(u1) is finite; one output per call (the second
     * Box-Muller value is dropped so the generator state stays the whole
     * state). */
    double u1 = 1.0 - rng_uniform(r);
    double u2 = rng_uniform(r);
    double radius = sqrt(-2.0 * log(u1));
    return (float)(radius * cos(6.283185307179586476925286766559 * u2));
}

uint64_t rng_below(rng *r, uint64_t n)
{
    if (n <= 1)
        return 0;
    /* Reject the low 2^64 mod n values so every residue is equally likely. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = rng_next(r);
        if (x >= threshold)
            return x % n;
    }
}
