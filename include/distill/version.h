/*
 * distill/version.h - the version of the headers.
 *
 * The build reads the three numbers below; they are the only place the
 * version is written.  distill_version() gives the loaded library's.
 */
#ifndef DISTILL_VERSION_H
#define DISTILL_VERSION_H

#define DISTILL_VERSION_MAJOR 0
#define DISTILL_VERSION_MINOR 1
#define DISTILL_VERSION_PATCH 0

#define DISTILL_VERSION_NUMBER \
    (DISTILL_VERSION_MAJOR * 10000 + DISTILL_VERSION_MINOR * 100 + DISTILL_VERSION_PATCH)

#define DISTILL__STR2(x) #x
#define DISTILL__STR(x) DISTILL__STR2(x)
#define DISTILL_VERSION_STRING                                      \
    DISTILL__STR(DISTILL_VERSION_MAJOR) "." DISTILL__STR(DISTILL_VERSION_MINOR) "." \
    DISTILL__STR(DISTILL_VERSION_PATCH)

#endif /* DISTILL_VERSION_H */
