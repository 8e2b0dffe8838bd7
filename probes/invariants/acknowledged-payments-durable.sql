-- Every payment the load generator saw acknowledged exists exactly once and is completed.
-- `acknowledged` is a temporary table paychaos fills from the load process's record
-- (columns: idempotency_key, payment_id); with no load record it is empty, and this judges
-- nothing: paychaos calls that inconclusive.
SELECT a.payment_id, count(p.id) AS rows, min(p.status) AS status
FROM acknowledged a
LEFT JOIN payment.payments p ON p.id = a.payment_id
GROUP BY a.payment_id
HAVING count(p.id) <> 1 OR min(p.status) <> 'completed'
