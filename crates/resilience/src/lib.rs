//! Tower layers for calling dependencies that fail, so the caller's users never notice.
//!
//! # What it is for
//!
//! A service that calls other services over the network (FinPay's payment service calls fraud,
//! wallet and notification) must expect those calls to fail, hang and overload. This crate is the set
//! of client-side layers that turn "fraud fails 30% of calls and sometimes hangs for 3 s" into "the
//! payment succeeds, within 100 ms", without multiplying load on a dependency that is down:
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | deadline | [`deadline`] | one absolute deadline per call, sent to the callee (`finpay-deadline-ms`); fail fast when spent; per-try timeout = `min(per_try, remaining)` |
//! | bulkhead | [`bulkhead`] | concurrency limit per dependency that rejects (or waits a bounded time); optional adaptive limit: AIMD, Vegas or Gradient2 (`bulkhead.adaptive`) |
//! | circuit breaker | [`breaker`] | count/time sliding windows, failure and slow-call rates, jittered open wait, exactly N half-open probes |
//! | retry | [`retry`] | classified retries, backoff with full/equal/decorrelated jitter and a cap, `Retry-After`, a **budget** |
//! | hedge | [`hedge`] | a copy to another replica after a latency percentile; first good answer wins; paid from the same budget |
//! | balance | [`balance`] | p2c over peak-EWMA (or round robin, or failover to standbys) on a dynamic endpoint set, outlier ejection, active health checks, panic mode |
//! | fallback | [`fallback`] | a typed answer for chosen errors (opt-in; money fails closed) |
//! | policy | [`policy`] | what a client may do: [`ClientPolicy`] and its sections (serde, one TOML table each), their validation, and their translation into each layer's config |
//! | client | [`client`] | all of the above composed from a [`ClientPolicy`] over the endpoints: [`ResilientClient`], [`client::build_stack`], [`CallError`] |
//! | endpoint | [`endpoint`] | the bottom of the client's stack: [`endpoint::HttpEndpoint`], one replica reached through a pooled hyper client |
//! | events | [`events`] | hooks that see every layer's decisions (retries, hedges, budget refusals, breaker transitions, ejections, rejections) without the metric names: [`Events`], installed with [`ResilientClient::new_with_events`] |
//! | request | [`outbound`] | what the client's stack carries between its layers: [`Outbound`], whose copies (a retry's, a hedge's) are reference counts |
//! | classification | [`classify`] | what counts as a failure and what may be retried; which requests may be sent twice ([`Idempotent`], [`classify::is_idempotent`]) |
//!
//! Every layer is a plain `tower::Layer` generic over the request and response: outcomes are judged
//! by a [`classify::Classify`] (HTTP rules in [`classify::HttpClassify`]), so the layers stack in front
//! of any client — see `examples/stack.rs`. Errors between layers are `BoxError`s with typed causes
//! ([`breaker::BreakerOpen`], [`bulkhead::BulkheadFull`], [`deadline::DeadlineExceeded`], ...).
//!
//! # What it is not for
//!
//! It is not a service mesh, a server-side rate limiter or load shedder, or a retry loop for
//! business logic (a payment that was *declined* is an answer, not a failure). It knows nothing about
//! payments and depends only on tower, tokio, hyper and small utility crates.
//!
//! # Why write it here
//!
//! tower has retry (with a budget), timeouts, concurrency limits, p2c balancing and hedging, but no
//! circuit breaker, fallback, outlier ejection, active health checks or propagated deadlines; its
//! hedge is not paid from the retry budget and does not pick a different replica; its budget has no
//! in-flight (Envoy) mode. No well-kept crate provides the breaker, the shared budget, the deadline,
//! outlier ejection and budgeted hedging as tower layers, so they are written here, each in its own
//! folder (`{mod,layer,future,error}.rs`, as tower's `timeout/`), with the design argued in its
//! module docs.
//!
//! # What we took from tower-resilience, and what we leave out
//!
//! tower-resilience (0.13) is the nearest crate: breaker, bulkhead, retry with an AIMD budget,
//! hedge, time limiter, outlier detection, rate limiter, cache, coalescing, reconnect, weighted
//! router, chaos, executor, fallback, health checks and a Vegas adaptive limiter, each a tower
//! layer with event listeners. `examples/bench` runs it beside our client (see
//! `docs/bench-resilience.md` for how it is configured and the figures). Taken from it, where it
//! fits a payment client: latency-based adaptive limits (Vegas, and Netflix's Gradient2 beside
//! it: [`bulkhead::adaptive`]), and hooks that see every layer's decisions ([`events`], one trait
//! for the whole client rather than listener lists per layer). Left out, and why:
//!
//! - **Rate limiter.** A limit on our own call rate turns a burst of payments into failed
//!   payments that the dependency could have served; the dependency protects itself, and what we
//!   owe it is bounded extra load (the budget) and bounded concurrency (the bulkhead).
//! - **Cache.** A fraud verdict or a balance is about one payment at one moment; a cached one is
//!   wrong by construction. Whatever may be cached is the caller's to decide, per kind of data.
//! - **Coalescing** (one call for identical requests in flight). Payment calls are unique per
//!   payment and idempotency key, so nothing would merge, and merging two payments by mistake
//!   would be a money bug.
//! - **Reconnect.** hyper's pool opens connections per try; a replica that refuses them is
//!   ejected and health-checked by the balancer, and a connect failure is always safe to retry.
//! - **Weighted router.** Traffic splitting (canaries, migrations) is the deployment's
//!   business; the balancer weighs replicas by what it measures (latency x load), not by config.
//! - **Chaos.** Fault injection lives in the services (`FaultSettings`) and `finpay chaos`, not in
//!   the client library every service ships to production.
//! - **Executor** (calls on another runtime): the client runs on the caller's runtime.
//! - **Its AIMD retry budget.** Our ratio budget (Finagle) and in-flight budget (Envoy) bound the
//!   extra load as a share of real traffic, and pay for hedges too; its budget deposits a token
//!   per success and its hedges are unpaid.
//!
//! # Defaults, and the arithmetic behind them
//!
//! The defaults of [`ClientPolicy`] are sized for the dependency FinPay actually has: 3 fraud
//! replicas, each call failing independently with p = 0.3, or hanging for 3 s with p = 0.3. Targets:
//! success >= 99.99% at actual/effective load <= 1.5; with hangs, p99 <= 100 ms; all replicas down,
//! load <= 1 + budget ratio with the breaker open and calls failing fast.
//!
//! | key | default | why |
//! |---|---|---|
//! | `per_try_timeout_ms` | 60 | far above a healthy fraud answer (a few ms), far below a 3 s hang; time the caller itself was stalled (timer fired late) is given back, see [`deadline`] |
//! | `max_attempts` | 4 | rounds of tries; each round may hedge, so up to 4 x (1 + 4) = 20 tries |
//! | `backoff_base_ms` / `backoff_max_ms` / `jitter` | 5 / 100 / `full` | short: the retry goes to another replica, not back into the same storm |
//! | `retry_after_max_ms` | 1000 | honour `Retry-After`, but never wait longer than this |
//! | `connect_timeout_ms` | 100 | loopback/LAN |
//! | `budget.mode` / `budget.ratio` | `ratio` / 0.5 | see below; the industry default 0.2 is too low for p = 0.3 |
//! | `budget.min_per_second` / `budget.ttl_ms` | 10 / 10000 | lets a quiet client retry at all |
//! | `budget.in_flight_share` / `budget.min_concurrency` | 0.5 / 3 | the Envoy mode, when chosen |
//! | `breaker.enabled` / `per_endpoint` | true / false | per service; per endpoint, outlier ejection does the job by default |
//! | `breaker.window` / `window_size` / `window_ms` / `minimum_calls` | `count` / 100 / 10000 / 40 | `window = "time"` uses `window_ms` |
//! | `breaker.failure_rate_threshold` | 0.6 | a steady 30% never opens it (below) |
//! | `breaker.slow_call_ms` / `slow_call_rate_threshold` | 2000 / 0.9 | |
//! | `breaker.open_wait_ms` / `open_wait_jitter` / `half_open_probes` | 3000 / 0.2 / 3 | recovery noticed within ~4 s: 3 s x (1 + 0.2) of open wait, then the probes |
//! | `bulkhead.max_concurrent` / `max_wait_ms` / `adaptive` | 256 / 0 / false | reject, do not queue; `adaptive` also takes `"aimd"` (or `true`), `"vegas"`, `"gradient2"` |
//! | `bulkhead.min_concurrent` / `latency_target_ms` | 8 / 200 | AIMD floor and the latency above which it shrinks |
//! | `hedge.enabled` / `max_hedges` | true / 4 | all five tries of a round hang with probability 0.3^5 = 0.24%, well below the 1% a p99 allows; such a round ends at its first try's timeout (below) |
//! | `hedge.percentile` / `min_delay_ms` / `max_delay_ms` / `delay_ms` / `min_samples` | 0.95 / 10 / 20 / 15 / 100 | hedge after p95 of recent latencies, clamped to 10–20 ms |
//! | `balancer.strategy` / `ewma_decay_ms` / `default_rtt_ms` | `p2c_ewma` / 10000 / 20 | `failover` sends everything to the first usable endpoint (FinPay's wallet: one SQLite writer) |
//! | `outlier.consecutive_failures` / `consecutive_derived` / `false_ejections_per_hour` | 10 / true / 1e-6 | a streak ejects only when a healthy replica would show it less than once per million hours: 27 failures in a row at p = 0.3 and 50,000 tries/s (below) |
//! | `outlier.failure_rate_threshold` / `failure_rate_min_requests` / `interval_ms` | 0.85 / 50 / 10000 | 43 of the first 50 tries of an interval failing at p = 0.3: probability 3e-16 |
//! | `outlier.base_ejection_ms` / `max_ejection_ms` | 5000 / 300000 | n-th ejection lasts n x base |
//! | `outlier.max_ejected_percent` / `panic_threshold_percent` | 67 / 30 | up to 2 of 3 replicas out, never all; only below 30% usable, use all |
//! | `health_check.enabled` / `path` / `interval_ms` / `timeout_ms` | true / `/health/ready` / 1000 / 250 | |
//! | `health_check.unhealthy_threshold` / `healthy_threshold` | 2 / 1 | |
//! | `max_response_bytes` / `pool_max_idle_per_host` / `pool_idle_timeout_ms` / `seed` | 1 MiB / 64 / 30000 / none | |
//!
//! **Success.** With independent failures, n tries all fail with probability p^n: 0.3^6 = 7e-4
//! (99.93%), 0.3^8 = 6.6e-5 (99.993%), 0.3^12 = 5e-7. A fast failure fires the next hedge at once
//! (to another replica), so one round is up to 5 tries and 4 rounds up to 20: the count is never what
//! limits success; the budget and the deadline are.
//!
//! **Load.** The expected number of tries until the first success is 1/(1-p) = 1.43, so
//! actual/effective ~ 1.43 <= 1.5 (`tests/simulation.rs` checks <= 1.5 over 100,000 calls).
//!
//! **Budget.** Retries and hedges need 1/(1-p) - 1 = 0.43 extra tries per call on average. A ratio
//! budget of r allows r. With the industry default r = 0.2, only 0.2 of the 0.3 failed first tries
//! per call can be retried at all, and success caps near 0.7 + 0.2 x 0.7 ~ 84%. With r = 0.5 the
//! budget is not binding at p = 0.3 (0.43 < 0.5), yet a fully down dependency sees at most 1.5x its
//! normal traffic before the breaker opens, and ~0 after (`tests/simulation.rs` checks both).
//!
//! **Breaker.** It sits outside the retries, so it sees the after-retry failure rate (~0 at
//! p = 0.3). Even fed raw tries at p = 0.3 it stays closed: P[Bin(40, 0.3) >= 24] ~ 2e-5 at the first
//! decision and P[Bin(100, 0.3) >= 60] ~ 1e-9 per window after (a unit test feeds it 200k such
//! outcomes). With everything down it opens after 40 calls.
//!
//! **Hangs.** A hedge fires after clamp(p95, 10 ms, 20 ms) — 10 ms for a healthy fraud — to another
//! replica, up to 4: the first k tries of a call hang with probability 0.3^k, and the (k+1)-th
//! answers about k x 10 ms in. 0.3^4 = 0.81% is below the 1% a p99 allows, so p99 is at most
//! 3 x 10 ms plus one answer's latency (~35 ms; `tests/simulation.rs` checks p99 <= 100 ms). With 3
//! hedges that tier would hold 0.3^4 = 0.8% of calls, so close to 1% that on a busy machine the p99
//! lands in the next one, which is why the default is 4. Hedges fire only for the 30% that are
//! slow, so they cost about what retries would: load stays ~1.43.
//!
//! **Ejection.** A fixed streak is wrong at high rates: a run of k failures starts on a given try
//! with probability (1 - p) p^k, so at r tries per second a healthy replica at p = 0.3 shows
//! r x 3600 x 0.7 x 0.3^k such runs an hour. With a fixed k = 10 that is one every
//! 1 / (17,000 x 0.7 x 0.3^10) = 14 s at the 17,000 tries/s a replica sees in the bench, so a
//! healthy replica is ejected in most runs. So k is the shortest streak
//! (at least `consecutive_failures`) that keeps that below `false_ejections_per_hour` = 1e-6, from
//! the replica's own try rate and the *baseline* p, the lowest failure share any replica showed
//! over its last 10 s interval (0.5 before any has one): k = 27 at p = 0.3 and 50,000 tries/s
//! (9.6e-7 false ejections an hour), 22 at 100 tries/s, 47 at p = 0.5. A replica that fails
//! every call is ejected after k tries: within 1 s from ~25 tries per second. The failure-share
//! rule adds a catch for a replica that fails often but not always: >= 85% of >= 50 tries in an
//! interval (a healthy one: P[Bin(50, 0.3) >= 43] = 3e-16 per interval). With 2 of 3 replicas
//! failing every call both are outliers, not noise, so up to 67% (2 of 3) may be out, and panic
//! mode waits for fewer than 30% usable (below 1 of 3). Envoy's `success_rate` detector (mean
//! minus 1.9 standard deviations over the hosts) is not used: among 3 hosts none can lie more
//! than 2/sqrt(3) = 1.15 population standard deviations from the mean, so it never ejects.
//! `balance::outlier`'s tests feed 4.5 million tries at p = 0.3 and 50,000 tries/s per replica
//! (no ejection; the fixed 10 ejects all three) and kill 2 of 3 (both out within 1 s at 50,000
//! and at 100 tries/s); `tests/simulation.rs` kills 2 of 3 under the whole client (no call fails,
//! both out within 1 s).
//!
//! **p99.9 under hangs.** All five tries of a round hang with probability 0.3^5 = 0.24%, more
//! than the 0.1% above p99.9, so p99.9 is set by how fast such a round is left. The first try's
//! 60 ms per-try timeout is the first sign; the copies sent after it at 10, 20, 30, 40 ms would time
//! out at 70 ... 100 ms. Waiting for the last of them would put that tier at ~100 ms plus the
//! retry's backoff, ~105-110 ms. So a try that times out when no copy may follow ends the round at
//! once ([`hedge`]): every copy still in flight has run for at least 60 - 4 x 10 = 20 ms,
//! twice the 10 ms (>= p95) it was hedged after, so a healthy answer from it is unlikely and a
//! fresh try is the better bet. And a retry after a per-try timeout goes without backoff
//! ([`retry`]): the timeout has already waited 60 ms, more than the first backoffs (0-5, 0-10,
//! 0-20 ms), and tries that each wait out a timeout cannot storm anything. So the tier is the
//! next round's first try, answered at ~60 ms + one answer (~61 ms); only 0.3^6 = 0.07% of calls
//! go past it, below the 0.1%. `tests/simulation.rs` checks p99.9 <= 70 ms. The rounds still hold
//! at most 1 + 4 tries each, 20 in all. A stack with its retry inside its hedge (tower-resilience's
//! better ordering) lands that tier at 60 ms plus a backoff (0-5 ms) plus one answer: its first
//! try's retry chain retries after the timeout.
//!
//! What the simulation and `finpay up` runs (with 3 and with 4 hedges) show against these numbers
//! is in `docs/bench-resilience.md`, "Figures behind the crate docs".
//!
//! For a dependency that is written to (wallet, notification), raise `per_try_timeout_ms` (a durable
//! commit waits for an fsync) and consider disabling hedging.
//!
//! # Metrics
//!
//! Through the `metrics` facade, labelled `dependency`: `finpay_client_requests_total{outcome}`
//! (effective: what callers asked, by how each call ended: `ok`, `exhausted`, `deadline`,
//! `breaker_open`, `bulkhead_full`, `no_endpoint`), histogram
//! `finpay_client_request_duration_seconds{outcome}` (the whole call, tries and backoffs included),
//! `finpay_client_rejections_total{reason}` (`breaker_open`, `bulkhead_full`, `deadline` for a
//! call; `retry_budget`, `hedge_budget` for a try the budget refused), `finpay_client_attempts_total` (actual: what was sent, retries and hedges
//! included), `finpay_client_retries_total`, `finpay_client_budget_rejections_total`,
//! `finpay_client_hedges_total`, `finpay_client_hedges_won_total`, `finpay_client_ejections_total`,
//! gauge `finpay_client_breaker_state` (0 closed, 1 half-open, 2 open), the 0/1 gauges
//! `finpay_client_breaker_states{state}` (one per state) and
//! `finpay_client_breaker_transitions_total{from,to}`.
//!
//! [`describe_metrics`] gives each its HELP text. The per-call counters are resolved into handles
//! once, at their first increment, and reused (no registry lookup per call): install the `metrics`
//! recorder before the first call is made. Installed before the client is built, it also gets the
//! breaker state and every counter registered at zero when the client is built, so a dashboard
//! sees 0 rather than no series before the first event.
//!
//! # Time
//!
//! Every layer reads `tokio::time` (never `std::time::Instant`, which `clippy.toml` forbids) and
//! every random choice comes from a seedable RNG, so tests run with
//! `#[tokio::test(start_paused = true)]` and a fixed seed, and `tests/simulation.rs` runs 100k
//! simulated calls deterministically in seconds.

pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod classify;
pub mod client;
pub mod deadline;
pub mod endpoint;
pub mod events;
pub mod fallback;
pub mod hedge;
pub mod outbound;
pub mod outcome;
pub mod policy;
pub mod retry;
mod telemetry;

pub use classify::Idempotent;
pub use client::{CallError, ResilientClient};
pub use deadline::{Deadline, DEADLINE_HEADER};
pub use events::{EventHooks, Events};
pub use outbound::Outbound;
pub use policy::{ClientPolicy, InvalidConfig};
pub use telemetry::describe_metrics;
