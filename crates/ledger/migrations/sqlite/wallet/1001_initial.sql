-- The wallet store as the first versioned build created it (CREATE ... IF NOT EXISTS, so a
-- database that build made at boot is recorded at this version without change).
CREATE TABLE IF NOT EXISTS accounts (
    id              TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    balance         INTEGER NOT NULL CHECK (balance >= 0),
    opening_balance INTEGER NOT NULL CHECK (opening_balance >= 0),
    created_at_ms   INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS transfers (
    id                TEXT PRIMARY KEY,
    debit_account_id  TEXT NOT NULL REFERENCES accounts (id),
    credit_account_id TEXT NOT NULL REFERENCES accounts (id),
    amount            INTEGER NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    transfer_id TEXT NOT NULL REFERENCES transfers (id),
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    direction   TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (transfer_id, direction)
) STRICT;
CREATE INDEX IF NOT EXISTS entries_by_account ON entries (account_id);
