-- A saga cut in half completes or compensates on its own: no payment stays pending long after
-- its lease ran out (its replica died), whether or not the app ever retries it. Money reserved
-- for such a payment would wait in escrow for good. Eventually true after a kill: judge it with
-- a bound, `invariant: {name: no-payment-left-pending, within: 30s}`.
SELECT id, idempotency_key, step, lease_owner, lease_until
FROM payment.payments
WHERE status = 'pending' AND lease_until < now() - interval '10 seconds'
