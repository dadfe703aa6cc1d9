/* zlib at work: compress in memory, gzip a file and read it back.
 *
 *   zlib_gzip compress  FILE        deflate FILE in memory at levels 1, 5, 9,
 *                                   inflate it again, print sizes and checksums
 *   zlib_gzip gzip      FILE OUT    write FILE to OUT with gzopen/gzwrite
 *   zlib_gzip gunzip    IN          print the uncompressed bytes of IN
 *   zlib_gzip stream                deflate stdin to stdout with deflate()
 *                                   in small chunks (the zpipe.c pattern)
 *
 * Linked against Debian's libz.a (zlib1g-dev).  gzopen's file layer uses
 * open/read/write/lseek/close on its own; tests/test_real_programs.py
 * compares the output, and the files written, with a native run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHUNK 4096

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        return NULL;
    }
    size_t capacity = CHUNK, used = 0, got;
    unsigned char *data = malloc(capacity);
    while ((got = fread(data + used, 1, capacity - used, file)) > 0) {
        used += got;
        if (used == capacity)
            data = realloc(data, capacity *= 2);
    }
    fclose(file);
    *size = used;
    return data;
}

static int compress_levels(const char *path) {
    size_t size;
    unsigned char *data = read_file(path, &size);
    if (!data)
        return 1;
    printf("%s: %zu bytes crc32=%08lx adler32=%08lx\n", path, size,
           crc32(0L, data, size), adler32(1L, data, size));
    for (int level = 1; level <= 9; level += 4) {
        uLongf packed_size = compressBound(size);
        unsigned char *packed = malloc(packed_size);
        if (compress2(packed, &packed_size, data, size, level) != Z_OK)
            return printf("compress2 level %d failed\n", level), 1;
        uLongf unpacked_size = size;
        unsigned char *unpacked = malloc(size + 1);
        int result = uncompress(unpacked, &unpacked_size, packed, packed_size);
        printf("level %d: %lu bytes, round trip %s\n", level, packed_size,
               result == Z_OK && unpacked_size == size && !memcmp(unpacked, data, size)
                   ? "ok" : "FAILED");
        free(packed);
        free(unpacked);
    }
    free(data);
    return 0;
}

static int gzip_file(const char *in, const char *out) {
    size_t size;
    unsigned char *data = read_file(in, &size);
    if (!data)
        return 1;
    gzFile gz = gzopen(out, "wb9");
    if (!gz)
        return perror(out), 1;
    if (gzwrite(gz, data, size) != (int)size)
        return printf("gzwrite: short write\n"), 1;
    if (gzclose(gz) != Z_OK)
        return printf("gzclose failed\n"), 1;
    printf("gzip %s -> %s: %zu bytes in\n", in, out, size);
    free(data);
    return 0;
}

static int gunzip_file(const char *in) {
    gzFile gz = gzopen(in, "rb");
    if (!gz)
        return perror(in), 1;
    char buffer[CHUNK];
    int got;
    while ((got = gzread(gz, buffer, sizeof buffer)) > 0)
        fwrite(buffer, 1, got, stdout);
    int error;
    const char *message = gzerror(gz, &error);
    if (got < 0 || error != Z_OK)
        printf("gzread: %s\n", message);
    gzclose(gz);
    return got < 0;
}

static int deflate_stream(void) {
    z_stream stream = {0};
    unsigned char in[CHUNK / 4], out[CHUNK / 4];
    if (deflateInit(&stream, Z_BEST_COMPRESSION) != Z_OK)
        return 1;
    int flush;
    do {
        stream.avail_in = fread(in, 1, sizeof in, stdin);
        stream.next_in = in;
        flush = feof(stdin) ? Z_FINISH : Z_NO_FLUSH;
        do {
            stream.avail_out = sizeof out;
            stream.next_out = out;
            deflate(&stream, flush);
            fwrite(out, 1, sizeof out - stream.avail_out, stdout);
        } while (stream.avail_out == 0);
    } while (flush != Z_FINISH);
    fprintf(stderr, "deflated %lu bytes to %lu\n", stream.total_in, stream.total_out);
    deflateEnd(&stream);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "compress"))
        return compress_levels(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "gzip"))
        return gzip_file(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "gunzip"))
        return gunzip_file(argv[2]);
    if (argc == 2 && !strcmp(argv[1], "stream"))
        return deflate_stream();
    fprintf(stderr, "usage: %s compress FILE | gzip FILE OUT | gunzip IN | stream\n", argv[0]);
    return 2;
}
