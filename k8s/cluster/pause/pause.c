/*
 * The pod sandbox's process for Scaleshop's single-node Kubernetes (the "pause" image).
 *
 * It holds the pod's namespaces open and does nothing else: it sleeps until a signal
 * comes, reaps any zombie re-parented to it (it is PID 1 of the pod) and exits 0 on
 * SIGINT or SIGTERM. Built static (gcc -static) so the image is FROM scratch; same
 * behaviour as upstream's kubernetes/build/pause, written here because no registry is
 * reachable to pull registry.k8s.io/pause.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signo) {
    fprintf(stderr, "pause: got signal %d, exiting\n", signo);
    exit(0);
}

static void on_child(int signo) {
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (scaleshop)");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not PID 1, zombies will not be reaped for the pod\n");
    }
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
