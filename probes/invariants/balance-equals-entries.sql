-- Each account's balance snapshot equals the sum of its entries.
SELECT a.id AS account, a.balance, coalesce(sum(e.amount), 0) AS entries
FROM ledger.accounts a
LEFT JOIN ledger.entries e ON e.account_id = a.id
GROUP BY a.id, a.balance
HAVING a.balance <> coalesce(sum(e.amount), 0)
