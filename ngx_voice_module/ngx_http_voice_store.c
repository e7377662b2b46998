/*
 * ngx_http_voice_store.c: the files of the transcript directory, as the
 * thread pool's tasks handle them -- a call's journal (created locked,
 * appended to, cut back when a write fails, removed), the atomic write of
 * a record, and an earlier record read back to merge it.
 *
 * ngx_http_voice_transcript.c (a live call's record) and
 * ngx_http_voice_recover.c (journals whose process died) call these from
 * their tasks, never from the event loop: each is plain system calls that
 * may block.  Nothing here logs or allocates from a pool: a failure comes
 * back as the call that failed and its errno, which the caller logs from
 * the event loop.
 *
 * A live journal is held: its writer keeps an open file description of it
 * with an advisory read lock (fcntl's F_OFD_SETLK) from its creation until
 * the record is written.  Recovery takes a write lock without waiting, so
 * a journal it can lock has no live writer.  Why such a lock rather than
 * the writer's pid in the journal:
 *
 *   - the kernel drops it when its process dies, however it dies (kill -9,
 *     the OOM killer) and a host that restarts holds none, so it never goes
 *     stale; a pid does, and can be reused by any other process -- after a
 *     reboot, likely by another nginx worker;
 *   - several nginx instances may share the directory (a reload's old and
 *     new workers, a binary upgrade, two servers over NFS): a pid means
 *     nothing outside its own pid namespace and host, while fcntl locks go
 *     through the kernel, and over NFS through the server's lock manager;
 *   - an open file description lock, unlike a classic POSIX one, is not
 *     dropped when the process closes another descriptor of the file (each
 *     append opens its own), and it conflicts with another description in
 *     the same process, so a worker's recovery never mistakes its own live
 *     journals for dead ones;
 *   - it is a read lock, on a read-only descriptor: holding it does not
 *     keep the file system from being remounted read-only (a descriptor
 *     open for writing would), and flock(), which Linux emulates with
 *     POSIX locks over NFS, would need a writable one there.
 *
 * A journal is created with O_EXCL and locked at once; in the moment
 * between, a recovery that locks it finds it empty, and leaves an empty
 * journal alone until it is a minute old.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_voice_module.h"
#include "ngx_http_voice_transcript_fmt.h"


#ifndef F_OFD_SETLK
#error "the voice module needs open file description locks (Linux 3.15+)"
#endif


static ngx_int_t ngx_http_voice_store_lock(ngx_fd_t fd, short type,
    int cmd);
static ngx_int_t ngx_http_voice_store_write_all(ngx_fd_t fd,
    const u_char *data, size_t len);
static ngx_int_t ngx_http_voice_store_same(const char *path,
    ngx_file_info_t *fi);


#define ngx_http_voice_store_fail(e, what)                                    \
    (e)->err = ngx_errno;                                                     \
    (e)->failed = what


/* the whole file: l_start and l_len 0; l_pid must be 0 for OFD locks */

static ngx_int_t
ngx_http_voice_store_lock(ngx_fd_t fd, short type, int cmd)
{
    struct flock  fl;

    ngx_memzero(&fl, sizeof(struct flock));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;

    while (fcntl(fd, cmd, &fl) == -1) {
        if (ngx_errno != NGX_EINTR) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_voice_store_write_all(ngx_fd_t fd, const u_char *data, size_t len)
{
    ssize_t  n;

    while (len) {
        n = write(fd, data, len);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }
            return NGX_ERROR;
        }

        data += n;
        len -= n;
    }

    return NGX_OK;
}


/* is path still the file fi describes? */

static ngx_int_t
ngx_http_voice_store_same(const char *path, ngx_file_info_t *fi)
{
    ngx_file_info_t  now;

    if (ngx_file_info(path, &now) == -1) {
        return 0;
    }

    return now.st_dev == fi->st_dev && now.st_ino == fi->st_ino;
}


