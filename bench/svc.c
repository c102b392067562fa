/* The service every supervisor runs in bench/compare.py and bench/soak.py.
 *
 *   svc [FILE [MODE]]
 *
 * Appends "PID MONOTONIC_NS\n" to FILE as soon as it runs (its start time on
 * CLOCK_MONOTONIC, the clock the harness reads too), then waits. SIGTERM (and SIGINT)
 * end it with exit code 0. MODE:
 *   run         (default) wait for a signal
 *   grandchild  first fork a child that writes "PID\n" to FILE.gc and waits for a
 *               signal too (default dispositions), then behave as `run`: a stop that
 *               signals only the main process leaves the child behind
 *   crash       exit 1 after 50 to 300 ms (a crash loop)
 *   chatter     as `run`, and print a numbered line on stdout every 10 ms
 *               ("chatter N"), for a log writer to stamp
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void append(const char *path, const char *line) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t n = write(fd, line, strlen(line));
    (void)n;
    close(fd);
}

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Without arguments (runit and s6 run ./run, a link to this program, with none):
     * ./times in the service's directory. */
    const char *file = argc > 1 ? argv[1] : "times";
    const char *mode = argc > 2 ? argv[2] : "run";
    char line[64];
    snprintf(line, sizeof line, "%ld %lld\n", (long)getpid(),
             (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    append(file, line);
    if (strcmp(mode, "grandchild") == 0) {
        pid_t child = fork();
        if (child == 0) {
            char gc[4096], pid[32];
            snprintf(gc, sizeof gc, "%s.gc", file);
            snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
            append(gc, pid);
            for (;;) pause();
        }
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    if (strcmp(mode, "crash") == 0) {
        srand((unsigned)(ts.tv_nsec ^ getpid()));
        usleep(50000 + (useconds_t)(rand() % 250000));
        return 1;
    }
    if (strcmp(mode, "chatter") == 0) {
        for (unsigned long i = 1;; i++) {
            printf("chatter %lu\n", i);
            fflush(stdout);
            usleep(10000);
        }
    }
    for (;;) pause();
}
