/* echo_handler.c — a small static request handler, for serve_bench.py:
 * `minikvm serve` runs it (one snapshot, a reset fork per request), and the
 * native baseline runs the same binary as a fresh process per request,
 * CGI-style.
 *
 * Each request is answered with a raw HTTP response whose short body is
 * built from the request: its method and path, and its length in bytes.
 * Under minikvm serve the request comes from minikvm_wait_request; run
 * natively the same calls fail with ENOSYS and include/minikvm.h falls back
 * to stdin and stdout:  ./echo_handler < request > response.
 */
#include <stdio.h>
#include <string.h>

#include "minikvm.h"

static char request[65536];

int main(void)
{
    for (;;) {
        long length = minikvm_wait_request(request, sizeof request - 1);
        if (length <= 0)
            break;
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
        char response[768];
        int size = snprintf(response, sizeof response,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n%s", body);
        minikvm_respond(response, (size_t)size);
    }
    return 0;
}
