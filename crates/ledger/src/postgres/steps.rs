//! The payments store's steps in group commit: a writer task takes every `begin`, `advance` and
//! `succeed_from` queued by concurrent drivers and runs each kind as one statement over `UNNEST`
//! arrays, so a round of N steps costs at most three statements and three commits instead of N.
//!
//! # Why
//!
//! Each step alone is one statement, but PostgreSQL spends a fixed cost on every statement and
//! every commit (parse, snapshot, locks, a WAL commit record and its flush): on a small machine
//! that cost, not the work, is what a payment pays three times. Batched, it is paid once per round
//! for all the drivers that queued meanwhile; under no load a round holds one step and costs what
//! the step alone does.
//!
//! # Exactly the single-step semantics
//!
//! - Each batched statement is the single-step statement with `v` (the `UNNEST` of the round's
//!   inputs) joined in: the same insert-or-take-over-or-read for `begin`, the same fenced
//!   compare-and-set for `advance` and `succeed_from` (the outbox rows inserted only from the
//!   update's result), so a step answers what it would alone.
//! - A round holds each idempotency key (for `begin`) and each payment id (for the fenced steps) at
//!   most once; a second step on the same key or id waits for the next round, so no statement
//!   joins one row twice. Two replicas' rounds may run at once: the database's row locks order
//!   them, and a step one of them cannot settle is run again alone (below).
//! - A step the batched statement cannot settle (a row that changed between the update and the
//!   read, a key inserted concurrently after the snapshot) is run again alone; when a batched
//!   statement fails as a whole (one outbox id taken, a transient error), every step of it is run
//!   alone, so one step's failure is never another's.
//!
//! Every answer is sent after the statement that made it committed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use finpay_core::{PaymentId, PaymentStatus};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::payments::{
    advance_one, begin_one, fenced_outcome, lease_of, payment_from_row, storage, succeed_one,
    Fenced, OUTBOX_COLUMNS, PAYMENT_COLUMNS,
};
use super::NOW_MS;
use crate::payments::{
    fenced_miss, ttl_ms, Begin, Lease, LeaseOwner, NewPayment, OutboxMessage, Payment,
    PaymentStoreError, StepNote,
};

/// The most steps one round takes from the queue.
const ROUND_MAX: usize = 256;

/// Writer tasks taking rounds from the one queue. One: a round takes everything queued while the
/// previous round ran, so under load the rounds grow and the statements per step fall, where a
/// second writer would split the same queue into twice as many half-sized rounds.
const WRITERS: usize = 1;

/// How many steps may wait for the writers; past this, callers wait (backpressure).
const QUEUE_CAPACITY: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, PaymentStoreError>>;

enum Step {
    Begin {
        new: NewPayment,
        owner: LeaseOwner,
        ttl: Duration,
        reply: Reply<Begin>,
    },
    Advance {
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        note: StepNote,
        lease: Lease,
        reply: Reply<Payment>,
    },
    Succeed {
        id: PaymentId,
        from: PaymentStatus,
        message: OutboxMessage,
        lease: Lease,
        reply: Reply<Payment>,
    },
}

impl Step {
    /// What a round may hold once: the idempotency key of a begin, the payment of a fenced step.
    fn slot(&self) -> String {
        match self {
            Step::Begin { new, .. } => format!("key:{}", new.idempotency_key.as_str()),
            Step::Advance { id, .. } | Step::Succeed { id, .. } => format!("pay:{id}"),
        }
    }
}

/// A handle to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Steps {
    queue: mpsc::Sender<Step>,
}

/// The writer stopped (its task ended); nothing more can be written through this store.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL payments writer has stopped")]
struct WriterStopped;

