/*
 * container.c - writing and reading the tagged, CRC-checked container that
 * every libdistill file uses.  The layout is described in container.h.
 */
#include "util/container.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ================================================================= write */

static int cw_reserve(cwriter *w, size_t extra)
{
    if (w->status != DISTILL_OK)
        return w->status;
    size_t need;
    if (size_add(w->len, extra, &need) != 0) {
        w->status = seterr(DISTILL_ENOMEM, "file too large to build in memory");
        return w->status;
    }
    if (need <= w->cap)
        return DISTILL_OK;
    size_t ncap = w->cap ? w->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    unsigned char *nb = xrealloc(w->buf, ncap);
    if (!nb) {
        w->status = DISTILL_ENOMEM;
        return w->status;
    }
    w->buf = nb;
    w->cap = ncap;
    return DISTILL_OK;
}

static unsigned char *cw_grow(cwriter *w, size_t n)
{
    if (cw_reserve(w, n) != DISTILL_OK)
        return NULL;
    unsigned char *p = w->buf + w->len;
    w->len += n;
    return p;
}

int cw_begin(cwriter *w, const char *magic, uint32_t version, size_t reserve)
{
    memset(w, 0, sizeof *w);
    w->section_start = SIZE_MAX;
    size_t hint;
    if (size_add(reserve, CONTAINER_HEADER_SIZE + SECTION_OVERHEAD, &hint) != 0)
        hint = CONTAINER_HEADER_SIZE + SECTION_OVERHEAD;
    if (cw_reserve(w, hint) != DISTILL_OK)
        return w->status;
    unsigned char *p = cw_grow(w, CONTAINER_HEADER_SIZE);
    memcpy(p, magic, 8);
    put_le32(p + 8, version);
    put_le32(p + 12, 0); /* section count, filled in by cw_finish */
    return DISTILL_OK;
}

void cw_section(cwriter *w, const char *tag)
{
    if (w->status != DISTILL_OK)
        return;
    if (w->section_start != SIZE_MAX) {
        w->status = seterr(DISTILL_EINVAL, "container: section '%.4s' opened inside another", tag);
        return;
    }
    size_t start = w->len;
    unsigned char *p = cw_grow(w, 16);
    if (!p)
        return;
    memcpy(p, tag, 4);
    put_le32(p + 4, 0);  /* flags */
    put_le64(p + 8, 0);  /* length, filled in by cw_end_section */
    w->section_start = start;
}

static unsigned char *cw_field(cwriter *w, size_t n)
{
    if (w->status != DISTILL_OK)
        return NULL;
    if (w->section_start == SIZE_MAX) {
        w->status = seterr(DISTILL_EINVAL, "container: field written outside a section");
        return NULL;
    }
    return cw_grow(w, n);
}

void cw_u8(cwriter *w, uint8_t v)
{
    unsigned char *p = cw_field(w, 1);
    if (p)
        *p = v;
}

void cw_u32(cwriter *w, uint32_t v)
{
    unsigned char *p = cw_field(w, 4);
    if (p)
        put_le32(p, v);
}

void cw_i32(cwriter *w, int32_t v)
{
    cw_u32(w, (uint32_t)v);
}

void cw_u64(cwriter *w, uint64_t v)
{
    unsigned char *p = cw_field(w, 8);
    if (p)
        put_le64(p, v);
}

void cw_i64(cwriter *w, int64_t v)
{
    cw_u64(w, (uint64_t)v);
}

static uint32_t f32_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

void cw_f32(cwriter *w, float v)
{
    cw_u32(w, f32_bits(v));
}

void cw_f32s(cwriter *w, const float *v, size_t n)
{
    size_t bytes;
    if (size_mul(n, 4, &bytes) != 0) {
        if (w->status == DISTILL_OK)
            w->status = seterr(DISTILL_ENOMEM, "file too large to build in memory");
        return;
    }
    unsigned char *p = cw_field(w, bytes);
    if (!p)
        return;
    for (size_t i = 0; i < n; i++)
        put_le32(p + 4 * i, f32_bits(v[i]));
}

void cw_bytes(cwriter *w, const void *src, size_t n)
{
    unsigned char *p = cw_field(w, n);
    if (p && n)
        memcpy(p, src, n);
}

void cw_str(cwriter *w, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT32_MAX) {
        if (w->status == DISTILL_OK)
            w->status = seterr(DISTILL_EINVAL, "container: string too long");
        return;
    }
    cw_u32(w, (uint32_t)n);
    cw_bytes(w, s, n);
}

