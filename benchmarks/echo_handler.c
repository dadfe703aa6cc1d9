/* echo_handler.c — a small static request handler, for serve_bench.py:
 * `minikvm serve` runs it (one snapshot, a reset fork per request), and the
 * native baselines run the same binary: as a fresh process per request,
 * CGI-style, and as one persistent process answering request after request
 * (the floor of any design that starts each request afresh).
 *
 * Each request is answered with a raw HTTP response whose short body is
 * built from the request: its method and path, and its length in bytes.
 * Under minikvm serve the request comes from minikvm_wait_request; run
 * natively the same calls fail with ENOSYS and include/minikvm.h falls back
 * to stdin and stdout:  ./echo_handler < request > response.
 *
 *   ./echo_handler --persistent   frames on stdin and stdout, one request
 *                                 after another: a 4-byte length (host byte
 *                                 order), then that many bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "minikvm.h"

static char request[65536];

/* The response to the request's first LENGTH bytes, in RESPONSE; its size. */
static int answer(long length, char *response, size_t capacity)
{
    request[length] = '\0';
    /* The request line: "METHOD PATH VERSION\r\n". */
    size_t line = strcspn(request, "\r\n");
    char *space = memchr(request, ' ', line);
    char *second = space ? memchr(space + 1, ' ', line - (size_t)(space + 1 - request)) : NULL;
    int method = space ? (int)(space - request) : (int)line;
    int path = second ? (int)(second - space - 1) : 0;
    char body[512];
    snprintf(body, sizeof body, "%.*s %.*s: %ld bytes\n",
             method, request, path, space ? space + 1 : "", length);
    return snprintf(response, capacity,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n%s", body);
}

/* Read exactly SIZE bytes from FD; 0 at a clean end of input, -1 on error. */
static int read_exactly(int fd, void *buffer, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, (char *)buffer + done, size - done);
        if (n <= 0)
            return n == 0 && done == 0 ? 0 : -1;
        done += (size_t)n;
    }
    return 1;
}

static int write_all(int fd, const void *buffer, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, (const char *)buffer + done, size - done);
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static int persistent(void)
{
    char response[768];
    for (;;) {
        uint32_t length;
        int status = read_exactly(0, &length, sizeof length);
        if (status <= 0)
            return status < 0;
        if (length >= sizeof request || read_exactly(0, request, length) != 1)
            return 1;
        uint32_t size = (uint32_t)answer((long)length, response, sizeof response);
        if (write_all(1, &size, sizeof size) || write_all(1, response, size))
            return 1;
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--persistent") == 0)
        return persistent();
    for (;;) {
        long length = minikvm_wait_request(request, sizeof request - 1);
        if (length <= 0)
            break;
        char response[768];
        int size = answer(length, response, sizeof response);
        minikvm_respond(response, (size_t)size);
    }
    return 0;
}
