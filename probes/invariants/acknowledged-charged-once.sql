-- Every payment the app was told went through was charged exactly once, under the key the app
-- sent, for the user and the amount it asked: one completed payment holds that key, and the
-- merchant was credited exactly that amount for it. Joined on the client's own key (not the
-- platform's record of it), so a retry charged under another key, a key stored wrongly or a
-- wrong amount is caught. `acknowledged` is filled from the load's record (idempotency_key,
-- payment_id, user_id, amount).
WITH charged AS (
    SELECT a.idempotency_key, min(a.user_id) AS asked_user, min(a.amount) AS asked,
           count(DISTINCT p.id) AS payments, min(p.id) AS payment_id, min(p.user_id) AS user_id,
           min(p.amount) AS amount
    FROM acknowledged a
    LEFT JOIN payment.payments p ON p.idempotency_key = a.idempotency_key AND p.status = 'completed'
    GROUP BY a.idempotency_key
), credited AS (
    SELECT t.payment_id, sum(e.amount) AS credited
    FROM ledger.transfers t
    JOIN ledger.entries e ON e.transfer_id = t.id
    WHERE e.account_id LIKE 'merchant:%' AND t.payment_id IN (SELECT payment_id FROM charged)
    GROUP BY t.payment_id
)
SELECT c.idempotency_key, c.payments, c.asked, coalesce(cr.credited, 0) AS credited
FROM charged c
LEFT JOIN credited cr ON cr.payment_id = c.payment_id
WHERE c.payments <> 1
   OR (c.asked_user IS NOT NULL AND c.user_id <> c.asked_user)
   OR coalesce(cr.credited, 0) <> coalesce(c.asked, c.amount)
