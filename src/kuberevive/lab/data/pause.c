/* The lab's pause (pod sandbox) program: sleeps until SIGINT/SIGTERM, reaps orphans.
 * Built static by kuberevive.lab.images: gcc -Os -static -o pause pause.c */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) {
        pause();
    }
    return 0;
}
