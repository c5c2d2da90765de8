/*
 * container.h - the libdistill file container: a magic, a format version
 * and a list of tagged, CRC-checked sections, little-endian.  Models,
 * checkpoints and teacher caches are all containers; they differ in their
 * magic and in the sections they hold.
 *
 * Layout (every integer little-endian, every float IEEE-754 binary32
 * little-endian):
 *
 *     offset  size  field
 *     0       8     magic, e.g. "DSTLMODL"
 *     8       4     u32 format version (>= 1)
 *     12      4     u32 section count, the final "END " section included
 *     16      ...   sections, back to back:
 *                     4  tag (four ASCII bytes, e.g. "GRPH", "END ")
 *                     4  u32 flags, 0 (a reader rejects anything else)
 *                     8  u64 payload length L
 *                     L  payload
 *                     4  u32 CRC-32 (IEEE) of the payload
 *
 * The last section is "END " with an empty payload; nothing may follow it.
 * A tag appears at most once.  The header and the section headers are not
 * in a CRC, but every byte of them is checked for an exact value or bounds
 * (a changed length moves the CRC and the next header out of place).
 *
 * Writing builds the whole file in memory (cw_*); errors are sticky, so a
 * writer can put many fields and check the status once.  Reading (cr_*)
 * first walks the whole buffer, checking every section header, every length
 * against the bytes that remain and every CRC, before the caller looks at a
 * single payload; payloads are then read through bounds-checked cursors
 * (cs_*) whose errors are sticky too and name the file and the section:
 *
 *     model file 'a.dstl': section PARM: CRC mismatch
 */
#ifndef DISTILL_CONTAINER_H
#define DISTILL_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define CONTAINER_HEADER_SIZE 16
#define SECTION_OVERHEAD 20 /* tag + flags + length + CRC */
#define CONTAINER_MAX_SECTIONS 64

/* ------------------------------------------------------------------ write */

typedef struct cwriter {
    unsigned char *buf;
    size_t len, cap;
    int status;             /* first error, DISTILL_OK while all is well */
    uint32_t n_sections;
    size_t section_start;   /* offset of the open section's header; SIZE_MAX if none */
} cwriter;

/* Start a container with `magic` (8 bytes) and `version`.  `reserve` is a
 * hint of the final size (0 for none).  Returns the status. */
int cw_begin(cwriter *w, const char *magic, uint32_t version, size_t reserve);
/* Open a section (tag: 4 bytes).  Sections cannot nest. */
void cw_section(cwriter *w, const char *tag);
/* Payload fields, appended to the open section. */
void cw_u8(cwriter *w, uint8_t v);
void cw_u32(cwriter *w, uint32_t v);
void cw_i32(cwriter *w, int32_t v);
void cw_u64(cwriter *w, uint64_t v);
void cw_i64(cwriter *w, int64_t v);
void cw_f32(cwriter *w, float v);
void cw_f32s(cwriter *w, const float *v, size_t n);
void cw_bytes(cwriter *w, const void *p, size_t n);
/* u32 length, then the bytes (no NUL). */
void cw_str(cwriter *w, const char *s);
/* Close the open section: fill in its length, append its CRC. */
void cw_end_section(cwriter *w);
/* Append the "END " section, fill in the section count and hand the buffer
 * over (*data is xmalloc'd, the caller xfree's it).  On any earlier error
 * the buffer is freed and that error returned. */
int cw_finish(cwriter *w, void **data, size_t *size);
/* Drop a writer that will not be finished. */
void cw_free(cwriter *w);

/* ------------------------------------------------------------------- read */

typedef struct csection_ref {
    char tag[5];
    size_t offset;          /* of the payload */
    size_t len;
} csection_ref;

typedef struct creader {
    const unsigned char *data;
    size_t size;
    const char *what;       /* "model file 'a.dstl'": prefix of every message */
    uint32_t version;
    int n_sections;         /* END excluded */
    csection_ref sections[CONTAINER_MAX_SECTIONS];
} creader;

/*
 * Check the header and every section of `size` bytes at `data`.  `magic`
 * must match; versions above max_version give DISTILL_EVERSION, every other
 * problem DISTILL_EFORMAT.  `what` names the source in messages and must
 * outlive the reader.  No allocation.
 */
int cr_open(creader *r, const void *data, size_t size, const char *magic,
            uint32_t max_version, const char *what);

/* A cursor over one section's payload. */
typedef struct csection {
    const unsigned char *p;
    size_t len, pos;
    const char *tag;
    const char *what;
    int status;             /* first error, sticky */
} csection;

/* Find section `tag`; returns 1 and sets *s if present, 0 if absent. */
int cr_find(const creader *r, const char *tag, csection *s);
/* DISTILL_EFORMAT naming the first section whose tag is not in the
 * NULL-terminated list `known`, else DISTILL_OK. */
int cr_check_tags(const creader *r, const char *const *known);
/* Fail with "<what>: section <tag>: <message>" (DISTILL_EFORMAT, or the
 * given status), keeping the first error. */
int cs_fail(csection *s, int status, const char *fmt, ...) DISTILL__PRINTF(3, 4);
/* Fields; past the end (or after an error) they return 0 and set the error. */
uint8_t cs_u8(csection *s);
uint32_t cs_u32(csection *s);
int32_t cs_i32(csection *s);
uint64_t cs_u64(csection *s);
int64_t cs_i64(csection *s);
float cs_f32(csection *s);
/* n floats into dst; returns the status. */
int cs_f32s(csection *s, float *dst, size_t n);
/* A pointer to the next n bytes (inside the reader's buffer), or NULL. */
const unsigned char *cs_bytes(csection *s, size_t n);
size_t cs_remaining(const csection *s);
/* The status; fails if bytes are left over. */
int cs_done(csection *s);

/* Byte order helpers, also for callers that write outside a cwriter. */
static inline void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static inline void put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

#endif /* DISTILL_CONTAINER_H */
