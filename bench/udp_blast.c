/* udp_blast: sends one small UDP datagram over and over, as fast as one core can, from a bound
 * source address, for a fixed time; prints what it sent as one JSON line on stdout.
 * Used by bench/relay_bench.py to load the userspace relay (a relay forwards a labelled
 * datagram only from the address its label is bound to, so the sender must bind the client's
 * address and port).
 *
 *   udp_blast SRC_IP SRC_PORT DST_IP DST_PORT HEXPREFIX SIZE SECONDS [BATCH] [GSO_SEGMENTS]
 *
 * HEXPREFIX  the first bytes of every datagram (e.g. the 5-byte relay header 10xxxxxxxx);
 *            the rest of the SIZE bytes are random, the same in every datagram
 * BATCH      messages per sendmmsg(2) call (default 64)
 * GSO_SEGMENTS  if > 1, each message carries that many datagrams as one UDP GSO send
 *            (UDP_SEGMENT); the receiver sees them as one GRO batch on loopback
 *
 * Build: cc -O2 -o udp_blast bench/udp_blast.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
        return AF_INET6;
    }
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return AF_INET;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s SRC_IP SRC_PORT DST_IP DST_PORT HEXPREFIX SIZE SECONDS [BATCH] [GSO_SEGMENTS]\n", argv[0]);
        return 2;
    }
    struct sockaddr_storage src, dst;
    socklen_t slen, dlen;
    int fam = addr(argv[1], atoi(argv[2]), &src, &slen);
    if (fam < 0 || addr(argv[3], atoi(argv[4]), &dst, &dlen) != fam) {
        fprintf(stderr, "udp_blast: bad addresses\n");
        return 2;
    }
    const char *hex = argv[5];
    int size = atoi(argv[6]);
    double seconds = atof(argv[7]);
    int batch = argc > 8 ? atoi(argv[8]) : 64;
    int gso = argc > 9 ? atoi(argv[9]) : 1;
    size_t plen = strlen(hex) / 2;
    if (size < (int)plen || size > 65000 || batch < 1 || batch > 1024 || gso < 1 || gso > 64 ||
        (long)size * gso > 65000) {
        fprintf(stderr, "udp_blast: bad size, batch or gso\n");
        return 2;
    }
    unsigned char *one = malloc(size);
    for (int i = 0; i < size; i++) one[i] = (unsigned char)random();
    for (size_t i = 0; i < plen; i++) sscanf(hex + 2 * i, "%2hhx", &one[i]);
    unsigned char *msg = malloc((size_t)size * gso);
    for (int i = 0; i < gso; i++) memcpy(msg + (size_t)i * size, one, size);

    int fd = socket(fam, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int one_i = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one_i, sizeof one_i);
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (bind(fd, (struct sockaddr *)&src, slen) < 0) { perror("bind"); return 1; }
    if (gso > 1 && setsockopt(fd, SOL_UDP, UDP_SEGMENT, &size, sizeof size) < 0) {
        perror("UDP_SEGMENT");
        return 1;
    }

    struct mmsghdr *mm = calloc(batch, sizeof *mm);
    struct iovec iov = {.iov_base = msg, .iov_len = (size_t)size * gso};
    for (int i = 0; i < batch; i++) {
        mm[i].msg_hdr.msg_name = &dst;
        mm[i].msg_hdr.msg_namelen = dlen;
        mm[i].msg_hdr.msg_iov = &iov;
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long sent = 0, calls = 0, errors = 0;
    double t0 = now(), end = t0 + seconds, t = t0;
    while (t < end) {
        int n = sendmmsg(fd, mm, batch, 0);
        if (n < 0) {
            if (errno != EINTR) errors++;
            if (errors > 1000000) break;
        } else {
            sent += (unsigned long long)n * gso;
        }
        if ((++calls & 15) == 0) t = now();
    }
    t = now();
    printf("{\"sent\": %llu, \"seconds\": %.6f, \"pps\": %.0f, \"errors\": %llu, \"size\": %d, \"gso\": %d}\n",
           sent, t - t0, sent / (t - t0), errors, size, gso);
    return 0;
}
