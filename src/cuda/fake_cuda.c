/* A stand-in for libcuda.so.1, for tests on machines without a GPU (see fake_driver_tests.rs).
 *
 * "Device" memory is host memory, every operation runs at once (synchronously), except that a
 * stream being captured records operations into a graph, run when the graph is launched. This
 * checks the Rust layer's argument order, offsets, sizes, capture logic and resource handling; it
 * says nothing about real asynchronous behaviour, which only the GPU self test checks.
 *
 * Compiled by the tests with -DFAKE_BROKEN (only cuInit and cuDeviceGetCount: a driver lacking
 * symbols) or -DFAKE_NO_DEVICE (cuInit fails with CUDA_ERROR_NO_DEVICE), or neither (working). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef uint64_t CUdeviceptr;

enum {
  OK = 0, ERR_INVALID_VALUE = 1, ERR_NO_DEVICE = 100, ERR_INVALID_DEVICE = 101,
  ERR_INVALID_HANDLE = 400, ERR_CAPTURE_UNSUPPORTED = 900, ERR_CAPTURE_INVALIDATED = 901,
  ERR_CAPTURE_ISOLATION = 905,
};

#ifdef FAKE_NO_DEVICE
CUresult cuInit(unsigned flags) { (void)flags; return ERR_NO_DEVICE; }
#else
CUresult cuInit(unsigned flags) { (void)flags; return OK; }
#endif

static int device_count(void) {
  const char *n = getenv("FAKE_CUDA_DEVICES");
  return n ? atoi(n) : 1;
}

CUresult cuDeviceGetCount(int *n) { *n = device_count(); return OK; }

#if !defined(FAKE_BROKEN) && !defined(FAKE_NO_DEVICE)

#define TOTAL_MEM (80ull << 30)
static uint64_t allocated[8];

typedef struct { int dev; } Ctx;
static Ctx contexts[8];
static __thread Ctx *current;

typedef struct { int recorded; uint64_t ns; } Event;

enum { OP_COPY, OP_SET, OP_RECORD };
typedef struct { int kind; void *dst; const void *src; size_t n; int value; Event *event; } Op;
typedef struct { Op *ops; size_t n, cap; } Graph;
typedef struct { int dev; int capture; /* 0 none, 1 active, 2 invalidated */ Graph *graph; } Stream;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void run(const Op *op) {
  switch (op->kind) {
  case OP_COPY: memmove(op->dst, op->src, op->n); break;
  case OP_SET: memset(op->dst, op->value, op->n); break;
  case OP_RECORD: op->event->recorded = 1; op->event->ns = now_ns(); break;
  }
}

/* Runs `op` now, or appends it to the stream's capture. */
static CUresult submit(Stream *s, Op op) {
  if (!current) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
  if (s && s->capture == 2) return ERR_CAPTURE_INVALIDATED;
  if (s && s->capture == 1) {
    Graph *g = s->graph;
    if (g->n == g->cap) {
      g->cap = g->cap ? 2 * g->cap : 8;
      g->ops = realloc(g->ops, g->cap * sizeof(Op));
    }
    g->ops[g->n++] = op;
    return OK;
  }
  run(&op);
  return OK;
}

/* A blocking call on a capturing stream: refused, and the capture is invalidated (as CUDA does). */
static CUresult blocking(Stream *s) {
  if (s && s->capture) { s->capture = 2; return ERR_CAPTURE_UNSUPPORTED; }
  return OK;
}

CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
  if (ordinal < 0 || ordinal >= device_count()) return ERR_INVALID_DEVICE;
  *d = ordinal;
  return OK;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
  (void)d;
  strncpy(name, "Fake GPU 80GB", (size_t)len);
  return OK;
}
CUresult cuDeviceGetUuid_v2(unsigned char *uuid, CUdevice d) {
  for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(i * 17 + d);
  return OK;
}
CUresult cuDeviceGetUuid(unsigned char *uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }
CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
  (void)d;
  *v = attr == 75 ? 9 : 0; /* compute capability 9.0; no memory pools */
  return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) { (void)d; *bytes = TOTAL_MEM; return OK; }
