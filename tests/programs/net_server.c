/* A TCP server and client in the sandbox, for the listening and name
 * grants (tests/test_net_names.py).
 *
 *   net_server serve PORT     bind 127.0.0.1:PORT, listen, print
 *                             "listening", accept one connection, answer
 *                             one line; before that, the refusals: port 0
 *                             then listen, another port, a unix socket
 *   net_server connect PORT   connect to 127.0.0.1:PORT, print the result
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "errnames.h"

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

static int serve(int port) {
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any_port = loopback(0);
    printf("bind port 0: %s\n", err(bind(probe, (void *)&any_port, sizeof any_port)));
    printf("listen on it: %s\n", err(listen(probe, 1)));
    close(probe);
    probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in other = loopback(port + 1);
    printf("bind another port: %s\n", err(bind(probe, (void *)&other, sizeof other)));
    struct sockaddr_in everywhere = {.sin_family = AF_INET, .sin_port = htons(port)};
    printf("bind 0.0.0.0 on the port: %s\n",
           err(bind(probe, (void *)&everywhere, sizeof everywhere)));
    close(probe);
    int unix_socket = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un name = {.sun_family = AF_UNIX, .sun_path = "x.sock"};
    printf("bind a unix socket: %s\n", err(bind(unix_socket, (void *)&name, sizeof name)));
    close(unix_socket);
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in mine = loopback(port);
    printf("accept before listen: %s\n", err(accept(server, NULL, NULL)));
    printf("bind: %s\n", err(bind(server, (void *)&mine, sizeof mine)));
    printf("listen: %s\n", err(listen(server, 4)));
    puts("listening");
    fflush(stdout);
    struct sockaddr_in peer;
    socklen_t length = sizeof peer;
    int connection = accept4(server, (void *)&peer, &length, SOCK_CLOEXEC);
    printf("accept: %s peer=%s\n", err(connection), inet_ntoa(peer.sin_addr));
    char line[64] = "";
    long n = read(connection, line, sizeof line - 1);
    if (n > 0) line[n] = 0;
    char answer[96];
    int size = snprintf(answer, sizeof answer, "echo: %s", line);
    write(connection, answer, size);
    close(connection);
    close(server);
    puts("done");
    return 0;
}

static int client(int port) {
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    if (sock < 0) {
        printf("socket: %s\n", err(sock));
        return 0;
    }
    struct sockaddr_in target = loopback(port);
    printf("connect: %s\n", err(connect(sock, (void *)&target, sizeof target)));
    close(sock);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3)
        return 2;
    int port = atoi(argv[2]);
    return strcmp(argv[1], "serve") == 0 ? serve(port) : client(port);
}
