//! The payment service, the orchestrator.
//!
//! `POST /v1/payments` (with an `Idempotency-Key`) persists the payment in `received` before calling
//! anything, then drives it (see [`engine`]): fraud check (fail closed), wallet debit with a transfer
//! id derived from the payment id, and `succeed()`, which marks the payment succeeded and queues its
//! notification in one transaction. Idempotency follows the IETF draft and Stripe:
//!
//! | the key...                               | answer                                          |
//! |------------------------------------------|-------------------------------------------------|
//! | is new                                   | 201 with the payment (503 problem if `failed`)  |
//! | has the same body, payment terminal      | the stored outcome, `Idempotent-Replayed: true` |
//! | has the same body, left by a crash       | driven to the end here, then as above           |
//! | is being driven (a live lease, any replica) | 409 `request-in-progress`                     |
//! | has a different body                     | 422 `idempotency-key-reused`                    |
//!
//! The routes are in [`routes`], the flow in [`engine`], the loops in [`background`], the clients of
//! the three dependencies in [`deps`] and the settings in [`settings`].
//!
//! A payment never answers 500: fraud unavailable is `failed` (503 with `Retry-After` and the payment
//! id), an unreachable wallet leaves the payment to the resumer (503 too), storage trouble is 503.

pub mod admin;
pub mod background;
pub mod deps;
pub mod engine;
pub mod routes;
pub mod settings;

use std::sync::Arc;

use finpay_ledger::payments::PaymentStore;

use crate::app::{ready_when, Assemble, Parts};
use crate::{ServeError, ServiceKind};
pub use deps::Dependencies;
use engine::Engine;
pub use settings::Settings;

/// The payment service's application.
pub use crate::app::Application;

impl Assemble for Settings {
    const KIND: ServiceKind = ServiceKind::Payment;

    /// Opens the store `storage.backend` names (`payments.db` in `data_dir`, or PostgreSQL).
    async fn assemble(&self) -> Result<Parts, ServeError> {
        let store = crate::http::storage::open_payments(&self.common).await?;
        parts(self, store)
    }
}

/// The routes and loops over any [`PaymentStore`].
pub fn parts(settings: &Settings, store: Arc<dyn PaymentStore>) -> Result<Parts, ServeError> {
    let demo = settings.demo.parse()?;
    let deps = Dependencies::from_settings(settings)?;
    let admin = admin::router(deps.clone());
    let engine = Arc::new(Engine::new(
        store.clone(),
        deps,
        settings.payment.clone(),
        settings.fraud.fallback.clone(),
    ));
    let ready = ready_when(move || {
        let s = store.clone();
        async move { s.ping().await }
    });
    let resumer = engine.clone();
    let dispatcher = engine.clone();
    Ok(Parts {
        routes: routes::router(engine, demo),
        admin,
        ready,
        background: vec![
            Box::new(move |stop| Box::pin(background::resumer(resumer, stop))),
            Box::new(move |stop| Box::pin(background::outbox_dispatcher(dispatcher, stop))),
        ],
    })
}
