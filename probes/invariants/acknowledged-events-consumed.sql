-- No acknowledged event is lost: every payment the load generator saw acknowledged has reached
-- the campaign service through Kafka (recorded as processed, or granted cashback).
-- Eventually true, since events travel outbox -> Kafka -> consumer: judge it with a bound,
-- `invariant: {name: acknowledged-events-consumed, within: 30s}`.
SELECT a.payment_id
FROM acknowledged a
LEFT JOIN campaign.processed_events e ON e.payment_id = a.payment_id
WHERE e.payment_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM campaign.grants g WHERE g.payment_id = a.payment_id)
