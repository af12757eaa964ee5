-- Leases: a payment being driven names its driver (`lease_owner`), carries a fencing token that
-- grows by one at every take (`lease_token`) and the database-clock time its lease runs out
-- (`lease_expires_at_ms`, milliseconds since the epoch). The outbox's claims are the same three
-- columns. Existing rows get token 0 and an expiry in the past: resumable at once.
ALTER TABLE payments ADD COLUMN lease_owner TEXT;
ALTER TABLE payments ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0 CHECK (lease_token >= 0);
ALTER TABLE payments ADD COLUMN lease_expires_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN claim_owner TEXT;
ALTER TABLE outbox ADD COLUMN claim_token BIGINT NOT NULL DEFAULT 0 CHECK (claim_token >= 0);
ALTER TABLE outbox ADD COLUMN claim_expires_at_ms BIGINT NOT NULL DEFAULT 0;
