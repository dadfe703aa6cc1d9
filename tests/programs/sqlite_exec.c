/* Run SQL statements against a SQLite database, printing every row.
 *
 *   sqlite_exec DATABASE SQL...
 *
 * DATABASE is a file name or ":memory:"; each SQL argument may hold several
 * statements.  Linked against Debian's libsqlite3.a (libsqlite3-dev), so the
 * real SQLite VFS runs: it makes the path canonical (lstat of every
 * directory above it), takes fcntl record locks, reads and writes with
 * pread/pwrite, fsyncs, truncates and unlinks its journal.
 * tests/test_real_programs.py compares the output with a native run.
 */
#include <sqlite3.h>
#include <stdio.h>

static int print_row(void *unused, int columns, char **values, char **names) {
    (void)unused;
    for (int i = 0; i < columns; i++)
        printf("%s%s=%s", i ? " " : "", names[i], values[i] ? values[i] : "NULL");
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATABASE SQL...\n", argv[0]);
        return 2;
    }
    sqlite3 *db;
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) {
        printf("cannot open %s: %s\n", argv[1], sqlite3_errmsg(db));
        return 1;
    }
    int status = 0;
    for (int i = 2; i < argc; i++) {
        char *error = NULL;
        if (sqlite3_exec(db, argv[i], print_row, NULL, &error) != SQLITE_OK) {
            printf("error: %s\n", error);
            sqlite3_free(error);
            status = 1;
        }
    }
    printf("changes: %d\n", sqlite3_total_changes(db));
    if (sqlite3_close(db) != SQLITE_OK) {
        printf("close: %s\n", sqlite3_errmsg(db));
        status = 1;
    }
    return status;
}
