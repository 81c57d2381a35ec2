// cxxmod.cc - a module written in C++17 with every declaration macro of
// aio.h, built by tests/install_module.sh against an installed aio with
// `c++ $(pkg-config --cflags --libs aio)` only. It answers each line with
// the line upper-cased, and its command `aio shout WORD` prints WORD
// upper-cased and exits 3, so the test sees that each part really ran.
#include <aio.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>

namespace {

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return std::toupper(c); });
  return s;
}

} // namespace

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  std::string out = upper(std::string(data, len));
  aio_write(conn, out.data(), out.size());
}
AIO_PROTOCOL(upper_proto, .data_received = on_data);

static void on_seen(const aio_signal_t *signal) { (void)signal; }
AIO_LISTENER(on_seen);

static int tick(aio_event_t *event) {
  (void)event;
  return 0;
}
AIO_SCHEDULER(tick);

static int raw_server(aio_server_t *server) {
  (void)server;
  return 0;
}
AIO_FACTORY(raw_server);

static int shout(int argc, char **argv) {
  std::printf("%s\n", upper(argc > 1 ? argv[1] : "").c_str());
  return 3;
}
AIO_COMMAND(shout);

AIO_MODULE(.name = "cxxmod", .description = "a module in C++");
