-- The double-entry ledger (schema "ledger"). Idempotent: run at every replica start, under an
-- advisory lock so that replicas starting together do not race on CREATE.
CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE IF NOT EXISTS ledger.accounts (
    id             text PRIMARY KEY,
    kind           text NOT NULL,            -- wallet | merchant | escrow | clearing | budget | funding
    allow_negative boolean NOT NULL,
    balance        bigint NOT NULL DEFAULT 0, -- snapshot, = sum of the account's entries
    CONSTRAINT balance_not_negative CHECK (allow_negative OR balance >= 0)
);

CREATE TABLE IF NOT EXISTS ledger.transfers (
    id           text PRIMARY KEY,            -- the caller's idempotency key, e.g. pay:<pid>:reserve
    kind         text NOT NULL,               -- payment | refund | cashback | seed | ...
    user_id      text,
    payment_id   text,
    request_hash text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS transfers_payment_id ON ledger.transfers (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS transfers_user_id ON ledger.transfers (user_id) WHERE user_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS ledger.entries (
    id          bigserial PRIMARY KEY,
    transfer_id text NOT NULL REFERENCES ledger.transfers (id),
    account_id  text NOT NULL REFERENCES ledger.accounts (id),
    amount      bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX IF NOT EXISTS entries_transfer_id ON ledger.entries (transfer_id);
CREATE INDEX IF NOT EXISTS entries_account_id ON ledger.entries (account_id);

-- Entries are append-only: a correction is a new transfer, never an edit.
CREATE OR REPLACE FUNCTION ledger.entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.entries is append-only (% refused)', TG_OP;
END $$;
CREATE OR REPLACE TRIGGER entries_append_only
    BEFORE UPDATE OR DELETE ON ledger.entries
    FOR EACH ROW EXECUTE FUNCTION ledger.entries_append_only();
