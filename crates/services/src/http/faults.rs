//! Fault injection, the chaos a service does to itself so FinPay can prove it survives it.
//!
//! The middleware sits on business routes only: health, metrics and admin always answer, so a
//! supervisor can still see the process and an operator can turn the faults off again. Every draw
//! comes from one RNG seeded with `faults.seed`, so a run with the same seed and the same request order
//! injects the same faults. `PUT /admin/faults` replaces the whole fault set at run time (omitted
//! fields take their defaults), `PATCH /admin/faults` changes only the fields it names, and either
//! reseeds the RNG when the seed changes.
//!
//! Every fault is drawn here, around the handler, so adding one is a field of [`FaultSettings`] and
//! a line of [`Faults::draw`] or [`inject`]: before the handler (down, crash, latency, hang, error),
//! or after it (`commit_then_fail_rate`: a write that succeeded loses its answer, the ambiguous
//! failure an idempotent retry must survive).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use finpay_api::problem::slug;

use super::config::FaultSettings;
use super::json::{json_response, parse_json, ApiJson};
use super::problem::ApiError;

/// Exit status of an injected crash (like a container killed for cause).
pub const CRASH_EXIT_CODE: i32 = 137;

/// The faults of one service and the RNG they are drawn from.
#[derive(Debug)]
pub struct Faults {
    service: &'static str,
    settings: RwLock<FaultSettings>,
    rng: Mutex<SmallRng>,
    /// When this process started serving, for `crash_after_ms`.
    started: Instant,
}

/// What the dice said for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    pub down: bool,
    pub crash: bool,
    pub delay: Duration,
    pub hang: Option<Duration>,
    /// `Some(500)` or `Some(503)`.
    pub error: Option<StatusCode>,
}

impl Faults {
    pub fn new(service: &'static str, settings: FaultSettings) -> Arc<Self> {
        let rng = SmallRng::seed_from_u64(settings.seed);
        Arc::new(Self {
            service,
            settings: RwLock::new(settings),
            rng: Mutex::new(rng),
            started: Instant::now(),
        })
    }

    pub fn current(&self) -> FaultSettings {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, new: FaultSettings) {
        self.update(|_| Ok::<_, std::convert::Infallible>(new))
            .unwrap_or_else(|never| match never {});
    }

    /// Replaces the fault set with what `change` makes of the current one, under the write lock,
    /// so two concurrent changes never lose one another. The RNG is reseeded when the seed changes.
    pub fn update<E>(
        &self,
        change: impl FnOnce(&FaultSettings) -> Result<FaultSettings, E>,
    ) -> Result<FaultSettings, E> {
        let mut s = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let new = change(&s)?;
        if s.seed != new.seed {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            *rng = SmallRng::seed_from_u64(new.seed);
        }
        *s = new.clone();
        Ok(new)
    }

    /// Draws the faults for one request.
    pub fn draw(&self) -> Draw {
        let s = self.current();
        if s.down {
            return Draw {
                down: true,
                crash: false,
                delay: Duration::ZERO,
                hang: None,
                error: None,
            };
        }
        let quiet = s.crash_rate == 0.0
            && s.error_rate == 0.0
            && s.hang_rate == 0.0
            && s.latency_ms == 0
            && s.latency_jitter_ms == 0;
        if quiet {
            return Draw {
                down: false,
                crash: false,
                delay: Duration::ZERO,
                hang: None,
                error: None,
            };
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // Drawn whatever the uptime, so the draws that follow do not depend on the clock.
        let crash = rng.gen::<f64>() < s.crash_rate
            && self.started.elapsed() >= Duration::from_millis(s.crash_after_ms);
        let jitter = if s.latency_jitter_ms > 0 {
            rng.gen_range(0..=s.latency_jitter_ms)
        } else {
            0
        };
        let hang = (rng.gen::<f64>() < s.hang_rate).then(|| Duration::from_millis(s.hang_ms));
        let error = (rng.gen::<f64>() < s.error_rate).then(|| {
            if rng.gen::<bool>() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        });
        Draw {
            down: false,
            crash,
            delay: Duration::from_millis(s.latency_ms + jitter),
            hang,
            error,
        }
    }

    /// Draws whether a committed write loses its response (wallet `commit_then_fail_rate`), and how:
    /// `Some(true)` drops the connection, `Some(false)` answers 500.
    pub fn draw_commit_then_fail(&self) -> Option<bool> {
        let rate = self.current().commit_then_fail_rate;
        if rate == 0.0 {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        (rng.gen::<f64>() < rate).then(|| rng.gen::<bool>())
    }

    fn count(&self, kind: &'static str) {
        metrics::counter!("finpay_faults_injected_total", "service" => self.service, "kind" => kind).increment(1);
    }
}

/// The middleware. Delays are cut short by the request deadline, which an outer layer enforces.
pub async fn inject(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    let draw = faults.draw();
    if draw.down {
        faults.count("down");
        return ApiError::unavailable(
            slug::SERVICE_DOWN,
            "Service down",
            "the service is down (injected fault)",
        )
        .into_response();
    }
    if draw.crash {
        faults.count("crash");
        // Abrupt on purpose: no destructors, no graceful shutdown, like a pod killed mid-request.
        eprintln!(
            "{{\"event\":\"injected_crash\",\"service\":\"{}\"}}",
            faults.service
        );
        std::process::exit(CRASH_EXIT_CODE);
    }
    if !draw.delay.is_zero() {
        faults.count("latency");
        tokio::time::sleep(draw.delay).await;
    }
    if let Some(hang) = draw.hang {
        faults.count("hang");
        tokio::time::sleep(hang).await;
    }
    if let Some(status) = draw.error {
        faults.count("error");
        return ApiError::new(
            status,
            slug::INJECTED_FAULT,
            "Injected fault",
            "injected fault",
        )
        .into_response();
    }
    let write = !req.method().is_safe();
    let resp = next.run(req).await;
    if write && resp.status().is_success() {
        if let Some(drop_connection) = faults.draw_commit_then_fail() {
            faults.count("commit_then_fail");
            tracing::warn!(
                service = faults.service,
                drop_connection,
                "injected commit_then_fail"
            );
            return lost_response(drop_connection);
        }
    }
    resp
}

/// The answer to a committed write, lost: a 500, or headers followed by a body that fails, which
/// makes the server abort the connection mid-response.
fn lost_response(drop_connection: bool) -> Response {
    if !drop_connection {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            slug::INJECTED_FAULT,
            "Injected fault",
            "injected fault",
        )
        .into_response();
    }
    let failing = futures::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other(
            "injected: connection dropped after commit",
        ))
    });
    let mut resp = axum::body::Body::from_stream(failing).into_response();
    *resp.status_mut() = StatusCode::CREATED;
    resp
}

