/* failalloc.h: a counting, failing, tracking PyMem allocator (RAW/MEM/OBJ) for allocation-failure tests (C and C++). */
#ifndef COEXTRA_TEST_FAILALLOC_H
#define COEXTRA_TEST_FAILALLOC_H

/*
 * Wraps the three PyMem domains with PyMem_SetAllocator (as _testcapi's
 * set_nomemory does) and offers:
 *
 *   fa_arm(n, from, mask)  the n-th allocation (1-based) made from now on by
 *                          THIS thread in one of the domains of `mask` fails;
 *                          with `from`, every later one fails too
 *   fa_disarm()            stop failing; fa_seen() / fa_failed() tell how many
 *                          allocations were counted and failed while armed
 *   fa_track(1)            start recording every block allocated from now on
 *                          (in any domain, any thread) until it is freed;
 *                          fa_outstanding(d) is the number still live
 *
 * A sweep arms n = 1, 2, ... around one operation until an operation runs
 * with fa_failed() == 0: every allocation the operation makes has then failed
 * once.  Nothing here allocates through Python: the tracking table uses the
 * C library directly.  All state is process-wide; the RAW domain may be
 * called without the GIL, so the table sits behind a spin lock.
 */

#include <Python.h>
#include <pythread.h>
#include <stdlib.h>
#include <string.h>

#define FA_RAW 1u
#define FA_MEM 2u
#define FA_OBJ 4u
#define FA_ALL 7u

typedef struct fa_entry_ {
    void *ptr; /* NULL = empty, FA_TOMB_ = deleted */
    int domain;
} fa_entry_;

#define FA_TOMB_ ((void *)1)

typedef struct fa_state_ {
    int installed;
    PyMemAllocatorEx orig[3];
    /* failing */
    int armed;
    int fail_from;
    unsigned mask;
    unsigned long thread;
    long countdown;
    long seen;
    long failed;
    /* tracking */
    int tracking;
    int lock;
    fa_entry_ *table;
    size_t cap, used, live;
    long outstanding[3];
} fa_state_;

static fa_state_ fa_;

static inline int fa_domain_bit_(int d) { return d == PYMEM_DOMAIN_RAW ? FA_RAW : d == PYMEM_DOMAIN_MEM ? FA_MEM : FA_OBJ; }

static inline void fa_lock_(void) {
    while (__atomic_exchange_n(&fa_.lock, 1, __ATOMIC_ACQUIRE))
        ;
}
static inline void fa_unlock_(void) { __atomic_store_n(&fa_.lock, 0, __ATOMIC_RELEASE); }

static inline size_t fa_hash_(void *p, size_t cap) {
    size_t h = (size_t)(uintptr_t)p;
    h ^= h >> 17;
    h *= (size_t)0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    return h & (cap - 1);
}

/* Caller holds the lock. */
static inline void fa_insert_locked_(void *p, int domain);
static inline void fa_rehash_locked_(size_t newcap) {
    fa_entry_ *old = fa_.table;
    size_t oldcap = fa_.cap, i;
    fa_entry_ *t = (fa_entry_ *)calloc(newcap, sizeof(fa_entry_));
    if (t == NULL)
        abort(); /* the test harness itself cannot go on */
    fa_.table = t;
    fa_.cap = newcap;
    fa_.used = fa_.live = 0;
    for (i = 0; i < oldcap; i++)
        if (old[i].ptr != NULL && old[i].ptr != FA_TOMB_)
            fa_insert_locked_(old[i].ptr, old[i].domain);
    free(old);
}

static inline void fa_insert_locked_(void *p, int domain) {
    size_t i;
    if ((fa_.used + 1) * 10 >= fa_.cap * 7)
        fa_rehash_locked_(fa_.live * 4 > fa_.cap ? fa_.cap * 2 : fa_.cap);
    i = fa_hash_(p, fa_.cap);
    while (fa_.table[i].ptr != NULL && fa_.table[i].ptr != FA_TOMB_)
        i = (i + 1) & (fa_.cap - 1);
    if (fa_.table[i].ptr == NULL)
        fa_.used++;
    fa_.table[i].ptr = p;
    fa_.table[i].domain = domain;
    fa_.live++;
    fa_.outstanding[domain]++;
}

/* 1 if p was tracked (and is now forgotten). */
static inline int fa_remove_locked_(void *p) {
    size_t i;
    if (fa_.table == NULL)
        return 0;
    i = fa_hash_(p, fa_.cap);
    while (fa_.table[i].ptr != NULL) {
        if (fa_.table[i].ptr == p) {
            fa_.outstanding[fa_.table[i].domain]--;
            fa_.table[i].ptr = FA_TOMB_;
            fa_.live--;
            return 1;
        }
        i = (i + 1) & (fa_.cap - 1);
    }
    return 0;
}

static inline void fa_note_alloc_(void *p, int domain) {
    if (p == NULL || !__atomic_load_n(&fa_.tracking, __ATOMIC_RELAXED))
        return;
    fa_lock_();
    if (fa_.tracking)
        fa_insert_locked_(p, domain);
    fa_unlock_();
}

