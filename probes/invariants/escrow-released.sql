-- Money a balance payment reserved leaves escrow when the payment ends: paid to the merchant if
-- it completed, back to the wallet otherwise. A payment that ended (any status but pending) with
-- money still in escrow took it from its user and holds it for nobody: a reserve that landed
-- although its saga saw it fail, or a refund that never came. Only the app retrying the same key
-- would ever move it again. Card payments never touch escrow.
SELECT p.id, p.idempotency_key, p.status, p.user_id, sum(e.amount) AS in_escrow
FROM payment.payments p
JOIN ledger.transfers t ON t.payment_id = p.id
JOIN ledger.entries e ON e.transfer_id = t.id AND e.account_id = 'escrow:' || p.user_id
WHERE p.status <> 'pending'
GROUP BY p.id, p.idempotency_key, p.status, p.user_id
HAVING sum(e.amount) <> 0
