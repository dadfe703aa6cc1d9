/* err(): "ok" for a call that succeeded, else the errno's name as the
 * kernel headers spell it (asm-generic/errno-base.h, errno.h), so the lines
 * a test program prints are the same bytes natively and in the sandbox and
 * read as the man pages' ERRORS sections do.  An errno not named here is
 * printed as strerror() gives it.  Shared by the test programs that report
 * a call's outcome per line (memfd.c, signalfd.c, timerfd.c, net_server.c). */
#ifndef MINIKVM_TESTS_ERRNAMES_H
#define MINIKVM_TESTS_ERRNAMES_H

#include <errno.h>
#include <string.h>

static const char *err(long result) {
    if (result >= 0) return "ok";
    switch (errno) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case E2BIG: return "E2BIG";
    case ENOEXEC: return "ENOEXEC";
    case ENOTDIR: return "ENOTDIR";
    case ELOOP: return "ELOOP";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case ECONNREFUSED: return "ECONNREFUSED";
    default: return strerror(errno);
    }
}

#endif
