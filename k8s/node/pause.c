/* The sandbox of every pod on the cluster tier's node (what registry.k8s.io/pause does): hold the pod's
 * namespaces, reap the children that are reparented to it, and exit on SIGTERM or SIGINT. Built static by
 * services/devtools/saga_dev/node/images.py into a one-layer image. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction on_quit = {.sa_handler = quit}, on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &on_quit, NULL);
    sigaction(SIGTERM, &on_quit, NULL);
    sigaction(SIGCHLD, &on_child, NULL);
    for (;;) pause();
    return EXIT_FAILURE;
}