impl Steps {
    pub(super) fn spawn(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), Arc::clone(&rx)));
        }
        Self { queue }
    }

    async fn ask<T>(
        &self,
        step: Step,
        answer: oneshot::Receiver<Result<T, PaymentStoreError>>,
    ) -> Result<T, PaymentStoreError> {
        self.queue
            .send(step)
            .await
            .map_err(|_| storage(WriterStopped))?;
        answer.await.map_err(|_| storage(WriterStopped))?
    }

    pub(super) async fn begin(
        &self,
        new: NewPayment,
        owner: LeaseOwner,
        ttl: Duration,
    ) -> Result<Begin, PaymentStoreError> {
        let (reply, answer) = oneshot::channel();
        let step = Step::Begin {
            new,
            owner,
            ttl,
            reply,
        };
        self.ask(step, answer).await
    }

    pub(super) async fn advance(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        note: StepNote,
        lease: Lease,
    ) -> Result<Payment, PaymentStoreError> {
        let (reply, answer) = oneshot::channel();
        let step = Step::Advance {
            id,
            from,
            to,
            note,
            lease,
            reply,
        };
        self.ask(step, answer).await
    }

    pub(super) async fn succeed(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        message: OutboxMessage,
        lease: Lease,
    ) -> Result<Payment, PaymentStoreError> {
        let (reply, answer) = oneshot::channel();
        let step = Step::Succeed {
            id,
            from,
            message,
            lease,
            reply,
        };
        self.ask(step, answer).await
    }
}

async fn run(pool: PgPool, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Step>>>) {
    let mut taken: Vec<Step> = Vec::with_capacity(ROUND_MAX);
    let mut waiting: Vec<Step> = Vec::new();
    loop {
        if waiting.is_empty() {
            if queue.lock().await.recv_many(&mut taken, ROUND_MAX).await == 0 {
                break;
            }
        } else {
            // Steps held back from the last round go first; then whatever else is queued, if the
            // queue is free. Never wait for it here: the other writer may be holding it while it
            // waits for a step that only these held-back steps' answers would bring.
            taken.append(&mut waiting);
            if let Ok(mut queue) = queue.try_lock() {
                while taken.len() < ROUND_MAX {
                    match queue.try_recv() {
                        Ok(step) => taken.push(step),
                        Err(_) => break,
                    }
                }
            }
        }
        let mut slots = HashSet::with_capacity(taken.len());
        let mut round = Round::default();
        for step in taken.drain(..) {
            if !slots.insert(step.slot()) {
                waiting.push(step);
                continue;
            }
            round.push(step);
        }
        round.run(&pool).await;
    }
    tracing::debug!("PostgreSQL payments writer stopped: every handle was dropped");
}

struct BeginStep {
    new: NewPayment,
    owner: LeaseOwner,
    ttl: Duration,
    reply: Reply<Begin>,
}

struct AdvanceStep {
    id: PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    note: StepNote,
    lease: Lease,
    reply: Reply<Payment>,
}

struct SucceedStep {
    id: PaymentId,
    from: PaymentStatus,
    message: OutboxMessage,
    lease: Lease,
    reply: Reply<Payment>,
}

/// One round: each key and payment at most once, split by kind.
#[derive(Default)]
struct Round {
    begins: Vec<BeginStep>,
    advances: Vec<AdvanceStep>,
    succeeds: Vec<SucceedStep>,
}

impl Round {
    fn push(&mut self, step: Step) {
        match step {
            Step::Begin {
                new,
                owner,
                ttl,
                reply,
            } => self.begins.push(BeginStep {
                new,
                owner,
                ttl,
                reply,
            }),
            Step::Advance {
                id,
                from,
                to,
                note,
                lease,
                reply,
            } => self.advances.push(AdvanceStep {
                id,
                from,
                to,
                note,
                lease,
                reply,
            }),
            Step::Succeed {
                id,
                from,
                message,
                lease,
                reply,
            } => self.succeeds.push(SucceedStep {
                id,
                from,
                message,
                lease,
                reply,
            }),
        }
    }

    async fn run(self, pool: &PgPool) {
        // The kinds are independent (a key or payment is in the round once), so their statements
        // run at once on three pooled connections, each committing on its own.
        let begin = async {
            if !self.begins.is_empty() {
                begins(pool, self.begins).await;
            }
        };
        let advance = async {
            if !self.advances.is_empty() {
                advances(pool, self.advances).await;
            }
        };
        let succeed = async {
            if !self.succeeds.is_empty() {
                succeeds(pool, self.succeeds).await;
            }
        };
        tokio::join!(begin, advance, succeed);
    }
}

