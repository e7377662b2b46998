/*
 * replay.c: runs files through a fuzz target's LLVMFuzzerTestOneInput()
 * without a fuzzing engine, so the corpus can be replayed by a plain
 * compiler build with ASan and UBSan (tests/fuzz/Makefile, `make replay`).
 *
 * Usage: replay_<target> FILE-OR-DIRECTORY...  Exits non-zero when an
 * input cannot be read; a failing input aborts through the sanitizers or
 * the target's own checks.
 */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static int
replay_file(const char *path)
{
    long      n;
    FILE     *f;
    uint8_t  *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        perror(path);
        fclose(f);
        return -1;
    }

    /* an exact-size copy, so ASan sees any read past the input */
    buf = malloc(n ? (size_t) n : 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        fclose(f);
        return -1;
    }

    fclose(f);

    LLVMFuzzerTestOneInput(buf, (size_t) n);

    free(buf);

    return 0;
}


static int
replay_path(const char *path, unsigned *count)
{
    int             rc;
    DIR            *dir;
    char            sub[4096];
    struct stat     st;
    struct dirent  *de;

    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }

    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return replay_file(path);
    }

    dir = opendir(path);
    if (dir == NULL) {
        perror(path);
        return -1;
    }

    rc = 0;

    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);

        if (replay_path(sub, count) != 0) {
            rc = -1;
        }
    }

    closedir(dir);

    return rc;
}


int
main(int argc, char **argv)
{
    int       i, rc;
    unsigned  count;

    rc = 0;
    count = 0;

    for (i = 1; i < argc; i++) {
        if (replay_path(argv[i], &count) != 0) {
            rc = 1;
        }
    }

    printf("%s: replayed %u inputs\n", argv[0], count);

    return rc;
}