CUresult cuDeviceCanAccessPeer(int *can, CUdevice a, CUdevice b) { *can = a != b; return OK; }

CUresult cuDevicePrimaryCtxRetain(Ctx **ctx, CUdevice d) {
  contexts[d].dev = d;
  *ctx = &contexts[d];
  return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return OK; }
CUresult cuCtxGetCurrent(Ctx **ctx) { *ctx = current; return OK; }
CUresult cuCtxSetCurrent(Ctx *ctx) { current = ctx; return OK; }
CUresult cuCtxSynchronize(void) { return current ? OK : 201; }
CUresult cuCtxEnablePeerAccess(Ctx *peer, unsigned flags) { (void)peer; (void)flags; return OK; }

CUresult cuStreamCreate(Stream **s, unsigned flags) {
  (void)flags;
  if (!current) return 201;
  *s = calloc(1, sizeof(Stream));
  (*s)->dev = current->dev;
  return OK;
}
CUresult cuStreamDestroy_v2(Stream *s) { free(s); return OK; }
CUresult cuStreamSynchronize(Stream *s) { return blocking(s); }
CUresult cuStreamIsCapturing(Stream *s, int *status) { *status = s ? s->capture : 0; return OK; }
CUresult cuStreamBeginCapture_v2(Stream *s, int mode) {
  (void)mode;
  if (!s || s->capture) return ERR_INVALID_VALUE;
  s->capture = 1;
  s->graph = calloc(1, sizeof(Graph));
  return OK;
}
CUresult cuStreamEndCapture(Stream *s, Graph **g) {
  if (!s || !s->capture) return ERR_INVALID_VALUE;
  int invalidated = s->capture == 2;
  s->capture = 0;
  if (invalidated) {
    free(s->graph->ops); free(s->graph); s->graph = NULL; *g = NULL;
    return ERR_CAPTURE_INVALIDATED;
  }
  *g = s->graph;
  s->graph = NULL;
  return OK;
}
CUresult cuStreamWaitEvent(Stream *s, Event *e, unsigned flags) {
  (void)e; (void)flags;
  /* Waiting, in a capture, on an event recorded outside it is an error. */
  if (s && s->capture) { s->capture = 2; return ERR_CAPTURE_ISOLATION; }
  return OK;
}

CUresult cuGraphInstantiateWithFlags(Graph **exec, Graph *g, unsigned long long flags) {
  (void)flags;
  Graph *copy = calloc(1, sizeof(Graph));
  copy->n = copy->cap = g->n;
  copy->ops = malloc(g->n * sizeof(Op) + 1);
  memcpy(copy->ops, g->ops, g->n * sizeof(Op));
  *exec = copy;
  return OK;
}
CUresult cuGraphLaunch(Graph *exec, Stream *s) {
  if (s && s->capture) return ERR_CAPTURE_UNSUPPORTED;
  for (size_t i = 0; i < exec->n; i++) run(&exec->ops[i]);
  return OK;
}
CUresult cuGraphUpload(Graph *exec, Stream *s) { (void)exec; (void)s; return OK; }
CUresult cuGraphGetNodes(Graph *g, void **nodes, size_t *n) {
  if (nodes) return ERR_INVALID_VALUE;
  *n = g->n;
  return OK;
}
static CUresult graph_free(Graph *g) { free(g->ops); free(g); return OK; }
CUresult cuGraphExecDestroy(Graph *g) { return graph_free(g); }
CUresult cuGraphDestroy(Graph *g) { return graph_free(g); }