static inline int fa_note_free_(void *p) {
    int was;
    if (p == NULL || !__atomic_load_n(&fa_.tracking, __ATOMIC_RELAXED))
        return 0;
    fa_lock_();
    was = fa_.tracking ? fa_remove_locked_(p) : 0;
    fa_unlock_();
    return was;
}

/* 1 = this allocation must fail.  Only the arming thread's allocations count. */
static inline int fa_should_fail_(int domain) {
    if (!fa_.armed || !(fa_.mask & (unsigned)fa_domain_bit_(domain)))
        return 0;
    if (PyThread_get_thread_ident() != fa_.thread)
        return 0;
    fa_.seen++;
    if (fa_.countdown > 0 && --fa_.countdown == 0) {
        fa_.failed++;
        return 1;
    }
    if (fa_.countdown == 0 && fa_.fail_from) {
        fa_.failed++;
        return 1;
    }
    return 0;
}

static void *fa_malloc_(void *ctx, size_t size) {
    int d = (int)(intptr_t)ctx;
    void *p;
    if (fa_should_fail_(d))
        return NULL;
    p = fa_.orig[d].malloc(fa_.orig[d].ctx, size);
    fa_note_alloc_(p, d);
    return p;
}

static void *fa_calloc_(void *ctx, size_t nelem, size_t elsize) {
    int d = (int)(intptr_t)ctx;
    void *p;
    if (fa_should_fail_(d))
        return NULL;
    p = fa_.orig[d].calloc(fa_.orig[d].ctx, nelem, elsize);
    fa_note_alloc_(p, d);
    return p;
}

static void *fa_realloc_(void *ctx, void *ptr, size_t size) {
    int d = (int)(intptr_t)ctx;
    void *p;
    int tracked;
    if (fa_should_fail_(d))
        return NULL; /* like realloc: the old block stays valid */
    tracked = fa_note_free_(ptr);
    p = fa_.orig[d].realloc(fa_.orig[d].ctx, ptr, size);
    if (p == NULL) {
        if (tracked)
            fa_note_alloc_(ptr, d); /* still live */
        return NULL;
    }
    /* A block made before tracking began stays untracked when it moves. */
    if (tracked || ptr == NULL)
        fa_note_alloc_(p, d);
    return p;
}

static void fa_free_(void *ctx, void *ptr) {
    int d = (int)(intptr_t)ctx;
    fa_note_free_(ptr);
    fa_.orig[d].free(fa_.orig[d].ctx, ptr);
}

/* Install the wrappers (idempotent).  Needs the GIL. */
static inline void fa_install(void) {
    int d;
    if (fa_.installed)
        return;
    for (d = 0; d < 3; d++) {
        PyMemAllocatorEx a;
        PyMem_GetAllocator((PyMemAllocatorDomain)d, &fa_.orig[d]);
        a.ctx = (void *)(intptr_t)d;
        a.malloc = fa_malloc_;
        a.calloc = fa_calloc_;
        a.realloc = fa_realloc_;
        a.free = fa_free_;
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &a);
    }
    fa_.installed = 1;
}

/* Put the original allocators back.  Blocks made through the wrappers were
 * made by the originals, so they stay valid. */
static inline void fa_uninstall(void) {
    int d;
    if (!fa_.installed)
        return;
    fa_.armed = 0;
    for (d = 2; d >= 0; d--)
        PyMem_SetAllocator((PyMemAllocatorDomain)d, &fa_.orig[d]);
    fa_.installed = 0;
}

static inline void fa_arm(long n, int from, unsigned mask) {
    fa_.thread = PyThread_get_thread_ident();
    fa_.seen = 0;
    fa_.failed = 0;
    fa_.countdown = n;
    fa_.fail_from = from;
    fa_.mask = mask;
    fa_.armed = 1;
}

static inline void fa_disarm(void) { fa_.armed = 0; }
static inline long fa_seen(void) { return fa_.seen; }
static inline long fa_failed(void) { return fa_.failed; }

/* Start (1) or stop (0) tracking; starting forgets everything tracked before. */
static inline void fa_track(int on) {
    fa_lock_();
    free(fa_.table);
    fa_.table = NULL;
    fa_.cap = fa_.used = fa_.live = 0;
    memset(fa_.outstanding, 0, sizeof fa_.outstanding);
    if (on) {
        fa_.cap = 1u << 16;
        fa_.table = (fa_entry_ *)calloc(fa_.cap, sizeof(fa_entry_));
        if (fa_.table == NULL)
            abort();
    }
    __atomic_store_n(&fa_.tracking, on, __ATOMIC_RELEASE);
    fa_unlock_();
}

/* Live tracked blocks of one domain (PYMEM_DOMAIN_*), or of all with -1. */
static inline long fa_outstanding(int domain) {
    long n;
    fa_lock_();
    n = domain < 0 ? (long)fa_.live : fa_.outstanding[domain];
    fa_unlock_();
    return n;
}

#endif /* COEXTRA_TEST_FAILALLOC_H */
