-- The inbox store as the first versioned build created it (CREATE ... IF NOT EXISTS, so a
-- database that build made at boot is recorded at this version without change).
CREATE TABLE IF NOT EXISTS notifications (
    id             TEXT PRIMARY KEY,
    payment_id     TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    message        TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS notifications_by_account ON notifications (account_id, received_at_ms, id);
