-- Each payment earns at most one cashback transfer.
SELECT payment_id, count(*) AS grants
FROM ledger.transfers
WHERE kind = 'cashback'
GROUP BY payment_id
HAVING count(*) > 1