void cw_end_section(cwriter *w)
{
    if (w->status != DISTILL_OK)
        return;
    if (w->section_start == SIZE_MAX) {
        w->status = seterr(DISTILL_EINVAL, "container: no open section to end");
        return;
    }
    size_t payload = w->section_start + 16;
    size_t len = w->len - payload;
    uint32_t crc = crc32_update(0, w->buf + payload, len);
    put_le64(w->buf + w->section_start + 8, (uint64_t)len);
    w->section_start = SIZE_MAX;
    unsigned char *p = cw_grow(w, 4);
    if (!p)
        return;
    put_le32(p, crc);
    if (w->n_sections == UINT32_MAX)
        w->status = seterr(DISTILL_EINVAL, "container: too many sections");
    w->n_sections++;
}

int cw_finish(cwriter *w, void **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    if (w->status == DISTILL_OK && w->section_start != SIZE_MAX)
        w->status = seterr(DISTILL_EINVAL, "container: a section was left open");
    cw_section(w, "END ");
    cw_end_section(w);
    if (w->status != DISTILL_OK) {
        int rc = w->status;
        cw_free(w);
        w->status = rc;
        return rc;
    }
    put_le32(w->buf + 12, w->n_sections);
    *data = w->buf;
    *size = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return DISTILL_OK;
}

void cw_free(cwriter *w)
{
    xfree(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
    w->section_start = SIZE_MAX;
}

/* ================================================================== read */

static int tag_printable(const unsigned char *t)
{
    for (int i = 0; i < 4; i++)
        if (t[i] < 0x20 || t[i] > 0x7E)
            return 0;
    return 1;
}

/* A tag for messages: itself if printable, else its bytes in hex. */
static void tag_text(const unsigned char *t, char out[12])
{
    if (tag_printable(t)) {
        memcpy(out, t, 4);
        out[4] = '\0';
    } else {
        snprintf(out, 12, "0x%02X%02X%02X%02X", t[0], t[1], t[2], t[3]);
    }
}

int cr_open(creader *r, const void *data, size_t size, const char *magic,
            uint32_t max_version, const char *what)
{
    memset(r, 0, sizeof *r);
    r->data = data;
    r->size = size;
    r->what = what ? what : "file";
    const unsigned char *d = data;
    if (!d && size)
        return seterr(DISTILL_EINVAL, "%s: no data", r->what);
    if (size < CONTAINER_HEADER_SIZE)
        return seterr(DISTILL_EFORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header",
                      r->what, size, CONTAINER_HEADER_SIZE);
    if (memcmp(d, magic, 8) != 0)
        return seterr(DISTILL_EFORMAT, "%s: not a libdistill %.8s file (bad magic)", r->what,
                      magic);
    r->version = get_le32(d + 8);
    if (r->version == 0)
        return seterr(DISTILL_EFORMAT, "%s: invalid format version 0", r->what);
    if (r->version > max_version)
        return seterr(DISTILL_EVERSION,
                      "%s: format version %u is newer than this library reads (up to %u)",
                      r->what, (unsigned)r->version, (unsigned)max_version);
    uint32_t count = get_le32(d + 12);
    if (count == 0)
        return seterr(DISTILL_EFORMAT, "%s: section count is 0 (no END section)", r->what);
    if ((uint64_t)count > (size - CONTAINER_HEADER_SIZE) / SECTION_OVERHEAD)
        return seterr(DISTILL_EFORMAT, "%s: section count %u does not fit in %zu bytes",
                      r->what, (unsigned)count, size);

    size_t pos = CONTAINER_HEADER_SIZE;
    uint32_t index = 0;
    for (;;) {
        char tag[12];
        size_t left = size - pos;
        if (left < 16) {
            return seterr(DISTILL_EFORMAT,
                          "%s: truncated: section %u header at offset %zu needs 16 bytes, %zu left",
                          r->what, (unsigned)index, pos, left);
        }
        const unsigned char *h = d + pos;
        tag_text(h, tag);
        uint32_t flags = get_le32(h + 4);
        uint64_t len = get_le64(h + 8);
        if (!tag_printable(h))
            return seterr(DISTILL_EFORMAT, "%s: section %u at offset %zu: invalid tag %s",
                          r->what, (unsigned)index, pos, tag);
        if (flags != 0)
            return seterr(DISTILL_EFORMAT, "%s: section %s: unknown flags 0x%08X", r->what, tag,
                          (unsigned)flags);
        left -= 16;
        if (len > left || left - len < 4)
            return seterr(DISTILL_EFORMAT,
                          "%s: section %s: payload of %llu bytes runs past the end of the data "
                          "(%zu bytes left)",
                          r->what, tag, (unsigned long long)len, left);
        size_t off = pos + 16;
        uint32_t stored = get_le32(d + off + (size_t)len);
        uint32_t crc = crc32_update(0, d + off, (size_t)len);
        if (crc != stored)
            return seterr(DISTILL_EFORMAT, "%s: section %s: CRC mismatch", r->what, tag);
        pos = off + (size_t)len + 4;
        index++;
        if (memcmp(h, "END ", 4) == 0) {
            if (len != 0)
                return seterr(DISTILL_EFORMAT, "%s: section END: payload is not empty", r->what);
            break;
        }
        for (int i = 0; i < r->n_sections; i++)
            if (memcmp(r->sections[i].tag, h, 4) == 0)
                return seterr(DISTILL_EFORMAT, "%s: section %s appears twice", r->what, tag);
        if (r->n_sections == CONTAINER_MAX_SECTIONS)
            return seterr(DISTILL_EFORMAT, "%s: more than %d sections", r->what,
                          CONTAINER_MAX_SECTIONS);
        if (index >= count)
            return seterr(DISTILL_EFORMAT, "%s: more sections than the %u the header declares",
                          r->what, (unsigned)count);
        csection_ref *ref = &r->sections[r->n_sections++];
        memcpy(ref->tag, h, 4);
        ref->tag[4] = '\0';
        ref->offset = off;
        ref->len = (size_t)len;
    }
    if (index != count)
        return seterr(DISTILL_EFORMAT, "%s: header declares %u sections, found %u", r->what,
                      (unsigned)count, (unsigned)index);
    if (pos != size)
        return seterr(DISTILL_EFORMAT, "%s: %zu bytes of trailing data after the END section",
                      r->what, size - pos);
    return DISTILL_OK;
}

int cr_find(const creader *r, const char *tag, csection *s)
{
    for (int i = 0; i < r->n_sections; i++) {
        const csection_ref *ref = &r->sections[i];
        if (memcmp(ref->tag, tag, 4) == 0) {
            s->p = r->data + ref->offset;
            s->len = ref->len;
            s->pos = 0;
            s->tag = ref->tag;
            s->what = r->what;
            s->status = DISTILL_OK;
            return 1;
        }
    }
    return 0;
}

int cr_check_tags(const creader *r, const char *const *known)
{
    for (int i = 0; i < r->n_sections; i++) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (memcmp(r->sections[i].tag, *k, 4) == 0)
                ok = 1;
        if (!ok)
            return seterr(DISTILL_EFORMAT, "%s: unknown section %s", r->what,
                          r->sections[i].tag);
    }
    return DISTILL_OK;
}

