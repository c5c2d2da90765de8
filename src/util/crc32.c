/*
 * crc32.c - CRC-32 (IEEE 802.3) for the file formats' checksums.
 * Declared in util/util.h.
 */
#include "util/util.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Reflected CRC-32, polynomial 0xEDB88320, initial value and final xor
 * 0xFFFFFFFF (IEEE 802.3; zlib's crc32()).  The 256-entry table is computed
 * by the compiler: CRC_T(n) runs the eight shift/xor steps on byte n.
 */
#define CRC_1(c) (((c) >> 1) ^ (0xEDB88320u & (0u - ((c) & 1u))))
#define CRC_T(n) CRC_1(CRC_1(CRC_1(CRC_1(CRC_1(CRC_1(CRC_1(CRC_1((uint32_t)(n)))))))))
#define CRC_R4(n) CRC_T(n), CRC_T((n) + 1), CRC_T((n) + 2), CRC_T((n) + 3)
#define CRC_R16(n) CRC_R4(n), CRC_R4((n) + 4), CRC_R4((n) + 8), CRC_R4((n) + 12)
#define CRC_R64(n) CRC_R16(n), CRC_R16((n) + 16), CRC_R16((n) + 32), CRC_R16((n) + 48)

static const uint32_t crc_table[256] = {
    CRC_R64(0), CRC_R64(64), CRC_R64(128), CRC_R64(192),
};

uint32_t crc32_update(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return ~c;
}