/// `PAYMENT_COLUMNS` qualified by `p.`, for statements that join `payments p` with `v`.
static P_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    PAYMENT_COLUMNS
        .split(',')
        .map(|c| format!("p.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
});

static BEGINS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH v AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                        $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[], \
                        $10::text[], $11::bigint[]) \
                    AS v(id, idempotency_key, fingerprint, account_id, merchant_account_id, \
                         amount, currency, description, now_ms, owner, ttl_ms)), \
         ins AS ( \
             INSERT INTO payments ({PAYMENT_COLUMNS}, lease_owner, lease_token, lease_expires_at_ms) \
             SELECT id, idempotency_key, fingerprint, account_id, merchant_account_id, amount, \
                    currency, description, 'received', NULL, FALSE, now_ms, now_ms, owner, 1, \
                    {NOW_MS} + ttl_ms FROM v \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING {PAYMENT_COLUMNS}, lease_token), \
         took AS ( \
             UPDATE payments p SET lease_owner = v.owner, lease_token = p.lease_token + 1, \
                 lease_expires_at_ms = {NOW_MS} + v.ttl_ms \
             FROM v \
             WHERE p.idempotency_key = v.idempotency_key AND p.fingerprint = v.fingerprint \
               AND p.status IN ({nt}) AND p.lease_expires_at_ms <= {NOW_MS} \
               AND v.idempotency_key NOT IN (SELECT idempotency_key FROM ins) \
             RETURNING {p}, p.lease_token) \
         SELECT 'created' AS outcome, * FROM ins \
         UNION ALL SELECT 'took', * FROM took \
         UNION ALL SELECT 'existing', {p}, p.lease_token FROM payments p \
             JOIN v ON p.idempotency_key = v.idempotency_key \
             WHERE v.idempotency_key NOT IN (SELECT idempotency_key FROM ins) \
               AND v.idempotency_key NOT IN (SELECT idempotency_key FROM took)",
        nt = PaymentStatus::sql_list(PaymentStatus::non_terminal()),
        p = P_COLUMNS.as_str(),
    )
});

/// A fenced batch's update, as the CTE `upd`, returning the payments it moved.
fn fenced_update(update: &str) -> String {
    format!(
        "upd AS ({update} RETURNING {}, p.lease_token)",
        P_COLUMNS.as_str()
    )
}

/// A fenced batch's answer rows: the updated ones (`done`), then the ones it missed as they are.
static FENCED_SELECT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT TRUE AS done, * FROM upd \
         UNION ALL SELECT FALSE, {p}, p.lease_token FROM payments p JOIN v ON p.id = v.id \
             WHERE p.id NOT IN (SELECT id FROM upd)",
        p = P_COLUMNS.as_str()
    )
});

static ADVANCES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH v AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                        $5::bool[], $6::bigint[], $7::bigint[], $8::bool[], $9::bigint[]) \
                    AS v(id, from_status, to_status, reason, review, now_ms, token, terminal, \
                         ttl_ms)), {} {}",
        fenced_update(&format!(
            "UPDATE payments p SET status = v.to_status, reason = COALESCE(v.reason, p.reason), \
                 needs_review = (p.needs_review OR v.review), updated_at_ms = v.now_ms, \
                 lease_owner = CASE WHEN v.terminal THEN NULL ELSE p.lease_owner END, \
                 lease_expires_at_ms = CASE WHEN v.terminal THEN 0 ELSE {NOW_MS} + v.ttl_ms END \
             FROM v WHERE p.id = v.id AND p.status = v.from_status AND p.lease_token = v.token"
        )),
        FENCED_SELECT.as_str()
    )
});

