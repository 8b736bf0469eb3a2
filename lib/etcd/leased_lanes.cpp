#include "etcd/leased_lanes.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/parse.h"

#include <algorithm>

namespace zaptid::etcd {

Status check_high_water(const Layout& layout, uint64_t machine_id, Cursor c, int64_t now_ms,
                        std::chrono::milliseconds max_wait, std::chrono::milliseconds reserved_ahead) {
  const uint64_t tick = c >> layout.bits_sequence;
  const int64_t at_ms = layout.tick_start_ms(tick);
  const int64_t ahead_ms = at_ms - now_ms;
  if (ahead_ms <= max_wait.count() + reserved_ahead.count()) return Ok{};
  return unavailable(fmt::format(
      "machine id {} was last used up to {}, {} ahead of this host's clock; refusing to wait longer than "
      "--max-clock-wait {} plus the {} reserved ahead (fix the clock, or raise --max-clock-wait)",
      machine_id, format_timestamp_ms(at_ms), format_duration_ms(ahead_ms), format_duration_ms(max_wait.count()),
      format_duration_ms(reserved_ahead.count())));
}

Result<std::unique_ptr<LeasedLanes>> LeasedLanes::open(SessionOptions session, LanesOptions lanes) {
  if (lanes.clock == nullptr) return invalid("LeasedLanes needs a clock");
  auto s = Session::open(std::move(session));
  if (!s) return s.error();
  std::unique_ptr<LeasedLanes> l(new LeasedLanes(std::move(*s), lanes));
  const auto claims = l->session_->claims();
  const int64_t now_ms = lanes.clock->now().count() / 1'000'000;
  for (const auto& c : claims) {
    if (!c.start_after) continue;
    if (auto st = check_high_water(lanes.layout, c.id, *c.start_after, now_ms, lanes.max_clock_wait,
                                   lanes.reserve_ahead);
        !st) {
      (void)l->session_->close({});  // frees the ids at once; nothing was issued
      return st.error();
    }
  }
  auto gens = l->make(claims);
  if (!gens) {
    (void)l->session_->close({});
    return gens.error();
  }
  l->generators_ = std::move(*gens);
  return l;
}

LeasedLanes::~LeasedLanes() {
  stop_top_up();
  // Stop the session's threads before the hooks and generators they use go away.
  if (session_) session_->stop();
}

void LeasedLanes::stop_top_up() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (topper_.joinable()) topper_.join();
}

void LeasedLanes::top_up_loop() {
  const auto tick = std::clamp(opt_.reserve_ahead / 20, std::chrono::milliseconds(10), std::chrono::milliseconds(100));
  constexpr auto kRepeatEvery = std::chrono::seconds(10);
  using std::chrono::steady_clock;
  steady_clock::time_point failing_since{};  // epoch: not failing
  steady_clock::time_point reported_at{};
  auto ms_since = [](steady_clock::time_point t, steady_clock::time_point now) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - t).count();
  };
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, tick, [this] { return stop_; })) return;
    }
    // Unconfirmed, every write would be refused or pointless; the session reports that.
    if (!session_->confirmed()) continue;
    for (const auto& g : generators()) {
      auto st = g->top_up(opt_.top_up_below);
      const auto now = steady_clock::now();
      const bool failing = failing_since != steady_clock::time_point{};
      if (st) {
        if (failing) {
          spdlog::info("high-water writes to etcd succeed again after {} of failures",
                       format_duration_ms(ms_since(failing_since, now)));
          failing_since = {};
        }
        continue;
      }
      if (!failing || now - reported_at >= kRepeatEvery) {
        if (!failing) failing_since = now;
        reported_at = now;
        spdlog::warn("recording machine id {}'s high-water in etcd failed, for {} now: {}", g->machine_id(),
                     format_duration_ms(ms_since(failing_since, now)), st.message());
      }
    }
  }
}

Result<std::vector<std::shared_ptr<Generator>>> LeasedLanes::make(const std::vector<Claim>& claims) {
  std::vector<std::shared_ptr<Generator>> out;
  for (size_t i = 0; i < claims.size(); ++i) {
    auto reserver = session_->reserver(i);
    auto wrapped = opt_.wrap_reserver ? opt_.wrap_reserver(*reserver) : nullptr;
    GeneratorOptions g;
    g.layout = opt_.layout;
    g.machine_id = claims[i].id;
    g.clock = opt_.clock;
    g.max_clock_wait = opt_.max_clock_wait;
    g.start_after = claims[i].start_after;
    g.reserver = wrapped ? wrapped.get() : reserver.get();
    g.reserve_ahead = opt_.reserve_ahead;
    g.max_start_wait = opt_.max_clock_wait + opt_.reserve_ahead;
    {
      std::lock_guard lock(mu_);
      reservers_.push_back(std::move(reserver));
      if (wrapped) reservers_.push_back(std::move(wrapped));
    }
    auto gen = Generator::create(std::move(g));
    if (!gen) return gen.error();
    out.push_back(std::shared_ptr<Generator>(std::move(*gen)));
  }
  return out;
}

std::vector<std::shared_ptr<Generator>> LeasedLanes::generators() const {
  std::lock_guard lock(mu_);
  return generators_;
}

std::vector<uint64_t> LeasedLanes::machine_ids() const {
  std::vector<uint64_t> ids;
  for (const auto& g : generators()) ids.push_back(g->machine_id());
  return ids;
}

void LeasedLanes::start(LaneHooks hooks) {
  hooks_ = std::move(hooks);
  SessionEvents ev;
  ev.on_unavailable = [this](const std::string& reason) {
    if (hooks_.set_unavailable) hooks_.set_unavailable(reason);
  };
  ev.on_available = [this] {
    if (hooks_.set_available) hooks_.set_available();
  };
  ev.on_reclaimed = [this](const std::vector<Claim>& claims) { reclaimed(claims); };
  ev.on_keep_alive = hooks_.kept_alive;
  ev.on_keep_alive_failed = hooks_.keep_alive_failed;
  session_->start(std::move(ev));
  topper_ = std::thread([this] { top_up_loop(); });
}

void LeasedLanes::reclaimed(const std::vector<Claim>& claims) {
  auto gens = make(claims);
  if (!gens) {
    spdlog::error("cannot start generators for the machine ids claimed again: {}", gens.message());
    return;
  }
  for (size_t i = 0; i < gens->size(); ++i) {
    if (hooks_.replace_lane) {
      if (auto st = hooks_.replace_lane(i, (*gens)[i]); !st) spdlog::error("lane {}: {}", i, st.message());
    }
  }
  std::lock_guard lock(mu_);
  generators_ = std::move(*gens);
}

Status LeasedLanes::release() {
  stop_top_up();
  session_->stop();
  std::vector<std::optional<Cursor>> last;
  for (const auto& g : generators()) last.push_back(g->last_reserved());
  return session_->close(last);
}

}  // namespace zaptid::etcd
