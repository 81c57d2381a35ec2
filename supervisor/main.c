/*
 * main.c - the `aio` command line: global options, then a command. `run`
 * becomes the master; the others are short-lived clients or tools.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aio.h"
#include "app.h"
#include "cli.h"
#include "daemon.h"
#include "loader.h"
#include "log.h"
#include "master.h"
#include "util.h"

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: aio [-c FILE] COMMAND [ARGS]\n"
      "\n"
      "Runs network services written as C plugins, as named in an INI\n"
      "file (default: aio.conf, etc/aio.conf, /etc/aio.conf).\n"
      "\n"
      "commands:\n"
      "  run       serve the configuration (master and workers)\n"
      "  config    print the effective configuration, or get/set a value\n"
      "  check     validate the configuration and its modules, like nginx -t\n"
      "  test      run the tests of the configured modules\n"
      "  reload    reload the running master (like SIGHUP), report errors\n"
      "  stop      stop the running master (--now: immediately)\n"
      "  status    show the master and its workers (--json)\n"
      "  emit      deliver SIGNAL [JSON] to the running listeners\n"
      "  scale     set the number of workers of the running master\n"
      "  emit      deliver SIGNAL [JSON] to the running listeners\n"
      "  scale     set the number of workers of the running master\n"
      "  COMMAND   a command mapped in [aio:commands]\n"
      "\n"
      "options:\n"
      "  -c, --config FILE  the configuration file\n"
      "  -h, --help         this help (aio COMMAND --help for a command)\n"
      "  -V, --version      print the version\n");
}

/* An absolute path for a file that may not exist yet. Returns new. */
static char *realpath_or_copy(const char *p) {
  if (p[0] == '/')
    return strdup(p);
  char cwd[4096];
  if (getcwd(cwd, sizeof(cwd)) == NULL)
    return strdup(p);
  return util_asprintf("%s/%s", cwd, p);
}

char *cli_config_path(const char *given) {
  if (given)
    return strdup(given);
  struct diag d;
  diag_init(&d);
  char *path = config_search(&d);
  if (path == NULL)
    diag_print(&d, stderr);
  diag_close(&d);
  return path;
}

static void run_usage(FILE *out) {
  fprintf(
      out,
      "usage: aio [-c FILE] run [-d] [--pidfile PATH] [--ready-fd N]\n"
      "\n"
      "Serve the configuration: in the foreground, logging to stderr\n"
      "(or [aio] log_file), unless -d. Exits 0 after a stop, 70 when the\n"
      "first workers cannot start (a module's init or a factory fails, or\n"
      "they are not ready within [aio] start_timeout), 78 on a bad\n"
      "configuration.\n"
      "\n"
      "  -d, --daemon     detach; returns once every worker serves (exit\n"
      "                   0) or the start failed (its exit status: 70 when\n"
      "                   the workers cannot start, or are not ready\n"
      "                   within [aio] start_timeout)\n"
      "  --pidfile PATH   write and lock PATH (default: [aio] pidfile)\n"
      "  --ready-fd N     write a newline to fd N once every worker serves\n"
      "                   (s6-style readiness notification)\n");
}

