-- The campaign's aggregates, grants and dedupe records (schema "campaign"). Idempotent: run at
-- every replica start under the advisory lock of schemas.ensure_schema.
CREATE SCHEMA IF NOT EXISTS campaign;

CREATE TABLE IF NOT EXISTS campaign.processed_events (
    payment_id   text PRIMARY KEY,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS campaign.step_progress (
    user_id  text NOT NULL,
    month    text NOT NULL,
    payments integer NOT NULL DEFAULT 0,
    value    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, month)
);

CREATE TABLE IF NOT EXISTS campaign.flash_users (
    campaign text NOT NULL,
    user_id  text NOT NULL,
    granted  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign, user_id)
);

CREATE TABLE IF NOT EXISTS campaign.budgets (
    campaign     text PRIMARY KEY,
    budget       bigint NOT NULL,
    remaining    bigint NOT NULL,
    exhausted    boolean NOT NULL DEFAULT false,
    exhausted_at timestamptz
);

CREATE TABLE IF NOT EXISTS campaign.grants (
    transfer_id text PRIMARY KEY,
    campaign    text NOT NULL,
    payment_id  text NOT NULL,
    user_id     text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    status      text NOT NULL CHECK (status IN ('pending', 'applied', 'refused', 'parked')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS grants_pending ON campaign.grants (created_at) WHERE status = 'pending';

CREATE INDEX IF NOT EXISTS grants_by_payment ON campaign.grants (payment_id);
