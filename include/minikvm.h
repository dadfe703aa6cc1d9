/*
 * minikvm.h — the request API of minikvm, for programs served by
 * `minikvm serve` or driven by a snapshot's forks.  Header only: the calls
 * are inline `syscall` instructions, there is no library to link.
 *
 *     #include "minikvm.h"
 *
 *     static char request[65536];
 *     // ... expensive start-up here: it runs once, before the snapshot ...
 *     for (;;) {
 *         long n = minikvm_wait_request(request, sizeof request);
 *         if (n <= 0)
 *             break;                       // 0: no more requests; < 0: -errno
 *         // ... handle request[0..n) ...
 *         minikvm_respond("HTTP/1.1 200 OK\r\n\r\nhello\n", 26);
 *     }
 *
 * minikvm_wait_request(buf, size)
 *     Waits for the next request and copies it into buf; returns its length
 *     (at most size), 0 when there will be no more requests, or -errno.
 *     The FIRST call is the "ready point": minikvm snapshots the program
 *     there, and every request afterwards starts from that snapshot — what
 *     one request changes (globals, heap, files' offsets) the next one does
 *     not see.  Under `minikvm serve` a request is the HTTP request as it
 *     came on the wire: request line, headers, an empty line, the body.
 *
 * minikvm_respond(buf, len)
 *     Appends len bytes to the response of the current request (call it
 *     once, or several times to build the response up); returns len or
 *     -errno.  The response is complete when the program next calls
 *     minikvm_wait_request.  Under `minikvm serve`, a response that starts
 *     with "HTTP/1." is a raw HTTP response (status line, headers, empty
 *     line, body); anything else is the body of a "200 OK".
 *
 * Outside a server — natively on Linux (where the numbers are unknown:
 * ENOSYS) or under a plain `minikvm run` (ENOTCONN) — the wrappers fall
 * back to stdin and stdout: the first wait returns the whole of stdin, the
 * next one 0, and responses are written to stdout.  So the same static
 * binary is also a CGI-style handler:  ./handler < request > response.
 * Define MINIKVM_NO_FALLBACK to get the raw -errno instead.
 *
 * The numbers (500-502) are above every Linux x86-64 system call; 502 is
 * made only by minikvm's own call-return stub (see minikvm/guestcode.py).
 */
#ifndef MINIKVM_H
#define MINIKVM_H

#include <stddef.h>

#define MINIKVM_SYS_WAIT_REQUEST 500
#define MINIKVM_SYS_RESPOND      501
#define MINIKVM_SYS_CALL_RETURN  502

#define MINIKVM_ENOSYS   38   /* Linux: no such system call      */
#define MINIKVM_ENOTCONN 107  /* minikvm run: no request source   */
#define MINIKVM_SYS_READ  0   /* read(2) and write(2) on x86-64: no libc needed */
#define MINIKVM_SYS_WRITE 1

static inline long minikvm_syscall2(long number, long a, long b)
{
    long result;
    __asm__ volatile ("syscall"
                      : "=a"(result)
                      : "a"(number), "D"(a), "S"(b)
                      : "rcx", "r11", "memory");
    return result;
}

static inline long minikvm_syscall3(long number, long a, long b, long c)
{
    long result;
    __asm__ volatile ("syscall"
                      : "=a"(result)
                      : "a"(number), "D"(a), "S"(b), "d"(c)
                      : "rcx", "r11", "memory");
    return result;
}

static inline int minikvm_is_unavailable(long result)
{
    return result == -MINIKVM_ENOSYS || result == -MINIKVM_ENOTCONN;
}

static inline long minikvm_wait_request(void *buf, size_t size)
{
    long result = minikvm_syscall2(MINIKVM_SYS_WAIT_REQUEST, (long)buf, (long)size);
#ifndef MINIKVM_NO_FALLBACK
    if (minikvm_is_unavailable(result)) {
        /* No server: the request is all of stdin, once. */
        static int served;
        size_t done = 0;
        if (served)
            return 0;
        served = 1;
        while (done < size) {
            long n = minikvm_syscall3(MINIKVM_SYS_READ, 0, (long)((char *)buf + done),
                                      (long)(size - done));
            if (n <= 0)
                break;
            done += (size_t)n;
        }
        return (long)done;
    }
#endif
    return result;
}

static inline long minikvm_respond(const void *buf, size_t len)
{
    long result = minikvm_syscall2(MINIKVM_SYS_RESPOND, (long)buf, (long)len);
#ifndef MINIKVM_NO_FALLBACK
    if (minikvm_is_unavailable(result)) {
        /* No server: the response goes to stdout. */
        size_t done = 0;
        while (done < len) {
            long n = minikvm_syscall3(MINIKVM_SYS_WRITE, 1, (long)((const char *)buf + done),
                                      (long)(len - done));
            if (n <= 0)
                return n;
            done += (size_t)n;
        }
        return (long)len;
    }
#endif
    return result;
}

#endif /* MINIKVM_H */