static SUCCEEDS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH v AS (SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], \
                        $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], \
                        $10::bigint[], $11::text[]) \
                    AS v(id, now_ms, from_status, token, m_id, m_account, m_message, m_attempts, \
                         m_next_ms, m_delivered_ms, m_last_error)), \
         {}, \
         ins AS ( \
             INSERT INTO outbox ({OUTBOX_COLUMNS}, created_at_ms) \
             SELECT v.m_id, v.id, v.m_account, v.m_message, v.m_attempts, \
                    LEAST(v.m_next_ms, {NOW_MS}), v.m_delivered_ms, v.m_last_error, v.now_ms \
             FROM v JOIN upd ON upd.id = v.id RETURNING id) \
         {}",
        fenced_update(
            "UPDATE payments p SET status = 'succeeded', updated_at_ms = v.now_ms, \
                 lease_owner = NULL, lease_expires_at_ms = 0 \
             FROM v WHERE p.id = v.id AND p.status = v.from_status AND p.lease_token = v.token"
        ),
        FENCED_SELECT.as_str()
    )
});

/// Begins: one statement; a key it left unanswered (inserted concurrently after its snapshot),
/// or all of them when it failed, are begun alone.
async fn begins(pool: &PgPool, steps: Vec<BeginStep>) {
    let n = steps.len();
    let rows = begins_statement(pool, &steps).await;
    let mut by_key: HashMap<String, PgRow> = match rows {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| Some((r.try_get::<String, _>("idempotency_key").ok()?, r)))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, size = n, "batched begin failed; each begins alone");
            HashMap::new()
        }
    };
    for s in steps {
        let answer = match by_key.remove(s.new.idempotency_key.as_str()) {
            Some(row) => begin_answer(&row, &s.owner, s.ttl),
            None => begin_one(pool, &s.new, &s.owner, s.ttl).await,
        };
        let _ = s.reply.send(answer);
    }
}

async fn begins_statement(pool: &PgPool, steps: &[BeginStep]) -> Result<Vec<PgRow>, sqlx::Error> {
    let n = steps.len();
    let mut cols: [Vec<String>; 7] = Default::default();
    let (mut amounts, mut descriptions, mut nows, mut ttls) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let now = crate::now_ms();
    for s in steps {
        let new = &s.new;
        for (col, value) in cols.iter_mut().zip([
            new.id.to_string(),
            new.idempotency_key.as_str().to_owned(),
            new.fingerprint.as_str().to_owned(),
            new.account_id.as_str().to_owned(),
            new.merchant_account_id.as_str().to_owned(),
            new.currency.code().to_owned(),
            s.owner.as_str().to_owned(),
        ]) {
            col.push(value);
        }
        amounts.push(new.amount.as_i64());
        descriptions.push(new.description.clone());
        nows.push(now);
        ttls.push(ttl_ms(s.ttl));
    }
    let [ids, keys, fingerprints, accounts, merchants, currencies, owners] = cols;
    sqlx::query(BEGINS_SQL.as_str())
        .bind(ids)
        .bind(keys)
        .bind(fingerprints)
        .bind(accounts)
        .bind(merchants)
        .bind(amounts)
        .bind(currencies)
        .bind(descriptions)
        .bind(nows)
        .bind(owners)
        .bind(ttls)
        .fetch_all(pool)
        .await
}

fn begin_answer(
    row: &PgRow,
    owner: &LeaseOwner,
    ttl: Duration,
) -> Result<Begin, PaymentStoreError> {
    let outcome: String = row.try_get("outcome").map_err(storage)?;
    let payment = payment_from_row(row)?;
    Ok(match outcome.as_str() {
        "created" => Begin::Created(payment, lease_of(row, "lease_token", owner, ttl)?),
        "took" => Begin::Existing {
            payment,
            lease: Some(lease_of(row, "lease_token", owner, ttl)?),
        },
        _ => Begin::Existing {
            payment,
            lease: None,
        },
    })
}

/// The fenced answer of `id` from a batched statement's rows: `Some` when settled there.
fn settled(
    rows: &mut HashMap<String, PgRow>,
    id: PaymentId,
    expected: PaymentStatus,
    token: i64,
) -> Option<Result<Payment, PaymentStoreError>> {
    let outcome = fenced_outcome(id, rows.remove(&id.to_string()));
    match outcome {
        Ok(Fenced::Done(p)) => Some(Ok(p)),
        Ok(Fenced::Missed(now)) => fenced_miss(id, expected, token, now).map(Err),
        Err(e) => Some(Err(e)),
    }
}

