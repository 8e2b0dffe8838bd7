-- One idempotency key, one charge: no key has more than one payment that moved money.
SELECT idempotency_key, count(*) AS charges
FROM payment.payments
WHERE status = 'completed'
GROUP BY idempotency_key
HAVING count(*) > 1
