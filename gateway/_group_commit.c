/* The write-ahead log's group commit on a thread that never takes the GIL (gateway/group_commit.py).
 *
 * A Python thread that slept, woke and fdatasync'ed every 20 ms took the GIL back three times a
 * cycle; on the gateway's one core each time preempted the event loop and handed the GIL back and
 * forth (measured at 64 connections: the event loop's involuntary context switches per request
 * doubled; this thread took back 1.5-2.5% of the gateway's CPU per request). It does the same
 * cycle in C: it sleeps while nothing is owed, and once `dirty()` says bytes were appended it
 * waits `interval` for more, then opens the followed segment by path, fdatasyncs and closes it.
 * Opening by path means the thread never shares a descriptor the spool may close: a segment
 * sealed (and synced by the spool) or deleted meanwhile is simply not found.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t ended;
    int running;              /* 1 while the (detached) thread runs */
    int stopping;
    int pending;              /* bytes appended since the last sync began (read without the lock by dirty()) */
    char *path;               /* the segment to sync, NULL when none */
    struct timespec interval;
    unsigned long long syncs; /* cycles that synced the followed segment (or found it gone) */
    unsigned long long failures;
    int last_errno;
} GroupCommit;

static void sync_path(GroupCommit *self, const char *path) {
    int failed = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        failed = errno != ENOENT ? errno : 0; /* sealed and deleted meanwhile: nothing owed */
    } else {
        if (fdatasync(fd) != 0) failed = errno;
        close(fd);
    }
    pthread_mutex_lock(&self->lock);
    if (failed) {
        self->failures++;
        self->last_errno = failed;
    } else {
        self->syncs++;
    }
    pthread_mutex_unlock(&self->lock);
}

static void *run(void *arg) {
    GroupCommit *self = arg;
    pthread_mutex_lock(&self->lock);
    for (;;) {
        while (!self->pending && !self->stopping) pthread_cond_wait(&self->wake, &self->lock);
        if (!self->pending) break; /* stopping with nothing owed */
        if (!self->stopping) {
            struct timespec rest = self->interval;
            pthread_mutex_unlock(&self->lock);
            while (nanosleep(&rest, &rest) != 0 && errno == EINTR) {
            } /* what is appended meanwhile shares this sync */
            pthread_mutex_lock(&self->lock);
        }
        int last = self->stopping; /* one sync after a stop request, then end: appends never keep it alive */
        __atomic_store_n(&self->pending, 0, __ATOMIC_RELEASE); /* later appends make another cycle */
        char *path = self->path ? strdup(self->path) : NULL;
        pthread_mutex_unlock(&self->lock);
        if (path) {
            sync_path(self, path);
            free(path);
        }
        pthread_mutex_lock(&self->lock);
        if (last) break;
    }
    self->running = 0;
    pthread_cond_broadcast(&self->ended);
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

/* End the thread, then sync what was appended while it made its last sync: under a steady stream
 * of appends the thread alone would never find itself owing nothing, and a stop would never end. */
static void stop_thread(GroupCommit *self) {
    pthread_mutex_lock(&self->lock);
    self->stopping = 1;
    pthread_cond_signal(&self->wake);
    while (self->running) pthread_cond_wait(&self->ended, &self->lock); /* it syncs what is owed first */
    self->stopping = 0; /* a later dirty() starts a new thread */
    int owed = __atomic_exchange_n(&self->pending, 0, __ATOMIC_ACQ_REL);
    char *path = owed && self->path ? strdup(self->path) : NULL;
    pthread_mutex_unlock(&self->lock);
    if (path) {
        sync_path(self, path);
        free(path);
    }
}

static int init(GroupCommit *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"interval_s", NULL};
    double interval;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "d", names, &interval)) return -1;
    if (!(interval > 0)) {
        PyErr_SetString(PyExc_ValueError, "interval_s must be positive");
        return -1;
    }
    self->interval.tv_sec = (time_t)interval;
    self->interval.tv_nsec = (long)((interval - (double)self->interval.tv_sec) * 1e9);
    return 0;
}

static PyObject *new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    GroupCommit *self = (GroupCommit *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->wake, NULL);
    pthread_cond_init(&self->ended, NULL);
    return (PyObject *)self;
}

static void dealloc(GroupCommit *self) {
    stop_thread(self);
    free(self->path);
    pthread_cond_destroy(&self->wake);
    pthread_cond_destroy(&self->ended);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *dirty(GroupCommit *self, PyObject *unused) {
    if (__atomic_load_n(&self->pending, __ATOMIC_ACQUIRE)) Py_RETURN_NONE; /* a sync is already owed */
    pthread_mutex_lock(&self->lock);
    if (!self->running) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int error = pthread_create(&thread, &attributes, run, self);
        pthread_attr_destroy(&attributes);
        if (error) {
            pthread_mutex_unlock(&self->lock);
            errno = error;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        self->running = 1;
    }
    __atomic_store_n(&self->pending, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *follow(GroupCommit *self, PyObject *arg) {
    char *copy = NULL;
    if (arg != Py_None) {
        PyObject *encoded = PyUnicode_EncodeFSDefault(arg);
        if (encoded == NULL) return NULL;
        copy = strdup(PyBytes_AS_STRING(encoded));
        Py_DECREF(encoded);
        if (copy == NULL) return PyErr_NoMemory();
    }
    pthread_mutex_lock(&self->lock);
    char *old = self->path;
    self->path = copy;
    pthread_mutex_unlock(&self->lock);
    free(old);
    Py_RETURN_NONE;
}

static PyObject *stop(GroupCommit *self, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS stop_thread(self); /* its last sync may take a while */
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *counts(GroupCommit *self, PyObject *unused) {
    pthread_mutex_lock(&self->lock);
    unsigned long long syncs = self->syncs, failures = self->failures;
    int last_errno = self->last_errno;
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("(KKi)", syncs, failures, last_errno);
}

static PyMethodDef methods[] = {
    {"dirty", (PyCFunction)dirty, METH_NOARGS, "Bytes were appended: sync them within the interval."},
    {"follow", (PyCFunction)follow, METH_O, "The segment (path, or None) later syncs are for."},
    {"stop", (PyCFunction)stop, METH_NOARGS, "Sync what is owed now and end the thread (the next dirty() starts one)."},
    {"counts", (PyCFunction)counts, METH_NOARGS, "(syncs, failures, errno of the last failure)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GroupCommitType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway._group_commit.GroupCommit",
    .tp_basicsize = sizeof(GroupCommit),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "fdatasync the followed segment at most `interval_s` after bytes were appended, off the GIL.",
    .tp_new = new,
    .tp_init = (initproc)init,
    .tp_dealloc = (destructor)dealloc,
    .tp_methods = methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_group_commit", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__group_commit(void) {
    if (PyType_Ready(&GroupCommitType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&GroupCommitType);
    if (PyModule_AddObject(m, "GroupCommit", (PyObject *)&GroupCommitType) < 0) {
        Py_DECREF(&GroupCommitType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