fn rows_by_id(
    rows: Result<Vec<PgRow>, sqlx::Error>,
    what: &str,
    n: usize,
) -> HashMap<String, PgRow> {
    match rows {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| Some((r.try_get::<String, _>("id").ok()?, r)))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, size = n, "batched {what} failed; each step runs alone");
            HashMap::new()
        }
    }
}

async fn advances(pool: &PgPool, steps: Vec<AdvanceStep>) {
    let rows = advances_statement(pool, &steps).await;
    let mut rows = rows_by_id(rows, "advance", steps.len());
    for s in steps {
        let answer = match settled(&mut rows, s.id, s.from, s.lease.token) {
            Some(answer) => answer,
            None => advance_one(pool, s.id, s.from, s.to, &s.note, &s.lease).await,
        };
        let _ = s.reply.send(answer);
    }
}

async fn advances_statement(
    pool: &PgPool,
    steps: &[AdvanceStep],
) -> Result<Vec<PgRow>, sqlx::Error> {
    let n = steps.len();
    let now = crate::now_ms();
    sqlx::query(ADVANCES_SQL.as_str())
        .bind(steps.iter().map(|s| s.id.to_string()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.from.as_str()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.to.as_str()).collect::<Vec<_>>())
        .bind(
            steps
                .iter()
                .map(|s| s.note.reason.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            steps
                .iter()
                .map(|s| s.note.needs_review)
                .collect::<Vec<_>>(),
        )
        .bind(vec![now; n])
        .bind(steps.iter().map(|s| s.lease.token).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.to.is_terminal()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.lease.ttl_ms()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await
}

async fn succeeds(pool: &PgPool, steps: Vec<SucceedStep>) {
    let rows = succeeds_statement(pool, &steps).await;
    let mut rows = rows_by_id(rows, "succeed", steps.len());
    for s in steps {
        let answer = match settled(&mut rows, s.id, s.from, s.lease.token) {
            Some(answer) => answer,
            None => succeed_one(pool, s.id, s.from, &s.message, &s.lease).await,
        };
        let _ = s.reply.send(answer);
    }
}

async fn succeeds_statement(
    pool: &PgPool,
    steps: &[SucceedStep],
) -> Result<Vec<PgRow>, sqlx::Error> {
    let n = steps.len();
    let now = crate::now_ms();
    let m =
        |f: fn(&OutboxMessage) -> String| steps.iter().map(|s| f(&s.message)).collect::<Vec<_>>();
    sqlx::query(SUCCEEDS_SQL.as_str())
        .bind(steps.iter().map(|s| s.id.to_string()).collect::<Vec<_>>())
        .bind(vec![now; n])
        .bind(steps.iter().map(|s| s.from.as_str()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.lease.token).collect::<Vec<_>>())
        .bind(m(|m| m.id.as_str().to_owned()))
        .bind(m(|m| m.account_id.as_str().to_owned()))
        .bind(m(|m| m.message.clone()))
        .bind(
            steps
                .iter()
                .map(|s| i64::from(s.message.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(
            steps
                .iter()
                .map(|s| s.message.next_attempt_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            steps
                .iter()
                .map(|s| s.message.delivered_at_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            steps
                .iter()
                .map(|s| s.message.last_error.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use finpay_core::{AccountId, Amount, Currency, Fingerprint, IdempotencyKey};

    use super::*;
    use crate::postgres::{PgOptions, PgPayments};

    #[test]
    fn the_batched_begin_takes_over_exactly_the_non_terminal_states() {
        assert!(BEGINS_SQL.contains("AND p.status IN ('received', 'fraud_checked', 'debited') AND"));
        assert!(P_COLUMNS.starts_with("p.id, p.idempotency_key,"));
        assert!(!P_COLUMNS.contains("p. "));
    }

    fn owner() -> LeaseOwner {
        LeaseOwner::try_from("batch-test").expect("owner")
    }

    fn begin_step(key: &str) -> BeginStep {
        BeginStep {
            new: NewPayment {
                id: PaymentId::new_v7(),
                idempotency_key: IdempotencyKey::try_from(key).expect("key"),
                fingerprint: Fingerprint::of(&[key]),
                account_id: AccountId::try_from("cust-1").expect("id"),
                merchant_account_id: AccountId::try_from("merchant-0").expect("id"),
                amount: Amount::try_new(100).expect("amount"),
                currency: Currency::Usd,
                description: (key == "k-a").then(|| "with a description".to_owned()),
            },
            owner: owner(),
            ttl: Duration::from_secs(60),
            reply: oneshot::channel().0,
        }
    }

    fn outcomes(rows: &[PgRow], col: &str) -> Vec<String> {
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| {
                r.try_get::<String, _>(col)
                    .or_else(|_| r.try_get::<bool, _>(col).map(|b| b.to_string()))
                    .expect("column")
            })
            .collect();
        v.sort();
        v
    }

    /// The three batched statements run as written (a broken one would only show as every step
    /// falling back to its single statement) and answer each step of the round.
    #[tokio::test]
    async fn the_batched_statements_run_and_answer_every_step_of_a_round() {
        let url = std::env::var("FINPAY_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!(
            "finpay_steps_{}",
            &PaymentId::new_v7().debit_transfer_id().as_str()[4..]
        );
        let mut opts = PgOptions::new(url);
        opts.schema = Some(schema.clone());
        opts.max_connections = 2;
        opts.acquire_timeout = Duration::from_secs(2);
        let store = match PgPayments::open(&opts).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("note: skipped: no PostgreSQL: {e}");
                return;
            }
        };
        let pool = store.pool.clone();
        let begins = [begin_step("k-a"), begin_step("k-b")];
        let rows = begins_statement(&pool, &begins).await.expect("begins run");
        assert_eq!(outcomes(&rows, "outcome"), ["created", "created"]);
        let again = [begin_step("k-a"), begin_step("k-b")];
        let rows = begins_statement(&pool, &again).await.expect("begins run");
        assert_eq!(outcomes(&rows, "outcome"), ["existing", "existing"]);
        let lease = Lease {
            owner: owner(),
            token: 1,
            ttl: Duration::from_secs(60),
        };
        let advance = |b: &BeginStep, token: i64| AdvanceStep {
            id: b.new.id,
            from: PaymentStatus::Received,
            to: PaymentStatus::FraudChecked,
            note: StepNote::default(),
            lease: Lease {
                token,
                ..lease.clone()
            },
            reply: oneshot::channel().0,
        };
        let steps = [advance(&begins[0], 1), advance(&begins[1], 1)];
        let rows = advances_statement(&pool, &steps)
            .await
            .expect("advances run");
        assert_eq!(outcomes(&rows, "done"), ["true", "true"]);
        let stale = [advance(&begins[0], 0), advance(&begins[1], 7)];
        let rows = advances_statement(&pool, &stale)
            .await
            .expect("advances run");
        assert_eq!(outcomes(&rows, "done"), ["false", "false"]);
        let succeed = |b: &BeginStep| SucceedStep {
            id: b.new.id,
            from: PaymentStatus::FraudChecked,
            message: OutboxMessage {
                id: b.new.id.notification_id(),
                payment_id: b.new.id,
                account_id: b.new.account_id.clone(),
                message: "paid".to_owned(),
                attempts: 0,
                next_attempt_at_ms: 0,
                delivered_at_ms: None,
                last_error: None,
            },
            lease: lease.clone(),
            reply: oneshot::channel().0,
        };
        let steps = [succeed(&begins[0]), succeed(&begins[1])];
        let rows = succeeds_statement(&pool, &steps)
            .await
            .expect("succeeds run");
        assert_eq!(outcomes(&rows, "done"), ["true", "true"]);
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .expect("counts");
        assert_eq!(outbox, 2, "one outbox row per succeeded payment");
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await;
    }
}