ngx_int_t
ngx_http_voice_store_journal_create(const char *path, const u_char *data,
    size_t len, ngx_fd_t *lock, ngx_http_voice_store_err_t *e)
{
    ngx_fd_t  fd, lk;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC,
              0640);
    if (fd == -1) {
        if (ngx_errno == NGX_EEXIST) {
            return NGX_BUSY;
        }

        ngx_http_voice_store_fail(e, "open() journal");
        return NGX_ERROR;
    }

    lk = open(path, O_RDONLY | O_CLOEXEC);
    if (lk == -1) {
        ngx_http_voice_store_fail(e, "open() journal to lock it");
        goto failed;
    }

    /* waits only for a recovery that found it empty and lets it go */
    if (ngx_http_voice_store_lock(lk, F_RDLCK, F_OFD_SETLKW) != NGX_OK) {
        ngx_http_voice_store_fail(e, "fcntl(F_OFD_SETLKW) journal");
        goto failed;
    }

    if (ngx_http_voice_store_write_all(fd, data, len) != NGX_OK) {
        ngx_http_voice_store_fail(e, "write() journal");
        goto failed;
    }

    if (fdatasync(fd) == -1) {
        ngx_http_voice_store_fail(e, "fdatasync() journal");
        goto failed;
    }

    (void) ngx_close_file(fd);
    *lock = lk;

    return NGX_OK;

failed:

    /* a journal without its header is worth nothing: the call still has
     * every entry in memory, and creates it again later */
    (void) ngx_delete_file(path);
    (void) ngx_close_file(fd);

    if (lk != -1) {
        (void) ngx_close_file(lk);
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_http_voice_store_journal_append(const char *path, ngx_fd_t lock,
    const u_char *data, size_t len, ngx_uint_t *dirty,
    ngx_http_voice_store_err_t *e)
{
    ngx_fd_t         fd;
    ngx_file_info_t  fi, held;

    fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd == -1) {
        ngx_http_voice_store_fail(e, "open() journal");
        return ngx_errno == NGX_ENOENT ? NGX_DECLINED : NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == -1 || ngx_fd_info(lock, &held) == -1) {
        ngx_http_voice_store_fail(e, "fstat() journal");
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    /* removed, or another file by its name: not the journal we hold */
    if (fi.st_dev != held.st_dev || fi.st_ino != held.st_ino) {
        e->err = 0;
        e->failed = "journal removed or replaced, open()";
        (void) ngx_close_file(fd);
        return NGX_DECLINED;
    }

    if ((*dirty && ngx_http_voice_store_write_all(fd, (u_char *) "\n", 1)
                   != NGX_OK)
        || ngx_http_voice_store_write_all(fd, data, len) != NGX_OK)
    {
        ngx_http_voice_store_fail(e, "write() journal");
        goto failed;
    }

    if (fdatasync(fd) == -1) {
        ngx_http_voice_store_fail(e, "fdatasync() journal");
        goto failed;
    }

    (void) ngx_close_file(fd);
    *dirty = 0;

    return NGX_OK;

failed:

    /*
     * The lines are appended again on the next try: cut off what this one
     * wrote, or, when even that fails, have the next start on a new line,
     * so that a torn line never swallows a good one.
     */

    if (ftruncate(fd, ngx_file_size(&fi)) == -1) {
        *dirty = 1;
    }

    (void) ngx_close_file(fd);

    return NGX_ERROR;
}


ngx_int_t
ngx_http_voice_store_journal_take(const char *path, ngx_fd_t *fd,
    ngx_file_info_t *fi, ngx_http_voice_store_err_t *e)
{
    ngx_fd_t  f;

    f = open(path, O_RDWR | O_CLOEXEC);
    if (f == -1) {
        ngx_http_voice_store_fail(e, "open() journal");
        return ngx_errno == NGX_ENOENT ? NGX_DECLINED : NGX_ERROR;
    }

    if (ngx_http_voice_store_lock(f, F_WRLCK, F_OFD_SETLK) != NGX_OK) {
        ngx_http_voice_store_fail(e, "fcntl(F_OFD_SETLK) journal");
        (void) ngx_close_file(f);

        return (e->err == NGX_EAGAIN || e->err == NGX_EACCES) ? NGX_BUSY
                                                              : NGX_ERROR;
    }

    /* its writer may have removed it between our open() and the lock */
    if (ngx_fd_info(f, fi) == -1 || !ngx_http_voice_store_same(path, fi)) {
        e->err = 0;
        e->failed = "journal removed meanwhile";
        (void) ngx_close_file(f);
        return NGX_DECLINED;
    }

    *fd = f;

    return NGX_OK;
}


void
ngx_http_voice_store_journal_drop(const char *path, ngx_fd_t fd)
{
    ngx_file_info_t  fi;

    /* only our own: a later stream of the call may have made another */
    if (ngx_fd_info(fd, &fi) == 0 && ngx_http_voice_store_same(path, &fi)) {
        (void) ngx_delete_file(path);
    }

    (void) ngx_close_file(fd);
}


/*
 * data into final, atomically: a temporary file, fsync, rename, and an
 * fsync of the directory, without which the rename itself is not durable.
 */

ngx_int_t
ngx_http_voice_store_write(const char *dir, const char *tmp,
    const char *final, const u_char *data, size_t len,
    ngx_http_voice_store_err_t *e)
{
    ngx_fd_t  fd, dfd;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd == -1) {
        ngx_http_voice_store_fail(e, "open() temporary file");
        return NGX_ERROR;
    }

    if (ngx_http_voice_store_write_all(fd, data, len) != NGX_OK) {
        ngx_http_voice_store_fail(e, "write() temporary file");
        goto failed;
    }

    if (fsync(fd) == -1) {
        ngx_http_voice_store_fail(e, "fsync() temporary file");
        goto failed;
    }

    (void) ngx_close_file(fd);
    fd = -1;

    if (ngx_rename_file(tmp, final) == -1) {
        ngx_http_voice_store_fail(e, "rename() temporary file");
        goto failed;
    }

    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        (void) fsync(dfd);
        (void) ngx_close_file(dfd);
    }

    return NGX_OK;

