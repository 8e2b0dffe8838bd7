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

-- One transfer, applied in the one statement that calls this (a single round trip): the transfer
-- row claims its id; the accounts are locked in id order (so concurrent transfers over the same
-- accounts cannot deadlock); the excluding transfers are checked after the locks (race-free when
-- they share an account); no account that may not go negative does; the entries are appended in
-- posting order and each balance snapshot moves by its account's net. Returns the new transfer's
-- created_at, or NULL when the id was already taken. A refusal raises (so nothing stays written)
-- with the message 'paychaos:<CODE>' and the account or transfer it concerns as the detail.
CREATE OR REPLACE FUNCTION ledger.apply_transfer(
    p_id text, p_kind text, p_user_id text, p_payment_id text, p_request_hash text,
    p_accounts text[], p_amounts bigint[], p_excludes text[]
) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    v_created timestamptz;
    v_ids     text[];
    v_deltas  bigint[];
    v_culprit text;
BEGIN
    INSERT INTO ledger.transfers (id, kind, user_id, payment_id, request_hash)
    VALUES (p_id, p_kind, p_user_id, p_payment_id, p_request_hash)
    ON CONFLICT (id) DO NOTHING
    RETURNING created_at INTO v_created;
    IF v_created IS NULL THEN
        RETURN NULL;
    END IF;

    SELECT array_agg(account ORDER BY account), array_agg(net ORDER BY account) INTO v_ids, v_deltas
    FROM (SELECT account, sum(amount)::bigint AS net
          FROM unnest(p_accounts, p_amounts) AS p(account, amount) GROUP BY account) AS n;

    PERFORM 1 FROM ledger.accounts WHERE id = ANY (v_ids) ORDER BY id FOR UPDATE;

    SELECT x INTO v_culprit FROM unnest(v_ids) AS x
    WHERE NOT EXISTS (SELECT 1 FROM ledger.accounts a WHERE a.id = x) ORDER BY x LIMIT 1;
    IF v_culprit IS NOT NULL THEN
        RAISE EXCEPTION 'paychaos:UNKNOWN_ACCOUNT' USING DETAIL = v_culprit;
    END IF;

    IF cardinality(p_excludes) > 0 THEN
        SELECT id INTO v_culprit FROM ledger.transfers WHERE id = ANY (p_excludes) LIMIT 1;
        IF v_culprit IS NOT NULL THEN
            RAISE EXCEPTION 'paychaos:TRANSFER_EXCLUDED' USING DETAIL = v_culprit;
        END IF;
    END IF;

    SELECT a.id INTO v_culprit
    FROM unnest(v_ids, v_deltas) AS d(id, delta) JOIN ledger.accounts a ON a.id = d.id
    WHERE NOT a.allow_negative AND a.balance + d.delta < 0
    ORDER BY array_position(p_accounts, a.id) LIMIT 1;  -- the first such account of the postings
    IF v_culprit IS NOT NULL THEN
        RAISE EXCEPTION 'paychaos:INSUFFICIENT_FUNDS' USING DETAIL = v_culprit;
    END IF;

    INSERT INTO ledger.entries (transfer_id, account_id, amount)
    SELECT p_id, account, amount FROM unnest(p_accounts, p_amounts) WITH ORDINALITY AS p(account, amount, n)
    ORDER BY n;

    UPDATE ledger.accounts AS acc SET balance = acc.balance + d.delta
    FROM unnest(v_ids, v_deltas) AS d(id, delta) WHERE acc.id = d.id;

    RETURN v_created;
END $$;

-- Several transfers in one transaction (the caller's one statement): each is applied as
-- apply_transfer applies it, or refused on its own in a subtransaction, so one refusal does not
-- undo the rest. Every account the batch names is locked first, in id order: a batch of cashback
-- takes the campaign's budget row once and commits once, where a transfer per grant took that one
-- row, and waited for the previous holder's commit to reach the disk, once per grant. Locking up
-- front also means two batches wait for each other before either claims a transfer id, so the
-- same grant in both cannot deadlock them. One outcome per transfer, in order: created_at; or
-- the stored request_hash when the id was already taken; or the refusal's code and detail.
-- Callers keep a batch under 64 transfers: more subtransactions than that in one transaction
-- overflow PostgreSQL's per-backend cache and slow every other backend's snapshots.
CREATE OR REPLACE FUNCTION ledger.apply_transfers(p_batch jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_t       jsonb;
    v_created timestamptz;
    v_out     jsonb := '[]';
    v_message text;
    v_detail  text;
BEGIN
    PERFORM 1 FROM ledger.accounts
    WHERE id IN (SELECT p.v->>'account' FROM jsonb_array_elements(p_batch) AS t(v), jsonb_array_elements(t.v->'postings') AS p(v))
    ORDER BY id FOR UPDATE;
    FOR v_t IN SELECT t.v FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS t(v, n) ORDER BY t.n LOOP
        BEGIN
            v_created := ledger.apply_transfer(
                v_t->>'id', v_t->>'kind', v_t->>'user_id', v_t->>'payment_id', v_t->>'request_hash',
                ARRAY(SELECT p.v->>'account' FROM jsonb_array_elements(v_t->'postings') WITH ORDINALITY AS p(v, n) ORDER BY p.n),
                ARRAY(SELECT (p.v->>'amount')::bigint FROM jsonb_array_elements(v_t->'postings') WITH ORDINALITY AS p(v, n) ORDER BY p.n),
                ARRAY(SELECT jsonb_array_elements_text(coalesce(v_t->'excludes', '[]'))));
            IF v_created IS NULL THEN
                v_out := v_out || jsonb_build_array(jsonb_build_object('id', v_t->>'id', 'stored_hash',
                    (SELECT request_hash FROM ledger.transfers WHERE id = v_t->>'id')));
            ELSE
                v_out := v_out || jsonb_build_array(jsonb_build_object('id', v_t->>'id', 'created_at', v_created));
            END IF;
        EXCEPTION WHEN raise_exception THEN
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
            IF v_message NOT LIKE 'paychaos:%' THEN
                RAISE;
            END IF;
            v_out := v_out || jsonb_build_array(jsonb_build_object(
                'id', v_t->>'id', 'refused', substr(v_message, length('paychaos:') + 1), 'detail', v_detail));
        END;
    END LOOP;
    RETURN v_out;
END $$;
