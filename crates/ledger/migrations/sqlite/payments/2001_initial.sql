-- The payments store as the first versioned build created it (CREATE ... IF NOT EXISTS, so a
-- database that build made at boot is recorded at this version without change).
CREATE TABLE IF NOT EXISTS payments (
    id                  TEXT PRIMARY KEY,
    idempotency_key     TEXT NOT NULL UNIQUE,
    fingerprint         TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    merchant_account_id TEXT NOT NULL,
    amount              INTEGER NOT NULL CHECK (amount > 0),
    currency            TEXT NOT NULL,
    description         TEXT,
    status              TEXT NOT NULL CHECK (status IN
                          ('received', 'fraud_checked', 'debited', 'succeeded', 'declined', 'failed')),
    reason              TEXT,
    needs_review        INTEGER NOT NULL DEFAULT 0 CHECK (needs_review IN (0, 1)),
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS payments_unfinished ON payments (created_at_ms, id)
    WHERE status IN ('received', 'fraud_checked', 'debited');
CREATE TABLE IF NOT EXISTS outbox (
    id                 TEXT PRIMARY KEY,
    payment_id         TEXT NOT NULL UNIQUE REFERENCES payments (id),
    account_id         TEXT NOT NULL,
    message            TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at_ms INTEGER NOT NULL,
    delivered_at_ms    INTEGER,
    last_error         TEXT,
    created_at_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at_ms, id)
    WHERE delivered_at_ms IS NULL;