failed:

    if (fd != -1) {
        (void) ngx_close_file(fd);
    }

    (void) ngx_delete_file(tmp);

    return NGX_ERROR;
}


/*
 * A whole file of at most max bytes from fd, into malloc()ed memory
 * (NUL-terminated, for whoever wants it so).
 */

ngx_int_t
ngx_http_voice_store_read_fd(ngx_fd_t fd, size_t max, u_char **data,
    size_t *len, ngx_http_voice_store_err_t *e)
{
    u_char           *buf;
    size_t            size, n;
    ssize_t           got;
    ngx_file_info_t   fi;

    if (ngx_fd_info(fd, &fi) == -1) {
        ngx_http_voice_store_fail(e, "fstat()");
        return NGX_ERROR;
    }

    if ((size_t) ngx_file_size(&fi) > max) {
        e->err = 0;
        e->failed = "read() a file larger than the limit";
        return NGX_ERROR;
    }

    size = (size_t) ngx_file_size(&fi);

    buf = malloc(size + 1);
    if (buf == NULL) {
        e->err = NGX_ENOMEM;
        e->failed = "malloc()";
        return NGX_ERROR;
    }

    for (n = 0; n < size; n += got) {
        got = pread(fd, buf + n, size - n, n);

        if (got == -1 && ngx_errno == NGX_EINTR) {
            got = 0;
            continue;
        }

        if (got <= 0) {
            ngx_http_voice_store_fail(e, "read()");
            free(buf);
            return NGX_ERROR;
        }
    }

    buf[size] = '\0';
    *data = buf;
    *len = size;

    return NGX_OK;
}


/*
 * A record that goes on from an earlier one (a call back from a transfer
 * nobody answered): the earlier file's entries are put in front of
 * *data, which is replaced (both malloc()ed).  No earlier file is no
 * error: it may have been lost.  NGX_ERROR for one that cannot be read or
 * is not a record of ours: it is then kept as it is.
 */

ngx_int_t
ngx_http_voice_store_merge(const char *final, u_char **data, size_t *len,
    ngx_http_voice_store_err_t *e)
{
    u_char    *prev, *out;
    size_t     plen, n;
    ngx_fd_t   fd;

    fd = open(final, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        if (ngx_errno == NGX_ENOENT) {
            return NGX_OK;
        }

        ngx_http_voice_store_fail(e, "open() earlier record");
        return NGX_ERROR;
    }

    if (ngx_http_voice_store_read_fd(fd, NGX_HTTP_VOICE_STORE_MAX_RECORD,
                                     &prev, &plen, e)
        != NGX_OK)
    {
        e->failed = "read() earlier record";
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    (void) ngx_close_file(fd);

    out = malloc(plen + *len + 16);
    if (out == NULL) {
        free(prev);
        e->err = NGX_ENOMEM;
        e->failed = "malloc() for the earlier record";
        return NGX_ERROR;
    }

    n = ngx_http_voice_transcript_fmt_merge(prev, plen, *data, *len, out,
                                            plen + *len + 16);
    free(prev);

    if (n == (size_t) -1) {
        free(out);
        e->err = 0;
        e->failed = "merge with the earlier record (not one of ours)";
        return NGX_ERROR;
    }

    free(*data);
    *data = out;
    *len = n;

    return NGX_OK;
}
