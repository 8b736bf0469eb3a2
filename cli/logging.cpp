#include "logging.h"

#include "output.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace zaptid::cli {
namespace {

// %* : the message, escaped for a JSON string.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string escaped = json_escape(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(escaped.data(), escaped.data() + escaped.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMessageFlag>(); }
};

}  // namespace

void add_log_options(CLI::App& app, LogOptions& opt) {
  app.add_option("--log-level", opt.level, "Log level: trace, debug, info, warn, error, critical, off "
                                           "(default: info for serve, warn otherwise)")
      ->envname("ZAPTID_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->group("Logging");
  app.add_option("--log-format", opt.format, "Log format: text or json")
      ->envname("ZAPTID_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str()
      ->group("Logging");
}

void setup_logging(const LogOptions& opt, bool daemon) {
  auto logger = std::make_shared<spdlog::logger>("zaptid", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (opt.format == "json") {
    formatter->add_flag<JsonMessageFlag>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","pid":%P,"msg":"%*"})");
  } else if (daemon) {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v");
  } else {
    formatter->set_pattern("zaptid: %l: %v");
  }
  logger->set_formatter(std::move(formatter));
  const std::string level = opt.level.empty() ? (daemon ? "info" : "warn") : opt.level;
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace zaptid::cli