int cs_fail(csection *s, int status, const char *fmt, ...)
{
    if (s->status != DISTILL_OK)
        return s->status;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->status = seterr(status, "%s: section %s: %s", s->what, s->tag, msg);
    return s->status;
}

static const unsigned char *cs_take(csection *s, size_t n)
{
    if (s->status != DISTILL_OK)
        return NULL;
    if (n > s->len - s->pos) {
        cs_fail(s, DISTILL_EFORMAT, "truncated: %zu bytes needed at offset %zu, %zu left", n,
                s->pos, s->len - s->pos);
        return NULL;
    }
    const unsigned char *p = s->p + s->pos;
    s->pos += n;
    return p;
}

uint8_t cs_u8(csection *s)
{
    const unsigned char *p = cs_take(s, 1);
    return p ? *p : 0;
}

uint32_t cs_u32(csection *s)
{
    const unsigned char *p = cs_take(s, 4);
    return p ? get_le32(p) : 0;
}

int32_t cs_i32(csection *s)
{
    uint32_t u = cs_u32(s);
    int32_t v;
    memcpy(&v, &u, 4); /* two's complement, no implementation-defined cast */
    return v;
}

uint64_t cs_u64(csection *s)
{
    const unsigned char *p = cs_take(s, 8);
    return p ? get_le64(p) : 0;
}

int64_t cs_i64(csection *s)
{
    uint64_t u = cs_u64(s);
    int64_t v;
    memcpy(&v, &u, 8);
    return v;
}

float cs_f32(csection *s)
{
    uint32_t u = cs_u32(s);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

int cs_f32s(csection *s, float *dst, size_t n)
{
    size_t bytes;
    if (size_mul(n, 4, &bytes) != 0)
        return cs_fail(s, DISTILL_EFORMAT, "%zu floats do not fit in memory", n);
    const unsigned char *p = cs_take(s, bytes);
    if (!p)
        return s->status;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get_le32(p + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
    return DISTILL_OK;
}

const unsigned char *cs_bytes(csection *s, size_t n)
{
    return cs_take(s, n);
}

size_t cs_remaining(const csection *s)
{
    return s->len - s->pos;
}

int cs_done(csection *s)
{
    if (s->status == DISTILL_OK && s->pos != s->len)
        cs_fail(s, DISTILL_EFORMAT, "%zu unexpected bytes at the end", s->len - s->pos);
    return s->status;
}
