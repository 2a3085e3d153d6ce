/*
 * sipcrmd.c: the daemon's entry point: command line, signals, main loop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <sofia-sip/su.h>
#include <sofia-sip/su_wait.h>

#define LOG_MODULE "main"
#include "log.h"
#include "app.h"
#include "conf.h"
#include "metrics.h"

#define DEFAULT_CONF SIPCRM_SYSCONFDIR "/sipcrm/sipcrm.conf"

struct opts {
	const char *conf;
	const char *level;
	bool foreground;
	bool check;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sipcrmd [-c FILE] [-f] [-l LEVEL]\n"
		"       sipcrmd --check-config -c FILE\n"
		"       sipcrmd --help-config\n"
		"\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"  -f, --foreground    stay in the foreground, log to stderr\n"
		"  -l, --log-level L   error | warn | info | debug (overrides the file)\n"
		"      --check-config  validate the configuration and exit 0 or 1\n"
		"      --help-config   list every configuration key\n"
		"  -V, --version       print the version\n", DEFAULT_CONF);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "help-config", no_argument, NULL, 'H' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	o->conf = DEFAULT_CONF;
	while ((c = getopt_long(argc, argv, "c:fl:Vh", lo, NULL)) != -1) {
		switch (c) {
		case 'c': o->conf = optarg; break;
		case 'f': o->foreground = true; break;
		case 'l': o->level = optarg; break;
		case 'C': o->check = true; break;
		case 'H': conf_print_options(stdout); exit(0);
		case 'V': printf("sipcrmd %s\n", PACKAGE_VERSION); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sipcrmd: unexpected argument '%s'\n", argv[optind]);
		return EINVAL;
	}
	return 0;
}

struct sigctx {
	struct app *app;
	su_root_t *root;
	int fd;
	int reg;                /* su_root registration index */
};

static int on_signal(su_root_magic_t *magic, su_wait_t *w, su_wakeup_arg_t *arg)
{
	struct sigctx *sc = (struct sigctx *)arg;
	struct signalfd_siginfo si;

	(void)magic;
	(void)w;
	while (read(sc->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			log_info("SIGHUP: reloading");
			app_reload(sc->app);
			break;
		case SIGTERM:
		case SIGINT:
			log_info("%s: shutting down", si.ssi_signo == SIGTERM ?
				 "SIGTERM" : "SIGINT");
			su_root_break(sc->root);
			break;
		default:
			break;
		}
	}
	return 0;
}

static int setup_signals(struct sigctx *sc, su_wait_t *w)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		return errno;
	sc->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sc->fd < 0)
		return errno;
	if (su_wait_create(w, sc->fd, SU_WAIT_IN))
		return EIO;
	sc->reg = su_root_register(sc->root, w, on_signal, (su_wakeup_arg_t *)sc, 0);
	if (sc->reg < 0)
		return EIO;
	return 0;
}

static int daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0)
		return errno;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return errno;
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

/*
 * Every SIP TCP/TLS connection, API connection and RTP port pair is a
 * descriptor, and the usual soft limit (1024) is below what a busy trunk
 * port sees: take what the hard limit allows (up to 65536).
 */
static void raise_nofile(void)
{
	struct rlimit rl;
	rlim_t want;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65536 :
	       rl.rlim_max;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			log_warn("cannot raise the descriptor limit: %s", strerror(errno));
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < 4096)
		log_warn("descriptor limit %llu: a few hundred TCP connections or "
			 "calls will exhaust it (raise the hard limit, ulimit -Hn)",
			 (unsigned long long)rl.rlim_cur);
}

static int run(const struct opts *o, struct conf *conf)
{
	struct app app = { .log_override = o->level };
	struct sigctx sc = { .app = &app, .fd = -1, .reg = -1 };
	su_wait_t w = SU_WAIT_INIT;
	char err[512];
	int e;

	raise_nofile();
	su_init();
	log_redirect_sofia();
	sc.root = su_root_create(NULL);
	if (!sc.root) {
		fprintf(stderr, "sipcrmd: cannot create the event loop\n");
		su_deinit();
		return 1;
	}
	e = setup_signals(&sc, &w);
	if (!e)
		e = app_start(&app, sc.root, conf, o->conf, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "cannot set up signals: %s", strerror(e));
	if (e) {
		log_err("%s", err);
		if (!app.conf_path)
			conf_deref(conf);
	}
	else {
		su_root_run(sc.root);
	}
	app_stop(&app);
	if (sc.reg >= 0)
		su_root_deregister(sc.root, sc.reg);
	if (sc.fd >= 0)
		close(sc.fd);
	su_root_destroy(sc.root);
	su_deinit();
	metrics_reset();
	log_info("stopped");
	log_close();
	return e ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct conf *conf;
	char err[512];

	if (parse_args(argc, argv, &o))
		return 2;
	if (o.level && log_spec_check(o.level, err, sizeof(err))) {
		fprintf(stderr, "sipcrmd: -l: %s\n", err);
		return 2;
	}
	if (conf_load(&conf, o.conf, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (o.check) {
		printf("%s: configuration OK\n", o.conf);
		conf_deref(conf);
		return 0;
	}
	log_init("sipcrmd", o.foreground);
	if (o.level)
		log_force_level(o.level);
	if (!o.foreground && daemonize()) {
		fprintf(stderr, "sipcrmd: cannot go to the background\n");
		conf_deref(conf);
		return 1;
	}
	return run(&o, conf);
}
