-- Payments and their transactional outbox (schema "payment"). Idempotent, run at every start.
CREATE SCHEMA IF NOT EXISTS payment;

CREATE TABLE IF NOT EXISTS payment.payments (
    id               text PRIMARY KEY,
    idempotency_key  text NOT NULL,
    -- The key when idempotency is on; NULL when it is switched off, so every request is a new payment.
    dedupe_key       text UNIQUE,
    request_hash     text NOT NULL,
    user_id          text NOT NULL,
    merchant_id      text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    method           text NOT NULL CHECK (method IN ('balance', 'card')),
    status           text NOT NULL CHECK (status IN ('pending', 'completed', 'declined', 'failed', 'aborted')),
    step             text NOT NULL DEFAULT 'start' CHECK (step IN ('start', 'compensating')),
    authorization_id text,
    response_status  int,
    response         text,  -- the response body exactly as first sent, replayed byte for byte
    lease_owner      text,
    lease_until      timestamptz,
    attempts         int NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX IF NOT EXISTS payments_idempotency_key ON payment.payments (idempotency_key);
CREATE INDEX IF NOT EXISTS payments_abandoned ON payment.payments (lease_until) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS payment.outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON payment.outbox (id) WHERE sent_at IS NULL;