CUresult cuEventCreate(Event **e, unsigned flags) { (void)flags; *e = calloc(1, sizeof(Event)); return OK; }
CUresult cuEventDestroy_v2(Event *e) { free(e); return OK; }
CUresult cuEventRecordWithFlags(Event *e, Stream *s, unsigned flags) {
  if (s && s->capture == 1) {
    /* Only an external record becomes a node that marks the event on each replay. */
    return flags == 1 ? submit(s, (Op){.kind = OP_RECORD, .event = e}) : OK;
  }
  if (flags == 1) return ERR_INVALID_VALUE; /* external outside capture: invalid */
  return submit(s, (Op){.kind = OP_RECORD, .event = e});
}
CUresult cuEventRecord(Event *e, Stream *s) { return cuEventRecordWithFlags(e, s, 0); }
CUresult cuEventSynchronize(Event *e) { (void)e; return OK; }
CUresult cuEventQuery(Event *e) { (void)e; return OK; }
CUresult cuEventElapsedTime_v2(float *ms, Event *a, Event *b) {
  if (!a->recorded || !b->recorded) return ERR_INVALID_HANDLE;
  *ms = (float)((double)(b->ns - a->ns) / 1e6);
  return OK;
}
CUresult cuEventElapsedTime(float *ms, Event *a, Event *b) { return cuEventElapsedTime_v2(ms, a, b); }

/* Allocations are 256-byte aligned, as cuMemAlloc guarantees (TensorRT's setTensorAddress
 * requires it), and carry their size, device and malloc'ed base just in front, for
 * cuMemGetInfo and cuMemFree. */
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  if (!current) return 201;
  char *raw = malloc(n + 256 + 24);
  if (!raw) return 2;
  uintptr_t user = ((uintptr_t)raw + 24 + 255) & ~(uintptr_t)255;
  uint64_t *hdr = (uint64_t *)user - 3;
  hdr[0] = n;
  hdr[1] = (uint64_t)current->dev;
  hdr[2] = (uint64_t)(uintptr_t)raw;
  allocated[current->dev] += n;
  *p = (CUdeviceptr)user;
  return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  uint64_t *hdr = (uint64_t *)(uintptr_t)p - 3;
  allocated[hdr[1]] -= hdr[0];
  memset((void *)(uintptr_t)p, 0xEE, hdr[0]); /* use after free shows as garbage */
  free((void *)(uintptr_t)hdr[2]);
  return OK;
}
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
  if (!current) return 201;
  *total = TOTAL_MEM;
  *free_bytes = TOTAL_MEM - allocated[current->dev];
  return OK;
}
CUresult cuMemHostAlloc(void **p, size_t n, unsigned flags) { (void)flags; *p = malloc(n); return *p ? OK : 2; }
CUresult cuMemFreeHost(void *p) { free(p); return OK; }

#define PTR(x) ((void *)(uintptr_t)(x))
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, Stream *s) {
  return submit(s, (Op){.kind = OP_COPY, .dst = PTR(dst), .src = src, .n = n});
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, Stream *s) {
  return submit(s, (Op){.kind = OP_COPY, .dst = dst, .src = PTR(src), .n = n});
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, Stream *s) {
  return submit(s, (Op){.kind = OP_COPY, .dst = PTR(dst), .src = PTR(src), .n = n});
}
CUresult cuMemcpyPeerAsync(CUdeviceptr dst, Ctx *dc, CUdeviceptr src, Ctx *sc, size_t n, Stream *s) {
  if (!dc || !sc) return ERR_INVALID_HANDLE;
  return submit(s, (Op){.kind = OP_COPY, .dst = PTR(dst), .src = PTR(src), .n = n});
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, Stream *s) {
  return submit(s, (Op){.kind = OP_SET, .dst = PTR(dst), .n = n, .value = v});
}

CUresult cuGetErrorName(CUresult e, const char **s) {
  switch (e) {
  case ERR_CAPTURE_UNSUPPORTED: *s = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; return OK;
  case ERR_CAPTURE_ISOLATION: *s = "CUDA_ERROR_STREAM_CAPTURE_ISOLATION"; return OK;
  default: *s = "CUDA_ERROR_FAKE"; return OK;
  }
}
CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "fake driver error"; return OK; }

#endif
