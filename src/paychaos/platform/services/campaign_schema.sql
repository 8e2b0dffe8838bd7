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

-- The status read model. Every change to a user's aggregates or to a budget is stamped with a
-- version, taken under the row's lock (so a row's versions rise in commit order), and announced
-- on channel campaign_status when its transaction commits; each campaign replica keeps all of
-- them in memory (campaign_view.py) and answers status reads without a database round trip.
-- Guarded by the catalog, not IF NOT EXISTS: ALTER TABLE locks the table even when there is
-- nothing to do, and a replica restarted mid-run must not stall the others' writes. Before the
-- grants table's statements, whose locks would otherwise be held while these wait for theirs.
CREATE SEQUENCE IF NOT EXISTS campaign.aggregate_versions;

CREATE OR REPLACE FUNCTION campaign.stamp_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('campaign.aggregate_versions');
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION campaign.announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('campaign_status', json_build_object(
        'tx', txid_current(),
        'table', TG_TABLE_NAME,
        'deleted', TG_OP = 'DELETE',
        'row', CASE WHEN TG_OP = 'DELETE' THEN to_json(OLD) ELSE to_json(NEW) END)::text);
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['step_progress', 'flash_users', 'budgets'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'announce_changed'
                       AND tgrelid = format('campaign.%I', t)::regclass) THEN
            EXECUTE format('ALTER TABLE campaign.%I ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0', t);
            EXECUTE format('CREATE OR REPLACE TRIGGER stamp_new BEFORE INSERT ON campaign.%I'
                           ' FOR EACH ROW EXECUTE FUNCTION campaign.stamp_version()', t);
            -- An update that changes nothing (the upsert that locks a user's row) is not news.
            EXECUTE format('CREATE OR REPLACE TRIGGER stamp_changed BEFORE UPDATE ON campaign.%I'
                           ' FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION campaign.stamp_version()', t);
            EXECUTE format('CREATE OR REPLACE TRIGGER announce AFTER INSERT OR DELETE ON campaign.%I'
                           ' FOR EACH ROW EXECUTE FUNCTION campaign.announce()', t);
            EXECUTE format('CREATE OR REPLACE TRIGGER announce_changed AFTER UPDATE ON campaign.%I'
                           ' FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION campaign.announce()', t);
        END IF;
    END LOOP;
END $$;

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
