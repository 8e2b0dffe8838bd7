-- No user wallet below zero.
SELECT id AS account, balance
FROM ledger.accounts
WHERE kind = 'wallet' AND balance < 0
