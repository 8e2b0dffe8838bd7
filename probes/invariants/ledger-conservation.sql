-- Double entry: every transfer's postings sum to zero, so all entries together sum to zero.
-- Returns the offending total (no row when the ledger balances).
SELECT sum(amount) AS total
FROM ledger.entries
HAVING coalesce(sum(amount), 0) <> 0