static int cmd_run(const char *config_path, int argc, char **argv) {
  static const struct option opts[] = {{"ready-fd", required_argument, 0, 'r'},
                                       {"pidfile", required_argument, 0, 'p'},
                                       {"daemon", no_argument, 0, 'd'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ready_fd = -1, daemonize = 0, c;
  const char *pidfile = NULL;
  optind = 1;
  while ((c = getopt_long(argc, argv, "dh", opts, NULL)) != -1) {
    switch (c) {
    case 'r': {
      long v;
      if (util_parse_long(optarg, 0, 1 << 20, &v) ||
          fcntl((int)v, F_GETFD) < 0) {
        fprintf(stderr, "aio run: --ready-fd needs an open file descriptor\n");
        return EXIT_USAGE;
      }
      ready_fd = (int)v;
      util_set_cloexec(ready_fd, 1);
      break;
    }
    case 'p':
      pidfile = optarg;
      break;
    case 'd':
      daemonize = 1;
      break;
    case 'h':
      run_usage(stdout);
      return 0;
    default:
      run_usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "aio run: unexpected argument '%s'\n", argv[optind]);
    return EXIT_USAGE;
  }
  char *found = cli_config_path(config_path);
  if (found == NULL)
    return EXIT_CONFIG;
  /* Absolute, so reloads find it after a daemon's chdir("/"). */
  char *path = realpath(found, NULL);
  if (path == NULL) {
    fprintf(stderr, "aio: %s: %s\n", found, strerror(errno));
    free(found);
    return EXIT_CONFIG;
  }
  free(found);
  struct diag d;
  struct app app;
  diag_init(&d);
  if (app_load(&app, path, &d)) {
    diag_print(&d, stderr);
    fprintf(stderr, "aio: configuration %s has errors; nothing started\n",
            path);
    diag_close(&d);
    app_close(&app);
    free(path);
    return EXIT_CONFIG;
  }
  diag_close(&d);
  int rc = 0, pid_fd = -1, daemon_fd = -1;
  char *pidpath = NULL;
  if (pidfile || app.s.pidfile) {
    pidpath = pidfile ? realpath_or_copy(pidfile) : strdup(app.s.pidfile);
    char msg[512];
    pid_fd = daemon_pidfile_lock(pidpath, msg, sizeof(msg));
    if (pid_fd < 0) {
      fprintf(stderr, "aio: %s\n", msg);
      rc = pid_fd == -1 ? EXIT_UNAVAILABLE : EXIT_CANTCREAT;
      goto out;
    }
  }
  log_set_level(app.s.log_level);
  if (app.s.log_file) {
    int err = log_open(app.s.log_file);
    if (err) {
      fprintf(stderr, "aio: cannot open log_file %s: %s\n", app.s.log_file,
              strerror(-err));
      rc = EXIT_CANTCREAT;
      goto out;
    }
  } else if (daemonize) {
    fprintf(stderr, "aio: warning: -d without [aio] log_file: the log is "
                    "discarded\n");
  }
  if (daemonize) {
    daemon_fd = daemon_detach(0);
    if (daemon_fd < 0) {
      fprintf(stderr, "aio: cannot detach: %s\n", strerror(errno));
      rc = EXIT_OSERR;
      goto out;
    }
  }
  if (pid_fd >= 0 && daemon_pidfile_write(pid_fd, getpid()) < 0)
    log_warn("cannot write pidfile %s", pidpath);
  log_set_role("master", -1);
  struct diag warn;
  diag_init(&warn);
  settings_unknown_keys(app.cfg, &warn);
  for (size_t i = 0; i < warn.n; i++)
    log_warnx("%s", warn.msgs[i]);
  diag_close(&warn);
  rc = master_run(&app, path, ready_fd, &daemon_fd);
  if (pid_fd >= 0) {
    /* Gone before the waiting parent of -d hears of a failed start, so
     * whoever retries at once does not find it. Unlinked while the lock
     * is still ours: nobody else can be in it. */
    unlink(pidpath);
    close(pid_fd);
    pid_fd = -1;
  }
  if (daemon_fd >= 0) {
    /* The start failed: tell the waiting parent with what status. */
    char code = (char)(rc ? rc : 1);
    ssize_t w = write(daemon_fd, &code, 1);
    (void)w;
    close(daemon_fd);
  }
out:
  if (pid_fd >= 0) {
    unlink(pidpath);
    close(pid_fd);
  }
  free(pidpath);
  app_close(&app);
  free(path);
  log_close();
  return rc;
}

/* A command mapped in [aio:commands]: load the modules here (this is not
 * the master) and call it. */
static int cmd_plugin(const char *config_path, int argc, char **argv) {
  if (config_path == NULL) {
    /* Without a config there are no mapped commands: a typo is a usage
     * error, not a missing configuration. */
    struct diag d;
    diag_init(&d);
    char *found = config_search(&d);
    diag_close(&d);
    if (found == NULL) {
      fprintf(stderr, "aio: unknown command '%s' (see aio --help)\n", argv[0]);
      return EXIT_USAGE;
    }
    free(found);
  }
  char *path = cli_config_path(config_path);
  if (path == NULL)
    return EXIT_CONFIG;
  struct diag d;
  struct app app;
  struct loader *l = loader_new();
  diag_init(&d);
  int rc = EXIT_CONFIG;
  if (l == NULL || app_load_in_process(&app, path, l, &d)) {
    diag_print(&d, stderr);
    goto out;
  }
  for (size_t i = 0; i < app.s.ncommands; i++) {
    const struct command_conf *c = &app.s.commands[i];
    if (strcmp(c->name, argv[0]) != 0)
      continue;
    const aio_decl_t *decl = loader_resolve(l, &c->fn, AIO_KIND_COMMAND, &d);
    if (decl == NULL || loader_init(l, &d)) {
      diag_print(&d, stderr);
      goto out;
    }
    rc = decl->u.command(argc, argv);
    goto out;
  }
  fprintf(stderr, "aio: unknown command '%s' (see aio --help)\n", argv[0]);
  rc = EXIT_USAGE;
out:
  loader_free(l);
  app_close(&app);
  diag_close(&d);
  free(path);
  return rc;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                       {"help", no_argument, 0, 'h'},
                                       {"version", no_argument, 0, 'V'},
                                       {0, 0, 0, 0}};
  const char *config_path = NULL;
  int c;
  /* '+': options after the command belong to the command. */
  while ((c = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config_path = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf("aio %s (plugin API %d)\n", AIO_VERSION, AIO_API_VERSION);
      return 0;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[optind];
  int cargc = argc - optind;
  char **cargv = argv + optind;
  if (strcmp(cmd, "run") == 0)
    return cmd_run(config_path, cargc, cargv);
  if (strcmp(cmd, "config") == 0)
    return cli_config(config_path, cargc, cargv);
  if (strcmp(cmd, "check") == 0)
    return cli_check(config_path, cargc, cargv);
  if (strcmp(cmd, "test") == 0)
    return cli_test(config_path, cargc, cargv);
  static const char *const control_cmds[] = {"reload", "stop", "status", "emit",
                                             "scale"};
  for (size_t i = 0; i < UTIL_ARRAY_LEN(control_cmds); i++)
    if (strcmp(cmd, control_cmds[i]) == 0)
      return cli_control(config_path, cargc, cargv);
  if (strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "version") == 0) {
    printf("aio %s (plugin API %d)\n", AIO_VERSION, AIO_API_VERSION);
    return 0;
  }
  return cmd_plugin(config_path, cargc, cargv);
}
