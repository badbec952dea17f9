//go:build cgo

package container

// The user namespace helper (see userns.go) without the Go runtime. msbd
// starts it for every new sandbox (and once per id slot for idmapping):
// re-executing msbd and starting its runtime cost about 5 ms of CPU, which
// at a hundred concurrent starts is a tenth of a second of both cores. This
// constructor runs before the runtime does; under the helper's name it does
// the helper's whole job in C and exits, and the Go holderMain is never
// reached. Without cgo (or where the C library passes constructors no
// arguments) the Go holderMain does the same job.

/*
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void msb_say(const char *s) {
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(1, s, n);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) return;
		s += w;
		n -= (size_t)w;
	}
}

__attribute__((constructor)) static void msb_userns_holder(int argc, char **argv, char **envp) {
	char path[256], msg[512], buf[256];
	(void)envp;
	if (argc < 1 || argv == NULL || argv[0] == NULL || strcmp(argv[0], "msb-userns-holder") != 0)
		return;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq = strchr(a, '=');
		size_t name = eq ? (size_t)(eq - a) : 0;
		if (eq == NULL || name == 0 || strcspn(a, "/.") < name || name > 128) {
			snprintf(msg, sizeof msg, "bad limit \"%s\"\n", a);
			msb_say(msg);
			_exit(2);
		}
		snprintf(path, sizeof path, "/proc/sys/user/%.*s", (int)name, a);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		int err = 0;
		if (fd < 0) {
			err = errno;
		} else {
			ssize_t want = (ssize_t)strlen(eq + 1);
			if (write(fd, eq + 1, (size_t)want) != want)
				err = errno ? errno : EIO;
			close(fd);
		}
		if (err != 0) {
			snprintf(msg, sizeof msg, "user.%.*s=%s: %s\n", (int)name, a, eq + 1, strerror(err));
			msb_say(msg);
			_exit(1);
		}
	}
	msb_say("ok\n");
	for (;;) {
		ssize_t r = read(0, buf, sizeof buf);
		if (r == 0 || (r < 0 && errno != EINTR))
			_exit(0);
	}
}
*/
import "C"
