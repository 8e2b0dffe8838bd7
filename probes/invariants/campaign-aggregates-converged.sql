-- The campaign's read model (PayPay-Step monthly progress per user) agrees with the ledger.
-- A payment's value is the net credit to its merchant over its transfers, dated by the first
-- of them in the campaign's time zone; payments below step.minAmount (100 yen) do not count.
-- Eventually true: judge it with a bound, `invariant: {name: campaign-aggregates-converged, within: 30s}`.
WITH credited AS (
    SELECT t.payment_id, sum(e.amount) AS amount, min(t.created_at) AS paid_at
    FROM ledger.transfers t JOIN ledger.entries e ON e.transfer_id = t.id
    WHERE t.payment_id IS NOT NULL AND t.kind <> 'cashback' AND e.account_id LIKE 'merchant:%'
    GROUP BY t.payment_id
), payer AS (
    SELECT payment_id, min(user_id) AS user_id FROM ledger.transfers
    WHERE payment_id IS NOT NULL AND user_id IS NOT NULL
    GROUP BY payment_id
), truth AS (
    SELECT p.user_id, to_char(c.paid_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM') AS month,
           count(*) FILTER (WHERE c.amount >= 100) AS payments, sum(c.amount) AS value
    FROM credited c JOIN payer p USING (payment_id)
    WHERE c.amount > 0
    GROUP BY 1, 2
)
SELECT coalesce(s.user_id, t.user_id) AS user_id, coalesce(s.month, t.month) AS month,
       coalesce(s.payments, 0) AS aggregate_payments, coalesce(t.payments, 0) AS ledger_payments,
       coalesce(s.value, 0) AS aggregate_value, coalesce(t.value, 0) AS ledger_value
FROM campaign.step_progress s
FULL OUTER JOIN truth t ON t.user_id = s.user_id AND t.month = s.month
WHERE coalesce(s.payments, 0) <> coalesce(t.payments, 0) OR coalesce(s.value, 0) <> coalesce(t.value, 0)