/// `GET /admin/faults` reads the fault set; `PUT` replaces all of it (omitted fields take their
/// defaults); `PATCH` changes only the fields it names. [`super::admin`] puts the bearer check in
/// front.
pub fn admin_routes(faults: Arc<Faults>) -> Router {
    Router::new()
        .route(
            finpay_api::admin::FAULTS,
            get(get_faults).put(put_faults).patch(patch_faults),
        )
        .with_state(faults)
}

async fn get_faults(State(faults): State<Arc<Faults>>) -> Response {
    json_response(StatusCode::OK, &faults.current())
}

async fn put_faults(
    State(faults): State<Arc<Faults>>,
    ApiJson(new): ApiJson<FaultSettings>,
) -> Result<Response, ApiError> {
    new.validate().map_err(|(field, reason)| {
        ApiError::invalid_request(field, format!("{field}: {reason}"))
    })?;
    tracing::info!(service = faults.service, faults = ?new, "faults replaced");
    faults.replace(new);
    Ok(json_response(StatusCode::OK, &faults.current()))
}

async fn patch_faults(
    State(faults): State<Arc<Faults>>,
    ApiJson(patch): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    let new = faults.update(|now| {
        let mut merged = match serde_json::to_value(now) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => unreachable!("FaultSettings serialises as a JSON object"),
            Err(e) => return Err(ApiError::internal(&e)),
        };
        merged.extend(patch);
        let bytes = serde_json::to_vec(&merged).map_err(|e| ApiError::internal(&e))?;
        // Unknown fields and wrong types are named as a PUT names them; nothing changes then.
        let new: FaultSettings = parse_json(&bytes)?;
        new.validate().map_err(|(field, reason)| {
            ApiError::invalid_request(field, format!("{field}: {reason}"))
        })?;
        Ok(new)
    })?;
    tracing::info!(service = faults.service, faults = ?new, "faults changed");
    Ok(json_response(StatusCode::OK, &new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let s = FaultSettings {
            seed: 42,
            error_rate: 0.3,
            hang_rate: 0.1,
            ..FaultSettings::default()
        };
        let a = Faults::new("t", s.clone());
        let b = Faults::new("t", s);
        let da: Vec<Draw> = (0..200).map(|_| a.draw()).collect();
        let db: Vec<Draw> = (0..200).map(|_| b.draw()).collect();
        assert_eq!(da, db);
        let errors = da.iter().filter(|d| d.error.is_some()).count();
        assert!(
            (30..=90).contains(&errors),
            "about 30% errors, got {errors}/200"
        );
    }

    #[test]
    fn crashes_wait_for_the_process_to_have_run_crash_after_ms() {
        let settings = |crash_after_ms| FaultSettings {
            seed: 7,
            crash_rate: 1.0,
            crash_after_ms,
            ..FaultSettings::default()
        };
        let young = Faults::new("t", settings(60_000));
        assert!((0..50).all(|_| !young.draw().crash), "not before a minute");
        let mut old = Faults::new("t", settings(60_000));
        Arc::get_mut(&mut old).expect("sole owner").started =
            Instant::now() - Duration::from_secs(61);
        assert!(old.draw().crash);
        assert!(Faults::new("t", settings(0)).draw().crash, "0 = at once");
    }

    #[test]
    fn down_answers_before_any_draw() {
        let f = Faults::new(
            "t",
            FaultSettings {
                down: true,
                ..FaultSettings::default()
            },
        );
        assert!(f.draw().down);
    }

    #[test]
    fn no_faults_draw_nothing() {
        let f = Faults::new("t", FaultSettings::default());
        for _ in 0..100 {
            let d = f.draw();
            assert!(
                !d.down && !d.crash && d.error.is_none() && d.hang.is_none() && d.delay.is_zero()
            );
        }
        assert_eq!(f.draw_commit_then_fail(), None);
    }
}
