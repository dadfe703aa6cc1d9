/* sockets.c — the socket calls a well-behaved client makes, under a policy.
 *
 * Usage: sockets TCP_PORT UDP_PORT
 *
 * The test grants 127.0.0.1:TCP_PORT (an echo server) and
 * 127.0.0.1:UDP_PORT (a datagram server that answers "pong", but first has
 * a second, ungranted socket send "spoof" to the guest).  Each step prints
 * "NAME: VALUE" — 0 or an errno for calls, the value for queries.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

static long step(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
    return result;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

static void pair(void)
{
    int fds[2];
    char byte = 0;
    step("socketpair", socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds));
    step("pair-write", write(fds[0], "a", 1));
    step("pair-read", read(fds[1], &byte, 1));
    printf("pair-byte: %c\n", byte);
    step("pair-read-empty", read(fds[1], &byte, 1));          /* EAGAIN */

    /* handing a file descriptor over: refused */
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {"x", 1};
    struct msghdr message = {0};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fds[0], sizeof(int));
    step("scm-rights", sendmsg(fds[0], &message, 0));         /* EPERM */
    close(fds[0]);
    close(fds[1]);

    /* two datagrams in one call each way */
    char first[8] = {0}, second[8] = {0};
    struct iovec out[2] = {{"one", 3}, {"two", 3}}, in[2] = {{first, 7}, {second, 7}};
    struct mmsghdr messages[2];
    memset(messages, 0, sizeof messages);
    step("dgram-pair", socketpair(AF_UNIX, SOCK_DGRAM, 0, fds));
    for (int i = 0; i < 2; i++) {
        messages[i].msg_hdr.msg_iov = &out[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    printf("sendmmsg: %d\n", sendmmsg(fds[0], messages, 2, 0));
    for (int i = 0; i < 2; i++)
        messages[i].msg_hdr.msg_iov = &in[i];
    printf("recvmmsg: %d\n", recvmmsg(fds[1], messages, 2, 0, NULL));
    printf("datagrams: %s %s (%u bytes)\n", first, second, messages[1].msg_len);
    close(fds[0]);
    close(fds[1]);
}

static void tcp(int port)
{
    struct sockaddr_in address = loopback(port), name;
    socklen_t length = sizeof name;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), value = 1;
    step("tcp-connect", connect(fd, (struct sockaddr *)&address, sizeof address));
    step("getpeername", getpeername(fd, (struct sockaddr *)&name, &length));
    printf("peer-port-matches: %d\n", ntohs(name.sin_port) == port);
    length = sizeof name;
    step("getsockname", getsockname(fd, (struct sockaddr *)&name, &length));
    printf("local-address: %s\n", inet_ntoa(name.sin_addr));
    step("tcp-nodelay", setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, sizeof value));
    length = sizeof value;
    step("get-so-type", getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &length));
    printf("so-type: %d\n", value);
    step("bindtodevice", setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3));

    /* two buffers out, two buffers in */
    struct iovec out[2] = {{"he", 2}, {"llo", 3}};
    struct msghdr message = {0};
    message.msg_iov = out;
    message.msg_iovlen = 2;
    step("sendmsg", sendmsg(fd, &message, 0));
    char first[3] = {0}, second[8] = {0};
    struct iovec in[2] = {{first, 2}, {second, 3}};
    message.msg_iov = in;
    step("recvmsg", recvmsg(fd, &message, MSG_WAITALL));
    printf("echo: %s%s\n", first, second);

    /* the same socket through dup() and plain read/write */
    int copy = dup(fd);
    step("write-dup", write(copy, "again", 5));
    char buffer[16] = {0};
    step("read", read(fd, buffer, 5));
    printf("echo: %s\n", buffer);

    /* non-blocking, nothing to read */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    step("recv-nonblocking", recv(fd, buffer, sizeof buffer, 0));   /* EAGAIN */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    step("shutdown", shutdown(fd, SHUT_WR));
    printf("read-after-shutdown: %ld\n", (long)read(fd, buffer, sizeof buffer)); /* EOF */
    close(copy);
    close(fd);
}

static void udp(int port)
{
    struct sockaddr_in address = loopback(port), from;
    socklen_t length = sizeof from;
    struct timeval timeout = {0, 200 * 1000};
    char buffer[16];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(buffer, '?', sizeof buffer);     /* a dropped datagram must not show here */
    step("rcvtimeo", setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout));
    step("udp-sendto", sendto(fd, "ping", 4, 0, (struct sockaddr *)&address, sizeof address));
    long got = step("udp-recvfrom", recvfrom(fd, buffer, sizeof buffer - 1, 0,
                                             (struct sockaddr *)&from, &length));
    if (got >= 0) {
        char next = buffer[got];             /* '?' unless a dropped datagram leaked */
        buffer[got] = '\0';
        printf("udp-reply: %s from-port-matches: %d next-byte: %c\n", buffer,
               ntohs(from.sin_port) == port, next);
    }
    step("udp-recv-timeout", recv(fd, buffer, sizeof buffer, 0));   /* EAGAIN after 200 ms */
    close(fd);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: sockets TCP_PORT UDP_PORT\n");
        return 2;
    }
    pair();
    tcp(atoi(argv[1]));
    udp(atoi(argv[2]));
    return 0;
}
