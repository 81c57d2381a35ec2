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
#include "jalloc.h"
#include "loader.h"
#include "log.h"
#include "master.h"
#include "proctitle.h"
#include "rlimit.h"
#include "upgrade.h"
#include "util.h"
#include "worker.h"

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
      "  upgrade   re-execute the running master from a new binary (like\n"
      "            SIGUSR2) without closing a listening socket\n"
      "  stop      stop the running master (--now: immediately)\n"
      "  status    show the master and its workers (--json)\n"
      "  emit      deliver SIGNAL [JSON] to the running listeners\n"
      "  scale     set the number of workers of the running master\n"
      "  COMMAND   a command mapped in [aio:commands]\n"
      "\n"
      "options:\n"
      "  -c, --config FILE  the configuration file (also after COMMAND)\n"
      "  -h, --help         this help (aio COMMAND --help for a command)\n"
      "  -V, --version      print the version\n");
}

/* The help, then the commands that the configuration (the one named, or the
 * one found) maps in [aio:commands]; a file that cannot be read or has
 * errors just lists none: help is no place for configuration errors. */
static void help(FILE *out, const char *config_path) {
  usage(out);
  struct diag d;
  diag_init(&d);
  char *path = config_path ? strdup(config_path) : config_search(&d);
  struct app app;
  if (path && app_load_plain(&app, path, &d) == 0 && app.s.ncommands) {
    fprintf(out, "\ncommands mapped in %s:\n", path);
    for (size_t i = 0; i < app.s.ncommands; i++)
      fprintf(out, "  %-9s %s\n", app.s.commands[i].name,
              app.s.commands[i].fn.text);
  }
  if (path)
    app_close(&app);
  free(path);
  diag_close(&d);
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
      "                   within [aio] start_timeout), and prints why\n"
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
  /* Re-executed in place by `aio upgrade`: detached already (or not), the
   * pidfile locked, the readiness told; the rest comes in master_run. */
  int upgraded = upgrade_init();
  if (upgraded) {
    daemonize = 0;
    ready_fd = -1;
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
    if (upgraded)
      upgrade_fall_back(d.n ? d.msgs[0] : "the configuration has errors");
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
  if (upgraded) {
    const char *inherited;
    pid_fd = upgrade_pidfile(&inherited);
    pidpath = inherited ? strdup(inherited) : NULL;
  } else if (pidfile || app.s.pidfile) {
    pidpath = pidfile ? realpath_or_copy(pidfile) : strdup(app.s.pidfile);
    char msg[512];
    pid_fd = daemon_pidfile_lock(pidpath, msg, sizeof(msg));
    if (pid_fd < 0) {
      fprintf(stderr, "aio: %s\n", msg);
      rc = pid_fd == -1 ? EXIT_UNAVAILABLE : EXIT_CANTCREAT;
      goto out;
    }
  }
  upgrade_set_pidfile(pid_fd, pidpath);
  log_set_level(app.s.log_level);
  log_set_format(app.s.log_format);
  if (app.s.log_file) {
    int err = log_open(app.s.log_file);
    if (err) {
      if (upgraded)
        upgrade_fall_back("cannot open log_file");
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
  settings_warnings(&app.s, app.cfg, &warn);
  for (size_t i = 0; i < warn.n; i++)
    log_warnx("%s", warn.msgs[i]);
  diag_close(&warn);
  rlimit_nofile_fit(&app.s);
  /* Named before master_run takes app over, for a failed start's word. */
  char log_hint[512] = "";
  if (app.s.log_file)
    snprintf(log_hint, sizeof(log_hint), "; the log: %s", app.s.log_file);
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
    /* The start failed: tell the waiting parent with what status, and
     * why, for its stderr is what the user sees (the log is a file, or
     * discarded). One write, under PIPE_BUF: it arrives whole. */
    char msg[1024];
    msg[0] = (char)(rc ? rc : 1);
    int len =
        snprintf(msg + 1, sizeof(msg) - 2, "%s%s", log_last_error(), log_hint);
    if (len < 0)
      len = 0;
    if (len > (int)sizeof(msg) - 3)
      len = (int)sizeof(msg) - 3;
    msg[1 + len] = '\n';
    ssize_t w = write(daemon_fd, msg, (size_t)len + 2);
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
/* aio_emit() in a mapped command reaches the master of the command's
 * configuration as `aio emit` does (cmd_plugin sets the path). */
static const char *command_config;

static int command_emit(const char *signal, const json_t *data) {
  return cli_emit(command_config, signal, data);
}

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
    /* The whole configuration, module defaults included, is readable
     * from the command (aio_config_get). */
    app_set_process(&app);
    loader_set_process(l);
    /* aio_emit() goes to the running master, if one runs for this file. */
    command_config = path;
    worker_set_command_emit(command_emit);
    rc = decl->u.command(argc, argv);
    worker_set_command_emit(NULL);
    command_config = NULL;
    loader_set_process(NULL);
    app_set_process(NULL);
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

/* `-c FILE` may also come after a built-in command (`aio config -c x`, as
 * with most tools): take it out of the command's arguments, before "--".
 * 0, or -1 when the option has no argument. */
static int take_config_option(int *argc, char **argv, const char **path) {
  int out = 1;
  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      while (i < *argc)
        argv[out++] = argv[i++];
      break;
    }
    if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
      if (i + 1 >= *argc)
        return -1;
      *path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      *path = a + 9;
    } else if (strncmp(a, "-c", 2) == 0) {
      *path = a + 2;
    } else {
      argv[out++] = argv[i];
    }
  }
  argv[out] = NULL;
  *argc = out;
  return 0;
}

int main(int argc, char **argv) {
  jalloc_install(); /* before jansson allocates anything */
  static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                       {"help", no_argument, 0, 'h'},
                                       {"version", no_argument, 0, 'V'},
                                       {0, 0, 0, 0}};
  const char *config_path = NULL;
  int c, want_help = 0;
  /* '+': options after the command belong to the command. */
  while ((c = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config_path = optarg;
      break;
    case 'h':
      want_help = 1;
      break;
    case 'V':
      printf("aio %s (plugin API %d.%d)\n", AIO_VERSION, AIO_API_MAJOR,
             AIO_API_MINOR);
      return 0;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (want_help) {
    help(stdout, config_path);
    return 0;
  }
  if (optind >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[optind];
  int cargc = argc - optind;
  char **cargv = argv + optind;
  static const char *const builtins[] = {"run",    "config", "check",  "test",
                                         "reload", "stop",   "status", "emit",
                                         "scale",  "upgrade"};
  for (size_t i = 0; i < UTIL_ARRAY_LEN(builtins); i++)
    if (strcmp(cmd, builtins[i]) == 0 &&
        take_config_option(&cargc, cargv, &config_path)) {
      fprintf(stderr, "aio %s: -c needs a FILE\n", cmd);
      return EXIT_USAGE;
    }
  if (strcmp(cmd, "run") == 0) {
    /* The master and its workers show what they are in ps; the title
     * takes argv's memory once the master runs (cmd_run copies what it
     * keeps of the arguments before that). */
    proctitle_init(argc, argv);
    return cmd_run(config_path, cargc, cargv);
  }
  if (strcmp(cmd, "config") == 0)
    return cli_config(config_path, cargc, cargv);
  if (strcmp(cmd, "check") == 0)
    return cli_check(config_path, cargc, cargv);
  if (strcmp(cmd, "test") == 0)
    return cli_test(config_path, cargc, cargv);
  static const char *const control_cmds[] = {"reload", "stop",  "status",
                                             "emit",   "scale", "upgrade"};
  for (size_t i = 0; i < UTIL_ARRAY_LEN(control_cmds); i++)
    if (strcmp(cmd, control_cmds[i]) == 0)
      return cli_control(config_path, cargc, cargv);
  if (strcmp(cmd, "help") == 0) {
    help(stdout, config_path);
    return 0;
  }
  if (strcmp(cmd, "version") == 0) {
    printf("aio %s (plugin API %d.%d)\n", AIO_VERSION, AIO_API_MAJOR,
           AIO_API_MINOR);
    return 0;
  }
  return cmd_plugin(config_path, cargc, cargv);
}
